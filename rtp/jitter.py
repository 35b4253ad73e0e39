"""Adaptive jitter buffer for 20 ms audio frames (sans-I/O).

Packets go in with ``put()`` whenever they arrive; ``pop()`` is called once per 20 ms tick and
returns the frame for that tick: the next packet in sequence order, or a concealment frame when
the packet for the slot has not arrived (the previous frame faded by 6 dB per frame, then
silence).  Before the first packet plus the target delay has elapsed ``pop()`` returns None.

Playout follows the RTP timestamp: ``_play_ts`` is the timestamp of the current slot and
advances by one frame per tick.  A frame is released when its timestamp reaches the slot, so a
silence-suppressed gap (timestamps jump while sequence numbers stay contiguous) plays as
concealment without being counted as loss, and a lost packet costs exactly one concealed slot.

Delay adapts between ``min_ms`` and ``max_ms``: the target follows the RFC 3550 interarrival
jitter (times :data:`JITTER_FACTOR`) plus one frame per recent late packet (one that arrived
after a later packet was already played; it is dropped).  Growing happens at once by stretching
(one concealment frame without advancing the slot); shrinking drops one frame when the buffer
stayed above target for a whole :data:`ADAPT_WINDOW` (a sender clock faster than ours).  When
the next packet in sequence misses its slot (a sender clock slower than ours, or a delay step)
the concealment already played becomes the stretch: playout moves back so that the packet is
played with the target delay.  A burst that puts more than ``max_ms`` in the buffer drops the
oldest frames, back to the target.

Resynchronisation: a sequence jump beyond RFC 3550's MAX_DROPOUT/MAX_MISORDER is accepted only
when the next packet confirms it (probation); a timestamp discontinuity (more than ``max_ms``
behind the slot, e.g. a talkspurt whose sender did not advance the timestamp over the silence,
or far ahead of the buffer) is rebased onto the playout timeline; an SSRC change is the
caller's business and calls :meth:`JitterBuffer.reset`.
"""

from __future__ import annotations

import logging
import math
from typing import Final, NamedTuple

from . import g711

__all__ = ["ADAPT_WINDOW", "JITTER_FACTOR", "Frame", "JitterBuffer"]

logger = logging.getLogger(__name__)

MAX_DROPOUT: Final = 3000
"""Sequence numbers ahead of the highest seen beyond which a packet needs confirmation."""
MAX_MISORDER: Final = 100
"""Sequence numbers behind the highest seen beyond which a packet needs confirmation."""
ADAPT_WINDOW: Final = 50
"""Ticks (1 s at 20 ms) over which the buffer must stay above target before it shrinks."""
JITTER_FACTOR: Final = 3.0
"""Target delay as a multiple of the interarrival jitter estimate."""
LATE_DECAY_TICKS: Final = 250
"""Ticks without a late packet after which one frame of late-packet headroom is given back."""
FADE_FRAMES: Final = 3
"""Concealment frames that repeat the last frame (faded) before switching to silence."""
_HISTORY_BITS: Final = 64
_HISTORY_MASK: Final = (1 << _HISTORY_BITS) - 1


class Frame(NamedTuple):
    """One tick's worth of audio leaving the jitter buffer."""

    payload: bytes
    """Codec payload, untouched for real frames."""
    timestamp: int
    """RTP timestamp of the frame (of the slot, for concealment)."""
    sequence: int
    """RTP sequence number, or -1 for concealment."""
    marker: bool
    """The packet's marker bit (False for concealment)."""
    concealed: bool
    """True when the packet for this slot was missing and the payload was synthesised."""


class JitterBuffer:
    """Reorders, de-duplicates and paces inbound frames; see the module docstring."""

    def __init__(
        self,
        clock_rate: int = 8000,
        frame_samples: int = 160,
        target_ms: int = 20,
        min_ms: int = 20,
        max_ms: int = 120,
        *,
        payload_type: int = g711.PT_PCMU,
    ) -> None:
        if not 0 < min_ms <= max_ms:
            raise ValueError("need 0 < min_ms <= max_ms")
        self.clock_rate = clock_rate
        self.frame_samples = frame_samples
        self.frame_ms = frame_samples * 1000 / clock_rate
        self.payload_type = payload_type
        self._min_frames = max(1, math.ceil(min_ms / self.frame_ms))
        self._max_frames = max(self._min_frames, math.ceil(max_ms / self.frame_ms))
        self._target_frames = self._clamp_frames(math.ceil(target_ms / self.frame_ms))
        self._silence = (
            g711.silence(payload_type, frame_samples)
            if payload_type in (g711.PT_PCMU, g711.PT_PCMA)
            else b""
        )
        self.received = 0
        """Packets accepted into the buffer (not late, not duplicate)."""
        self.lost = 0
        """Sequence numbers skipped by playout without having been received in time."""
        self.late = 0
        """Packets dropped because their slot had already been played."""
        self.reordered = 0
        """Packets accepted although a higher sequence number had arrived before them."""
        self.duplicates = 0
        """Packets dropped because that sequence number was already buffered or played."""
        self.concealed = 0
        """Concealment frames produced."""
        self.dropped = 0
        """Frames discarded to bound or shrink the delay, or on resynchronisation."""
        self.resyncs = 0
        """Times playout was re-anchored on a sequence or timestamp discontinuity."""
        self.realigned = 0
        """Packets that missed their slot but were next in sequence: playout moved back."""
        self._ever_played = False
        self._reset_stream()

    # -- state --------------------------------------------------------------------------------

    def _reset_stream(self) -> None:
        self._started = False
        self._playing = False
        self._release_at = 0.0
        self._frames: dict[int, tuple[int, bytes, bool]] = {}
        self._next_seq = 0
        self._play_ts = 0
        self._highest_seq = 0
        self._highest_ts = 0
        self._highest_raw_ts = 0
        self._ts_offset = 0
        self._history = 0
        self._probe_seq: int | None = None
        self._last_payload: bytes | None = None
        self._conceal_run = 0
        self._stretch = 0
        self._jitter = 0.0
        self._prev_transit: float | None = None
        self._late_boost = 0
        self._ticks_since_late = 0
        self._window_ticks = 0
        self._window_min = 0

    def reset(self) -> None:
        """Forget the current stream (new SSRC); counters are kept."""
        if self._frames:
            self.dropped += len(self._frames)
        self._reset_stream()

    def _clamp_frames(self, frames: int) -> int:
        return min(self._max_frames, max(self._min_frames, frames))

    @property
    def started(self) -> bool:
        """True once a packet of the current stream has been accepted."""
        return self._started

    @property
    def target_ms(self) -> float:
        """Current target delay in milliseconds."""
        return self._target_frames * self.frame_ms

    @property
    def jitter_ms(self) -> float:
        """Interarrival jitter estimate (RFC 3550 A.8) in milliseconds."""
        return self._jitter * 1000 / self.clock_rate

    @property
    def buffered(self) -> int:
        """Frames currently held."""
        return len(self._frames)

    # -- input --------------------------------------------------------------------------------

    def put(self, seq: int, timestamp: int, payload: bytes, marker: bool, now: float) -> None:
        """Add one packet; late, duplicate and unconfirmed packets are counted and dropped."""
        if not self._started:
            self._start(seq, timestamp, payload, marker, now)
            return
        delta = ((seq - self._highest_seq + 0x8000) & 0xFFFF) - 0x8000
        if delta > MAX_DROPOUT or delta < -MAX_MISORDER:
            if seq == self._probe_seq:
                logger.debug("sequence jump to %d confirmed, resynchronising", seq)
                self.resyncs += 1
                self.reset()
                self._start(seq, timestamp, payload, marker, now)
            else:
                self._probe_seq = (seq + 1) & 0xFFFF
                self.dropped += 1
            return
        self._probe_seq = None
        ext_seq = self._highest_seq + delta
        ts_delta = ((timestamp - self._highest_raw_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        raw_ts = self._highest_raw_ts + ts_delta
        ext_ts = raw_ts + self._ts_offset
        if (
            ext_seq < self._next_seq
            and not self._playing
            and self._next_seq - ext_seq <= self._max_frames
        ):
            # Overtaken by the first packet before playout began: start playout earlier.
            self._next_seq = ext_seq
            self._play_ts = min(self._play_ts, ext_ts)
        if ext_seq < self._next_seq:
            age = self._next_seq - 1 - ext_seq
            if age < _HISTORY_BITS and (self._history >> age) & 1:
                self.duplicates += 1
            else:
                self._count_late()
                if age < _HISTORY_BITS:
                    self._history |= 1 << age
            return
        if ext_seq in self._frames:
            self.duplicates += 1
            return
        slack = ext_ts - self._play_ts
        max_samples = self._max_frames * self.frame_samples
        if 0 > slack >= -max_samples:
            # Next in sequence but its slot was concealed already (the sender's clock is
            # slower than ours, or the network delay grew): the concealment becomes a stretch
            # and playout moves back so that this packet again has the target delay.
            self.realigned += 1
            self._play_ts = ext_ts - self._target_frames * self.frame_samples
        elif slack < 0 or slack > 2 * max_samples:
            ext_ts = self._rebase(ext_seq, ext_ts)
        if delta > 0:
            transit = now * self.clock_rate - ext_ts
            if self._prev_transit is not None:
                self._jitter += (abs(transit - self._prev_transit) - self._jitter) / 16
            self._prev_transit = transit
            self._highest_seq, self._highest_raw_ts, self._highest_ts = ext_seq, raw_ts, ext_ts
        else:
            self.reordered += 1
        self.received += 1
        self._frames[ext_seq] = (ext_ts, payload, marker)
        depth = ext_ts + self.frame_samples - self._play_ts
        if depth > max_samples:
            self._trim(ext_ts + self.frame_samples - self._target_frames * self.frame_samples)

    def _start(self, seq: int, timestamp: int, payload: bytes, marker: bool, now: float) -> None:
        self._started = True
        self._playing = False
        self._release_at = now + self._target_frames * self.frame_ms / 1000
        self._next_seq = self._highest_seq = seq
        self._play_ts = self._highest_ts = self._highest_raw_ts = timestamp
        self._ts_offset = 0
        self._prev_transit = now * self.clock_rate - timestamp
        self.received += 1
        self._frames[seq] = (timestamp, payload, marker)

    def _count_late(self) -> None:
        self.late += 1
        self._ticks_since_late = 0
        if self._late_boost < self._max_frames:
            self._late_boost += 1
            self._retarget()

    def _rebase(self, ext_seq: int, ext_ts: int) -> int:
        """Map a timestamp discontinuity onto the playout timeline; returns the new timestamp.

        The packet is placed right after the frames before it (by sequence number), but no
        earlier than the target delay from the current slot (a new talkspurt whose sender did
        not advance the timestamp over the silence).
        """
        logger.debug("timestamp discontinuity at seq %d, rebasing", ext_seq & 0xFFFF)
        self.resyncs += 1
        following = self._highest_ts + (ext_seq - self._highest_seq) * self.frame_samples
        rebased = max(following, self._play_ts + self._target_frames * self.frame_samples)
        self._ts_offset += rebased - ext_ts
        self._prev_transit = None
        return rebased

    def _skip_to(self, new_next_seq: int) -> None:
        """Move the playout sequence pointer forward, counting what is passed over."""
        frames = self._frames
        history = self._history
        for seq in range(self._next_seq, new_next_seq):
            if frames.pop(seq, None) is not None:
                self.dropped += 1
                history = (history << 1) | 1
            else:
                self.lost += 1
                history <<= 1
        self._history = history & _HISTORY_MASK
        if new_next_seq > self._next_seq:
            self._next_seq = new_next_seq

    def _trim(self, new_play_ts: int) -> None:
        """Drop the oldest frames so that playout resumes at ``new_play_ts``."""
        self._play_ts = new_play_ts
        keep = [seq for seq, entry in self._frames.items() if entry[0] >= new_play_ts]
        self._skip_to(min(keep) if keep else self._highest_seq + 1)

    # -- output -------------------------------------------------------------------------------

    def pop(self, now: float) -> Frame | None:
        """The frame for this tick; None only before playout has ever started."""
        if not self._playing:
            if self._started and now >= self._release_at:
                self._playing = self._ever_played = True
            elif self._ever_played:
                return self._conceal(advance=False)
            else:
                return None
        if self._stretch:
            self._stretch -= 1
            return self._conceal(advance=False)
        frames = self._frames
        ts_limit = self._play_ts + self.frame_samples
        seq = self._next_seq
        entry = frames.get(seq)
        if entry is None and frames:
            first = min(frames)
            if frames[first][0] < ts_limit:
                self._skip_to(first)
                seq = first
                entry = frames[first]
        if entry is not None and entry[0] < ts_limit:
            del frames[seq]
            ext_ts, payload, marker = entry
            self._next_seq = seq + 1
            self._history = ((self._history << 1) | 1) & _HISTORY_MASK
            self._play_ts = max(ext_ts, self._play_ts) + self.frame_samples
            self._last_payload = payload
            self._conceal_run = 0
            frame = Frame(payload, ext_ts & 0xFFFFFFFF, seq & 0xFFFF, marker, False)
        else:
            frame = self._conceal(advance=True)
        self._adapt()
        return frame

    def _conceal(self, *, advance: bool) -> Frame:
        self.concealed += 1
        self._conceal_run += 1
        slot = self._play_ts
        if advance:
            self._play_ts += self.frame_samples
        last = self._last_payload
        if last is not None and self._conceal_run <= FADE_FRAMES and self._silence:
            payload = g711.attenuate(last, self.payload_type)
            self._last_payload = payload
        else:
            payload = self._silence
            self._last_payload = None
        return Frame(payload, slot & 0xFFFFFFFF, -1, False, True)

    def _adapt(self) -> None:
        ahead = self._highest_ts + self.frame_samples - self._play_ts
        if self._window_ticks == 0 or ahead < self._window_min:
            self._window_min = ahead
        self._window_ticks += 1
        self._ticks_since_late += 1
        if self._ticks_since_late >= LATE_DECAY_TICKS and self._late_boost:
            self._late_boost -= 1
            self._ticks_since_late = 0
        if self._window_ticks < ADAPT_WINDOW:
            return
        self._window_ticks = 0
        self._retarget()
        if self._window_min >= (self._target_frames + 1) * self.frame_samples and self._frames:
            # Consistently more buffered than needed: give one frame of delay back.
            self._skip_to(min(self._frames) + 1)
            self._play_ts += self.frame_samples

    def _retarget(self) -> None:
        wanted_ms = max(self._min_frames * self.frame_ms, JITTER_FACTOR * self.jitter_ms)
        frames = self._clamp_frames(math.ceil(wanted_ms / self.frame_ms) + self._late_boost)
        if frames > self._target_frames and self._playing:
            self._stretch += frames - self._target_frames
        self._target_frames = frames
