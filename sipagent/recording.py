"""Opt-in stereo call recordings: caller on the left channel, agent on the right.

Three layers, like the rest of the package:

- :class:`StereoRecorder`, the sans-I/O core. It takes the G.711 frames of each side with the
  ``now`` they were heard or sent, places them on one timeline that starts when the call's media
  starts (silence where a side sent nothing: the agent between turns, a caller on hold, lost
  packets), and hands out interleaved 16-bit little-endian PCM when asked (:meth:`drain`,
  :meth:`finish`), never more than its size cap. Frames are kept as codewords and decoded in
  one table lookup per drain, not per frame.
- :class:`WavWriter`, a thin file writer: the RIFF header first (sizes of an empty file), then
  every chunk appended as it comes, the RIFF and ``data`` sizes patched after each append and on
  close. Sizes are written after the data they count, so a process that dies mid-call leaves a
  playable file holding everything up to the last drain.
- :class:`CallRecording`, the asyncio shell a :class:`~sipagent.call.Call` feeds: it stamps each
  frame with ``loop.time()`` and drains the core into the writer on one timer (once a second), so
  the per-packet path never touches the disk.

:class:`RecordingOptions` comes from ``SIPAGENT_RECORDINGS_DIR`` and
``SIPAGENT_RECORDING_MAX_MB``; files go to ``<recordings_dir>/<YYYYMMDD>/<session_id>.wav``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import os
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from rtp.g711 import alaw_decode, ulaw_decode

from .settings import ConfigError, env_name

if TYPE_CHECKING:
    from .settings import Settings

__all__ = [
    "CHANNELS",
    "HEADER_BYTES",
    "SAMPLE_RATE",
    "CallRecording",
    "RecordingOptions",
    "Side",
    "StereoRecorder",
    "WavWriter",
    "recording_path",
]

logger = logging.getLogger(__name__)

SAMPLE_RATE: Final = 8000
"""Samples per second of the recording (G.711's rate: nothing is resampled)."""
CHANNELS: Final = 2
"""Left: the caller; right: the agent."""
SAMPLE_WIDTH: Final = 2
"""Bytes per sample (16-bit signed PCM)."""
BLOCK_ALIGN: Final = CHANNELS * SAMPLE_WIDTH
"""Bytes per stereo sample frame."""
HEADER_BYTES: Final = 44
"""Size of the canonical RIFF/WAVE header written before the samples."""
MEGABYTE: Final = 1_000_000
"""What ``recording_max_mb`` counts in."""

_DECODERS: Final[dict[str, Callable[[bytes], npt.NDArray[np.int16]]]] = {
    "PCMU": ulaw_decode,
    "PCMA": alaw_decode,
}


class Side(enum.IntEnum):
    """Whose audio a frame is; the value is its channel index."""

    CALLER = 0
    "The phone side, heard after the jitter buffer (left channel)."
    AGENT = 1
    "What we send: the model's audio, prompts (right channel)."


@dataclass(slots=True)
class _Run:
    """Consecutive samples of one track in one codec, or silence (``codec`` None)."""

    codec: str | None
    length: int
    data: bytearray = field(default_factory=bytearray)


@dataclass(slots=True)
class _Track:
    """One channel: the runs not drained yet, up to ``cursor``, and the frames not placed yet."""

    cursor: int = 0
    "Timeline position (samples from the media start) right after the last placed sample."
    runs: list[_Run] = field(default_factory=list)
    pending: list[tuple[str, bytes]] = field(default_factory=list)
    "Frames that arrived together (one catch-up burst), placed once the burst is over."
    pending_at: float = -math.inf
    "The ``now`` of the last pending frame."

    def append(self, codec: str | None, samples: int, data: bytes = b"") -> None:
        if samples <= 0:
            return
        last = self.runs[-1] if self.runs else None
        if last is not None and last.codec == codec:
            last.length += samples
            last.data += data
        else:
            self.runs.append(_Run(codec, samples, bytearray(data)))
        self.cursor += samples

    def take(self, samples: int) -> npt.NDArray[np.int16]:
        """The next ``samples`` samples, decoded; the runs must hold at least that many."""
        out = np.zeros(samples, dtype=np.int16)
        done = 0
        runs = self.runs
        while done < samples:
            run = runs[0]
            count = min(run.length, samples - done)
            if run.codec is not None:
                out[done : done + count] = _DECODERS[run.codec](bytes(run.data[:count]))
                del run.data[:count]
            run.length -= count
            if run.length == 0:
                del runs[0]
            done += count
        return out


class StereoRecorder:
    """Aligns caller and agent frames on one timeline and yields interleaved stereo PCM.

    ``start`` is the ``now`` of the media start; every frame is placed at the ``now`` it came
    with, measured from there. A side whose next frame comes on time (within ``tolerance``
    seconds of where its previous frame ended) continues seamlessly; one that comes later gets
    silence in front of it. Frames that come together (a sender catching up after a stalled
    loop: within ``burst_window`` seconds of each other) are placed so the last one starts at
    their ``now``, the earlier ones before it, as they were meant to be heard.

    :meth:`drain` returns what is complete up to ``latency`` seconds before ``now`` (a silent side
    is filled with silence up to there); :meth:`get_timer` says when to drain next. At most
    ``max_bytes`` (file size, header included) are ever returned; after that :attr:`truncated`
    is set and frames are ignored.
    """

    def __init__(
        self,
        start: float,
        *,
        max_bytes: int | None = None,
        tolerance: float = 0.040,
        burst_window: float = 0.005,
        latency: float = 0.2,
        drain_interval: float = 1.0,
    ) -> None:
        if drain_interval <= 0 or latency < 0 or tolerance < 0:
            raise ValueError("drain_interval must be positive, latency and tolerance >= 0")
        self.start = start
        """The ``now`` of the media start: sample 0 of the recording."""
        self._tracks = (_Track(), _Track())
        self._tolerance = round(tolerance * SAMPLE_RATE)
        self._burst_window = burst_window
        self._latency = round(latency * SAMPLE_RATE)
        self._interval = drain_interval
        self._next_drain = start + drain_interval
        cap = None if max_bytes is None else max(0, max_bytes - HEADER_BYTES) // BLOCK_ALIGN
        self._cap_samples = cap
        self.samples_out = 0
        """Stereo sample frames handed out so far."""
        self.truncated = False
        """The size cap was reached: the recording stopped before the call ended."""
        self.finished = False
        """:meth:`finish` was called."""

    @property
    def bytes_out(self) -> int:
        """PCM bytes handed out so far (the WAV ``data`` size)."""
        return self.samples_out * BLOCK_ALIGN

    @property
    def stopped(self) -> bool:
        """Nothing more will be recorded (finished or truncated)."""
        return self.finished or self.truncated

    def position(self, now: float) -> int:
        """The timeline sample of ``now``."""
        return round((now - self.start) * SAMPLE_RATE)

    def push(self, side: Side, payload: bytes, codec: str, now: float) -> None:
        """One frame of ``side`` in ``codec`` (``PCMU``/``PCMA``), heard or sent at ``now``."""
        if self.finished or self.truncated:
            return
        if codec not in _DECODERS:
            raise ValueError(f"cannot record codec {codec!r}")
        track = self._tracks[side]
        if track.pending:
            if now - track.pending_at <= self._burst_window:
                track.pending.append((codec, payload))
                track.pending_at = now
                return
            self._place(track)
        if round((now - self.start) * SAMPLE_RATE) - track.cursor < self._tolerance:
            track.append(codec, len(payload), payload)  # on time: right after the last one
        else:
            # Late: after a gap, or the first of a catch-up burst; placed once it is over.
            track.pending.append((codec, payload))
            track.pending_at = now

    def _place(self, track: _Track) -> None:
        """Put the pending burst on the timeline, its last frame starting at its ``now``."""
        pending = track.pending
        before_last = sum(len(payload) for _, payload in pending[:-1])
        first = self.position(track.pending_at) - before_last
        if first - track.cursor >= self._tolerance:
            track.append(None, first - track.cursor)
        for codec, payload in pending:
            track.append(codec, len(payload), payload)
        pending.clear()

    def get_timer(self) -> float | None:
        """When :meth:`drain` should run next; None once stopped."""
        return None if self.stopped else self._next_drain

    def drain(self, now: float) -> bytes:
        """Interleaved PCM complete up to ``now - latency``; advances the timer."""
        if self.stopped:
            return b""
        if now >= self._next_drain:  # the next deadline on the grid, however late this is
            missed = math.floor((now - self._next_drain) / self._interval) + 1
            self._next_drain += missed * self._interval
        target = self.position(now) - self._latency
        for track in self._tracks:
            if track.pending and now - track.pending_at > self._burst_window:
                self._place(track)
            if track.cursor < target:
                track.append(None, target - track.cursor)
        return self._take(min(track.cursor for track in self._tracks))

    def finish(self, now: float) -> bytes:
        """Everything left, both sides filled with silence to ``now`` (or the longer side)."""
        if self.stopped:
            return b""
        for track in self._tracks:
            if track.pending:
                self._place(track)
        end = max(self.position(now), *(track.cursor for track in self._tracks))
        for track in self._tracks:
            track.append(None, end - track.cursor)
        data = self._take(end)
        self.finished = True
        return data

    def _take(self, end: int) -> bytes:
        count = end - self.samples_out
        cap = self._cap_samples
        if cap is not None and self.samples_out + count > cap:
            count = cap - self.samples_out
            self.truncated = True
        if count <= 0:
            return b""
        stereo = np.empty((count, CHANNELS), dtype="<i2")
        for side, track in enumerate(self._tracks):
            stereo[:, side] = track.take(count)
        self.samples_out += count
        if self.truncated:
            for track in self._tracks:
                track.runs.clear()
                track.pending.clear()
        return stereo.tobytes()


def _header(data_bytes: int) -> bytes:
    """The 44-byte RIFF/WAVE header of a PCM file holding ``data_bytes`` of samples."""
    return b"".join(
        (
            b"RIFF",
            struct.pack("<I", 36 + data_bytes),
            b"WAVE",
            b"fmt ",
            struct.pack(
                "<IHHIIHH",
                16,  # fmt chunk size
                1,  # PCM
                CHANNELS,
                SAMPLE_RATE,
                SAMPLE_RATE * BLOCK_ALIGN,
                BLOCK_ALIGN,
                SAMPLE_WIDTH * 8,
            ),
            b"data",
            struct.pack("<I", data_bytes),
        )
    )


class WavWriter:
    """A stereo 8 kHz 16-bit WAV file written as it grows; its header is always valid.

    Unbuffered: each :meth:`write` goes to the OS at once (callers pass about a second of
    audio at a time), then the two sizes in the header are rewritten in place.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        self.data_bytes = 0
        """Sample bytes written (and counted in the header)."""
        try:
            os.write(self._fd, _header(0))
        except BaseException:
            self.close()
            raise

    @property
    def closed(self) -> bool:
        return self._fd is None

    def write(self, data: bytes) -> None:
        """Append samples, then update the header's sizes to count them."""
        fd = self._fd
        if fd is None:
            raise ValueError("write to a closed recording")
        if not data:
            return
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        self.data_bytes += len(data)
        os.pwrite(fd, struct.pack("<I", 36 + self.data_bytes), 4)
        os.pwrite(fd, struct.pack("<I", self.data_bytes), 40)

    def close(self) -> None:
        """Close the file (its header already counts everything written); idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def recording_path(directory: Path, session_id: str, created_at: float) -> Path:
    """``<directory>/<YYYYMMDD>/<session_id>.wav``, the day in UTC of ``created_at``."""
    day = datetime.fromtimestamp(created_at, tz=UTC).strftime("%Y%m%d")
    return directory / day / f"{session_id}.wav"


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingOptions:
    """Where calls are recorded and how large a file may grow."""

    directory: Path
    "The recordings root, absolute; one sub-directory per UTC day."
    max_bytes: int
    "Largest file size, header included; the recording stops there."

    @classmethod
    def from_settings(cls, settings: Settings) -> RecordingOptions | None:
        """The options of ``settings`` (None: recording off), the directory made ready.

        Creates ``recordings_dir`` if missing and checks that a file can be created in it;
        raises :class:`~sipagent.settings.ConfigError` naming the setting otherwise.
        """
        if settings.recordings_dir is None:
            return None
        directory = settings.recordings_dir.expanduser().absolute()
        setting = env_name("recordings_dir")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-check-"):
                pass
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(
                f"{setting}: cannot write recordings to {str(directory)!r} ({reason})", setting
            ) from None
        return cls(directory=directory, max_bytes=int(settings.recording_max_mb * MEGABYTE))


RecordingStopped = Callable[[str], None]
"""Told why, once, when a recording stops before its call ends."""


class CallRecording:
    """One call's recording: frames in from the call, a WAV file out, drained on a timer."""

    def __init__(
        self,
        writer: WavWriter,
        recorder: StereoRecorder,
        loop: asyncio.AbstractEventLoop,
        *,
        codec: str,
        on_stopped: RecordingStopped,
    ) -> None:
        self.writer = writer
        self.recorder = recorder
        self.codec = codec
        """The call's codec (``PCMU``/``PCMA``): what the next frames are in."""
        self.sending = True
        """Whether our audio reaches the caller (not while the caller holds us)."""
        self._loop = loop
        self._on_stopped = on_stopped
        self._timer: asyncio.TimerHandle | None = None
        self._arm()

    @classmethod
    def start(
        cls,
        options: RecordingOptions,
        *,
        session_id: str,
        created_at: float,
        codec: str,
        on_stopped: RecordingStopped,
    ) -> CallRecording:
        """Create the file and start the timeline now (raises :class:`OSError`)."""
        loop = asyncio.get_running_loop()
        path = recording_path(options.directory, session_id, created_at)
        path.parent.mkdir(parents=True, exist_ok=True)
        recorder = StereoRecorder(loop.time(), max_bytes=options.max_bytes)
        return cls(WavWriter(path), recorder, loop, codec=codec, on_stopped=on_stopped)

    @property
    def path(self) -> Path:
        return self.writer.path

    def caller(self, payload: bytes) -> None:
        """A caller frame leaving the jitter buffer."""
        self.recorder.push(Side.CALLER, payload, self.codec, self._loop.time())

    def agent(self, payload: bytes) -> None:
        """A frame of ours leaving for the caller."""
        if self.sending:
            self.recorder.push(Side.AGENT, payload, self.codec, self._loop.time())

    def _arm(self) -> None:
        deadline = self.recorder.get_timer()
        self._timer = None if deadline is None else self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._write(self.recorder.drain(self._loop.time()))
        if self.writer.closed:
            return
        if self.recorder.truncated:
            self._stop(self._cap_reason())
        else:
            self._arm()

    def _cap_reason(self) -> str:
        return f"size cap reached ({self.writer.data_bytes + HEADER_BYTES} bytes)"

    def _write(self, data: bytes) -> None:
        try:
            self.writer.write(data)
        except OSError as exc:
            self.recorder.truncated = True  # nothing more goes to the file
            self._stop(f"write failed ({exc.strerror or exc})")

    def _stop(self, reason: str) -> None:
        self._close_file()
        self._on_stopped(reason)

    def _close_file(self) -> None:
        try:
            self.writer.close()
        except OSError:
            logger.exception("closing recording %s failed", self.writer.path)

    def close(self) -> None:
        """The call ended: write the rest, silence-filled to now, and close; idempotent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.writer.closed:
            return
        self._write(self.recorder.finish(self._loop.time()))
        if self.writer.closed:
            return
        if self.recorder.truncated:
            self._stop(self._cap_reason())
        self._close_file()
