"""One phone call: a SIP dialog, its RTP stream and its model session, wired together.

The SIP side is driven by :class:`sipagent.server.Server` (which owns the user agent
core); a :class:`Call` owns the media: the RTP endpoint, the model session and the
registry record. Audio flows RTP → ``model.push_audio`` and model ``AudioOut`` → the
RTP playout queue, paced by the RTP session; barge-in flushes that queue.

The call watches its playout queue (:class:`WatchedPlayout`) to know when a frame really
leaves: per-turn latency runs from the model's :class:`~bridge.base.SpeechStopped` to the
first RTP packet of the reply, and the fallback prompt is over when its last frame is sent.

When the model cannot be reached the caller is answered anyway and hears the pre-rendered
fallback prompt (:mod:`bridge.fallback`), then is transferred or hung up on. When the model
fails mid-call the prompt plays while a new session opens (up to ``max_reconnects`` per call);
the call goes on with it, or ends. Where the model link is lives in :class:`ModelLink`.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import secrets
import time
import weakref
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from bridge.base import (
    AudioOut,
    CallContext,
    ModelClosed,
    ModelError,
    ModelEvent,
    ModelSession,
    ModelSink,
    SpeechStarted,
    SpeechStopped,
    Transcript,
)
from bridge.fallback import fallback_frames
from rtp.endpoint import PortAllocator, PortReservation, RtpEndpoint, TickGroups
from rtp.pacer import PlayoutQueue
from rtp.session import AudioReceived, DtmfReceived, MediaTimeout, RtpSession
from rtp.srtp import SrtpContext

from .dialog import Dialog
from .logs import CallLogAdapter, context_for_call
from .offer_answer import Negotiated
from .recording import CallRecording, RecordingOptions
from .registry import CallRecord, CallRegistry, CallState, RtpSnapshot
from .sdp import Direction

if TYPE_CHECKING:
    from bridge.openai_realtime import Observation

__all__ = [
    "Call",
    "CallLogAdapter",
    "HangupHandler",
    "ModelFactory",
    "ModelLink",
    "ObservationHandler",
    "TransferHandler",
    "WatchedPlayout",
]

logger = logging.getLogger(__name__)

MEDIA_WAIT: Final = 5.0
"""Seconds the fallback prompt waits for media to start (late offer: the ACK) before giving up."""
PROMPT_SLACK: Final = 2.0
"""Seconds past its length a prompt may take to be sent (a stalled loop) before moving on."""


class ModelLink(enum.Enum):
    """Where the call is with its model session."""

    OPENING = "opening"
    "The first session is opening (the call rings)."
    BRIDGED = "bridged"
    "Audio flows between caller and model."
    FALLBACK = "fallback"
    "The model failed or never came: the prompt plays, a new session may be opening."
    CLOSED = "closed"
    "The call ended."


_LINK_TRANSITIONS: Final[Mapping[ModelLink, frozenset[ModelLink]]] = {
    ModelLink.OPENING: frozenset({ModelLink.BRIDGED, ModelLink.FALLBACK, ModelLink.CLOSED}),
    ModelLink.BRIDGED: frozenset({ModelLink.FALLBACK, ModelLink.CLOSED}),
    ModelLink.FALLBACK: frozenset({ModelLink.BRIDGED, ModelLink.CLOSED}),
    ModelLink.CLOSED: frozenset(),
}


def _is_hold(direction: Direction) -> bool:
    """Whether our negotiated direction means one side holds the other."""
    return not direction.sends or not direction.receives


HangupHandler = Callable[["Call", str], None]
"""Ends the call (BYE, or 480 before the answer) with the given end reason."""
TransferHandler = Callable[["Call", str, str], None]
"""Hands the caller to a target (``call, target, end reason``) after the fallback prompt."""
ObservationHandler = Callable[["Observation"], None]
"""Receives a model's records (finished tool calls, turn latency)."""
ModelFactory = Callable[[ObservationHandler], ModelSession]
"""Builds a new, unopened model session reporting its records to the given handler."""


def _ignore_sent(item_id: str, played_ms: int) -> None:
    """The ``on_sent`` of a detached :class:`WatchedPlayout`."""


class WatchedPlayout(PlayoutQueue):
    """The RTP session's playout queue, telling the call about every model frame it sends.

    ``pop()`` runs in the RTP session's ``datagrams_to_send``, right before the packet goes
    out, so ``on_sent`` sees the moment a frame leaves, not the moment it was queued.
    """

    __slots__ = ("on_audio", "on_sent")

    def __init__(self, frame_ms: int, on_sent: Callable[[str, int], None]) -> None:
        super().__init__(frame_ms)
        self.on_sent = on_sent
        """Called with the item id and its milliseconds sent so far, for tagged frames."""
        self.on_audio: Callable[[bytes], None] | None = None
        """Called with every frame sent (the call's recording), when set."""

    def detach(self) -> None:
        """Stop reporting (the call has ended): the queue no longer holds the call."""
        self.on_sent = _ignore_sent
        self.on_audio = None

    def pop(self) -> bytes | None:
        payload = super().pop()
        item = self.current_item
        if payload is not None and item is not None:
            self.on_sent(item, self.played_ms(item))
        if payload is not None and self.on_audio is not None:
            self.on_audio(payload)
        return payload


@dataclass(slots=True)
class _Turn:
    """The caller finished speaking; the reply's first packet is awaited."""

    stopped_at: float
    "Loop time of the model's SpeechStopped."
    earlier_items: frozenset[str]
    "Items queued or playing when the turn ended: not the reply."
    item_id: str | None = None
    "The reply's item, once its first frame is queued."


@dataclass(slots=True)
class _Prompt:
    """The fallback prompt being played."""

    item_id: str
    duration_ms: int
    done: asyncio.Event


def _json_or_text(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text


class Call:
    """Media and model side of one call."""

    def __init__(
        self,
        *,
        dialog: Dialog,
        record: CallRecord,
        registry: CallRegistry,
        model: ModelSession | None = None,
        model_factory: ModelFactory | None = None,
        local_host: str,
        rtp_port: int,
        ports: PortAllocator,
        inactivity_timeout: float,
        hold_inactivity_timeout: float,
        on_hangup: HangupHandler,
        open_timeout: float = 10.0,
        max_reconnects: int = 0,
        transfer_target: str | None = None,
        on_transfer: TransferHandler | None = None,
        reservation: PortReservation | None = None,
        recordings: RecordingOptions | None = None,
        ticks: TickGroups | None = None,
    ) -> None:
        self.dialog = dialog
        self.record = record
        self.registry = registry
        if model is None:
            if model_factory is None:
                raise ValueError("a call needs a model or a model factory")
            model = model_factory(self._weak_observer())
        self.model: ModelSession = model
        """The current model session (a new one after a re-bridge)."""
        self.local_host = local_host
        self.rtp_port = rtp_port
        self.ports = ports
        self._ticks = ticks
        """Spreads the calls' 20 ms ticks over the frame and runs them, one timer per phase
        (None: the grid starts at once, on a timer of the call's own)."""
        self._first_tick: float | None = None
        # The port pair already bound for this call (so the SDP answer names a port we hold).
        self._reservation = reservation
        self.srtp_key = secrets.token_bytes(30)
        """Our SDES master key and salt (used only when SRTP is negotiated)."""
        self.sdp_session_id = secrets.randbelow(2**31)
        self.sdp_version = 0
        self.negotiated: Negotiated | None = None
        self.pending_offer: bytes | None = None
        """Our SDP offer awaiting its answer in the ACK (late offer)."""
        self.endpoint: RtpEndpoint | None = None
        # The call's own lines name it even when logged while handling another call.
        self.log = CallLogAdapter(
            logger, {"call_id": dialog.call_id, "session_id": record.session_id}
        )
        self._inactivity_timeout = inactivity_timeout
        self._hold_inactivity_timeout = hold_inactivity_timeout
        self._on_hangup = on_hangup
        self._model_factory = model_factory
        self._open_timeout = open_timeout
        self._max_reconnects = max_reconnects
        self._transfer_target = transfer_target
        self._on_transfer = on_transfer
        self._closed = False
        self._port_owned_by_endpoint = False
        self._link = ModelLink.OPENING
        self._media_started = asyncio.Event()
        # Events of a session that is not bridged yet, replayed once it is.
        self._held_events: list[ModelEvent] = []
        # Frames pushed per model item since the last barge-in, in push order: the item
        # the caller interrupts may still be entirely queued (nothing of it played yet).
        self._queued_items: dict[str, int] = {}
        self._turn: _Turn | None = None
        self._prompt: _Prompt | None = None
        self._prompts_played = 0
        self.reconnects = 0
        """New model sessions opened after a mid-call failure."""
        self._task: asyncio.Task[None] | None = None
        self._recordings = recordings
        self.recording: CallRecording | None = None
        """The call's stereo WAV being written (from media start), when recording is on."""

    @property
    def session_id(self) -> str:
        return self.record.session_id

    @property
    def link(self) -> ModelLink:
        """Where the call is with its model session."""
        return self._link

    def _set_link(self, link: ModelLink) -> None:
        if link not in _LINK_TRANSITIONS[self._link]:
            raise RuntimeError(f"illegal model link transition {self._link.name} -> {link.name}")
        self.log.debug("model link %s -> %s", self._link.name, link.name)
        self._link = link

    # -- set-up -----------------------------------------------------------------------------
    def _context(self) -> CallContext:
        codec = self.negotiated.codec.name if self.negotiated else "PCMU"
        return CallContext(
            call_id=self.dialog.call_id,
            session_id=self.session_id,
            caller=self.record.caller_number or self.record.from_uri,
            callee=self.record.to_uri,
            codec=codec,
        )

    def _weak_observer(self) -> Callable[[Observation], None]:
        """:meth:`observe` for a model session to keep, without keeping the call alive."""
        observe = weakref.WeakMethod(self.observe)

        def observer(record: Observation) -> None:
            method = observe()
            if method is not None:
                method(record)

        return observer

    def _sink_for(self, model: ModelSession) -> ModelSink:
        """The sink of one session: a replaced session's late events are dropped."""

        # The session keeps its sink: a weak reference, or call and session would hold each other
        # and an ended call would wait for a full garbage collection to be freed.
        call_ref = weakref.ref(self)

        def sink(event: ModelEvent) -> None:
            call = call_ref()
            if call is None or model is not call.model or call._closed:
                return
            if call._link is ModelLink.BRIDGED:
                call._on_model_event(event)
            else:
                call._held_events.append(event)

        return sink

    async def open_model(self) -> None:
        """Open the first model session (raises when it cannot be opened)."""
        model = self.model
        await model.open(self._context(), self._sink_for(model))
        if self._closed:  # the call ended while the model was connecting
            await model.close()
            return
        self._bridge()

    def _bridge(self) -> None:
        """Let audio flow to the current session, replaying what it said meanwhile."""
        self._set_link(ModelLink.BRIDGED)
        held, self._held_events = self._held_events, []
        for event in held:
            if self._link is not ModelLink.BRIDGED:
                break
            self._on_model_event(event)

    async def start_media(self, negotiated: Negotiated) -> None:
        """Bind the RTP socket pair and start the stream (after the 200 OK is sent)."""
        if self._closed:
            # close() already released our port; it may belong to another call by now.
            return
        self.apply_negotiation(negotiated)
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._ticks is not None and self._first_tick is None:
            self._first_tick = self._ticks.place(now)
        session = RtpSession(
            payload_type=negotiated.codec.payload_type,
            dtmf_payload_type=negotiated.dtmf_payload_type,
            remote_addr=negotiated.remote_addr,
            ssrc=secrets.randbits(32),
            initial_seq=secrets.randbits(16),
            initial_timestamp=secrets.randbits(32),
            now=now,
            inactivity_timeout=self._inactivity_timeout,
            remote_rtcp_addr=negotiated.remote_rtcp_addr,
            first_tick=self._first_tick,
        )
        session.playout = playout = WatchedPlayout(session.playout.frame_ms, self._frame_sent)
        # From here the endpoint owns the port: it releases it when closed.
        self._port_owned_by_endpoint = True
        srtp = _srtp_context(negotiated)
        if self._reservation is not None:
            self.endpoint = await RtpEndpoint.create(
                session, self.local_host, self.ports, self._on_rtp_event,
                reservation=self._reservation, srtp=srtp, ticks=self._ticks,
            )
        else:
            self.endpoint = await RtpEndpoint.create(
                session, self.local_host, self.ports, self._on_rtp_event, port=self.rtp_port,
                srtp=srtp, ticks=self._ticks,
            )
        if self._closed:  # the call ended while the sockets were being bound
            self.endpoint.close()
            return
        self._apply_direction(negotiated.direction)
        self._media_started.set()
        if self._recordings is not None:
            self._start_recording(self._recordings, negotiated, playout)

    def _start_recording(
        self, options: RecordingOptions, negotiated: Negotiated, playout: WatchedPlayout
    ) -> None:
        """Open the call's WAV; a failure costs the recording, never the call."""
        try:
            recording = CallRecording.start(
                options, session_id=self.session_id, created_at=self.record.created_at,
                codec=negotiated.codec.name, on_stopped=self._recording_stopped,
            )
        except OSError as exc:
            self.log.warning("cannot record the call: %s", exc)
            return
        recording.sending = negotiated.direction.sends
        self.recording = recording
        playout.on_audio = recording.agent
        self.record.recording_path = str(recording.path)
        self.registry.touch(self.record)

    def _recording_stopped(self, reason: str) -> None:
        self.log.warning("recording stopped, the call goes on: %s", reason)
        self.record.recording_truncated = True
        self.registry.touch(self.record)

    def apply_negotiation(self, negotiated: Negotiated) -> None:
        previous = self.negotiated.srtp if self.negotiated is not None else None
        self.negotiated = negotiated
        self.record.codec = negotiated.codec.name
        self.record.remote_addr = negotiated.remote_addr
        if self.endpoint is not None:
            loop = asyncio.get_running_loop()
            self.endpoint.session.dtmf_payload_type = negotiated.dtmf_payload_type
            keys, srtp = negotiated.srtp, self.endpoint.srtp
            if keys is not None and previous is not None and srtp is not None and (
                (keys.suite, keys.local_key) == (previous.suite, previous.local_key)
            ):
                # Our key and suite unchanged: the running context goes on (a fresh one would
                # restart its rollover counter and SRTCP index under our key); a peer re-key
                # replaces only its inbound side.
                if keys.remote_key != previous.remote_key:
                    srtp.update_remote_key(keys.remote_key)
            elif keys != previous:
                self.endpoint.srtp = _srtp_context(negotiated)
            if negotiated.remote_addr is not None:
                self.endpoint.session.set_remote(
                    negotiated.remote_addr, loop.time(), rtcp_addr=negotiated.remote_rtcp_addr
                )
            self._apply_direction(negotiated.direction)
            if self.recording is not None:
                self.recording.codec = negotiated.codec.name
                self.recording.sending = negotiated.direction.sends
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
            if self._link is ModelLink.BRIDGED:
                self.model.push_audio(event.payload)
            if self.recording is not None:
                self.recording.caller(event.payload)
        elif isinstance(event, DtmfReceived):
            self.receive_dtmf(event.digit)
        elif isinstance(event, MediaTimeout):
            self.log.info("no RTP for %.0f s: hanging up", event.idle_s)
            self._on_hangup(self, "rtp-timeout")

    def receive_dtmf(self, digit: str) -> None:
        self.record.dtmf.append(digit)
        self.registry.touch(self.record)
        if self._link is ModelLink.BRIDGED:
            self.model.send_dtmf(digit)

    def _on_model_event(self, event: ModelEvent) -> None:
        endpoint = self.endpoint
        if isinstance(event, AudioOut):
            if endpoint is not None:
                self._queue_audio(endpoint.session.playout, event)
        elif isinstance(event, SpeechStarted):
            self._turn = None  # talking again before the reply was heard: no turn to time
            if endpoint is not None:
                playout = endpoint.session.playout
                item, played = self._interrupted_item(playout)
                playout.flush()
                self._queued_items.clear()
                self.model.audio_interrupted(item, played)
        elif isinstance(event, SpeechStopped):
            self._turn_ended()
        elif isinstance(event, Transcript):
            if event.final:
                self.record.transcript.append(
                    {"role": event.role, "text": event.text, "at": time.time()}
                )
                self.registry.touch(self.record)
        elif isinstance(event, ModelError):
            self.log.warning("model error: %s", event.message)
            if event.fatal:
                self._model_lost(event.message)
        elif isinstance(event, ModelClosed):
            self.log.info("model closed: %s", event.reason)
            self._model_lost(event.reason)

    def _queue_audio(self, playout: PlayoutQueue, event: AudioOut) -> None:
        item = event.item_id
        turn = self._turn
        if turn is not None and turn.item_id is None and item not in turn.earlier_items:
            turn.item_id = item
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

    # -- records ----------------------------------------------------------------------------
    def observe(self, observation: Observation) -> None:
        """Record what the model reports: finished tool calls go to ``record.tool_calls``."""
        # Only the openai model observes, so its module is loaded by the time this runs.
        from bridge.realtime import ToolCallFinished

        if self._closed or not isinstance(observation, ToolCallFinished):
            return
        output = _json_or_text(observation.output)
        failed = observation.error_type is not None
        error = output.get("error") if failed and isinstance(output, dict) else None
        self.record.tool_calls.append(
            {
                "call_id": observation.call_id,
                "name": observation.name,
                "arguments": _json_or_text(observation.arguments),
                "result": None if failed else output,
                "error": (error or {"type": observation.error_type}) if failed else None,
                "duration_ms": round(observation.duration_ms, 1),
                "at": time.time(),
            }
        )
        self.registry.touch(self.record)

    def _turn_ended(self) -> None:
        playout = self.endpoint.session.playout if self.endpoint is not None else None
        earlier = set(self._queued_items)
        if playout is not None and playout.current_item is not None:
            earlier.add(playout.current_item)
        self._turn = _Turn(stopped_at=asyncio.get_running_loop().time(),
                           earlier_items=frozenset(earlier))

    def _frame_sent(self, item_id: str, played_ms: int) -> None:
        """A model or prompt frame is leaving as RTP (called by :class:`WatchedPlayout`)."""
        turn = self._turn
        if turn is not None and item_id == turn.item_id:
            self._turn = None
            self._record_turn(turn, item_id)
        prompt = self._prompt
        if prompt is not None and item_id == prompt.item_id and played_ms >= prompt.duration_ms:
            prompt.done.set()

    def _record_turn(self, turn: _Turn, item_id: str) -> None:
        now = asyncio.get_running_loop().time()
        wall = time.time()
        latency = now - turn.stopped_at
        self.record.turns.append(
            {
                "speech_stopped_at": wall - latency,
                "first_audio_at": wall,
                "latency_ms": round(latency * 1000, 1),
                "item_id": item_id,
            }
        )
        self.registry.touch(self.record)
        self.log.debug("turn latency %.1f ms (%s)", latency * 1000, item_id)

    def system_line(self, event: str, text: str) -> None:
        """A line in the transcript about the call itself (model lost, re-bridged...)."""
        self.record.transcript.append(
            {"role": "system", "event": event, "text": text, "at": time.time()}
        )
        self.registry.touch(self.record)

    # -- model failures -----------------------------------------------------------------------
    def model_unavailable(self, reason: str, detail: str) -> None:
        """The first session never became ready: play the prompt, then transfer or hang up.

        Called by the server once it answered the call anyway; ``reason`` is one word
        (``refused``, ``unauthorized``, ``timeout``...) that goes into the end reason.
        """
        if self._link is not ModelLink.OPENING:
            return
        self.log.warning("model unavailable (%s): %s", reason, detail)
        self._set_link(ModelLink.FALLBACK)
        self._held_events.clear()
        self.system_line("model-unavailable", f"{reason}: {detail}")
        self._start(self._give_up(f"model-unavailable: {reason}"))

    def _model_lost(self, reason: str) -> None:
        """The bridged session failed: prompt, then a new session or the end of the call."""
        if self._link is not ModelLink.BRIDGED:
            return
        self.log.warning("model lost: %s", reason)
        self._set_link(ModelLink.FALLBACK)
        self.system_line("model-lost", reason)
        self._turn = None
        self._start(self._rebridge(reason))

    def _start(self, coroutine: Coroutine[Any, Any, None]) -> None:
        # Whoever asks (an RTP callback, the model's reader), the task runs for this call.
        context = context_for_call(self.dialog.call_id, self.session_id)
        self._task = asyncio.get_running_loop().create_task(coroutine, context=context)

    async def _give_up(self, end_reason: str) -> None:
        # An open cut short by the set-up deadline may have left a connection behind.
        await asyncio.shield(self._close_model(self.model))
        await self._play_prompt()
        self._end(end_reason)

    async def _rebridge(self, reason: str) -> None:
        failed = self.model
        opening: asyncio.Task[None] | None = None
        try:
            await asyncio.shield(self._close_model(failed))
            if self._model_factory is not None and self.reconnects < self._max_reconnects:
                self.reconnects += 1
                opening = asyncio.get_running_loop().create_task(self._reopen())
            await self._play_prompt()
            if opening is not None:
                try:
                    await opening
                except Exception as exc:
                    detail = str(exc) or type(exc).__name__
                    self.log.warning("no new model session: %s", detail)
                    self.system_line("rebridge-failed", detail)
                else:
                    if not self._closed:
                        self.system_line("rebridged", reason)
                        self.log.info("model re-bridged after: %s", reason)
                        self._bridge()
                    return
            self._end(f"model-error: {reason}")
        finally:
            if opening is not None and not opening.done():
                opening.cancel()

    async def _reopen(self) -> None:
        assert self._model_factory is not None
        model = self._model_factory(self._weak_observer())
        self.model = model
        self._held_events.clear()
        try:
            async with asyncio.timeout(self._open_timeout):
                await model.open(self._context(), self._sink_for(model))
        except BaseException:
            await asyncio.shield(self._close_model(model))
            raise
        if self._closed:  # the call ended while the session was opening
            await self._close_model(model)

    async def _close_model(self, model: ModelSession) -> None:
        try:
            await model.close()
        except Exception:  # a failing model must not keep the call's resources
            self.log.exception("model close failed")

    def _end(self, end_reason: str) -> None:
        """After the prompt: hand the caller to the transfer target, or hang up."""
        if self._closed:
            return
        if self._transfer_target is not None and self._on_transfer is not None:
            self._on_transfer(self, self._transfer_target, end_reason)
        else:
            self._on_hangup(self, end_reason)

    async def _play_prompt(self) -> None:
        """Play the fallback prompt to its end (at once when no media will ever flow)."""
        if self.endpoint is None:
            if self.negotiated is None and self.pending_offer is None:
                return
            try:
                await asyncio.wait_for(self._media_started.wait(), MEDIA_WAIT)
            except TimeoutError:
                return
        endpoint = self.endpoint
        frames = fallback_frames(self.record.codec or "PCMU")
        if endpoint is None or self._closed or not frames:
            return
        playout = endpoint.session.playout
        playout.flush()
        self._queued_items.clear()
        self._prompts_played += 1
        prompt = _Prompt(
            item_id=f"fallback-{self._prompts_played}",
            duration_ms=len(frames) * playout.frame_ms,
            done=asyncio.Event(),
        )
        self._prompt = prompt
        for frame in frames:
            playout.push(frame, prompt.item_id)
        try:
            await asyncio.wait_for(prompt.done.wait(), prompt.duration_ms / 1000 + PROMPT_SLACK)
        except TimeoutError:
            self.log.warning("fallback prompt not sent in time")
        finally:
            self._prompt = None

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
        if self._link is not ModelLink.CLOSED:
            self._set_link(ModelLink.CLOSED)
        task = self._task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
        self.refresh_stats()
        if self._ticks is not None and self._first_tick is not None:
            self._ticks.release(self._first_tick)
            self._first_tick = None
        if self.endpoint is not None:
            self.endpoint.close()  # drops its on_event: it holds the call no more
            await self.endpoint.wait_closed()
            playout = self.endpoint.session.playout
            if isinstance(playout, WatchedPlayout):
                playout.detach()
            if self.recording is not None:
                self.recording.close()
        elif self._reservation is not None:
            self._reservation.release()  # harmless if the endpoint took it over
        elif not self._port_owned_by_endpoint:
            self.ports.release(self.rtp_port)
        await self._close_model(self.model)
        self.record.end_reason = self.record.end_reason or reason
        self.record.ended_at = time.time()
        self.registry.remove(self.session_id)
        self.log.info("call ended: %s", reason)


def _srtp_context(negotiated: Negotiated) -> SrtpContext | None:
    """The SRTP context of a negotiation that chose SRTP, else None (plain RTP)."""
    keys = negotiated.srtp
    if keys is None:
        return None
    return SrtpContext(keys.suite, keys.local_key, keys.remote_key)
