"""The local default model: the caller hears themselves.

Every inbound frame goes straight back to the sink as :class:`~bridge.base.AudioOut`,
with no buffering, so the round trip is only the jitter buffer plus one playout tick.
DTMF digits come back as caller transcripts so the admin shows them.
"""

from __future__ import annotations

import logging

from .base import AudioOut, CallContext, ModelSession, ModelSink, Transcript

__all__ = ["EchoModel"]

logger = logging.getLogger(__name__)


class EchoModel(ModelSession):
    """Loops audio back to the caller; needs no network and no key."""

    name = "echo"

    def __init__(self) -> None:
        self._sink: ModelSink | None = None
        self._context: CallContext | None = None
        self._closed = False

    @property
    def context(self) -> CallContext | None:
        """The call this session serves, once opened."""
        return self._context

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    async def open(self, context: CallContext, sink: ModelSink) -> None:
        if self._closed:
            raise RuntimeError("echo model session is closed")
        self._context = context
        self._sink = sink
        logger.debug("echo model opened for call %s (%s)", context.call_id, context.codec)

    def push_audio(self, payload: bytes) -> None:
        if self._sink is not None:
            self._sink(AudioOut(payload=payload, item_id=None))

    def send_dtmf(self, digit: str) -> None:
        if self._sink is not None:
            self._sink(Transcript(role="caller", text=f"DTMF {digit}", final=True))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sink = None
        if self._context is not None:
            logger.debug("echo model closed for call %s", self._context.call_id)
