"""The prompt a caller hears when the voice model is unavailable, as ready-made RTP payloads.

The audio is pre-rendered (``bridge/assets/make_fallback.py``: espeak-ng at 8 kHz) into raw
G.711 files, one per codec, so playing it costs no decoding and needs no model: the call pushes
these 20 ms frames into its playout queue like any model audio.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Final

__all__ = ["FALLBACK_TEXT", "FRAME_BYTES", "fallback_frames"]

logger = logging.getLogger(__name__)

FALLBACK_TEXT: Final = "Sorry, our assistant is unavailable right now. Please call again later."
"""What the prompt says."""
FRAME_BYTES: Final = 160
"""One 20 ms G.711 frame."""

_ASSETS: Final = Path(__file__).resolve().parent / "assets"
_FILES: Final = {"PCMU": "fallback.ulaw", "PCMA": "fallback.alaw"}


@functools.cache
def fallback_frames(codec: str) -> tuple[bytes, ...]:
    """The prompt as 160-byte frames of ``codec`` (``PCMU`` or ``PCMA``).

    Empty (logged once) when the codec is unknown or the asset cannot be read: a missing
    prompt must not stop the call from ending properly.
    """
    name = _FILES.get(codec.upper())
    if name is None:
        logger.error("no fallback prompt for codec %s", codec)
        return ()
    try:
        data = (_ASSETS / name).read_bytes()
    except OSError as exc:
        logger.error("cannot read the fallback prompt %s: %s", name, exc)
        return ()
    whole = len(data) - len(data) % FRAME_BYTES
    return tuple(data[offset : offset + FRAME_BYTES] for offset in range(0, whole, FRAME_BYTES))
