"""RtpEndpoint over real UDP sockets on 127.0.0.1, against plain asyncio sockets as peers."""

from __future__ import annotations

import asyncio
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from aiortc.rtp import RtcpByePacket, RtcpPacket, RtpPacket, is_rtcp

from rtp import g711
from rtp.endpoint import (
    PortAllocator,
    PortsExhaustedError,
    RtpEndpoint,
    TickGroups,
    destination_address,
    reserve_port_pair,
    source_address,
)
from rtp.jitter import JitterBuffer
from rtp.session import AudioReceived, MediaTimeout, RemoteLatched, RtpEvent, RtpSession
from rtp.srtp import SrtpContext, SrtpSuite
from sipagent.events import CallEnded, IncomingCall
from sipagent.offer_answer import Negotiated, SrtpPolicy, negotiate
from sipagent.sdp import SessionDescription
from sipagent.transaction import Destination
from sipagent.useragent import UserAgent
from tests.peers.audio import cross_correlate, is_silence, read_wav, write_wav
from tests.peers.baresip_peer import MODULE_PATH as BARESIP_MODULES
from tests.peers.baresip_peer import Baresip, baresip_available

LOCALHOST = "127.0.0.1"
FRAMES = 50
PEER_SSRC = 0x5EE5


def frame(n: int) -> bytes:
    return bytes([n % 250 + 1]) * 160


class Collector(asyncio.DatagramProtocol):
    """A plain UDP socket that records what it receives."""

    def __init__(self) -> None:
        self.datagrams: list[tuple[bytes, tuple[str, int]]] = []
        self.changed = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.datagrams.append((data, addr))
        self.changed.set()

    async def wait_for(self, predicate: object, timeout: float = 5.0) -> None:
        async def loop() -> None:
            while not predicate():  # type: ignore[operator]
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout)


async def open_socket() -> tuple[asyncio.DatagramTransport, Collector, tuple[str, int]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Collector, local_addr=(LOCALHOST, 0))
    return transport, protocol, transport.get_extra_info("sockname")[:2]


def make_session(remote: tuple[str, int], remote_rtcp: tuple[str, int]) -> RtpSession:
    return RtpSession(
        payload_type=0,
        dtmf_payload_type=101,
        remote_addr=remote,
        remote_rtcp_addr=remote_rtcp,
        ssrc=0xA11CE,
        initial_seq=1,
        initial_timestamp=0,
        now=asyncio.get_running_loop().time(),
        # Tolerate a loaded test machine stalling the loop; the echo logic is what is tested.
        jitter_buffer=JitterBuffer(target_ms=60, min_ms=60, max_ms=200),
    )


async def send_paced(transport: asyncio.DatagramTransport, dest: tuple[str, int]) -> None:
    """Send FRAMES PCMU packets on an absolute 20 ms grid (call_at, like a real phone)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    start = loop.time()

    def send(n: int) -> None:
        packet = RtpPacket(
            payload_type=0,
            marker=int(n == 0),
            sequence_number=(65530 + n) & 0xFFFF,
            timestamp=n * 160,
            ssrc=PEER_SSRC,
            payload=frame(n),
        )
        transport.sendto(packet.serialize(), dest)
        if n + 1 < FRAMES:
            loop.call_at(start + (n + 1) * 0.020, send, n + 1)
        else:
            done.set_result(None)

    send(0)
    await done


async def test_echo_over_real_sockets_strict_source_and_clean_close() -> None:
    peer, peer_rx, peer_addr = await open_socket()
    peer_rtcp, peer_rtcp_rx, peer_rtcp_addr = await open_socket()
    stranger, stranger_rx, _ = await open_socket()
    allocator = PortAllocator(31000, 31999)
    session = make_session(peer_addr, peer_rtcp_addr)
    events: list[RtpEvent] = []

    def on_event(event: RtpEvent) -> None:
        events.append(event)
        if isinstance(event, AudioReceived) and not event.concealed:
            session.playout.push(event.payload)  # the echo wiring

    endpoint = await RtpEndpoint.create(session, LOCALHOST, allocator, on_event=on_event)
    try:
        assert endpoint.port % 2 == 0 and endpoint.rtcp_port == endpoint.port + 1
        assert allocator.in_use == 1
        target = (LOCALHOST, endpoint.port)

        sending = asyncio.ensure_future(send_paced(peer, target))
        await peer_rx.wait_for(lambda: len(peer_rx.datagrams) >= 20)
        for n in range(5):  # RTP bleed attempt from another socket
            bogus = RtpPacket(payload_type=0, sequence_number=n, ssrc=0xBAD, payload=b"\xfb" * 160)
            stranger.sendto(bogus.serialize(), target)
        await sending

        def echoed() -> list[bytes]:
            payloads = []
            for data, _ in peer_rx.datagrams:
                if not is_rtcp(data):
                    payload = RtpPacket.parse(data).payload
                    if payload != g711.silence(g711.PT_PCMU):
                        payloads.append(payload)
            return payloads

        await peer_rx.wait_for(lambda: len(echoed()) >= FRAMES)
        assert echoed() == [frame(n) for n in range(FRAMES)]
        stats = session.stats()
        assert stats.packets_in == FRAMES
        assert stats.packets_out >= FRAMES
        assert stats.dropped_foreign == 5
        assert stats.lost == 0
        assert stranger_rx.datagrams == []  # nothing ever went to the stranger
        assert session.remote_addr == peer_addr
        assert RemoteLatched(addr=peer_addr) in events
        assert {addr for _, addr in peer_rx.datagrams} == {target}
    finally:
        endpoint.close()
        await endpoint.wait_closed()

    assert endpoint.closed
    assert allocator.in_use == 0
    await peer_rtcp_rx.wait_for(
        lambda: any(
            isinstance(packet, RtcpByePacket) and packet.sources == [0xA11CE]
            for data, _ in peer_rtcp_rx.datagrams
            for packet in RtcpPacket.parse(data)
        )
    )
    for port in (endpoint.port, endpoint.rtcp_port):  # really released: bindable again
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((LOCALHOST, port))
        sock.close()
    for transport in (peer, peer_rtcp, stranger):
        transport.close()


def rtp_payloads(collector: Collector) -> list[bytes]:
    """The echoed (non-silent) payloads a peer received."""
    silence = g711.silence(g711.PT_PCMU)
    return [
        RtpPacket.parse(data).payload
        for data, _ in collector.datagrams
        if not is_rtcp(data) and RtpPacket.parse(data).payload != silence
    ]


async def test_endpoints_of_one_phase_tick_together_on_the_group_timer() -> None:
    groups = TickGroups(slots=1)  # one phase: both calls share one timer
    allocator = PortAllocator(31200, 31299)
    loop = asyncio.get_running_loop()
    peers, endpoints = [], []
    for _ in range(2):
        peer, peer_rx, peer_addr = await open_socket()
        session = RtpSession(
            payload_type=0, dtmf_payload_type=101, remote_addr=peer_addr, ssrc=0xB0B,
            initial_seq=1, initial_timestamp=0, now=loop.time(),
            jitter_buffer=JitterBuffer(target_ms=60, min_ms=60, max_ms=200),
            first_tick=groups.place(loop.time()),
        )

        def echo(event: RtpEvent, session: RtpSession = session) -> None:
            if isinstance(event, AudioReceived) and not event.concealed:
                session.playout.push(event.payload)

        endpoint = await RtpEndpoint.create(
            session, LOCALHOST, allocator, on_event=echo, ticks=groups
        )
        peers.append((peer, peer_rx))
        endpoints.append(endpoint)
    assert groups.members() == 2
    assert groups.phases.counts == (2,)
    try:
        targets = [(LOCALHOST, endpoint.port) for endpoint in endpoints]
        await asyncio.gather(
            *(send_paced(peer, target) for (peer, _), target in zip(peers, targets, strict=True))
        )
        for _, rx in peers:
            await rx.wait_for(lambda rx=rx: len(rtp_payloads(rx)) >= FRAMES)
            assert rtp_payloads(rx) == [frame(n) for n in range(FRAMES)]
        first = endpoints[0]
        first.close()
        await first.wait_closed()
        assert groups.members() == 1
        before = len(peers[1][1].datagrams)
        await asyncio.sleep(0.2)
        assert len(peers[1][1].datagrams) >= before + 5, "the group still ticks for the other"
    finally:
        for endpoint in endpoints:
            endpoint.close()
            await endpoint.wait_closed()
    assert groups.members() == 0
    stopped = len(peers[1][1].datagrams)
    await asyncio.sleep(0.1)
    assert len(peers[1][1].datagrams) == stopped, "nothing ticks once the group is empty"
    for peer, _ in peers:
        peer.close()


async def test_a_grouped_endpoint_times_out_between_ticks_at_the_next_tick() -> None:
    groups = TickGroups()
    allocator = PortAllocator(31300, 31399)
    loop = asyncio.get_running_loop()
    peer, _, peer_addr = await open_socket()
    session = RtpSession(
        payload_type=0, dtmf_payload_type=None, remote_addr=peer_addr, ssrc=1,
        initial_seq=0, initial_timestamp=0, now=loop.time(), inactivity_timeout=0.3,
        first_tick=groups.place(loop.time()),
    )
    timed_out = loop.create_future()

    def on_event(event: RtpEvent) -> None:
        if isinstance(event, MediaTimeout) and not timed_out.done():
            timed_out.set_result(loop.time())

    started = loop.time()
    endpoint = await RtpEndpoint.create(session, LOCALHOST, allocator, on_event, ticks=groups)
    try:
        at = await asyncio.wait_for(timed_out, 5.0)
        assert at - started >= 0.3 - 0.005  # never early (a tick may run 2 ms ahead)
    finally:
        endpoint.close()
        await endpoint.wait_closed()
        peer.close()
    assert sum(groups.phases.counts) == 1  # the phase is the caller's to release
    assert groups.members() == 0


async def test_busy_ports_are_skipped() -> None:
    allocator = PortAllocator(31100, 31199)
    first_pair = 31100  # what a fresh allocator hands out first
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        blocker.bind((LOCALHOST, first_pair + 1))  # someone else holds the RTCP port
    except OSError:
        blocker.close()
        pytest.skip("port already in use on this machine")
    try:
        session = make_session(("127.0.0.1", 9), ("127.0.0.1", 10))
        session.set_direction(send=False, recv=False)
        endpoint = await RtpEndpoint.create(session, LOCALHOST, allocator)
        assert endpoint.port != first_pair
        assert allocator.in_use == 1
        endpoint.close()
        endpoint.close()  # idempotent
        await endpoint.wait_closed()
        assert allocator.in_use == 0
    finally:
        blocker.close()


async def test_preallocated_port_is_bound_exactly_and_owned_by_the_endpoint() -> None:
    allocator = PortAllocator(31300, 31399)
    port = allocator.allocate()  # e.g. written into the SDP answer before media starts
    session = make_session(("127.0.0.1", 9), ("127.0.0.1", 10))
    session.set_direction(send=False, recv=False)
    endpoint = await RtpEndpoint.create(session, LOCALHOST, allocator, port=port)
    assert endpoint.local_addr == (LOCALHOST, port)
    assert allocator.in_use == 1
    endpoint.close()
    await endpoint.wait_closed()
    assert allocator.in_use == 0


async def test_preallocated_port_taken_meanwhile_raises_and_is_released() -> None:
    allocator = PortAllocator(31400, 31499)
    port = allocator.allocate()
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        squatter.bind((LOCALHOST, port))
    except OSError:
        squatter.close()
        pytest.skip("port already in use on this machine")
    try:
        session = make_session(("127.0.0.1", 9), ("127.0.0.1", 10))
        with pytest.raises(OSError):
            await RtpEndpoint.create(session, LOCALHOST, allocator, port=port)
        assert allocator.in_use == 0
    finally:
        squatter.close()


async def test_event_handler_errors_do_not_stop_the_endpoint() -> None:
    peer, peer_rx, peer_addr = await open_socket()
    allocator = PortAllocator(31200, 31299)
    session = make_session(peer_addr, peer_addr)
    calls: list[RtpEvent] = []

    def broken(event: RtpEvent) -> None:
        calls.append(event)
        raise RuntimeError("handler bug")

    endpoint = await RtpEndpoint.create(session, LOCALHOST, allocator, on_event=broken)
    packet = RtpPacket(payload_type=0, sequence_number=1, ssrc=1, payload=frame(1))
    peer.sendto(packet.serialize(), (LOCALHOST, endpoint.port))
    await peer_rx.wait_for(lambda: len(calls) >= 3)  # RemoteLatched, then audio keeps coming
    assert session.stats().packets_in == 1
    endpoint.close()
    await endpoint.wait_closed()
    peer.close()


def test_port_allocator_hands_out_even_ports_round_robin_until_exhausted() -> None:
    allocator = PortAllocator(10001, 10008)  # pairs 10002, 10004, 10006
    assert allocator.capacity == 3
    ports = [allocator.allocate() for _ in range(3)]
    assert ports == [10002, 10004, 10006]
    with pytest.raises(PortsExhaustedError):
        allocator.allocate()
    allocator.release(10002)
    allocator.release(12345)  # unknown: ignored
    assert allocator.allocate() == 10002
    allocator.release(10004)
    allocator.release(10006)
    assert allocator.allocate() == 10004  # continues after the last one handed out
    assert allocator.in_use == 2


@pytest.mark.parametrize(("low", "high"), [(10001, 10002), (0, 1), (65534, 65536)])
def test_port_allocator_rejects_ranges_without_a_pair(low: int, high: int) -> None:
    with pytest.raises(ValueError):
        PortAllocator(low, high)


def test_address_helpers_handle_ipv6_and_mapped_ipv4() -> None:
    assert source_address(("::ffff:192.0.2.1", 5004, 0, 0)) == ("192.0.2.1", 5004)
    assert source_address(("2001:db8::1", 5004, 0, 0)) == ("2001:db8::1", 5004)
    assert source_address(("192.0.2.1", 5004)) == ("192.0.2.1", 5004)
    assert destination_address(("192.0.2.1", 5004), ipv6_socket=True) == ("::ffff:192.0.2.1", 5004)
    assert destination_address(("2001:db8::1", 5004), ipv6_socket=True) == ("2001:db8::1", 5004)
    assert destination_address(("192.0.2.1", 5004), ipv6_socket=False) == ("192.0.2.1", 5004)


async def test_reserved_pair_skips_ports_held_elsewhere_and_is_taken_over() -> None:
    allocator = PortAllocator(31700, 31707)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", 31700))
    try:
        reservation = reserve_port_pair("127.0.0.1", allocator)
        assert reservation.port == 31702
        assert allocator.in_use == 1
        session = RtpSession(
            payload_type=0, dtmf_payload_type=None, remote_addr=None, ssrc=7,
            initial_seq=0, initial_timestamp=0, now=asyncio.get_running_loop().time(),
        )
        endpoint = await RtpEndpoint.create(
            session, "127.0.0.1", allocator, reservation=reservation
        )
        assert endpoint.port == 31702
        reservation.release()  # already taken: no effect on the endpoint's port
        assert allocator.in_use == 1
        endpoint.close()
        await endpoint.wait_closed()
        assert allocator.in_use == 0
    finally:
        squatter.close()


def test_released_reservation_frees_the_port() -> None:
    allocator = PortAllocator(31710, 31713)
    reservation = reserve_port_pair("127.0.0.1", allocator)
    reservation.release()
    reservation.release()
    assert allocator.in_use == 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", reservation.port))
    with pytest.raises(RuntimeError):
        reservation.take()


# --- SRTP ------------------------------------------------------------------------------

KEY_A = bytes(range(1, 31))
KEY_B = bytes(range(101, 131))


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a condition that callbacks (not a socket of ours) make true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("rtcp_mux", [False, True])
@pytest.mark.parametrize("suite", list(SrtpSuite))
async def test_two_endpoints_talk_srtp_with_mirrored_keys(suite: SrtpSuite, rtcp_mux: bool) -> None:
    allocator = PortAllocator(31800, 31899)
    loop = asyncio.get_running_loop()
    reserved_a = reserve_port_pair(LOCALHOST, allocator)
    reserved_b = reserve_port_pair(LOCALHOST, allocator)

    def session(ssrc: int, remote_port: int) -> RtpSession:
        return RtpSession(
            payload_type=0, dtmf_payload_type=101, ssrc=ssrc, initial_seq=65500,
            initial_timestamp=0, now=loop.time(), rtcp_mux=rtcp_mux,
            remote_addr=(LOCALHOST, remote_port),
            remote_rtcp_addr=None if rtcp_mux else (LOCALHOST, remote_port + 1),
            jitter_buffer=JitterBuffer(target_ms=60, min_ms=60, max_ms=200),
        )

    session_a = session(0xA, reserved_b.port)
    session_b = session(0xB, reserved_a.port)
    heard_by_b: list[bytes] = []
    heard_by_a: list[bytes] = []

    def b_echoes(event: RtpEvent) -> None:
        if isinstance(event, AudioReceived) and event.payload != g711.silence(g711.PT_PCMU):
            heard_by_b.append(event.payload)
            session_b.playout.push(event.payload)

    def a_listens(event: RtpEvent) -> None:
        if isinstance(event, AudioReceived) and event.payload != g711.silence(g711.PT_PCMU):
            heard_by_a.append(event.payload)

    srtp_a, srtp_b = SrtpContext(suite, KEY_A, KEY_B), SrtpContext(suite, KEY_B, KEY_A)
    endpoint_a = await RtpEndpoint.create(
        session_a, LOCALHOST, allocator, a_listens, reservation=reserved_a, srtp=srtp_a
    )
    endpoint_b = await RtpEndpoint.create(
        session_b, LOCALHOST, allocator, b_echoes, reservation=reserved_b, srtp=srtp_b
    )
    try:
        for n in range(FRAMES):
            session_a.playout.push(frame(n))
        sent = [frame(n) for n in range(FRAMES)]
        await until(lambda: len(heard_by_a) >= FRAMES, timeout=10.0)
        assert heard_by_b == sent  # across the sequence number rollover (65500 + 50)
        assert heard_by_a == sent
        for ours, theirs in ((srtp_a, srtp_b), (srtp_b, srtp_a)):
            stats = ours.stats()
            assert stats.auth_failures == stats.replays == stats.malformed == 0
            assert stats.protect_failures == 0
            assert theirs.stats().unprotected >= FRAMES
        assert session_b.stats().dropped_malformed == 0
    finally:
        endpoint_a.close()
        await endpoint_a.wait_closed()
    # A's RTCP BYE went out as SRTCP (on the RTP port when multiplexed) and was understood.
    await until(lambda: session_b.remote_bye)
    endpoint_b.close()
    await endpoint_b.wait_closed()
    assert allocator.in_use == 0


async def test_srtp_endpoint_drops_plain_and_forged_rtp_and_sends_only_srtp() -> None:
    suite = SrtpSuite.AES_CM_128_HMAC_SHA1_80
    peer, peer_rx, peer_addr = await open_socket()
    peer_rtcp, peer_rtcp_rx, peer_rtcp_addr = await open_socket()
    allocator = PortAllocator(31900, 31999)
    session = make_session(peer_addr, peer_rtcp_addr)
    received: list[bytes] = []

    def on_event(event: RtpEvent) -> None:
        if isinstance(event, AudioReceived) and not event.concealed:
            received.append(event.payload)

    ours = SrtpContext(suite, KEY_A, KEY_B)
    phone = SrtpContext(suite, KEY_B, KEY_A)  # the far end, keyed from our answer
    stranger = SrtpContext(suite, bytes(30), KEY_A)
    endpoint = await RtpEndpoint.create(session, LOCALHOST, allocator, on_event, srtp=ours)
    target = (LOCALHOST, endpoint.port)
    try:
        def packet(seq: int, payload: bytes) -> bytes:
            return RtpPacket(
                payload_type=0, sequence_number=seq, timestamp=seq * 160, ssrc=PEER_SSRC,
                payload=payload,
            ).serialize()

        for seq in range(5):  # plain RTP, and SRTP under the wrong key
            peer.sendto(packet(seq, frame(seq)), target)
            forged = stranger.protect(packet(100 + seq, frame(seq)))
            assert forged is not None
            peer.sendto(forged, target)
        await peer_rx.wait_for(lambda: ours.auth_failures >= 10)
        assert session.stats().packets_in == 0 and received == []

        genuine = phone.protect(packet(200, frame(7)))
        assert genuine is not None
        peer.sendto(genuine, target)
        peer.sendto(genuine, target)  # replayed
        await peer_rx.wait_for(lambda: session.stats().packets_in == 1 and ours.replays == 1)
        await peer_rx.wait_for(lambda: frame(7) in received)

        # What we send is SRTP: unreadable as RTP, readable with the mirrored key.
        await peer_rx.wait_for(lambda: len(peer_rx.datagrams) >= 5)
        for data, _ in peer_rx.datagrams[:5]:
            clear = phone.unprotect(data)
            assert clear is not None and len(data) == len(clear) + suite.tag_length
            sent = RtpPacket.parse(clear)
            assert sent.ssrc == 0xA11CE and sent.payload == g711.silence(g711.PT_PCMU)
            assert RtpPacket.parse(data).payload != sent.payload
        stats = ours.stats()
        assert (stats.auth_failures, stats.replays, stats.unprotected) == (10, 1, 1)
    finally:
        endpoint.close()
        await endpoint.wait_closed()
    await peer_rtcp_rx.wait_for(lambda: bool(peer_rtcp_rx.datagrams))
    bye = phone.unprotect_rtcp(peer_rtcp_rx.datagrams[-1][0])
    assert bye is not None
    assert any(isinstance(p, RtcpByePacket) for p in RtcpPacket.parse(bye))
    for transport in (peer, peer_rtcp):
        transport.close()


# --- SDES-SRTP interop: baresip (libre's own SRTP, not libsrtp) -------------------------

SPEECH = Path(__file__).parent / "fixtures" / "speech_8k.wav"


class SrtpBaresip(Baresip):
    """baresip with its ``srtp`` module and ``mediaenc=srtp-mand``: RTP/SAVP offers only."""

    def write_config(self) -> None:
        super().write_config()
        with open(self.workdir / "config", "a") as config:
            config.write("module\t\t\tsrtp.so\n")
        accounts = self.workdir / "accounts"
        accounts.write_text(accounts.read_text().rstrip("\n") + ";mediaenc=srtp-mand\n")


class MiniUas(asyncio.DatagramProtocol):
    """A one-call SIP UAS over the sans-I/O UserAgent: answers SRTP-required and echoes.

    The real server's wiring comes later; this is just enough SIP to put baresip's SRTP
    against RtpEndpoint + SrtpContext + negotiate(srtp=required).
    """

    def __init__(self, allocator: PortAllocator) -> None:
        self.allocator = allocator
        self.ua: UserAgent | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.endpoint: RtpEndpoint | None = None
        self.negotiated: Negotiated | None = None
        self.srtp: SrtpContext | None = None
        self.ended = asyncio.Event()
        self.errors: list[BaseException] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.ua is not None
        loop = asyncio.get_running_loop()
        self.ua.receive(data, Destination("udp", addr[0], addr[1]), loop.time())
        self.ua.handle_timer(loop.time())
        while (event := self.ua.next_event()) is not None:
            if isinstance(event, IncomingCall):
                task = loop.create_task(self._answer(event))
                task.add_done_callback(self._check)
            elif isinstance(event, CallEnded) and self.endpoint is not None:
                self.endpoint.close()
                self.ended.set()
        self.pump()

    def _check(self, task: asyncio.Task[None]) -> None:
        if task.exception() is not None:
            self.errors.append(task.exception())  # type: ignore[arg-type]

    def pump(self) -> None:
        assert self.ua is not None and self.transport is not None
        for data, dest in self.ua.messages_to_send():
            self.transport.sendto(data, (dest.host, dest.port))

    async def _answer(self, event: IncomingCall) -> None:
        assert self.ua is not None and event.offer is not None
        loop = asyncio.get_running_loop()
        reservation = reserve_port_pair(LOCALHOST, self.allocator)
        negotiated = negotiate(
            SessionDescription.parse(event.offer),
            local_host=LOCALHOST,
            local_port=reservation.port,
            session_id=1,
            srtp=SrtpPolicy.REQUIRED,
            srtp_key=os.urandom(30),
        )
        assert negotiated.srtp is not None
        self.negotiated = negotiated
        keys = negotiated.srtp
        self.srtp = SrtpContext(keys.suite, keys.local_key, keys.remote_key)
        session = RtpSession(
            payload_type=negotiated.codec.payload_type,
            dtmf_payload_type=negotiated.dtmf_payload_type,
            remote_addr=negotiated.remote_addr,
            remote_rtcp_addr=negotiated.remote_rtcp_addr,
            ssrc=0x5EC,
            initial_seq=65000,
            initial_timestamp=0,
            now=loop.time(),
        )

        def echo(rtp_event: RtpEvent) -> None:
            if isinstance(rtp_event, AudioReceived) and not rtp_event.concealed:
                session.playout.push(rtp_event.payload)

        self.endpoint = await RtpEndpoint.create(
            session, LOCALHOST, self.allocator, echo, reservation=reservation, srtp=self.srtp
        )
        self.ua.answer(event.dialog, bytes(negotiated.answer), loop.time())
        self.pump()


@pytest.mark.skipif(
    not baresip_available() or not (BARESIP_MODULES / "srtp.so").exists(),
    reason="baresip or its srtp module is not installed",
)
async def test_baresip_srtp_mandatory_call_is_echoed_through_srtp(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    speech, rate = read_wav(SPEECH)
    played = tmp_path / "speech_padded.wav"
    write_wav(played, np.concatenate([speech, np.zeros(5 * rate, dtype=np.int16)]), rate)
    uas = MiniUas(PortAllocator(32000, 32099))
    transport, _ = await loop.create_datagram_endpoint(lambda: uas, local_addr=(LOCALHOST, 0))
    sip_port = transport.get_extra_info("sockname")[1]
    uas.transport = transport
    uas.ua = UserAgent(
        host=LOCALHOST, port=sip_port, public_host=LOCALHOST, new_token=lambda: os.urandom(6).hex()
    )
    try:
        async with SrtpBaresip(tmp_path / "baresip", play=played, codecs="PCMU") as phone:
            dialed = await phone.command("dial", f"sip:echo@127.0.0.1:{sip_port}")
            assert dialed["ok"], dialed
            await phone.wait_event("CALL_ESTABLISHED")
            await asyncio.sleep(len(speech) / rate + 0.6)
            await phone.command("hangup")
            await phone.wait_event("CALL_CLOSED")
            await asyncio.wait_for(uas.ended.wait(), 5.0)
        assert uas.errors == []
        assert uas.endpoint is not None and uas.srtp is not None and uas.negotiated is not None
        await uas.endpoint.wait_closed()
    finally:
        transport.close()
    log = phone.log()
    offer = next(line for line in log.splitlines() if line.startswith("m=audio"))
    assert "RTP/SAVP" in offer, log[-3000:]
    assert re.search(r"srtp: .*SRTP is Enabled \(cryptosuite=AES_CM_128_HMAC_SHA1_80\)", log), log
    srtp = uas.srtp.stats()
    rtp_stats = uas.endpoint.session.stats()
    print(f"baresip SRTP: ours {srtp}, RTP in/out {rtp_stats.packets_in}/{rtp_stats.packets_out}")
    assert srtp.auth_failures == srtp.replays == srtp.protect_failures == 0
    # libre sends one plain RTCP APP "PING"/"PONG" when the stream starts (a pinhole opener,
    # before its SRTP is on): too short for SRTCP, dropped and counted like any plain packet.
    assert srtp.malformed <= 1
    assert rtp_stats.packets_in > 150 and rtp_stats.packets_out > 150
    assert srtp.unprotected >= rtp_stats.packets_in
    heard, heard_rate = read_wav(phone.received_wav())  # decrypted by baresip, then decoded
    assert not is_silence(heard)
    correlation = cross_correlate(speech, heard, sample_rate=heard_rate, max_lag_ms=1000)
    assert correlation.peak >= 0.9, correlation
