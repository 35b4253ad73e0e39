"""Audio helpers for asserting on what a peer heard.

G.711 μ-law/A-law (written from ITU-T G.711, independent of the server's ``rtp.g711`` so the tests
do not check the server against itself), 16-bit mono WAV I/O, RMS / silence detection, and the
normalized cross-correlation used to assert "the echoed audio matches the input":

    result = cross_correlate(sent, received, sample_rate=8000, max_lag_ms=500)
    assert result.peak >= 0.9, result          # result.lag_ms is the echo delay
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "CorrelationResult",
    "EchoMatch",
    "active_span_ms",
    "alaw_decode",
    "alaw_encode",
    "cross_correlate",
    "find_with_drift",
    "is_silence",
    "read_wav",
    "resample",
    "rms",
    "rms_dbfs",
    "ulaw_decode",
    "ulaw_encode",
    "write_wav",
]

Samples = npt.NDArray[np.int16]

_ULAW_BIAS = 0x84
_ULAW_CLIP = 32635


def _ulaw_decode_table() -> Samples:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(codes & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_decode_table() -> Samples:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(
        exponent == 0,
        (mantissa << 4) + 8,
        ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0),
    )
    return np.where(codes & 0x80, magnitude, -magnitude).astype(np.int16)


_ULAW_DECODE = _ulaw_decode_table()
_ALAW_DECODE = _alaw_decode_table()


def ulaw_decode(payload: bytes) -> Samples:
    """Decode G.711 μ-law bytes to 16-bit linear samples."""
    return _ULAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]


def alaw_decode(payload: bytes) -> Samples:
    """Decode G.711 A-law bytes to 16-bit linear samples."""
    return _ALAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]


def _segment(magnitude: npt.NDArray[np.int32], shift: int) -> npt.NDArray[np.int32]:
    # Position of the highest set bit above `shift`, clipped to the 8 G.711 segments.
    bit_length = np.floor(np.log2(np.maximum(magnitude, 1))).astype(np.int32) + 1
    return np.clip(bit_length - shift, 0, 7)


def ulaw_encode(samples: npt.ArrayLike) -> bytes:
    """Encode 16-bit linear samples to G.711 μ-law bytes."""
    pcm = np.asarray(samples, dtype=np.int32)
    sign = np.where(pcm < 0, 0x80, 0x00)
    magnitude = np.minimum(np.abs(pcm), _ULAW_CLIP) + _ULAW_BIAS
    exponent = _segment(magnitude, 8)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    codes = (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)
    return bytes(codes.tobytes())


def alaw_encode(samples: npt.ArrayLike) -> bytes:
    """Encode 16-bit linear samples to G.711 A-law bytes."""
    pcm = np.asarray(samples, dtype=np.int32)
    sign = np.where(pcm >= 0, 0x80, 0x00)
    magnitude = np.minimum(np.where(pcm >= 0, pcm, -pcm - 1), 32767) >> 3
    exponent = _segment(magnitude, 5)
    mantissa = np.where(exponent == 0, magnitude >> 1, magnitude >> exponent) & 0x0F
    codes = ((sign | (exponent << 4) | mantissa) ^ 0x55).astype(np.uint8)
    return bytes(codes.tobytes())


def read_wav(path: str | Path) -> tuple[Samples, int]:
    """Read a 16-bit PCM WAV; return (mono samples, sample rate). Stereo is averaged."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM, got {8 * wav.getsampwidth()}-bit")
        channels = wav.getnchannels()
        rate = wav.getframerate()
        frames = wav.readframes(wav.getnframes())
    samples = np.frombuffer(frames, dtype="<i2").astype(np.int16)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return samples, rate


def write_wav(path: str | Path, samples: npt.ArrayLike, sample_rate: int = 8000) -> None:
    """Write mono 16-bit PCM samples as a WAV file."""
    pcm = np.clip(np.asarray(samples), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm.tobytes())


def resample(samples: npt.ArrayLike, from_rate: int, to_rate: int) -> Samples:
    """Resample 16-bit audio (soxr, high quality)."""
    pcm = np.asarray(samples, dtype=np.int16)
    if from_rate == to_rate:
        return pcm
    import soxr  # a project dependency; imported here so the rest works without it

    out = np.asarray(soxr.resample(pcm.astype(np.float32), from_rate, to_rate))
    resampled: Samples = np.clip(np.round(out), -32768, 32767).astype(np.int16)
    return resampled


def rms(samples: npt.ArrayLike) -> float:
    """Root mean square of the samples (0.0 for no samples)."""
    pcm = np.asarray(samples, dtype=np.float64)
    return float(np.sqrt(np.mean(pcm * pcm))) if pcm.size else 0.0


def rms_dbfs(samples: npt.ArrayLike) -> float:
    """RMS level in dB relative to 16-bit full scale (-inf for digital silence)."""
    level = rms(samples)
    return float(20.0 * np.log10(level / 32768.0)) if level > 0 else float("-inf")


def is_silence(samples: npt.ArrayLike, threshold_dbfs: float = -50.0) -> bool:
    """True when the RMS level is below ``threshold_dbfs`` (μ-law idle noise is about -70)."""
    return rms_dbfs(samples) < threshold_dbfs


def active_span_ms(
    samples: npt.ArrayLike,
    sample_rate: int = 8000,
    *,
    frame_ms: int = 20,
    threshold_dbfs: float = -45.0,
) -> tuple[float, float] | None:
    """(start, end) in ms of the frames louder than the threshold, or None if all are quiet."""
    pcm = np.asarray(samples, dtype=np.float64)
    frame = sample_rate * frame_ms // 1000
    count = pcm.size // frame
    if count == 0:
        return None
    frames = pcm[: count * frame].reshape(count, frame)
    levels = np.sqrt(np.mean(frames * frames, axis=1))
    loud = np.nonzero(levels > 32768.0 * 10 ** (threshold_dbfs / 20.0))[0]
    if loud.size == 0:
        return None
    return float(loud[0] * frame_ms), float((loud[-1] + 1) * frame_ms)


@dataclass(frozen=True, slots=True, kw_only=True)
class CorrelationResult:
    """Best alignment of a received signal against the reference."""

    peak: float
    """Normalized cross-correlation at the best lag, in [-1, 1] (1 = identical up to gain)."""
    lag_samples: int
    """How many samples the reference appears delayed in the received signal."""
    lag_ms: float
    """The same lag in milliseconds."""


def cross_correlate(
    reference: npt.ArrayLike,
    received: npt.ArrayLike,
    *,
    sample_rate: int = 8000,
    max_lag_ms: float = 500.0,
) -> CorrelationResult:
    """Find ``reference`` inside ``received`` within ±``max_lag_ms``.

    For each lag L the score is <x, y[L:L+N]> / (|x| |y[L:L+N]|), with y zero outside the
    recording: the cosine between the reference and the same-length window of the recording, so
    a louder or quieter echo scores the same, and extra silence around it does not lower it.
    A positive lag means the received audio is late.
    """
    x = np.asarray(reference, dtype=np.float64)
    y = np.asarray(received, dtype=np.float64)
    max_lag = round(max_lag_ms * sample_rate / 1000.0)
    n = x.size
    x_norm = float(np.sqrt(np.dot(x, x)))
    if n == 0 or y.size == 0 or x_norm == 0.0:
        return CorrelationResult(peak=0.0, lag_samples=0, lag_ms=0.0)
    # padded[k] = y[k - max_lag]; the window for lag L starts at padded[L + max_lag].
    padded = np.zeros(2 * max_lag + n, dtype=np.float64)
    usable = y[: max_lag + n]
    padded[max_lag : max_lag + usable.size] = usable
    size = 1 << int(np.ceil(np.log2(padded.size + n)))
    spectrum = np.fft.rfft(padded, size) * np.conj(np.fft.rfft(x, size))
    dots = np.fft.irfft(spectrum, size)[: 2 * max_lag + 1]
    energy = np.concatenate(([0.0], np.cumsum(padded * padded)))
    window_energy = energy[n : n + 2 * max_lag + 1] - energy[: 2 * max_lag + 1]
    denominator = x_norm * np.sqrt(np.maximum(window_energy, 0.0))
    # Windows holding (almost) nothing would divide by ~0 and score noise; leave them at 0.
    floor = 1e-6 * x_norm * x_norm
    scores = np.divide(dots, denominator, out=np.zeros_like(dots),
                       where=window_energy > floor)
    best = int(np.argmax(scores))
    lag = best - max_lag
    return CorrelationResult(
        peak=float(np.clip(scores[best], -1.0, 1.0)),
        lag_samples=lag,
        lag_ms=1000.0 * lag / sample_rate,
    )


@dataclass(frozen=True, slots=True)
class EchoMatch:
    """Where a reference was found in a recording (:func:`find_with_drift`)."""

    whole: CorrelationResult
    """The whole-clip correlation; its lag is the echo delay."""
    windows: list[tuple[int, float, float]]
    """Per speech window (start ms, peak, lag ms) when the whole clip did not match; else []."""


def find_with_drift(
    reference: npt.ArrayLike,
    received: npt.ArrayLike,
    *,
    sample_rate: int = 8000,
    min_peak: float = 0.9,
    window_ms: int = 250,
    max_drift_ms: float = 40.0,
    max_lag_ms: float = 500.0,
) -> EchoMatch:
    """Find ``reference`` in a softphone's recording whose playout may shift mid-call.

    A PJSIP jitter buffer that shrinks or grows its delay by a frame or two shifts the rest of
    the recording, which lowers the whole-clip correlation although every part is there. So:
    the whole clip must peak >= ``min_peak``, or else every speech window of ``window_ms`` must
    on its own, at lags no more than ``max_drift_ms`` apart; a window that matches neither delay
    fully (the one holding the shift: half of it at each delay) may score >= 0.3 if it sits
    between two different lags or is the only weak one. Raises AssertionError with every
    window's numbers otherwise.
    """
    ref = np.asarray(reference)
    rec = np.asarray(received)
    whole = cross_correlate(ref, rec, sample_rate=sample_rate, max_lag_ms=max_lag_ms)
    if whole.peak >= min_peak:
        return EchoMatch(whole, [])
    size = sample_rate * window_ms // 1000
    windows: list[tuple[int, float, float]] = []
    for start in range(0, ref.size - size + 1, size):
        window = ref[start : start + size]
        if rms(window) > 300.0:  # speech, not a pause
            local = cross_correlate(window, rec[start:], sample_rate=sample_rate,
                                    max_lag_ms=max_lag_ms)
            windows.append((1000 * start // sample_rate, round(local.peak, 3), local.lag_ms))
    assert windows, (whole, "no speech in the reference")
    lags = [lag for _, _, lag in windows]
    weak = [i for i, (_, peak, _) in enumerate(windows) if peak < min_peak]
    for i in weak:
        at_shift = 0 < i < len(windows) - 1 and lags[i - 1] != lags[i + 1]
        assert windows[i][1] >= 0.3 and (at_shift or len(weak) == 1), (whole, windows)
    strong = [lags[i] for i in range(len(windows)) if i not in weak]
    assert strong and max(strong) - min(strong) <= max_drift_ms, (whole, windows)
    return EchoMatch(whole, windows)
