"""RFC 3550 reception statistics and RTCP packets (checked through aiortc's parser)."""

from __future__ import annotations

import pytest
from aiortc.rtp import (
    RtcpByePacket,
    RtcpPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
)

from rtp.stats import (
    NTP_EPOCH_OFFSET,
    ReceiverStats,
    build_report,
    middle_ntp,
    ntp_timestamp,
    round_trip_time,
)


def feed(stats: ReceiverStats, seqs: list[int], start: float = 0.0) -> None:
    for n, seq in enumerate(seqs):
        stats.update(seq, seq * 160, start + n * 0.02)


def test_sequence_wrap_extends_the_highest_sequence_number() -> None:
    stats = ReceiverStats()
    feed(stats, [65534, 65535, 0, 1])
    assert stats.cycles == 65536
    assert stats.extended_max_seq == 65537
    assert (stats.expected, stats.received, stats.lost) == (4, 4, 0)


def test_cumulative_loss_and_fraction_lost_per_interval() -> None:
    stats = ReceiverStats()
    feed(stats, [0, 1, 2, 4, 5, 6, 8, 9])  # 3 and 7 lost
    assert (stats.expected, stats.received, stats.lost) == (10, 8, 2)
    assert stats.fraction_lost() == (2 << 8) // 10
    feed(stats, [10, 11, 12], start=1.0)
    assert stats.fraction_lost() == 0  # nothing lost since the last report
    assert stats.lost == 2


def test_duplicates_never_give_negative_fraction() -> None:
    stats = ReceiverStats()
    feed(stats, [0, 1, 1, 2, 2])
    assert stats.lost == -2
    assert stats.fraction_lost() == 0


def test_restart_is_accepted_after_two_sequential_packets() -> None:
    stats = ReceiverStats()
    feed(stats, [100, 101, 102])
    assert stats.update(30000, 0, 1.0) is False  # could be a stray: not counted
    assert stats.received == 3
    assert stats.update(30001, 160, 1.02) is True  # confirmed: statistics restart
    assert (stats.base_seq, stats.received, stats.expected) == (30001, 1, 1)


def test_interarrival_jitter_matches_hand_computed_rfc3550_example() -> None:
    stats = ReceiverStats(clock_rate=8000)
    # (timestamp, arrival s): transit = arrival*8000 - ts = 0, 0, 40, 0
    for seq, (ts, arrival) in enumerate([(0, 0.0), (160, 0.020), (320, 0.045), (480, 0.060)]):
        stats.update(seq, ts, arrival)
    # D = 0, 40, 40 -> J = 0; 0 + (40-0)/16 = 2.5; 2.5 + (40-2.5)/16 = 4.84375
    assert stats.jitter == 4
    assert stats.jitter_ms == pytest.approx(4.84375 / 8)


def test_ntp_helpers() -> None:
    assert ntp_timestamp(0.0) == NTP_EPOCH_OFFSET << 32
    assert ntp_timestamp(1.5) == ((NTP_EPOCH_OFFSET + 1) << 32) | (1 << 31)
    assert middle_ntp(0x1122334455667788) == 0x33445566


def test_report_block_echoes_the_last_sender_report() -> None:
    stats = ReceiverStats()
    feed(stats, [10, 11, 13])
    sr_ntp = ntp_timestamp(1_700_000_000.25)
    stats.sender_report_received(sr_ntp, now=50.0)
    block = stats.report_block(0xCAFE, now=50.5)
    assert block.ssrc == 0xCAFE
    assert (block.lsr, block.dlsr) == (middle_ntp(sr_ntp), 32768)  # 0.5 s in 1/65536 s
    assert (block.packets_lost, block.highest_sequence, block.fraction_lost) == (1, 13, 64)


def test_report_block_without_sender_report_has_zero_lsr() -> None:
    stats = ReceiverStats()
    feed(stats, [1])
    block = stats.report_block(1, now=3.0)
    assert (block.lsr, block.dlsr) == (0, 0)


def test_round_trip_time_from_a_report_about_us() -> None:
    sent = ntp_timestamp(1000.0)
    report = RtcpReceiverInfo(
        ssrc=1, fraction_lost=0, packets_lost=0, highest_sequence=0, jitter=0,
        lsr=middle_ntp(sent), dlsr=int(0.2 * 65536),
    )  # fmt: skip
    rtt = round_trip_time(report, ntp_timestamp(1000.3))
    assert rtt == pytest.approx(0.1, abs=1e-4)
    report.lsr = 0
    assert round_trip_time(report, ntp_timestamp(1000.3)) is None
    report.lsr, report.dlsr = middle_ntp(sent), 5 * 65536  # would be negative
    assert round_trip_time(report, ntp_timestamp(1000.3)) is None


def test_sender_report_round_trip_through_aiortc() -> None:
    stats = ReceiverStats()
    feed(stats, [0, 1, 2])
    info = RtcpSenderInfo(ntp_timestamp=ntp_timestamp(5.0), rtp_timestamp=1234,
                          packet_count=50, octet_count=8000)  # fmt: skip
    block = stats.report_block(0xBEEF, now=1.0)
    data = build_report(ssrc=0x1234, reports=[block], sender_info=info, cname="a@b")
    sr, sdes = RtcpPacket.parse(data)
    assert isinstance(sr, RtcpSrPacket) and isinstance(sdes, RtcpSdesPacket)
    assert (sr.ssrc, sr.sender_info, sr.reports) == (0x1234, info, [block])
    assert sdes.chunks[0].ssrc == 0x1234
    assert sdes.chunks[0].items == [(1, b"a@b")]


def test_receiver_report_and_bye_round_trip_through_aiortc() -> None:
    data = build_report(ssrc=7, reports=[], cname=None, bye=True)
    rr, bye = RtcpPacket.parse(data)
    assert isinstance(rr, RtcpRrPacket) and rr.ssrc == 7 and rr.reports == []
    assert isinstance(bye, RtcpByePacket) and bye.sources == [7]
