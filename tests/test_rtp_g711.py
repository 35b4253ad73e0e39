"""G.711 tables against the reference companding curves."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from rtp import g711

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
ALL_CODES = bytes(range(256))


def _audioop() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return pytest.importorskip("audioop")


def test_ulaw_matches_reference_for_every_sample_and_codeword() -> None:
    audioop = _audioop()
    assert g711.ulaw_encode(ALL_SAMPLES) == audioop.lin2ulaw(ALL_SAMPLES.astype("<i2").tobytes(), 2)
    decoded = g711.ulaw_decode(ALL_CODES)
    assert decoded.astype("<i2").tobytes() == audioop.ulaw2lin(ALL_CODES, 2)


def test_alaw_matches_reference_for_every_sample_and_codeword() -> None:
    audioop = _audioop()
    assert g711.alaw_encode(ALL_SAMPLES) == audioop.lin2alaw(ALL_SAMPLES.astype("<i2").tobytes(), 2)
    decoded = g711.alaw_decode(ALL_CODES)
    assert decoded.astype("<i2").tobytes() == audioop.alaw2lin(ALL_CODES, 2)


def test_known_codewords() -> None:
    assert g711.ulaw_encode(np.zeros(1, dtype=np.int16)) == bytes([g711.ULAW_SILENCE])
    assert g711.alaw_encode(np.zeros(1, dtype=np.int16)) == bytes([g711.ALAW_SILENCE])
    assert g711.ulaw_decode(b"\xff\x7f\x00\x80").tolist() == [0, 0, -32124, 32124]
    assert g711.alaw_decode(b"\xd5\x55\x2a\xaa").tolist() == [8, -8, -32256, 32256]
    assert g711.ulaw_decode(b"\x00").dtype == np.int16


def test_decode_then_encode_is_identity() -> None:
    assert g711.alaw_encode(g711.alaw_decode(ALL_CODES)) == ALL_CODES
    # μ-law has two zeros (0x7F and 0xFF); the encoder picks the positive one.
    expected = ALL_CODES.replace(b"\x7f", b"\xff")
    assert g711.ulaw_encode(g711.ulaw_decode(ALL_CODES)) == expected


def test_encode_clips_wider_dtypes() -> None:
    loud = np.array([100000, -100000, 0.0])
    assert g711.ulaw_encode(loud) == g711.ulaw_encode(np.array([32767, -32768, 0], np.int16))
    assert g711.alaw_encode(loud) == g711.alaw_encode(np.array([32767, -32768, 0], np.int16))


def test_silence_payloads() -> None:
    assert g711.silence(g711.PT_PCMU) == b"\xff" * 160
    assert g711.silence(g711.PT_PCMA, samples=80) == b"\xd5" * 80
    assert g711.silence(0) is g711.silence(0)  # cached: no allocation per tick
    with pytest.raises(ValueError):
        g711.silence(96)


@pytest.mark.parametrize(
    ("pt", "decode", "encode"),
    [(0, g711.ulaw_decode, g711.ulaw_encode), (8, g711.alaw_decode, g711.alaw_encode)],
)
def test_attenuate_lowers_by_six_db_per_step(
    pt: int, decode: Callable[[bytes], Any], encode: Callable[[Any], bytes]
) -> None:
    tone = encode((8000 * np.sin(np.arange(160) / 5)).astype(np.int16))
    level = float(np.abs(decode(tone).astype(np.int32)).sum())
    once = float(np.abs(decode(g711.attenuate(tone, pt)).astype(np.int32)).sum())
    thrice = float(np.abs(decode(g711.attenuate(tone, pt, 3)).astype(np.int32)).sum())
    assert once == pytest.approx(level / 2, rel=0.05)
    assert thrice == pytest.approx(level / 8, rel=0.1)
    assert len(g711.attenuate(tone, pt)) == 160
    silent = g711.silence(pt)
    assert np.abs(decode(g711.attenuate(silent, pt)).astype(np.int32)).max() <= 8


def test_attenuate_rejects_other_codecs() -> None:
    with pytest.raises(ValueError):
        g711.attenuate(b"\x00" * 10, 9)
