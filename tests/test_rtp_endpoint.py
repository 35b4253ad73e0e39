"""RtpEndpoint over real UDP sockets on 127.0.0.1, against plain asyncio sockets as peers."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiortc.rtp import RtcpByePacket, RtcpPacket, RtpPacket, is_rtcp

from rtp import g711
from rtp.endpoint import (
    PortAllocator,
    PortsExhaustedError,
    RtpEndpoint,
    destination_address,
    reserve_port_pair,
    source_address,
)
from rtp.jitter import JitterBuffer
from rtp.session import AudioReceived, RemoteLatched, RtpEvent, RtpSession

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
