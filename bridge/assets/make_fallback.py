"""Render the fallback prompt the caller hears when the voice model is unavailable.

    .venv/bin/python bridge/assets/make_fallback.py           # (re)write the two files
    .venv/bin/python bridge/assets/make_fallback.py --check   # verify the committed ones

Outputs, next to this script (committed, each under 60 KB):
- ``fallback.ulaw``: the prompt as raw G.711 μ-law (PCMU) at 8 kHz, a whole number of
  160-byte (20 ms) frames: exactly what goes into RTP payloads, no header.
- ``fallback.alaw``: the same samples as G.711 A-law (PCMA).

The speech is espeak-ng (``-v en-us -s 165``), resampled to 8 kHz with soxr, trimmed to 100 ms of
silence at each end, normalized to a 0.6 full-scale peak and zero-padded to whole frames. Only
the samples depend on the espeak-ng version; nothing reads more into them than "speech, about
4 s, whole frames".
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soxr

ASSETS = Path(__file__).resolve().parent
if __package__ in (None, ""):  # run as a script: make `rtp` importable
    sys.path.insert(0, str(ASSETS.parents[1]))

from rtp.g711 import alaw_encode, ulaw_encode  # noqa: E402

__all__ = ["PROMPT_TEXT", "frame_speech", "main", "render_samples", "speak"]

PROMPT_TEXT = "Sorry, our assistant is unavailable right now. Please call again later."
ESPEAK_ARGS = ("-v", "en-us", "-s", "165", "-p", "50", "-a", "100")
SAMPLE_RATE = 8000
FRAME_SAMPLES = 160
PEAK = 0.6 * 32767
MARGIN_MS = 100
MAX_BYTES = 60_000

ULAW = ASSETS / "fallback.ulaw"
ALAW = ASSETS / "fallback.alaw"


def _read_wav(path: Path) -> tuple[npt.NDArray[np.int16], int]:
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise SystemExit(f"{path}: expected 16-bit mono, got {wav.getparams()}")
        data = wav.readframes(wav.getnframes())
        return np.frombuffer(data, dtype="<i2").astype(np.int16), wav.getframerate()


def speak(text: str, espeak_args: Sequence[str]) -> tuple[npt.NDArray[np.int16], int]:
    """``text`` spoken by espeak-ng: its samples and their rate (espeak-ng's own, not 8 kHz)."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise SystemExit("espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "espeak.wav"
        subprocess.run([espeak, *espeak_args, "-w", str(raw), text], check=True, timeout=60)
        return _read_wav(raw)


def frame_speech(pcm: npt.NDArray[np.float64], peak: float) -> npt.NDArray[np.int16]:
    """8 kHz speech trimmed to MARGIN_MS of quiet at each end, scaled to ``peak`` and
    zero-padded to whole 20 ms frames."""
    loud = np.nonzero(np.abs(pcm) > 0.01 * np.abs(pcm).max())[0]
    margin = SAMPLE_RATE * MARGIN_MS // 1000
    pcm = pcm[max(0, int(loud[0]) - margin) : int(loud[-1]) + margin]
    pcm = pcm * (peak / np.abs(pcm).max())
    padded = np.zeros(-(-len(pcm) // FRAME_SAMPLES) * FRAME_SAMPLES)
    padded[: len(pcm)] = pcm
    return np.clip(np.round(padded), -32768, 32767).astype(np.int16)


def render_samples() -> npt.NDArray[np.int16]:
    """Speak PROMPT_TEXT with espeak-ng and shape it into whole 8 kHz frames."""
    samples, rate = speak(PROMPT_TEXT, ESPEAK_ARGS)
    pcm = np.asarray(soxr.resample(samples.astype(np.float32), rate, SAMPLE_RATE),
                     dtype=np.float64)
    return frame_speech(pcm, PEAK)


def check() -> list[str]:
    """Problems with the committed files (empty when they are fine)."""
    problems = []
    sizes = {}
    for path in (ULAW, ALAW):
        if not path.is_file():
            problems.append(f"{path.name}: missing")
            continue
        size = sizes[path.name] = path.stat().st_size
        if size == 0 or size % FRAME_SAMPLES:
            problems.append(f"{path.name}: {size} bytes is not a whole number of 20 ms frames")
        if size > MAX_BYTES:
            problems.append(f"{path.name}: {size} bytes is more than {MAX_BYTES}")
    if len(set(sizes.values())) > 1:
        problems.append(f"the two files differ in length: {sizes}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify the committed files")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    samples = render_samples()
    ULAW.write_bytes(ulaw_encode(samples))
    ALAW.write_bytes(alaw_encode(samples))
    seconds = len(samples) / SAMPLE_RATE
    print(f"wrote {ULAW.name} and {ALAW.name}: {seconds:.2f} s, {len(samples)} bytes each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
