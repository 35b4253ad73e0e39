"""One call's RTP/RTCP media session, sans-I/O.

``RtpSession`` takes datagrams and ``now`` and returns datagrams, events and its next deadline,
like aioquic's ``QuicConnection``.  It owns the inbound path (strict source check, RFC 3550
statistics, jitter buffer, RFC 4733 DTMF) and the outbound path (a continuous 20 ms PCMU/PCMA
stream paced on an absolute grid from :class:`~rtp.pacer.PlayoutQueue`), plus RTCP.

One timer (``get_timer``/``handle_timer``) covers three deadlines: the next 20 ms tick, the
next RTCP report, and the media inactivity timeout.  On each tick the session pops one inbound
frame (an :class:`AudioReceived` event, once media has started) and marks one outbound frame
due.  The outbound packet is built in ``datagrams_to_send()``, so a shell that delivers events
before sending lets an echo push the frame it just received into the very same tick.

Strict source ("no RTP bleed"): media is accepted from the SDP address, or — with
``symmetric=True`` — from the first source seen (the NAT-mapped address) which is latched after
``learning_packets`` packets unless the SDP address shows up first.  Once latched, packets from
anywhere else are dropped and counted and never change where we send.  Only ``set_remote()``
with a new address starts learning again.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import struct
from collections import deque
from dataclasses import dataclass
from typing import Final

from aiortc.rtp import (
    RtcpByePacket,
    RtcpPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    RtpPacket,
)

from . import g711
from .dtmf import DtmfReceiver
from .jitter import JitterBuffer
from .pacer import EARLY_TOLERANCE, Pacer, PlayoutQueue
from .stats import ReceiverStats, build_report, ntp_timestamp, round_trip_time

__all__ = [
    "PT_COMFORT_NOISE",
    "AudioReceived",
    "DtmfReceived",
    "MediaTimeout",
    "RemoteLatched",
    "RtpEvent",
    "RtpSession",
    "RtpStats",
]

logger = logging.getLogger(__name__)

Address = tuple[str, int]
Datagram = tuple[bytes, Address]

PT_COMFORT_NOISE: Final = 13
"""RFC 3389 comfort noise: keeps the session alive but carries no audio we play."""
RTCP_INTERVAL: Final = 5.0
"""Nominal seconds between RTCP reports (randomised to 0.5-1.5x, RFC 3550 6.2)."""
RTP_HEADER_BYTES: Final = 12
"""The fixed RTP header (RFC 3550 5.1)."""
PLAIN_RTP_FIRST_BYTE: Final = 0x80
"""First header byte of version 2 without padding, extension or CSRC: every packet we send
and nearly every one we receive."""
_RTP_HEADER: Final = struct.Struct("!BBHII")


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioReceived:
    """One inbound 20 ms frame, emitted every tick once the remote's media has started."""

    payload: bytes
    """Codec payload in the negotiated codec; real frames are forwarded untouched."""
    concealed: bool
    """True when the packet was missing and the payload is concealment (fade or silence)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DtmfReceived:
    """A completed RFC 4733 key press."""

    digit: str
    """The key: one of ``0-9 * # A-D``."""
    duration_ms: int
    """Duration reported by the sender, in milliseconds."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaTimeout:
    """No valid RTP arrived for the inactivity timeout; reported once per idle period."""

    idle_s: float
    """Seconds since the last valid inbound RTP packet (or since start / set_remote)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteLatched:
    """The media source was learned; from now on only it is accepted and we send to it."""

    addr: Address
    """The latched remote (host, port)."""


RtpEvent = AudioReceived | DtmfReceived | MediaTimeout | RemoteLatched


@dataclass(frozen=True, slots=True, kw_only=True)
class RtpStats:
    """Snapshot of a session's counters."""

    packets_in: int
    """Valid RTP packets accepted from the remote (audio, DTMF, comfort noise)."""
    packets_out: int
    """RTP packets sent."""
    bytes_in: int
    """Payload octets of the accepted packets."""
    bytes_out: int
    """Payload octets sent."""
    lost: int
    """Packets lost in the network, RFC 3550 cumulative count (summed across SSRC changes)."""
    late: int
    """Packets that arrived after their playout slot and were dropped."""
    reordered: int
    """Packets that arrived out of order but in time."""
    jitter_ms: float
    """RFC 3550 interarrival jitter of the current source, in milliseconds."""
    dropped_foreign: int
    """RTP/RTCP datagrams dropped because they came from a source other than the remote."""
    dropped_malformed: int
    """Datagrams that did not parse as RTP/RTCP."""
    dropped_payload_type: int
    """RTP packets with a payload type that was not negotiated."""
    dtmf_digits: int
    """DTMF digits received."""
    concealed: int
    """Concealment frames played because a packet was missing."""
    duplicates: int
    """Duplicate packets dropped."""
    rtt_ms: float | None
    """Round-trip time from the last RTCP report about our stream, if any."""


def _canonical(addr: Address | None) -> Address | None:
    """Normalise an IP literal the way the kernel reports sources (``2001:DB8::01`` etc.)."""
    if addr is None:
        return None
    host, port = addr
    with contextlib.suppress(ValueError):  # a host name is kept as given
        host = ipaddress.ip_address(host).compressed
    return (host, port)


class RtpSession:
    """Sans-I/O RTP/RTCP session for one call; see the module docstring."""

    def __init__(
        self,
        *,
        payload_type: int,
        dtmf_payload_type: int | None,
        remote_addr: Address | None,
        ssrc: int,
        initial_seq: int,
        initial_timestamp: int,
        now: float,
        ptime: float = 0.020,
        inactivity_timeout: float | None = 30.0,
        learning_packets: int = 5,
        symmetric: bool = True,
        clock_rate: int = 8000,
        remote_rtcp_addr: Address | None = None,
        rtcp_mux: bool = False,
        cname: str | None = None,
        jitter_buffer: JitterBuffer | None = None,
        wallclock_offset: float = 0.0,
        first_tick: float | None = None,
    ) -> None:
        self.payload_type = payload_type
        self.dtmf_payload_type = dtmf_payload_type
        self.ssrc = ssrc & 0xFFFFFFFF
        self.clock_rate = clock_rate
        self.frame_samples = round(clock_rate * ptime)
        self.rtcp_mux = rtcp_mux
        self.cname = cname if cname is not None else f"{self.ssrc:08x}@sipagent"
        self.wallclock_offset = wallclock_offset
        """Unix time minus ``now``; the endpoint sets it so SR timestamps are wall-clock."""
        self.playout = PlayoutQueue(frame_ms=round(ptime * 1000))
        """Outbound frames: the model (or echo) pushes here, one is sent per tick."""
        if jitter_buffer is None:
            jitter_buffer = JitterBuffer(
                clock_rate=clock_rate, frame_samples=self.frame_samples, payload_type=payload_type
            )
        self.jitter = jitter_buffer
        """Inbound jitter buffer (its counters give more detail than :meth:`stats`)."""
        self._dtmf = DtmfReceiver(clock_rate)
        self._receiver = ReceiverStats(clock_rate)
        # The 20 ms grid starts at ``first_tick`` (a phase chosen by TickPhases), else now.
        self._pacer = Pacer(now if first_tick is None else first_tick, ptime)
        self._events: deque[RtpEvent] = deque()
        self._rtcp_out: list[Datagram] = []
        self._pending_sends: list[int] = []
        self._closed = False
        self.remote_bye = False
        """True once the remote sent an RTCP BYE."""

        self._symmetric = symmetric
        self._learning_packets = max(1, learning_packets)
        self._remote = _canonical(remote_addr)
        self._remote_rtcp = _canonical(remote_rtcp_addr)
        self._dest = self._remote
        self._latched = self._remote if not symmetric else None
        self._candidate: Address | None = None
        self._candidate_packets = 0
        self._learned_rtcp: Address | None = None
        self._remote_ssrc: int | None = None

        self._send = True
        self._recv = True
        self._inactivity_timeout = inactivity_timeout
        self._last_rx = now
        self._timed_out = False

        self._initial_timestamp = initial_timestamp & 0xFFFFFFFF
        self._seq = initial_seq & 0xFFFF
        self._marker_next = True
        self._silence = (
            g711.silence(payload_type, self.frame_samples)
            if payload_type in (g711.PT_PCMU, g711.PT_PCMA)
            else b""
        )
        self._rng = self.ssrc or 1
        self._next_rtcp = now + self._rtcp_interval()
        self._sent_since_report = False
        self._rtt: float | None = None

        self.packets_in = 0
        self.packets_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.dropped_foreign = 0
        self.dropped_malformed = 0
        self.dropped_payload_type = 0
        self.dtmf_digits = 0
        self._lost_prior = 0

    # -- properties ---------------------------------------------------------------------------

    @property
    def remote_addr(self) -> Address | None:
        """Where RTP is sent (the latched source, else the SDP address)."""
        return self._dest

    @property
    def latched_addr(self) -> Address | None:
        """The learned media source, once latched."""
        return self._latched

    @property
    def remote_ssrc(self) -> int | None:
        """SSRC of the accepted inbound stream."""
        return self._remote_ssrc

    @property
    def rtcp_remote_addr(self) -> Address | None:
        """Where RTCP is sent."""
        if self.rtcp_mux:
            return self._dest
        if self._remote_rtcp is not None:
            return self._remote_rtcp
        if self._learned_rtcp is not None:
            return self._learned_rtcp
        if self._dest is None:
            return None
        return (self._dest[0], self._dest[1] + 1)

    @property
    def closed(self) -> bool:
        """True after ``close()``."""
        return self._closed

    # -- control ------------------------------------------------------------------------------

    def set_remote(
        self, addr: Address | None, now: float, *, rtcp_addr: Address | None = None
    ) -> None:
        """Apply a new SDP address (re-INVITE); a changed address restarts source learning."""
        addr = _canonical(addr)
        self._remote_rtcp = _canonical(rtcp_addr)
        if addr == self._remote and self._latched is not None:
            return
        logger.debug("remote media address now %s", addr)
        self._remote = self._dest = addr
        self._latched = addr if not self._symmetric else None
        self._candidate = None
        self._candidate_packets = 0
        self._learned_rtcp = None
        self._last_rx = now
        self._timed_out = False

    def set_direction(self, send: bool, recv: bool) -> None:
        """Apply the negotiated direction (hold: recvonly/inactive); RTCP always continues."""
        if send and not self._send:
            self._marker_next = True
        if recv and not self._recv:
            self.jitter.reset()
            self._dtmf.reset()
        self._send = send
        self._recv = recv

    def set_inactivity_timeout(self, seconds: float | None) -> None:
        """Change (None disables) the inactivity timeout, e.g. longer while on hold; re-arms it."""
        self._inactivity_timeout = seconds
        self._timed_out = False

    # -- input --------------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Handle a datagram from the RTP port: RTP, or RTCP when multiplexed (RFC 5761)."""
        if self._closed:
            return
        if len(data) >= 2 and 192 <= data[1] <= 223:
            self._receive_rtcp(data, addr, now)
            return
        if len(data) >= RTP_HEADER_BYTES and data[0] == PLAIN_RTP_FIRST_BYTE:
            # Nearly every packet: the fixed header only, read without building an RtpPacket.
            _, m_pt, seq, timestamp, ssrc = _RTP_HEADER.unpack_from(data)
            marker = m_pt > 0x7F
            pt = m_pt & 0x7F
            payload = data[RTP_HEADER_BYTES:]
        else:
            try:
                packet = RtpPacket.parse(data)
            except (ValueError, struct.error):
                self.dropped_malformed += 1
                return
            seq, timestamp, ssrc = packet.sequence_number, packet.timestamp, packet.ssrc
            marker, pt, payload = bool(packet.marker), packet.payload_type, packet.payload
        latched = self._latched
        if latched is not None and addr != latched:
            self.dropped_foreign += 1
            return
        if pt != self.payload_type and pt != self.dtmf_payload_type and pt != PT_COMFORT_NOISE:
            self.dropped_payload_type += 1
            return
        if latched is None and not self._learn(addr):
            self.dropped_foreign += 1
            return
        if ssrc != self._remote_ssrc:
            self._new_source(ssrc)
        if not self._receiver.update(seq, timestamp, now):
            return  # sequence jump awaiting confirmation
        self.packets_in += 1
        self.bytes_in += len(payload)
        self._last_rx = now
        self._timed_out = False
        if not self._recv:
            return
        if pt == self.payload_type:
            self.jitter.put(seq, timestamp, payload, marker, now)
        elif pt == self.dtmf_payload_type:
            digit = self._dtmf.feed(payload, timestamp, marker, now)
            if digit is not None:
                self._emit_digit(digit.digit, digit.duration_ms)

    def receive_rtcp(self, data: bytes, addr: Address, now: float) -> None:
        """Handle a datagram from the RTCP port."""
        if not self._closed:
            self._receive_rtcp(data, addr, now)

    def _learn(self, addr: Address) -> bool:
        """Decide whether a valid packet from ``addr`` is accepted while nothing is latched."""
        if not self._symmetric:
            return False  # strict SDP address, and it is not known (yet)
        if addr == self._remote:
            self._latch(addr)
        elif self._candidate is None:
            self._candidate = self._dest = addr
            self._candidate_packets = 1
            if self._candidate_packets >= self._learning_packets:
                self._latch(addr)
        elif addr == self._candidate:
            self._candidate_packets += 1
            if self._candidate_packets >= self._learning_packets:
                self._latch(addr)
        else:
            return False
        return True

    def _latch(self, addr: Address) -> None:
        logger.debug("latched media source %s", addr)
        self._latched = self._dest = addr
        self._events.append(RemoteLatched(addr=addr))

    def _new_source(self, ssrc: int) -> None:
        if self._remote_ssrc is not None:
            logger.debug("remote SSRC changed %08x -> %08x", self._remote_ssrc, ssrc)
            self._lost_prior += self._receiver.lost
            self._receiver = ReceiverStats(self.clock_rate)
            self.jitter.reset()
            self._dtmf.reset()
        self._remote_ssrc = ssrc

    def _emit_digit(self, digit: str, duration_ms: int) -> None:
        self.dtmf_digits += 1
        self._events.append(DtmfReceived(digit=digit, duration_ms=duration_ms))

    def _rtcp_source_ok(self, addr: Address) -> bool:
        reference = self._latched or self._candidate or self._remote
        return reference is not None and addr[0] == reference[0]

    def _receive_rtcp(self, data: bytes, addr: Address, now: float) -> None:
        if not self._rtcp_source_ok(addr):
            self.dropped_foreign += 1
            return
        try:
            packets = RtcpPacket.parse(data)
        except (ValueError, struct.error):
            self.dropped_malformed += 1
            return
        if (
            self._symmetric
            and not self.rtcp_mux
            and self._remote_rtcp is None
            and self._learned_rtcp is None
        ):
            self._learned_rtcp = addr
        for packet in packets:
            if isinstance(packet, RtcpSrPacket):
                if packet.ssrc == self._remote_ssrc:
                    self._receiver.sender_report_received(packet.sender_info.ntp_timestamp, now)
                self._note_reports(packet.reports, now)
            elif isinstance(packet, RtcpRrPacket):
                self._note_reports(packet.reports, now)
            elif isinstance(packet, RtcpByePacket):
                logger.debug("remote sent RTCP BYE")
                self.remote_bye = True

    def _note_reports(self, reports: list[RtcpReceiverInfo], now: float) -> None:
        for report in reports:
            if report.ssrc == self.ssrc:
                rtt = round_trip_time(report, self._ntp(now))
                if rtt is not None:
                    self._rtt = rtt

    # -- timer --------------------------------------------------------------------------------

    @property
    def tick_start(self) -> float:
        """Where the 20 ms grid of ticks starts (every tick is ``tick_start + n * ptime``)."""
        return self._pacer.start

    def get_timer(self) -> float | None:
        """The next absolute time ``handle_timer`` must run (None once closed)."""
        if self._closed:
            return None
        deadline = self._next_rtcp
        if self._send or self._recv:
            tick = self._pacer.next_deadline()
            if tick < deadline:
                deadline = tick
        if self._inactivity_timeout is not None and not self._timed_out:
            idle_at = self._last_rx + self._inactivity_timeout
            if idle_at < deadline:
                deadline = idle_at
        return deadline

    def handle_timer(self, now: float) -> None:
        """Run whatever is due: 20 ms ticks, RTCP report, inactivity timeout."""
        if self._closed:
            return
        # Event loops fire timers up to ~1.5 ms early (uvloop rounds to whole ms): what is due
        # within the tolerance runs now, or the same deadline would be re-armed in a spin.
        late_enough = now + EARLY_TOLERANCE
        timeout = self._inactivity_timeout
        if timeout is not None and not self._timed_out and late_enough - self._last_rx >= timeout:
            self._timed_out = True
            idle = now - self._last_rx
            logger.debug("no media for %.1f s", idle)
            self._events.append(MediaTimeout(idle_s=idle))
        if self._send or self._recv:
            due = self._pacer.due(now)
            if due:
                if self._recv:
                    self._tick_inbound(due, now)
                last = self._pacer.index - 1
                self._pending_sends.extend(range(last - due + 1, last + 1))
        if late_enough >= self._next_rtcp:
            self._queue_report(now, bye=False)
            self._next_rtcp = max(self._next_rtcp + self._rtcp_interval(), now)

    def _tick_inbound(self, due: int, now: float) -> None:
        jitter = self.jitter
        events = self._events
        for _ in range(due):
            frame = jitter.pop(now)
            if frame is not None:
                events.append(AudioReceived(payload=frame.payload, concealed=frame.concealed))
        digit = self._dtmf.poll(now)
        if digit is not None:
            self._emit_digit(digit.digit, digit.duration_ms)

    def _rtcp_interval(self) -> float:
        self._rng = (self._rng * 1103515245 + 12345) & 0x7FFFFFFF
        return RTCP_INTERVAL * (0.5 + self._rng / 0x7FFFFFFF)

    # -- output -------------------------------------------------------------------------------

    def next_event(self) -> RtpEvent | None:
        """Pop the next event, or None."""
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self, now: float) -> list[Datagram]:
        """RTP packets for the ticks that came due; pops one playout frame per tick."""
        pending = self._pending_sends
        if not pending:
            return []
        playout = self.playout
        dest = self._dest
        if dest is None or not self._send:
            # On hold or nowhere to send: time passes, the queued audio goes unheard.
            for _ in pending:
                playout.pop()
            pending.clear()
            return []
        out: list[Datagram] = []
        pack = _RTP_HEADER.pack
        for index in pending:
            payload = playout.pop()
            marker = playout.marker or self._marker_next
            self._marker_next = False
            if payload is None:
                payload = self._silence
            # The fixed header packed directly: what RtpPacket.serialize() writes, minus the
            # object and its extension handling (we send no CSRC, extension or padding).
            header = pack(
                PLAIN_RTP_FIRST_BYTE,
                self.payload_type | 0x80 if marker else self.payload_type,
                self._seq,
                (self._initial_timestamp + index * self.frame_samples) & 0xFFFFFFFF,
                self.ssrc,
            )
            self._seq = (self._seq + 1) & 0xFFFF
            self.packets_out += 1
            self.bytes_out += len(payload)
            out.append((header + payload, dest))
        pending.clear()
        if out:
            self._sent_since_report = True
        return out

    def rtcp_to_send(self, now: float) -> list[Datagram]:
        """RTCP compound packets that came due, with their destination."""
        if not self._rtcp_out:
            return []
        out, self._rtcp_out = self._rtcp_out, []
        return out

    def _ntp(self, now: float) -> int:
        return ntp_timestamp(now + self.wallclock_offset)

    def _queue_report(self, now: float, *, bye: bool) -> None:
        dest = self.rtcp_remote_addr
        if dest is None:
            return
        reports = []
        if self._remote_ssrc is not None and self._receiver.started:
            reports.append(self._receiver.report_block(self._remote_ssrc, now))
        sender_info = None
        if self._sent_since_report:
            elapsed = now - self._pacer.start
            sender_info = RtcpSenderInfo(
                ntp_timestamp=self._ntp(now),
                rtp_timestamp=(self._initial_timestamp + round(elapsed * self.clock_rate))
                & 0xFFFFFFFF,
                packet_count=self.packets_out & 0xFFFFFFFF,
                octet_count=self.bytes_out & 0xFFFFFFFF,
            )
            self._sent_since_report = False
        data = build_report(
            ssrc=self.ssrc, reports=reports, sender_info=sender_info, cname=self.cname, bye=bye
        )
        self._rtcp_out.append((data, dest))

    def close(self, now: float) -> list[Datagram]:
        """End the session; returns the RTCP BYE to send (nothing more happens afterwards)."""
        if self._closed:
            return []
        self._queue_report(now, bye=True)
        self._closed = True
        self._pending_sends.clear()
        out, self._rtcp_out = self._rtcp_out, []
        return out

    # -- stats --------------------------------------------------------------------------------

    def stats(self) -> RtpStats:
        """A snapshot of the counters."""
        jitter = self.jitter
        return RtpStats(
            packets_in=self.packets_in,
            packets_out=self.packets_out,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            lost=self._lost_prior + self._receiver.lost,
            late=jitter.late,
            reordered=jitter.reordered,
            jitter_ms=self._receiver.jitter_ms,
            dropped_foreign=self.dropped_foreign,
            dropped_malformed=self.dropped_malformed,
            dropped_payload_type=self.dropped_payload_type,
            dtmf_digits=self.dtmf_digits,
            concealed=jitter.concealed,
            duplicates=jitter.duplicates,
            rtt_ms=self._rtt * 1000 if self._rtt is not None else None,
        )
