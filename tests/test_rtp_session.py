"""RtpSession driven as two in-memory peers and by hand-made packets, on a fake clock."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import (
    HeaderExtensions,
    HeaderExtensionsMap,
    RtcpByePacket,
    RtcpPacket,
    RtcpRrPacket,
    RtcpSrPacket,
    RtpPacket,
)

from rtp import g711
from rtp.session import (
    AudioReceived,
    DtmfReceived,
    MediaTimeout,
    RemoteLatched,
    RtpEvent,
    RtpSession,
)

T0 = 5000.0
OURS = ("192.0.2.1", 20000)
PEER = ("198.51.100.7", 30000)
NAT = ("203.0.113.9", 61000)
STRANGER = ("203.0.113.66", 4444)
PEER_SSRC = 0x1111
SILENCE = g711.silence(g711.PT_PCMU)


def frame(n: int) -> bytes:
    return bytes([n % 250 + 1]) * 160


def rtp(
    seq: int,
    ts: int | None = None,
    payload: bytes | None = None,
    *,
    pt: int = 0,
    marker: bool = False,
    ssrc: int = PEER_SSRC,
) -> bytes:
    packet = RtpPacket(
        payload_type=pt,
        marker=int(marker),
        sequence_number=seq & 0xFFFF,
        timestamp=(seq * 160 if ts is None else ts) & 0xFFFFFFFF,
        ssrc=ssrc,
        payload=frame(seq) if payload is None else payload,
    )
    return packet.serialize()


def make(now: float = T0, **overrides: object) -> RtpSession:
    options: dict[str, object] = dict(
        payload_type=0,
        dtmf_payload_type=101,
        remote_addr=PEER,
        ssrc=0xAAAA,
        initial_seq=100,
        initial_timestamp=1000,
        now=now,
    )
    options.update(overrides)
    return RtpSession(**options)  # type: ignore[arg-type]


class Driver:
    """Runs one session against hand-fed packets; collects events and sent packets."""

    def __init__(self, session: RtpSession, now: float = T0) -> None:
        self.session = session
        self.now = now
        self.events: list[RtpEvent] = []
        self.sent: list[tuple[RtpPacket, tuple[str, int]]] = []
        self.rtcp: list[tuple[bytes, tuple[str, int]]] = []
        self.on_event: Callable[[RtpEvent], None] | None = None
        self.delivered = 0
        self.rtcp_delivered = 0

    def flush(self) -> None:
        session = self.session
        while (event := session.next_event()) is not None:
            self.events.append(event)
            if self.on_event is not None:
                self.on_event(event)
        for data, addr in session.datagrams_to_send(self.now):
            self.sent.append((RtpPacket.parse(data), addr))
        self.rtcp.extend(session.rtcp_to_send(self.now))

    def advance(self, until: float) -> None:
        """Run every timer up to ``until`` (inclusive)."""
        while (deadline := self.session.get_timer()) is not None and deadline <= until:
            self.now = max(self.now, deadline)
            self.session.handle_timer(self.now)
            self.flush()
        self.now = until

    def receive(self, data: bytes, addr: tuple[str, int] = PEER) -> None:
        self.session.receive_datagram(data, addr, self.now)
        self.flush()

    def audio(self, *, real_only: bool = True) -> list[bytes]:
        return [
            e.payload
            for e in self.events
            if isinstance(e, AudioReceived) and not (real_only and e.concealed)
        ]

    def of_type(self, kind: type) -> list[RtpEvent]:
        return [e for e in self.events if isinstance(e, kind)]


class Pair:
    """Two sessions wired back to back with a zero-delay network (no timing ties)."""

    def __init__(self, *, rtcp_mux: bool = False) -> None:
        self.a = Driver(make(remote_addr=PEER, rtcp_mux=rtcp_mux))
        b_start = T0 + 0.005
        self.b = Driver(
            make(
                now=b_start,
                remote_addr=OURS,
                ssrc=PEER_SSRC,
                initial_seq=7,
                rtcp_mux=rtcp_mux,
            ),
            b_start,
        )
        self.addr = {id(self.a): OURS, id(self.b): PEER}

    def _deliver(self, src: Driver, dst: Driver, now: float) -> None:
        dst.now = now
        src_host, src_port = self.addr[id(src)]
        dst_host, dst_port = self.addr[id(dst)]
        for packet, addr in src.sent[src.delivered :]:
            assert addr == (dst_host, dst_port)
            dst.session.receive_datagram(packet.serialize(), (src_host, src_port), now)
        src.delivered = len(src.sent)
        for data, addr in src.rtcp[src.rtcp_delivered :]:
            if addr == (dst_host, dst_port + 1):
                dst.session.receive_rtcp(data, (src_host, src_port + 1), now)
            else:
                dst.session.receive_datagram(data, (src_host, src_port), now)
        src.rtcp_delivered = len(src.rtcp)
        dst.flush()

    def run(self, seconds: float) -> None:
        end = self.a.now + seconds
        while True:
            timers = [(d.session.get_timer() or end + 1, d) for d in (self.a, self.b)]
            deadline, driver = min(timers, key=lambda item: item[0])
            if deadline > end:
                break
            driver.now = deadline
            driver.session.handle_timer(deadline)
            driver.flush()
            other = self.b if driver is self.a else self.a
            self._deliver(driver, other, deadline)
            self._deliver(other, driver, deadline)
        self.a.now = self.b.now = end


# -- media flow -----------------------------------------------------------------------------


def test_audio_pushed_on_one_side_arrives_in_order_on_the_other() -> None:
    pair = Pair()
    for n in range(10):
        pair.a.session.playout.push(frame(n))
    pair.run(0.5)
    received = pair.b.audio()
    assert received[:10] == [frame(n) for n in range(10)]
    assert set(received[10:]) == {SILENCE}  # continuous stream: silence when queue is empty
    assert pair.b.session.stats().packets_in == len(pair.a.sent)
    assert pair.b.of_type(RemoteLatched) == [RemoteLatched(addr=OURS)]


def test_sent_packets_are_byte_for_byte_what_aiortc_serializes() -> None:
    driver = Driver(make(initial_seq=65535, initial_timestamp=2**32 - 160))
    driver.session.playout.push(frame(1))
    out: list[bytes] = []
    for tick in range(3):
        driver.session.handle_timer(T0 + 0.020 * tick)
        out += [data for data, _ in driver.session.datagrams_to_send(T0 + 0.020 * tick)]
    expected = [
        RtpPacket(payload_type=0, marker=marker, sequence_number=seq, timestamp=ts,
                  ssrc=0xAAAA, payload=payload).serialize()
        for marker, seq, ts, payload in [
            (1, 65535, 2**32 - 160, frame(1)), (0, 0, 0, SILENCE), (0, 1, 160, SILENCE)
        ]
    ]
    assert out == expected


@pytest.mark.parametrize(
    "extra",
    [
        {"csrc": [0x12345678, 0x9ABCDEF0]},
        {"extensions": HeaderExtensions(abs_send_time=0x123456)},
        {"padding_size": 4},
    ],
    ids=["csrc", "extension", "padding"],
)
def test_packets_with_csrc_extension_or_padding_carry_the_same_audio(
    extra: dict[str, object],
) -> None:
    driver = Driver(make())
    extensions = HeaderExtensionsMap()
    abs_send_time = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
    extensions.configure(RTCRtpParameters(
        headerExtensions=[RTCRtpHeaderExtensionParameters(id=3, uri=abs_send_time)]
    ))
    for seq in range(5):
        packet = RtpPacket(payload_type=0, marker=int(seq == 0), sequence_number=seq,
                           timestamp=seq * 160, ssrc=PEER_SSRC, payload=frame(seq))
        for name, value in extra.items():
            setattr(packet, name, value)
        data = packet.serialize(extensions)
        assert data[0] != 0x80  # not the plain fixed header
        driver.receive(data)
    driver.advance(T0 + 0.2)
    assert driver.audio()[:5] == [frame(seq) for seq in range(5)]
    stats = driver.session.stats()
    assert (stats.packets_in, stats.bytes_in, stats.lost) == (5, 5 * 160, 0)


def test_no_audio_events_before_the_remote_media_starts() -> None:
    driver = Driver(make())
    driver.advance(T0 + 1.0)
    assert driver.audio(real_only=False) == []
    driver.receive(rtp(0))
    driver.advance(T0 + 1.1)
    assert driver.audio()[0] == frame(0)


def test_outbound_stream_is_continuous_and_marks_talkspurts() -> None:
    driver = Driver(make(initial_seq=65534, initial_timestamp=2**32 - 320))
    driver.advance(T0 + 0.050)  # 3 ticks of silence
    driver.session.playout.push(frame(1))
    driver.session.playout.push(frame(2))
    driver.advance(T0 + 0.130)
    packets = [p for p, _ in driver.sent]
    assert [p.sequence_number for p in packets] == [65534, 65535, 0, 1, 2, 3, 4]
    assert [p.timestamp for p in packets] == [(2**32 - 320 + 160 * n) % 2**32 for n in range(7)]
    assert [p.payload for p in packets] == [SILENCE] * 3 + [frame(1), frame(2)] + [SILENCE] * 2
    assert [p.marker for p in packets] == [1, 0, 0, 1, 0, 0, 0]
    assert {(p.payload_type, p.ssrc) for p in packets} == {(0, 0xAAAA)}
    assert {addr for _, addr in driver.sent} == {PEER}


def test_long_stall_skips_ahead_but_timestamps_follow_real_time() -> None:
    driver = Driver(make())
    driver.advance(T0)
    driver.now = T0 + 1.0
    driver.session.handle_timer(driver.now)  # the loop was blocked for a second
    driver.flush()
    first, second = (p for p, _ in driver.sent)
    assert second.sequence_number == first.sequence_number + 1  # no burst of 50 packets
    assert second.timestamp - first.timestamp == 50 * 160


def test_echo_round_trip_stays_under_50_ms_on_a_clean_link() -> None:
    pair = Pair()
    ours = pair.a

    def echo(event: RtpEvent) -> None:
        if isinstance(event, AudioReceived) and not event.concealed:
            ours.session.playout.push(event.payload)

    ours.on_event = echo
    for n in range(50):
        pair.b.session.playout.push(frame(n))
    pair.run(1.5)
    sent_at = {p.payload: T0 + 0.005 + 0.020 * i for i, (p, _) in enumerate(pair.b.sent)}
    echoed = [p.payload for p, _ in ours.sent if p.payload != SILENCE]
    assert echoed == [frame(n) for n in range(50)]
    echo_time = {
        p.payload: T0 + 0.020 * i for i, (p, _) in enumerate(ours.sent) if p.payload != SILENCE
    }
    lags = [echo_time[frame(n)] - sent_at[frame(n)] for n in range(50)]
    assert max(lags) < 0.050
    stats = pair.a.session.stats()
    assert (stats.lost, stats.late, stats.dropped_foreign) == (0, 0, 0)


# -- strict source ----------------------------------------------------------------------------


def test_foreign_packets_are_dropped_counted_and_never_redirect_media() -> None:
    driver = Driver(make())
    for seq in range(5):
        driver.receive(rtp(seq), PEER)
    driver.advance(T0 + 0.2)
    driver.receive(rtp(6, payload=b"\xfb" * 160, ssrc=0x6666), STRANGER)
    driver.receive(rtp(5), PEER)
    driver.advance(T0 + 0.4)
    stats = driver.session.stats()
    assert stats.dropped_foreign == 1
    assert stats.packets_in == 6
    assert b"\xfb" * 160 not in driver.audio()
    assert driver.session.remote_addr == PEER
    assert {addr for _, addr in driver.sent} == {PEER}
    assert driver.session.remote_ssrc == PEER_SSRC


def test_symmetric_learning_latches_to_the_nat_address_after_the_window() -> None:
    driver = Driver(make(learning_packets=3))
    driver.receive(rtp(0), NAT)  # first source seen: accepted, replies go there
    assert driver.session.remote_addr == NAT
    driver.receive(rtp(1, payload=b"\xfc" * 160), STRANGER)  # a second source is refused
    driver.receive(rtp(1), NAT)
    assert driver.of_type(RemoteLatched) == []
    driver.receive(rtp(2), NAT)
    assert driver.of_type(RemoteLatched) == [RemoteLatched(addr=NAT)]
    driver.receive(rtp(3), PEER)  # even the SDP address is foreign once latched
    driver.advance(T0 + 0.3)
    assert driver.session.stats().dropped_foreign == 2
    assert driver.session.latched_addr == NAT
    assert {addr for _, addr in driver.sent} == {NAT}


def test_sdp_address_seen_during_learning_wins() -> None:
    driver = Driver(make(learning_packets=5))
    driver.receive(rtp(0), NAT)
    driver.receive(rtp(1), PEER)
    assert driver.of_type(RemoteLatched) == [RemoteLatched(addr=PEER)]
    driver.receive(rtp(2), NAT)
    assert driver.session.stats().dropped_foreign == 1
    assert driver.session.remote_addr == PEER


def test_non_symmetric_accepts_only_the_sdp_address() -> None:
    driver = Driver(make(symmetric=False))
    driver.receive(rtp(0), NAT)
    driver.receive(rtp(1), PEER)
    assert driver.session.stats().dropped_foreign == 1
    assert driver.session.stats().packets_in == 1
    assert driver.of_type(RemoteLatched) == []
    unknown = Driver(make(symmetric=False, remote_addr=None))
    unknown.receive(rtp(0), PEER)
    unknown.advance(T0 + 0.1)
    assert unknown.session.stats().dropped_foreign == 1
    assert unknown.sent == []  # nowhere to send


def test_set_remote_with_a_new_address_relearns() -> None:
    driver = Driver(make(learning_packets=1))
    driver.receive(rtp(0), NAT)
    driver.session.set_remote(PEER, driver.now)  # same SDP address (re-INVITE refresh)
    driver.receive(rtp(1), NAT)
    assert driver.session.latched_addr == NAT
    moved = ("198.51.100.99", 31000)
    driver.session.set_remote(moved, driver.now)
    assert driver.session.remote_addr == moved
    driver.receive(rtp(2), NAT)  # learning again: first source wins
    assert driver.of_type(RemoteLatched)[-1] == RemoteLatched(addr=NAT)
    assert driver.session.stats().dropped_foreign == 0


def test_ipv6_sdp_address_matches_the_kernel_spelling() -> None:
    driver = Driver(make(remote_addr=("2001:DB8:0::0001", 5000), learning_packets=5))
    driver.receive(rtp(0), ("2001:db8::1", 5000))
    assert driver.of_type(RemoteLatched) == [RemoteLatched(addr=("2001:db8::1", 5000))]


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"\x80",  # too short
        b"\x40\x00" + bytes(10),  # RTP version 1
        b"\x81\x00" + bytes(10),  # CSRC count without CSRCs
        b"\xa0\x00" + bytes(10) + b"\x00",  # padding length 0
        b"\x90\x00" + bytes(10) + b"\xbe\xde\x00\x05",  # truncated extension
        b"\x80\xc8\x00\x06" + bytes(4),  # RTCP SR cut short
        b"\x40\xc9\x00\x01" + bytes(4),  # RTCP version 1
    ],
)
def test_malformed_datagrams_are_counted_and_do_not_keep_the_call_alive(data: bytes) -> None:
    driver = Driver(make(inactivity_timeout=1.0))
    driver.receive(data, PEER)
    driver.advance(T0 + 1.0)
    stats = driver.session.stats()
    assert (stats.dropped_malformed, stats.packets_in) == (1, 0)
    assert driver.of_type(MediaTimeout) == [MediaTimeout(idle_s=1.0)]


def test_unnegotiated_payload_type_is_counted() -> None:
    driver = Driver(make())
    driver.receive(rtp(0, pt=18), PEER)
    driver.receive(rtp(1, pt=8), PEER)
    stats = driver.session.stats()
    assert (stats.dropped_payload_type, stats.packets_in) == (2, 0)
    assert driver.session.latched_addr is None  # bad packets never latch


def test_comfort_noise_keeps_the_session_alive_without_audio() -> None:
    driver = Driver(make(inactivity_timeout=1.0))
    for n in range(5):
        driver.now = T0 + 0.5 * n
        driver.receive(rtp(n, pt=13, payload=b"\x40"), PEER)
        driver.advance(driver.now + 0.4)
    assert driver.of_type(MediaTimeout) == []
    assert driver.audio(real_only=False) == []
    assert driver.session.stats().dropped_payload_type == 0


# -- inactivity and hold ----------------------------------------------------------------------


def test_inactivity_timeout_fires_once_per_idle_period() -> None:
    driver = Driver(make())
    driver.receive(rtp(0), PEER)
    driver.advance(T0 + 100)
    assert driver.of_type(MediaTimeout) == [MediaTimeout(idle_s=30.0)]
    driver.receive(rtp(1), PEER)  # media is back: the timeout re-arms
    driver.advance(T0 + 131)
    assert len(driver.of_type(MediaTimeout)) == 2


def test_inactivity_counts_from_creation_when_nothing_ever_arrives() -> None:
    driver = Driver(make(inactivity_timeout=10.0))
    driver.advance(T0 + 9.99)
    assert driver.of_type(MediaTimeout) == []
    driver.advance(T0 + 10.0)
    assert driver.of_type(MediaTimeout) == [MediaTimeout(idle_s=10.0)]


def test_hold_uses_the_longer_timeout_and_disabling_it_works() -> None:
    driver = Driver(make())
    driver.session.set_direction(send=False, recv=False)
    driver.session.set_inactivity_timeout(120.0)
    driver.advance(T0 + 119)
    assert driver.of_type(MediaTimeout) == []
    driver.advance(T0 + 121)
    assert len(driver.of_type(MediaTimeout)) == 1
    driver.session.set_inactivity_timeout(None)
    driver.advance(T0 + 1000)
    assert len(driver.of_type(MediaTimeout)) == 1


def test_recvonly_hold_stops_sending_drains_playout_and_marks_the_resume() -> None:
    driver = Driver(make())
    driver.advance(T0 + 0.02)
    driver.session.set_direction(send=False, recv=True)
    for n in range(5):
        driver.session.playout.push(frame(n))
    driver.receive(rtp(0), PEER)
    driver.advance(T0 + 0.2)
    assert len(driver.sent) == 2
    assert driver.session.playout.pending_ms == 0  # the model's audio went unheard
    assert driver.audio()[0] == frame(0)  # receiving continues
    driver.session.set_direction(send=True, recv=True)
    driver.advance(T0 + 0.24)
    resumed = driver.sent[2][0]
    assert resumed.marker == 1
    assert resumed.timestamp == driver.sent[1][0].timestamp + 10 * 160  # real time elapsed


def test_receiving_resumes_cleanly_after_sendonly() -> None:
    driver = Driver(make())
    driver.receive(rtp(0), PEER)
    driver.advance(T0 + 0.1)
    driver.session.set_direction(send=True, recv=False)  # we hold the caller: sendonly
    for seq in range(1, 30):
        driver.receive(rtp(seq), PEER)
    driver.advance(T0 + 0.7)
    heard = len(driver.audio(real_only=False))
    driver.session.set_direction(send=True, recv=True)
    driver.receive(rtp(500), PEER)
    driver.receive(rtp(501), PEER)
    driver.advance(T0 + 0.9)
    assert len(driver.audio(real_only=False)) > heard
    assert driver.audio()[1:] == [frame(500), frame(501)]  # nothing from the held period


def test_inactive_direction_stops_ticking_and_delivers_nothing() -> None:
    driver = Driver(make())
    driver.session.set_direction(send=False, recv=False)
    timer = driver.session.get_timer()
    assert timer is not None and timer > T0 + 1.0  # RTCP or inactivity only, no 20 ms tick
    driver.receive(rtp(0), PEER)
    driver.receive(rtp(1, pt=101, payload=b"\x05\x8a\x03\x20"), PEER)
    driver.advance(T0 + 3)
    assert driver.sent == []
    assert driver.audio(real_only=False) == []
    assert driver.of_type(DtmfReceived) == []
    assert driver.session.stats().packets_in == 2


# -- DTMF and SSRC ----------------------------------------------------------------------------


def test_dtmf_becomes_one_event() -> None:
    driver = Driver(make())
    driver.receive(rtp(0), PEER)
    for n, (flags, duration) in enumerate([(0x0A, 400), (0x0A, 800), (0x8A, 1200), (0x8A, 1200)]):
        payload = struct.pack("!BBH", 11, flags, duration)
        driver.receive(rtp(1 + n, ts=800, payload=payload, pt=101, marker=n == 0), PEER)
    driver.advance(T0 + 0.5)
    assert driver.of_type(DtmfReceived) == [DtmfReceived(digit="#", duration_ms=150)]
    assert driver.session.stats().dtmf_digits == 1


def test_dtmf_with_all_end_packets_lost_is_reported_by_the_tick() -> None:
    driver = Driver(make())
    driver.receive(rtp(0), PEER)
    driver.receive(rtp(1, ts=800, payload=b"\x03\x0a\x01\x90", pt=101, marker=True), PEER)
    driver.advance(T0 + 1.0)
    assert driver.of_type(DtmfReceived) == [DtmfReceived(digit="3", duration_ms=50)]


def test_ssrc_change_resynchronises_without_counting_loss() -> None:
    driver = Driver(make())
    for seq in range(10):
        driver.now = T0 + 0.005 + 0.02 * seq
        driver.advance(driver.now)
        driver.receive(rtp(seq), PEER)
    for n in range(10):
        driver.now = T0 + 0.205 + 0.02 * n
        driver.advance(driver.now)
        driver.receive(rtp(50000 + n, ts=9_999_999 + 160 * n, ssrc=0x2222), PEER)
    driver.advance(T0 + 0.6)
    assert driver.audio()[:10] == [frame(n) for n in range(10)]
    assert driver.audio()[10:] == [frame(50000 + n) for n in range(10)]
    assert driver.session.remote_ssrc == 0x2222
    assert driver.session.stats().lost == 0


# -- RTCP -------------------------------------------------------------------------------------


def _parse_rtcp(driver: Driver) -> list[list[object]]:
    return [list(RtcpPacket.parse(data)) for data, _ in driver.rtcp]


def test_sender_reports_go_to_the_rtcp_port_and_describe_both_directions() -> None:
    pair = Pair()
    pair.run(8.0)
    assert pair.a.rtcp and {addr for _, addr in pair.a.rtcp} == {(PEER[0], PEER[1] + 1)}
    sr = _parse_rtcp(pair.a)[0][0]
    assert isinstance(sr, RtcpSrPacket)
    assert sr.ssrc == 0xAAAA
    assert sr.sender_info.packet_count > 0
    (block,) = sr.reports
    assert block.ssrc == PEER_SSRC and block.packets_lost == 0
    assert block.highest_sequence > 7


def test_receiver_reports_while_on_hold_and_rtt_is_measured() -> None:
    pair = Pair()
    pair.run(1.0)
    pair.a.session.set_direction(send=False, recv=True)
    pair.run(30.0)
    kinds = {type(packets[0]) for packets in _parse_rtcp(pair.a)[-2:]}
    assert kinds == {RtcpRrPacket}
    rtt = pair.b.session.stats().rtt_ms  # b's SRs were echoed in a's RRs
    assert rtt is not None and 0 <= rtt < 1.0  # zero-delay network


def test_rtcp_mux_uses_the_rtp_port_both_ways() -> None:
    pair = Pair(rtcp_mux=True)
    pair.run(20.0)
    assert pair.a.rtcp and {addr for _, addr in pair.a.rtcp} == {PEER}
    stats = pair.b.session.stats()
    assert (stats.dropped_malformed, stats.dropped_payload_type) == (0, 0)
    assert pair.a.session.stats().rtt_ms is not None


def test_explicit_rtcp_address_is_used() -> None:
    driver = Driver(make(remote_rtcp_addr=("198.51.100.8", 40001)))
    driver.advance(T0 + 8)
    assert {addr for _, addr in driver.rtcp} == {("198.51.100.8", 40001)}


def test_rtcp_from_elsewhere_is_foreign_and_bye_is_noted() -> None:
    driver = Driver(make())
    driver.receive(rtp(0), PEER)
    bye = bytes(RtcpByePacket(sources=[PEER_SSRC]))
    driver.session.receive_rtcp(bye, STRANGER, driver.now)
    assert driver.session.stats().dropped_foreign == 1
    assert not driver.session.remote_bye
    driver.session.receive_rtcp(bye, (PEER[0], 9999), driver.now)
    assert driver.session.remote_bye
    driver.session.receive_rtcp(b"\x80\xc8\x00\x09garbage", (PEER[0], 9999), driver.now)
    assert driver.session.stats().dropped_malformed == 1


def test_close_sends_bye_and_stops_everything() -> None:
    driver = Driver(make())
    driver.receive(rtp(0), PEER)
    driver.advance(T0 + 0.1)
    ((data, addr),) = driver.session.close(driver.now)
    assert addr == (PEER[0], PEER[1] + 1)
    packets = RtcpPacket.parse(data)
    assert isinstance(packets[0], RtcpSrPacket)
    assert isinstance(packets[-1], RtcpByePacket) and packets[-1].sources == [0xAAAA]
    assert driver.session.closed and driver.session.get_timer() is None
    driver.receive(rtp(1), PEER)
    driver.session.handle_timer(T0 + 5)
    assert driver.session.datagrams_to_send(T0 + 5) == []
    assert driver.session.close(T0 + 5) == []
    assert driver.session.stats().packets_in == 1


def test_events_are_frozen_keyword_only_dataclasses() -> None:
    event = AudioReceived(payload=b"x", concealed=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.concealed = True  # type: ignore[misc]
    with pytest.raises(TypeError):
        MediaTimeout(1.0)  # type: ignore[call-arg]
    assert RemoteLatched(addr=PEER) == RemoteLatched(addr=PEER)


def test_timers_due_within_the_early_tolerance_run_at_once() -> None:
    # An event loop may wake the timer slightly early; the RTCP report and the inactivity
    # timeout must still run then, not leave the same deadline to be re-armed in a spin.
    session = RtpSession(
        payload_type=0, dtmf_payload_type=None, remote_addr=("127.0.0.1", 40000),
        ssrc=1, initial_seq=0, initial_timestamp=0, now=0.0, inactivity_timeout=1.0,
    )
    session.set_direction(send=False, recv=False)
    deadline = session.get_timer()
    assert deadline is not None
    session.handle_timer(deadline - 0.001)
    assert session.get_timer() != deadline
    events = []
    while (event := session.next_event()) is not None:
        events.append(event)
    assert [type(e).__name__ for e in events] == ["MediaTimeout"]


def test_the_send_grid_starts_at_first_tick_when_one_is_given() -> None:
    driver = Driver(make(first_tick=T0 + 0.013))
    assert driver.session.get_timer() == pytest.approx(T0 + 0.013)
    driver.advance(T0 + 0.010)
    assert driver.sent == []
    driver.advance(T0 + 0.013 + 0.020 * 4)
    assert len(driver.sent) == 5
    stamps = [packet.timestamp for packet, _ in driver.sent]
    assert stamps == [1000 + 160 * k for k in range(5)]
