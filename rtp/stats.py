"""RFC 3550 reception statistics and RTCP report building (sans-I/O).

:class:`ReceiverStats` follows the RFC's appendix algorithms for one source: A.1 extended
sequence numbers with wrap-around and restart detection, A.3 cumulative loss and the per-report
fraction lost, A.8 interarrival jitter.  The first packet is accepted without the A.1 probation
because the session already vets the source (strict source latching).

The wire format is aiortc's (``aiortc.rtp``): this module only fills its dataclasses.
"""

from __future__ import annotations

from typing import Final

from aiortc.rtp import (
    RtcpByePacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    clamp_packets_lost,
)

__all__ = [
    "NTP_EPOCH_OFFSET",
    "ReceiverStats",
    "build_report",
    "middle_ntp",
    "ntp_timestamp",
    "round_trip_time",
]

NTP_EPOCH_OFFSET: Final = 2_208_988_800
"""Seconds from the NTP epoch (1900) to the Unix epoch (1970)."""
SDES_CNAME: Final = 1
RTP_SEQ_MOD: Final = 1 << 16
MAX_DROPOUT: Final = 3000
MAX_MISORDER: Final = 100


def ntp_timestamp(unix_time: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point) for a Unix time in seconds."""
    return int((unix_time + NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def middle_ntp(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp, as carried in LSR."""
    return (ntp >> 16) & 0xFFFFFFFF


def round_trip_time(report: RtcpReceiverInfo, arrival_ntp: int) -> float | None:
    """RTT in seconds from a report block about our stream (RFC 3550 6.4.1), if it echoes an SR."""
    if not report.lsr:
        return None
    rtt = (middle_ntp(arrival_ntp) - report.lsr - report.dlsr) & 0xFFFFFFFF
    if rtt > 0x7FFFFFFF:  # negative: clock glitch or bogus report
        return None
    return rtt / 65536


class ReceiverStats:
    """Reception statistics for one RTP source (RFC 3550 appendix A.1, A.3, A.8)."""

    __slots__ = (
        "_bad_seq",
        "_expected_prior",
        "_jitter",
        "_last_sr",
        "_last_sr_at",
        "_received_prior",
        "_transit",
        "base_seq",
        "clock_rate",
        "cycles",
        "max_seq",
        "received",
        "started",
    )

    def __init__(self, clock_rate: int = 8000) -> None:
        self.clock_rate = clock_rate
        self.started = False
        self.max_seq = 0
        self.cycles = 0
        self.base_seq = 0
        self.received = 0
        self._bad_seq = RTP_SEQ_MOD + 1  # never equal to a 16-bit value
        self._expected_prior = 0
        self._received_prior = 0
        self._transit: float | None = None
        self._jitter = 0.0
        self._last_sr = 0
        self._last_sr_at = 0.0

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self._bad_seq = RTP_SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._transit = None

    def update(self, seq: int, timestamp: int, arrival: float) -> bool:
        """Account one packet arriving at ``arrival`` (seconds); False when it was not counted.

        A sequence jump beyond MAX_DROPOUT/MAX_MISORDER is counted only once the next packet
        confirms it, at which point the statistics restart (the sender restarted).
        """
        if not self.started:
            self.started = True
            self._init_seq(seq)
        else:
            udelta = (seq - self.max_seq) & 0xFFFF
            if udelta < MAX_DROPOUT:
                if seq < self.max_seq:
                    self.cycles += RTP_SEQ_MOD
                self.max_seq = seq
            elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
                if seq != self._bad_seq:
                    self._bad_seq = (seq + 1) & 0xFFFF
                    return False
                self._init_seq(seq)
            # else: duplicate or reordered packet, counted below
        self.received += 1
        transit = arrival * self.clock_rate - timestamp
        if self._transit is not None:
            delta = abs(transit - self._transit)
            self._jitter += (delta - self._jitter) / 16
        self._transit = transit
        return True

    @property
    def extended_max_seq(self) -> int:
        """Highest sequence number received, extended with the wrap-around count."""
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        """Packets expected from the first to the highest sequence number."""
        return self.extended_max_seq - self.base_seq + 1 if self.started else 0

    @property
    def lost(self) -> int:
        """Cumulative packets lost (negative when duplicates outnumber losses)."""
        return clamp_packets_lost(self.expected - self.received) if self.started else 0

    @property
    def jitter(self) -> int:
        """Interarrival jitter in timestamp units, as reported in RTCP."""
        return int(self._jitter)

    @property
    def jitter_ms(self) -> float:
        """Interarrival jitter in milliseconds."""
        return self._jitter * 1000 / self.clock_rate

    def fraction_lost(self) -> int:
        """Fraction lost since the previous call, in 1/256 (A.3); starts a new interval."""
        expected = self.expected
        expected_interval = expected - self._expected_prior
        self._expected_prior = expected
        received_interval = self.received - self._received_prior
        self._received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            return 0
        return min(255, (lost_interval << 8) // expected_interval)

    def sender_report_received(self, ntp: int, now: float) -> None:
        """Remember the source's last SR so that our reports can echo it (LSR/DLSR)."""
        self._last_sr = middle_ntp(ntp)
        self._last_sr_at = now

    def report_block(self, ssrc: int, now: float) -> RtcpReceiverInfo:
        """A reception report block about source ``ssrc``; starts a new loss interval."""
        dlsr = int((now - self._last_sr_at) * 65536) & 0xFFFFFFFF if self._last_sr else 0
        return RtcpReceiverInfo(
            ssrc=ssrc,
            fraction_lost=self.fraction_lost(),
            packets_lost=self.lost,
            highest_sequence=self.extended_max_seq & 0xFFFFFFFF,
            jitter=self.jitter,
            lsr=self._last_sr,
            dlsr=dlsr,
        )


def build_report(
    *,
    ssrc: int,
    reports: list[RtcpReceiverInfo],
    sender_info: RtcpSenderInfo | None = None,
    cname: str | None = None,
    bye: bool = False,
) -> bytes:
    """A compound RTCP packet: SR (with ``sender_info``) or RR, then SDES CNAME, then BYE."""
    first: RtcpSrPacket | RtcpRrPacket
    if sender_info is not None:
        first = RtcpSrPacket(ssrc=ssrc, sender_info=sender_info, reports=reports)
    else:
        first = RtcpRrPacket(ssrc=ssrc, reports=reports)
    data = bytes(first)
    if cname is not None:
        chunk = RtcpSourceInfo(ssrc=ssrc, items=[(SDES_CNAME, cname.encode()[:255])])
        data += bytes(RtcpSdesPacket(chunks=[chunk]))
    if bye:
        data += bytes(RtcpByePacket(sources=[ssrc]))
    return data
