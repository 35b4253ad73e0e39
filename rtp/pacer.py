"""Outbound pacing on an absolute 20 ms grid, and the queue of frames waiting to be sent.

:class:`Pacer` answers "how many frames are due at ``now``" against the grid
``start + n * ptime``.  Computing every send from the absolute deadline (never "sleep 20 ms")
keeps the stream's rate exact whatever the timer does: asyncio fires up to ~1 ms late and uvloop
up to ~1.4 ms early (PERF-NOTES.md), so a deadline a little in the future still counts as due,
and a late timer sends the frames it missed back to back.  After a long stall (a blocked loop)
the pacer skips ahead instead of bursting a second of audio at the peer.

:class:`PlayoutQueue` holds the 20 ms payloads the model (or the echo) produced.  It tracks how
many milliseconds of each model item were actually sent — what barge-in truncates the model's
item to — and where talkspurts begin, for the RTP marker bit.

:class:`TickPhases` places each new stream's grid in the least-used millisecond of the frame, so
the per-call timers of concurrent calls are spread evenly over the 20 ms instead of firing
together: calls set up at a steady rate of 50/s would otherwise all tick in the same
millisecond, and the last of a few hundred callbacks would leave milliseconds late.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final

__all__ = ["MAX_BEHIND", "PlayoutQueue", "Pacer", "TickPhases"]

MAX_BEHIND: Final = 0.200
"""Seconds behind the grid after which the pacer drops the missed frames instead of bursting."""
EARLY_TOLERANCE: Final = 0.002
"""A deadline this close in the future is treated as due (timers may fire early)."""
_PLAYED_ITEMS_KEPT: Final = 256


class Pacer:
    """Frame deadlines on the absolute grid ``start + n * ptime``."""

    __slots__ = ("_index", "_max_behind_frames", "_tolerance", "ptime", "skipped", "start")

    def __init__(self, start: float, ptime: float = 0.020) -> None:
        if ptime <= 0:
            raise ValueError("ptime must be positive")
        self.start = start
        self.ptime = ptime
        self.skipped = 0
        """Frames dropped by skip-ahead since creation."""
        self._index = 0
        self._tolerance = min(EARLY_TOLERANCE, ptime / 4)
        self._max_behind_frames = max(1, round(MAX_BEHIND / ptime))

    @property
    def index(self) -> int:
        """Grid index of the next frame (frames consumed so far, skipped ones included)."""
        return self._index

    def next_deadline(self) -> float:
        """Absolute time at which the next frame is due."""
        return self.start + self._index * self.ptime

    def due(self, now: float) -> int:
        """Consume and return the number of frames due at ``now`` (0 when early).

        When more than :data:`MAX_BEHIND` of frames are due, all but the newest are skipped
        (counted in :attr:`skipped`) and 1 is returned; the caller derives media timestamps from
        :attr:`index`, so the stream's clock still advances by the skipped frames.
        """
        reached = math.floor((now - self.start + self._tolerance) / self.ptime) + 1
        count = reached - self._index
        if count <= 0:
            return 0
        self._index = reached
        if count > self._max_behind_frames:
            self.skipped += count - 1
            return 1
        return count


class PlayoutQueue:
    """FIFO of outbound payload frames with per-item played-time accounting.

    ``pop()`` is called once per tick by the session; a ``None`` means the queue ran dry and the
    session sends silence.  ``marker`` tells whether the frame just popped begins a talkspurt
    (first frame after the queue was empty or flushed).
    """

    __slots__ = (
        "_frames",
        "_in_talkspurt",
        "_played",
        "current_item",
        "frame_ms",
        "frames_played",
        "marker",
    )

    def __init__(self, frame_ms: int = 20) -> None:
        self.frame_ms = frame_ms
        self._frames: deque[tuple[bytes, str | None]] = deque()
        self._played: dict[str, int] = {}
        self._in_talkspurt = False
        self.marker = False
        """True when the last ``pop()`` returned the first frame of a talkspurt."""
        self.current_item: str | None = None
        """Item id of the last frame popped (None for untagged frames or after a flush)."""
        self.frames_played = 0
        """Frames popped since creation."""

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def pending_ms(self) -> int:
        """Milliseconds of audio queued and not yet sent."""
        return len(self._frames) * self.frame_ms

    def push(self, payload: bytes, item_id: str | None = None) -> None:
        """Queue one frame; ``item_id`` names the model output item it belongs to."""
        self._frames.append((payload, item_id))

    def pop(self) -> bytes | None:
        """Take the next frame to send, or None when the queue is empty (a talkspurt ends)."""
        if not self._frames:
            self._in_talkspurt = False
            self.marker = False
            return None
        payload, item_id = self._frames.popleft()
        self.marker = not self._in_talkspurt
        self._in_talkspurt = True
        self.frames_played += 1
        self.current_item = item_id
        if item_id is not None:
            played = self._played
            if item_id in played:
                played[item_id] += self.frame_ms
            else:
                if len(played) >= _PLAYED_ITEMS_KEPT:
                    del played[next(iter(played))]
                played[item_id] = self.frame_ms
        return payload

    def flush(self) -> int:
        """Drop every queued frame (barge-in); return how many were dropped."""
        dropped = len(self._frames)
        self._frames.clear()
        self._in_talkspurt = False
        self.current_item = None
        return dropped

    def played_ms(self, item_id: str) -> int:
        """Milliseconds of ``item_id`` actually handed to the network so far."""
        return self._played.get(item_id, 0)


class TickPhases:
    """Phases of the tick grids of the streams alive at once, kept evenly spread.

    The frame is cut into ``slots`` equal phases (1 ms each by default: event-loop timers are
    not finer).  :meth:`place` gives a new stream the grid start in the phase with the fewest
    streams — the soonest such phase on a tie, so the first frame waits less than one frame —
    and :meth:`release` gives the phase back when the stream ends.
    """

    __slots__ = ("_counts", "_width", "ptime")

    def __init__(self, ptime: float = 0.020, slots: int = 20) -> None:
        if ptime <= 0 or slots < 1:
            raise ValueError("ptime must be positive and slots at least 1")
        self.ptime = ptime
        self._width = ptime / slots
        self._counts = [0] * slots

    @property
    def counts(self) -> tuple[int, ...]:
        """Streams per phase, phase 0 first."""
        return tuple(self._counts)

    def place(self, now: float) -> float:
        """Take the least-used phase; return its first grid start at or after ``now``."""
        counts = self._counts
        slots = len(counts)
        frame_start = math.floor(now / self.ptime) * self.ptime
        first = math.ceil(round((now - frame_start) / self._width, 6)) % slots
        fewest = min(counts)
        slot = next(
            s for s in (first + k for k in range(slots)) if counts[s % slots] == fewest
        ) % slots
        counts[slot] += 1
        start = frame_start + slot * self._width
        return start + self.ptime if start < now - 1e-9 else start

    def slot_of(self, start: float) -> int:
        """The phase (0 .. slots-1) of a grid start that :meth:`place` returned."""
        return round((start % self.ptime) / self._width) % len(self._counts)

    def release(self, start: float) -> None:
        """Give back the phase of a grid start that :meth:`place` returned."""
        slot = self.slot_of(start)
        if self._counts[slot] > 0:
            self._counts[slot] -= 1
