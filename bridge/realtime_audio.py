"""Audio between the call's 20 ms G.711 frames and the Realtime API's wire formats.

The Realtime API speaks ``audio/pcmu`` and ``audio/pcma`` natively, so the default path
forwards the RTP payload bytes untouched in both directions (:class:`G711Passthrough`). The
optional ``audio/pcm`` path (:class:`Pcm24k`) decodes G.711, resamples 8 kHz ↔ 24 kHz with a
stateful ``soxr.ResampleStream`` and re-encodes.

soxr output is bursty (see /work/shared/PERF-NOTES.md): at HQ an 8 → 24 kHz stream returns
nothing for three 20 ms frames and then ~60 ms at once. Inbound audio goes to the model's VAD, so
it uses ``QQ``, the only quality that returns output for every frame. Outbound audio arrives in
chunks far larger than a frame, where burstiness costs nothing, so it uses ``HQ`` for a proper
anti-alias filter. Either way the call gets exact 160-byte frames from :class:`Reframer`.
"""

from __future__ import annotations

import abc
from typing import Final, Literal

import numpy as np
import soxr
from openai.types.realtime.realtime_audio_formats_param import RealtimeAudioFormatsParam

from rtp.g711 import (
    ALAW_SILENCE,
    ULAW_SILENCE,
    alaw_decode,
    alaw_encode,
    ulaw_decode,
    ulaw_encode,
)

__all__ = [
    "FRAME_BYTES",
    "FRAME_MS",
    "AudioFormat",
    "G711Passthrough",
    "Pcm24k",
    "Reframer",
    "WireAudio",
    "wire_audio",
]

FRAME_MS: Final = 20
"""Duration of one call frame."""
FRAME_BYTES: Final = 160
"""Bytes of one 20 ms G.711 frame (8 kHz, one byte per sample)."""

AudioFormat = Literal["g711", "pcm"]
"""``g711``: the call's codec end to end; ``pcm``: 16-bit 24 kHz PCM on the wire."""

_INPUT_QUALITY: Final = "QQ"
_OUTPUT_QUALITY: Final = "HQ"


class WireAudio(abc.ABC):
    """Converts call payloads to the wire format and back, keeping any filter state."""

    format: RealtimeAudioFormatsParam
    "The format announced in ``session.update`` for both directions."

    bytes_per_ms: int
    "Wire bytes per millisecond of audio (8 for G.711, 48 for 16-bit 24 kHz)."

    silence_byte: int
    "The call codec's silence codeword, used to pad a last partial frame."

    @abc.abstractmethod
    def encode(self, payload: bytes) -> bytes:
        """Call payload → wire bytes (possibly empty while a filter fills up)."""

    @abc.abstractmethod
    def decode(self, data: bytes) -> bytes:
        """Wire bytes → call codec bytes (possibly empty while a filter fills up)."""

    @abc.abstractmethod
    def drain(self) -> bytes:
        """End of an output item: the call codec bytes still held by the filter."""

    @abc.abstractmethod
    def reset_output(self) -> None:
        """Forget buffered output (the item was interrupted)."""


class G711Passthrough(WireAudio):
    """PCMU or PCMA on the wire: nothing to convert."""

    bytes_per_ms = 8

    def __init__(self, codec: str) -> None:
        if codec == "PCMU":
            self.format = {"type": "audio/pcmu"}
            self.silence_byte = ULAW_SILENCE
        elif codec == "PCMA":
            self.format = {"type": "audio/pcma"}
            self.silence_byte = ALAW_SILENCE
        else:
            raise ValueError(f"unsupported call codec {codec!r} (PCMU or PCMA)")

    def encode(self, payload: bytes) -> bytes:
        return payload

    def decode(self, data: bytes) -> bytes:
        return data

    def drain(self) -> bytes:
        return b""

    def reset_output(self) -> None:
        pass


class Pcm24k(WireAudio):
    """16-bit little-endian 24 kHz PCM on the wire, resampled from/to the call's 8 kHz G.711."""

    bytes_per_ms = 48

    def __init__(self, codec: str) -> None:
        self.format = {"type": "audio/pcm", "rate": 24000}
        if codec == "PCMU":
            self._decode, self._encode = ulaw_decode, ulaw_encode
            self.silence_byte = ULAW_SILENCE
        elif codec == "PCMA":
            self._decode, self._encode = alaw_decode, alaw_encode
            self.silence_byte = ALAW_SILENCE
        else:
            raise ValueError(f"unsupported call codec {codec!r} (PCMU or PCMA)")
        self._up = soxr.ResampleStream(8000, 24000, 1, dtype="int16", quality=_INPUT_QUALITY)
        self._down = soxr.ResampleStream(24000, 8000, 1, dtype="int16", quality=_OUTPUT_QUALITY)
        self._odd = b""  # a delta may split a sample between two messages

    def encode(self, payload: bytes) -> bytes:
        samples = self._up.resample_chunk(self._decode(payload))
        return bytes(samples.astype("<i2", copy=False).tobytes())

    def decode(self, data: bytes) -> bytes:
        if self._odd:
            data = self._odd + data
            self._odd = b""
        if len(data) % 2:
            data, self._odd = data[:-1], data[-1:]
        if not data:
            return b""
        samples = self._down.resample_chunk(np.frombuffer(data, dtype="<i2"))
        return self._encode(samples) if len(samples) else b""

    def drain(self) -> bytes:
        self._odd = b""
        samples = self._down.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
        self._down.clear()
        return self._encode(samples) if len(samples) else b""

    def reset_output(self) -> None:
        self._odd = b""
        self._down.clear()


def wire_audio(codec: str, audio_format: AudioFormat) -> WireAudio:
    """The converter for a call codec (``PCMU``/``PCMA``) and a wire format choice."""
    if audio_format == "g711":
        return G711Passthrough(codec)
    if audio_format == "pcm":
        return Pcm24k(codec)
    raise ValueError(f"unknown audio format {audio_format!r} (g711 or pcm)")


class Reframer:
    """Cuts a byte stream into exact frames; the tail is padded with silence on flush."""

    __slots__ = ("_buffer", "_frame_bytes", "_silence")

    def __init__(self, silence_byte: int, frame_bytes: int = FRAME_BYTES) -> None:
        self._frame_bytes = frame_bytes
        self._silence = bytes((silence_byte,))
        self._buffer = bytearray()

    def __len__(self) -> int:
        return len(self._buffer)

    def push(self, data: bytes) -> list[bytes]:
        """Add ``data``; return every complete frame now available."""
        buffer = self._buffer
        buffer += data
        size = self._frame_bytes
        count = len(buffer) // size
        if not count:
            return []
        frames = [bytes(buffer[i * size : (i + 1) * size]) for i in range(count)]
        del buffer[: count * size]
        return frames

    def flush(self) -> bytes | None:
        """The buffered partial frame padded to a full one, or None when nothing is buffered."""
        if not self._buffer:
            return None
        frame = bytes(self._buffer) + self._silence * (self._frame_bytes - len(self._buffer))
        self._buffer.clear()
        return frame

    def clear(self) -> None:
        """Drop the buffered partial frame."""
        self._buffer.clear()
