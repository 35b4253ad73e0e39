"""tests.peers.audio: G.711, WAV I/O, levels and the echo correlation the integration tests use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.peers.audio import (
    CorrelationResult,
    active_span_ms,
    alaw_decode,
    alaw_encode,
    cross_correlate,
    find_with_drift,
    is_silence,
    read_wav,
    resample,
    rms,
    rms_dbfs,
    ulaw_decode,
    ulaw_encode,
    write_wav,
)

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    samples, rate = read_wav(FIXTURES / "speech_8k.wav")
    assert rate == 8000
    return samples


def test_ulaw_known_codes() -> None:
    assert ulaw_decode(bytes([0x00, 0x80, 0xFF, 0x7F])).tolist() == [-32124, 32124, 0, 0]
    assert np.frombuffer(ulaw_encode([0, 32767, -32768]), np.uint8).tolist() == [0xFF, 0x80, 0x00]


def test_alaw_known_codes() -> None:
    assert alaw_decode(bytes([0xD5, 0x55, 0xAA, 0x2A])).tolist() == [8, -8, 32256, -32256]
    assert np.frombuffer(alaw_encode([0, 32767, -32768]), np.uint8).tolist() == [0xD5, 0xAA, 0x2A]


def test_every_code_survives_decode_then_encode() -> None:
    codes = bytes(range(256))
    ulaw_back = ulaw_encode(ulaw_decode(codes))
    # 0x7F is μ-law's "negative zero": it decodes to 0, which encodes as 0xFF.
    assert [c for c, b in zip(codes, ulaw_back, strict=True) if c != b] == [0x7F]
    assert alaw_encode(alaw_decode(codes)) == codes


def test_encode_decode_error_is_within_one_quantization_step() -> None:
    pcm = np.arange(-32768, 32768, 7, dtype=np.int16)
    for encode, decode in ((ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)):
        back = decode(encode(pcm)).astype(np.int32)
        error = np.abs(back - pcm.astype(np.int32))
        # the step is 1/16 of the segment: relative error below ~1/16, absolute below 64 near 0
        assert np.all(error <= np.maximum(np.abs(pcm.astype(np.int32)) / 15, 64))


def test_wav_round_trip(tmp_path: Path) -> None:
    samples = (np.sin(np.arange(8000) * 2 * np.pi * 440 / 8000) * 10000).astype(np.int16)
    path = tmp_path / "tone.wav"
    write_wav(path, samples, 8000)
    back, rate = read_wav(path)
    assert rate == 8000
    assert np.array_equal(back, samples)


def test_levels_and_silence(speech: np.ndarray) -> None:
    assert rms(np.zeros(160)) == 0.0
    assert rms_dbfs(np.zeros(160)) == float("-inf")
    assert is_silence(np.zeros(160))
    assert is_silence(ulaw_decode(b"\xff" * 160))  # μ-law idle pattern
    assert not is_silence(speech)
    full_scale_square = np.full(160, 32767)
    assert rms_dbfs(full_scale_square) == pytest.approx(0.0, abs=0.01)


def test_active_span_finds_the_speech_inside_silence(speech: np.ndarray) -> None:
    padded = np.concatenate([np.zeros(4000, np.int16), speech, np.zeros(4000, np.int16)])
    own = active_span_ms(speech)
    span = active_span_ms(padded)
    assert own is not None and span is not None
    assert span[0] == pytest.approx(own[0] + 500.0, abs=20.0)
    assert span[1] == pytest.approx(own[1] + 500.0, abs=20.0)
    assert active_span_ms(np.zeros(8000)) is None


@pytest.mark.parametrize("shift_ms", [0.0, 20.0, 137.5, 480.0])
def test_cross_correlate_finds_a_delayed_quieter_copy(speech: np.ndarray, shift_ms: float) -> None:
    delay = round(shift_ms * 8)
    rng = np.random.default_rng(1)
    received = np.concatenate([np.zeros(delay), 0.3 * speech, np.zeros(3000)])
    received += rng.normal(0.0, 30.0, received.size)  # about -50 dBFS of noise
    result = cross_correlate(speech, received, sample_rate=8000, max_lag_ms=500)
    assert result.lag_samples == delay
    assert result.lag_ms == pytest.approx(shift_ms)
    assert result.peak > 0.99


def test_cross_correlate_negative_lag_when_the_recording_starts_late(speech: np.ndarray) -> None:
    received = speech[640:]  # recording began 80 ms into the reference
    result = cross_correlate(speech, received)
    assert result.lag_ms == pytest.approx(-80.0)
    assert result.peak > 0.9


def test_cross_correlate_through_g711(speech: np.ndarray) -> None:
    for encode, decode in ((ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)):
        echoed = np.concatenate([np.zeros(400, np.int16), decode(encode(speech))])
        result = cross_correlate(speech, echoed)
        assert result.lag_ms == pytest.approx(50.0)
        assert result.peak > 0.99


def test_cross_correlate_rejects_unrelated_audio(speech: np.ndarray) -> None:
    noise = np.random.default_rng(2).normal(0.0, 3000.0, speech.size + 8000)
    assert cross_correlate(speech, noise).peak < 0.2
    reversed_speech = speech[::-1].copy()
    assert cross_correlate(speech, reversed_speech).peak < 0.5


def test_cross_correlate_does_not_look_beyond_the_window(speech: np.ndarray) -> None:
    late = np.concatenate([np.zeros(8 * 800, np.int16), speech])  # 800 ms late
    result = cross_correlate(speech, late, max_lag_ms=500)
    assert abs(result.lag_ms) <= 500.0
    assert result.peak < 0.9
    assert cross_correlate(speech, late, max_lag_ms=1000).lag_ms == pytest.approx(800.0)


def test_cross_correlate_of_silence_is_zero(speech: np.ndarray) -> None:
    assert cross_correlate(speech, np.zeros(speech.size)).peak == 0.0
    assert cross_correlate(np.zeros(100), speech) == CorrelationResult(
        peak=0.0, lag_samples=0, lag_ms=0.0
    )


def test_resample_keeps_the_signal(speech: np.ndarray) -> None:
    wide = resample(speech, 8000, 16000)
    assert wide.size == pytest.approx(2 * speech.size, abs=2)
    back = resample(wide, 16000, 8000)
    result = cross_correlate(speech, back)
    assert result.lag_ms == pytest.approx(0.0, abs=0.25)
    assert result.peak > 0.99


def shifted_echo(speech: np.ndarray, first_ms: int, second_ms: int, at: int) -> np.ndarray:
    """``speech`` delayed by ``first_ms``, then from sample ``at`` on by ``second_ms``: a
    jitter buffer that changed its delay mid-call."""
    first, second = first_ms * 8, second_ms * 8
    received = np.zeros(speech.size + max(first, second), dtype=np.int16)
    received[first : first + at] = speech[:at]
    received[second + at : second + speech.size] = speech[at:]
    return received


def test_find_with_drift_takes_the_whole_clip_when_it_matches(speech: np.ndarray) -> None:
    match = find_with_drift(speech, shifted_echo(speech, 40, 40, speech.size // 2))
    assert match.whole.peak > 0.99 and match.whole.lag_ms == 40.0
    assert match.windows == []


def test_find_with_drift_follows_a_playout_shift_window_by_window(speech: np.ndarray) -> None:
    received = shifted_echo(speech, 200, 160, speech.size // 2)
    assert cross_correlate(speech, received).peak < 0.9  # the whole clip no longer matches
    match = find_with_drift(speech, received, window_ms=200, max_drift_ms=40)
    lags = {lag for _, peak, lag in match.windows if peak >= 0.9}
    assert lags == {200.0, 160.0}
    with pytest.raises(AssertionError):  # a larger step than allowed
        find_with_drift(speech, shifted_echo(speech, 200, 100, speech.size // 2), window_ms=200,
                        max_drift_ms=40)


def test_find_with_drift_rejects_unrelated_audio(speech: np.ndarray) -> None:
    noise = np.random.default_rng(7).integers(-8000, 8000, speech.size, dtype=np.int16)
    with pytest.raises(AssertionError):
        find_with_drift(speech, noise)
