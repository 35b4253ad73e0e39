"""One phone call: a SIP dialog, its RTP stream and its model session, wired together.

The SIP side is driven by :class:`sipagent.server.Server` (which owns the user agent
core); a :class:`Call` owns the media: the RTP endpoint, the model session and the
registry record. Audio flows RTP → ``model.push_audio`` and model ``AudioOut`` → the
RTP playout queue, paced by the RTP session; barge-in flushes that queue.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from bridge.base import (
    AudioOut,
    CallContext,
    ModelClosed,
    ModelError,
    ModelEvent,
    ModelSession,
    SpeechStarted,
    SpeechStopped,
    Transcript,
)
from rtp.endpoint import PortAllocator, RtpEndpoint
from rtp.pacer import PlayoutQueue
from rtp.session import AudioReceived, DtmfReceived, MediaTimeout, RtpSession

from .dialog import Dialog
from .offer_answer import Negotiated
from .registry import CallRecord, CallRegistry, CallState, RtpSnapshot
from .sdp import Direction

__all__ = ["Call", "CallLogAdapter"]

logger = logging.getLogger(__name__)


def _is_hold(direction: Direction) -> bool:
    """Whether our negotiated direction means one side holds the other."""
    return not direction.sends or not direction.receives


class CallLogAdapter(logging.LoggerAdapter[logging.Logger]):
    """Prefix every log line of a call with its Call-ID."""

    def process(self, msg: str, kwargs: Any) -> tuple[str, Any]:
        extra = self.extra or {}
        return f"[{extra.get('call_id', '?')}] {msg}", kwargs


HangupHandler = Callable[["Call", str], None]


class Call:
    """Media and model side of one call."""

    def __init__(
        self,
        *,
        dialog: Dialog,
        record: CallRecord,
        registry: CallRegistry,
        model: ModelSession,
        local_host: str,
        rtp_port: int,
        ports: PortAllocator,
        inactivity_timeout: float,
        hold_inactivity_timeout: float,
        on_hangup: HangupHandler,
    ) -> None:
        self.dialog = dialog
        self.record = record
        self.registry = registry
        self.model = model
        self.local_host = local_host
        self.rtp_port = rtp_port
        self.ports = ports
        self.sdp_session_id = secrets.randbelow(2**31)
        self.sdp_version = 0
        self.negotiated: Negotiated | None = None
        self.pending_offer: bytes | None = None
        """Our SDP offer awaiting its answer in the ACK (late offer)."""
        self.endpoint: RtpEndpoint | None = None
        self.log = CallLogAdapter(logger, {"call_id": dialog.call_id})
        self._inactivity_timeout = inactivity_timeout
        self._hold_inactivity_timeout = hold_inactivity_timeout
        self._on_hangup = on_hangup
        self._closed = False
        self._port_owned_by_endpoint = False
        self._model_open = False
        self._media_started = False
        # Frames pushed per model item since the last barge-in, in push order: the item
        # the caller interrupts may still be entirely queued (nothing of it played yet).
        self._queued_items: dict[str, int] = {}

    @property
    def session_id(self) -> str:
        return self.record.session_id

    # -- set-up -----------------------------------------------------------------------------
    async def open_model(self) -> None:
        codec = self.negotiated.codec.name if self.negotiated else "PCMU"
        context = CallContext(
            call_id=self.dialog.call_id,
            session_id=self.session_id,
            caller=self.record.caller_number or self.record.from_uri,
            callee=self.record.to_uri,
            codec=codec,
        )
        await self.model.open(context, self._on_model_event)
        if self._closed:  # the call ended while the model was connecting
            await self.model.close()
            return
        self._model_open = True

    async def start_media(self, negotiated: Negotiated) -> None:
        """Bind the RTP socket pair and start the stream (after the 200 OK is sent)."""
        if self._closed:
            # close() already released our port; it may belong to another call by now.
            return
        self.apply_negotiation(negotiated)
        loop = asyncio.get_running_loop()
        session = RtpSession(
            payload_type=negotiated.codec.payload_type,
            dtmf_payload_type=negotiated.dtmf_payload_type,
            remote_addr=negotiated.remote_addr,
            ssrc=secrets.randbits(32),
            initial_seq=secrets.randbits(16),
            initial_timestamp=secrets.randbits(32),
            now=loop.time(),
            inactivity_timeout=self._inactivity_timeout,
            remote_rtcp_addr=negotiated.remote_rtcp_addr,
        )
        # From here the endpoint owns the port: it releases it when closed.
        self._port_owned_by_endpoint = True
        self.endpoint = await RtpEndpoint.create(
            session, self.local_host, self.ports, self._on_rtp_event, port=self.rtp_port
        )
        if self._closed:  # the call ended while the sockets were being bound
            self.endpoint.close()
            return
        self._apply_direction(negotiated.direction)
        self._media_started = True

    def apply_negotiation(self, negotiated: Negotiated) -> None:
        self.negotiated = negotiated
        self.record.codec = negotiated.codec.name
        self.record.remote_addr = negotiated.remote_addr
        if self.endpoint is not None:
            loop = asyncio.get_running_loop()
            self.endpoint.session.dtmf_payload_type = negotiated.dtmf_payload_type
            if negotiated.remote_addr is not None:
                self.endpoint.session.set_remote(
                    negotiated.remote_addr, loop.time(), rtcp_addr=negotiated.remote_rtcp_addr
                )
            self._apply_direction(negotiated.direction)
        self.registry.touch(self.record)

    def _apply_direction(self, direction: Direction) -> None:
        held = _is_hold(direction)
        if self.endpoint is not None:
            self.endpoint.session.set_direction(send=direction.sends, recv=direction.receives)
            self.endpoint.session.set_inactivity_timeout(
                self._hold_inactivity_timeout if held else self._inactivity_timeout
            )
        if self.record.state in (CallState.ANSWERED, CallState.HELD):
            self.record.state = CallState.HELD if held else CallState.ANSWERED

    def mark_answered(self) -> None:
        held = self.negotiated is not None and _is_hold(self.negotiated.direction)
        self.record.state = CallState.HELD if held else CallState.ANSWERED
        self.record.answered_at = time.time()
        self.registry.touch(self.record)

    # -- events -----------------------------------------------------------------------------
    def _on_rtp_event(self, event: object) -> None:
        if isinstance(event, AudioReceived):
            if self._model_open:
                self.model.push_audio(event.payload)
        elif isinstance(event, DtmfReceived):
            self.receive_dtmf(event.digit)
        elif isinstance(event, MediaTimeout):
            self.log.info("no RTP for %.0f s: hanging up", event.idle_s)
            self._on_hangup(self, "rtp-timeout")

    def receive_dtmf(self, digit: str) -> None:
        self.record.dtmf.append(digit)
        self.registry.touch(self.record)
        if self._model_open:
            self.model.send_dtmf(digit)

    def _on_model_event(self, event: ModelEvent) -> None:
        endpoint = self.endpoint
        if isinstance(event, AudioOut):
            if endpoint is not None:
                self._queue_audio(endpoint.session.playout, event)
        elif isinstance(event, SpeechStarted):
            if endpoint is not None:
                playout = endpoint.session.playout
                item, played = self._interrupted_item(playout)
                playout.flush()
                self._queued_items.clear()
                self.model.audio_interrupted(item, played)
        elif isinstance(event, SpeechStopped):
            pass
        elif isinstance(event, Transcript):
            if event.final:
                self.record.transcript.append(
                    {"role": event.role, "text": event.text, "at": time.time()}
                )
                self.registry.touch(self.record)
        elif isinstance(event, ModelError):
            self.log.warning("model error: %s", event.message)
            if event.fatal:
                self._on_hangup(self, "model-error")
        elif isinstance(event, ModelClosed):
            self.log.info("model closed: %s", event.reason)
            self._on_hangup(self, "model-closed")

    def _queue_audio(self, playout: PlayoutQueue, event: AudioOut) -> None:
        item = event.item_id
        if item is not None:
            queued = self._queued_items
            if item not in queued:
                # Forget the items already heard in full; keeps this to a few entries.
                frame_ms = playout.frame_ms
                heard = [i for i, n in queued.items() if playout.played_ms(i) >= n * frame_ms]
                for done in heard:
                    del queued[done]
            queued[item] = queued.get(item, 0) + 1
        playout.push(event.payload, item)

    def _interrupted_item(self, playout: PlayoutQueue) -> tuple[str | None, int]:
        """The item the caller talks over and how much of it was sent (ms)."""
        for item, frames in self._queued_items.items():
            played = playout.played_ms(item)
            if played < frames * playout.frame_ms:
                return item, played
        # Everything queued was sent; the model may still be producing the current item.
        current = playout.current_item
        return current, playout.played_ms(current) if current is not None else 0

    # -- statistics and teardown ------------------------------------------------------------
    def refresh_stats(self) -> None:
        if self.endpoint is not None:
            self.record.rtp = RtpSnapshot.from_stats(self.endpoint.session.stats())
            self.registry.touch(self.record)

    async def close(self, reason: str) -> None:
        """Stop media and model, release the ports, record the end; idempotent."""
        if self._closed:
            return
        self._closed = True
        self.refresh_stats()
        if self.endpoint is not None:
            self.endpoint.close()
            await self.endpoint.wait_closed()
        elif not self._port_owned_by_endpoint:
            self.ports.release(self.rtp_port)
        try:
            await self.model.close()
        except Exception:  # a failing model must not keep the call's resources
            self.log.exception("model close failed")
        self.record.end_reason = self.record.end_reason or reason
        self.record.ended_at = time.time()
        self.registry.remove(self.session_id)
        self.log.info("call ended: %s", reason)
