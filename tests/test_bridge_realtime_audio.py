"""Wire-format conversion and re-framing between the call's G.711 and the Realtime API."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.realtime_audio import FRAME_BYTES, G711Passthrough, Pcm24k, Reframer, wire_audio
from rtp.g711 import ulaw_decode, ulaw_encode


def test_g711_is_forwarded_untouched() -> None:
    pcmu, pcma = wire_audio("PCMU", "g711"), wire_audio("PCMA", "g711")
    assert isinstance(pcmu, G711Passthrough)
    assert pcmu.format == {"type": "audio/pcmu"} and pcma.format == {"type": "audio/pcma"}
    frame = bytes(range(160))
    assert pcmu.encode(frame) is frame and pcmu.decode(frame) is frame
    assert pcmu.drain() == b""
    pcmu.reset_output()
    assert (pcmu.silence_byte, pcma.silence_byte, pcmu.bytes_per_ms) == (0xFF, 0xD5, 8)


@pytest.mark.parametrize("audio_format", ["g711", "pcm"])
def test_unknown_codec_is_refused(audio_format: str) -> None:
    with pytest.raises(ValueError, match="unsupported call codec 'G722'"):
        wire_audio("G722", audio_format)  # type: ignore[arg-type]


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown audio format"):
        wire_audio("PCMU", "opus")  # type: ignore[arg-type]


def tone(seconds: float, rate: int, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_pcm24k_upsamples_every_frame(codec: str) -> None:
    audio = wire_audio(codec, "pcm")
    assert isinstance(audio, Pcm24k)
    assert audio.format == {"type": "audio/pcm", "rate": 24000} and audio.bytes_per_ms == 48
    frame = ulaw_encode(tone(0.02, 8000)) if codec == "PCMU" else b"\xd5" * 160
    sizes = [len(audio.encode(frame)) for _ in range(10)]
    assert all(size > 0 for size in sizes)  # QQ: no 60 ms bursts towards the VAD
    assert sum(sizes) == pytest.approx(10 * 960, abs=20)


def test_pcm24k_downsamples_a_tone_faithfully() -> None:
    audio = Pcm24k("PCMU")
    wire = tone(0.5, 24000).tobytes()
    out = b"".join(audio.decode(wire[i : i + 4801]) for i in range(0, len(wire), 4801))
    out += audio.drain()
    assert len(out) == pytest.approx(4000, abs=2)  # odd chunk sizes lose no sample
    decoded = ulaw_decode(out).astype(float)
    spectrum = np.abs(np.fft.rfft(decoded[500:3500]))
    peak_hz = np.argmax(spectrum) * 8000 / 3000
    assert peak_hz == pytest.approx(440, abs=5)


def test_pcm24k_reset_forgets_buffered_output() -> None:
    audio = Pcm24k("PCMA")
    audio.decode(b"\x01")
    audio.decode(tone(0.1, 24000).tobytes())
    audio.reset_output()
    assert audio.decode(b"") == b""
    assert audio.drain() == b""


def test_reframer_cuts_exact_frames_and_pads_the_tail() -> None:
    reframer = Reframer(0xFF)
    assert reframer.push(b"\x01" * 100) == []
    assert len(reframer) == 100
    frames = reframer.push(b"\x02" * 300)
    assert [len(f) for f in frames] == [FRAME_BYTES, FRAME_BYTES]
    assert frames[0] == b"\x01" * 100 + b"\x02" * 60
    assert reframer.flush() == b"\x02" * 80 + b"\xff" * 80
    assert reframer.flush() is None
    reframer.push(b"\x03")
    reframer.clear()
    assert reframer.flush() is None
