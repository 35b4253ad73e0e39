"""Sans-I/O core of the OpenAI Realtime bridge: JSON text in, JSON text and call events out.

:class:`RealtimeSession` speaks the Realtime API's GA event protocol for one call and does no
I/O, like aioquic's ``QuicConnection``. Its asyncio shell (:mod:`bridge.openai_realtime`) feeds
it every WebSocket message (:meth:`~RealtimeSession.receive_message`), the caller's 20 ms
frames (:meth:`~RealtimeSession.push_audio`), the call's barge-in report
(:meth:`~RealtimeSession.audio_interrupted`) and tool results
(:meth:`~RealtimeSession.tool_result`); it sends :meth:`~RealtimeSession.data_to_send`,
delivers :meth:`~RealtimeSession.next_event` and keeps one timer armed at
:meth:`~RealtimeSession.get_timer`. Every entry point takes ``now`` (seconds, the loop clock).

Barge-in: ``input_audio_buffer.speech_started`` becomes :class:`~bridge.base.SpeechStarted`;
the response in progress is cancelled (``response.cancel``) and its audio still in flight is
dropped. The call then reports how much of the interrupted item it actually played, and the
item is truncated to ``min(played, received)`` so the model's history holds what was heard.

Function calls: each ``response.function_call_arguments.done`` becomes a
:class:`~bridge.base.FunctionCallRequested` that the shell runs through its tool adapter; the
answer (or a timeout after ``tool_timeout``) goes back as a ``function_call_output`` item, and
once every call of that response is answered one ``response.create`` lets the model go on.

Server events are read as plain JSON objects with the field names of the SDK's GA types
(``openai.types.realtime``): building the SDK's pydantic models costs ~50 µs per audio delta,
and a newer server field must never break a call. Client events are typed with the SDK's
``*Param`` TypedDicts and serialized with :func:`json.dumps`, except the audio appends (up to 50
a second): their base64 audio goes into a fixed JSON template, as it needs no escaping.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from openai.types.realtime.realtime_client_event_param import RealtimeClientEventParam
from openai.types.realtime.realtime_response_create_params_param import (
    RealtimeResponseCreateParamsParam,
)
from openai.types.realtime.realtime_session_create_request_param import (
    RealtimeSessionCreateRequestParam,
)

from .base import (
    AudioOut,
    FunctionCallRequested,
    ModelClosed,
    ModelError,
    ModelEvent,
    SpeechStarted,
    SpeechStopped,
    Transcript,
)
from .realtime_audio import Reframer, wire_audio
from .realtime_config import RealtimeConfig, session_config
from .tools import ToolSchema, error_output

__all__ = [
    "CoreEvent",
    "RealtimeSession",
    "SessionReady",
    "SessionState",
    "ToolCallCancelled",
    "ToolCallFinished",
    "TurnLatency",
]

logger = logging.getLogger(__name__)

# Errors that mean the session cannot go on; anything else is reported and the call continues.
_FATAL_ERROR_CODES: Final = frozenset(
    {"session_expired", "invalid_api_key", "insufficient_quota", "account_deactivated"}
)
_FATAL_ERROR_TYPES: Final = frozenset({"authentication_error", "permission_error"})
# Expected races, not faults: cancelling a response the server VAD already cancelled.
_BENIGN_ERROR_CODES: Final = frozenset({"response_cancel_not_active"})

# input_audio_buffer.append around its base64 audio, which needs no JSON escaping.
_APPEND_HEAD: Final = '{"type":"input_audio_buffer.append","audio":"'
_APPEND_TAIL: Final = '"}'

_RESPONSES_KEPT: Final = 16
_ITEMS_KEPT: Final = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionReady:
    """The model applied the session configuration (``session.updated``): audio may flow."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallCancelled:
    """A pending tool call was given up (timeout or session end): stop running it."""

    call_id: str
    "The model's id of the function call."


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallFinished:
    """A tool call was answered; the record the call log keeps."""

    call_id: str
    "The model's id of the function call."

    name: str
    "The tool name."

    arguments: str
    "The arguments as the model wrote them (JSON object text)."

    output: str
    "The JSON text returned to the model."

    error_type: str | None
    "None on success, else the error's type (``timeout``, ``tool_error``, ``unknown_tool``...)."

    duration_ms: float
    "From the arguments being complete to the answer."


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnLatency:
    """How long the caller waited for the reply to their turn."""

    latency_ms: float
    "From ``input_audio_buffer.speech_stopped`` to the first reply frame handed to the call."

    response_id: str
    "The reply's response id."

    item_id: str
    "The reply's audio item id."


CoreEvent = ModelEvent | SessionReady | ToolCallCancelled | ToolCallFinished | TurnLatency
"""Everything :meth:`RealtimeSession.next_event` returns: call events plus the shell's own."""


class SessionState(enum.Enum):
    """Where a session is in its life."""

    IDLE = "idle"
    CONFIGURING = "configuring"
    READY = "ready"
    CLOSED = "closed"


_TRANSITIONS: Final[Mapping[SessionState, frozenset[SessionState]]] = {
    SessionState.IDLE: frozenset({SessionState.CONFIGURING, SessionState.CLOSED}),
    SessionState.CONFIGURING: frozenset({SessionState.READY, SessionState.CLOSED}),
    SessionState.READY: frozenset({SessionState.CLOSED}),
    SessionState.CLOSED: frozenset(),
}


@dataclass(slots=True)
class _Response:
    id: str
    done: bool = False
    status: str = "in_progress"
    discarded: bool = False
    "Barge-in: audio still arriving for this response is dropped."
    cancel_sent: bool = False
    calls: set[str] = field(default_factory=set)
    "Function calls of this response not answered yet."
    had_calls: bool = False
    continued: bool = False
    "The ``response.create`` after its function calls was sent (or given up)."


@dataclass(slots=True)
class _AudioItem:
    id: str
    response_id: str
    received_bytes: int = 0
    done: bool = False
    truncated: bool = False


@dataclass(slots=True)
class _ToolCall:
    call_id: str
    name: str
    arguments: str
    response_id: str
    started: float
    deadline: float


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise TypeError(f"{key!r} is not a string")
    return value


def _obj(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def _dumps(event: RealtimeClientEventParam) -> str:
    return json.dumps(event, separators=(",", ":"))


class RealtimeSession:
    """The Realtime conversation of one call, without I/O."""

    def __init__(
        self, config: RealtimeConfig, *, codec: str, tools: Sequence[ToolSchema] = ()
    ) -> None:
        self.config = config
        self.codec = codec
        self._audio = wire_audio(codec, config.audio_format)
        self._reframer = Reframer(self._audio.silence_byte)
        self._tools = list(tools)
        self._state = SessionState.IDLE
        self._outgoing: list[str] = []
        self._events: deque[CoreEvent] = deque()
        self._append = bytearray()
        self._append_bytes = config.append_ms * self._audio.bytes_per_ms
        self._responses: OrderedDict[str, _Response] = OrderedDict()
        self._active: str | None = None
        "The response in progress (``response.created`` seen, ``response.done`` not yet)."
        self._create_requested = False
        "A ``response.create`` was sent and its ``response.created`` has not arrived."
        self._create_after_active = False
        self._discard_next = False
        self._items: OrderedDict[str, _AudioItem] = OrderedDict()
        self._current_item: str | None = None
        "The item whose audio is being re-framed."
        self._calls: dict[str, _ToolCall] = {}
        self._greeted = False
        self._speech_stopped_at: float | None = None
        self._latency_excluded: str | None = None
        self._dtmf: list[str] = []
        self._dtmf_pending = ""
        self._dtmf_deadline: float | None = None
        self.frames_in = 0
        "Inbound frames accepted."
        self.frames_dropped = 0
        "Inbound frames dropped because the session was not ready."
        self.frames_out = 0
        "Outbound frames delivered."
        self.discarded_bytes = 0
        "Wire audio of cancelled responses dropped after a barge-in."

    # -- state ---------------------------------------------------------------------------
    @property
    def state(self) -> SessionState:
        """Where the session is in its life."""
        return self._state

    @property
    def dtmf(self) -> str:
        """Every keypad digit of the call so far."""
        return "".join(self._dtmf)

    @property
    def pending_calls(self) -> list[str]:
        """Ids of function calls not answered yet."""
        return list(self._calls)

    def _set_state(self, state: SessionState) -> None:
        if state not in _TRANSITIONS[self._state]:
            raise RuntimeError(f"illegal session transition {self._state.name} -> {state.name}")
        logger.debug("realtime session %s -> %s", self._state.name, state.name)
        self._state = state

    # -- output --------------------------------------------------------------------------
    def data_to_send(self) -> list[str]:
        """The client events to send, in order, as JSON text; empties the queue."""
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    def next_event(self) -> CoreEvent | None:
        """The next event for the shell (call events and tool/metric records), or None."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must run next, or None."""
        if self._state is SessionState.CLOSED:
            return None
        # Asked after every frame: no list to build when (as nearly always) nothing is pending.
        deadline = self._dtmf_deadline
        for call in self._calls.values():
            if deadline is None or call.deadline < deadline:
                deadline = call.deadline
        return deadline

    def handle_timer(self, now: float) -> None:
        """Time out slow tools and hand over finished keypad input."""
        if self._state is SessionState.CLOSED:
            return
        for call in [c for c in self._calls.values() if c.deadline <= now]:
            self._events.append(ToolCallCancelled(call_id=call.call_id))
            message = f"tool {call.name!r} did not answer within {self.config.tool_timeout:g} s"
            self.tool_failed(call.call_id, "timeout", message, now)
        if self._dtmf_deadline is not None and self._dtmf_deadline <= now:
            self._flush_dtmf()

    def _send(self, event: RealtimeClientEventParam) -> None:
        self._outgoing.append(_dumps(event))

    # -- session -------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Queue the ``session.update`` that configures audio, voice, turn detection, tools."""
        self._set_state(SessionState.CONFIGURING)
        session = session_config(self.config, self._audio.format, self._tools)
        self._send({"type": "session.update", "session": session})

    def update_session(
        self, *, instructions: str | None = None, tools: Sequence[ToolSchema] | None = None
    ) -> None:
        """Change instructions and/or tools mid-call (a handoff to another agent)."""
        if self._state is not SessionState.READY or (instructions is None and tools is None):
            return
        session: RealtimeSessionCreateRequestParam = {"type": "realtime"}
        if instructions is not None:
            session["instructions"] = instructions
        if tools is not None:
            self._tools = list(tools)
            session["tools"] = list(tools)
        self._send({"type": "session.update", "session": session})

    def greet(self, now: float) -> None:
        """Ask for the greeting response (once; no-op without a greeting or before ready)."""
        greeting = self.config.greeting
        if self._greeted or self._state is not SessionState.READY or not greeting:
            return
        self._greeted = True
        # Response instructions replace the session's for that response: keep the persona.
        self._request_response(f"{self.config.instructions}\n\n{greeting}")

    def _request_response(self, instructions: str | None = None) -> None:
        response: RealtimeResponseCreateParamsParam = {}
        if instructions is not None:
            response["instructions"] = instructions
        self._send({"type": "response.create", "response": response})
        self._create_requested = True
        # The new response sees everything added so far: no second one is needed.
        self._create_after_active = False

    def connection_lost(self, reason: str, now: float) -> None:
        """The connection ended without :meth:`close`: report it and give up pending tools."""
        if self._state is SessionState.CLOSED:
            return
        self._set_state(SessionState.CLOSED)
        for call_id in self._calls:
            self._events.append(ToolCallCancelled(call_id=call_id))
        self._calls.clear()
        self._events.append(ModelClosed(reason=reason))

    def close(self, now: float) -> None:
        """End the session locally: nothing more is sent or delivered."""
        if self._state is not SessionState.CLOSED:
            self._set_state(SessionState.CLOSED)
        self._calls.clear()
        self._events.clear()
        self._outgoing.clear()

    # -- inbound audio -------------------------------------------------------------------
    def push_audio(self, payload: bytes, now: float) -> None:
        """One inbound frame of the call's codec; appended once ``append_ms`` are buffered."""
        if self._state is not SessionState.READY:
            self.frames_dropped += 1
            return
        if not self._greeted and self.config.greet_on == "media":
            self.greet(now)
        self.frames_in += 1
        wire = self._audio.encode(payload)
        append = self._append
        if append or len(wire) < self._append_bytes:
            append += wire
            if len(append) < self._append_bytes:
                return
            audio = base64.b64encode(append).decode("ascii")
            append.clear()
        else:  # a whole append in one frame (20 ms appends): no copy through the buffer
            audio = base64.b64encode(wire).decode("ascii")
        # The hot path, up to 50 times a second: a template instead of json.dumps.
        self._outgoing.append(_APPEND_HEAD + audio + _APPEND_TAIL)

    def send_dtmf(self, digit: str, now: float) -> None:
        """A keypad digit: collected, then given to the model as one caller message."""
        if self._state is not SessionState.READY:
            return
        self._dtmf.append(digit)
        self._dtmf_pending += digit
        if digit == "#":
            self._flush_dtmf()
        else:
            self._dtmf_deadline = now + self.config.dtmf_timeout

    def send_note(self, text: str, now: float) -> None:
        """A note about the call (a failed transfer…), given to the model as a bracketed
        caller-side message so that it reacts to it."""
        if self._state is not SessionState.READY:
            return
        self._tell(f"[{text}]")

    def _flush_dtmf(self) -> None:
        digits, self._dtmf_pending, self._dtmf_deadline = self._dtmf_pending, "", None
        self._tell(f"[The caller pressed these keys on the phone keypad: {digits}]")

    def _tell(self, text: str) -> None:
        self._send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": text}],
                },
            }
        )
        self._continue_when_idle()

    def _continue_when_idle(self) -> None:
        if self._active is not None or self._create_requested:
            self._create_after_active = True
        else:
            self._request_response()

    # -- barge-in ------------------------------------------------------------------------
    def audio_interrupted(self, item_id: str | None, played_ms: int, now: float) -> None:
        """The call flushed its playout: only ``played_ms`` of ``item_id`` reached the caller."""
        if self._state is not SessionState.READY:
            return
        if item_id is None:
            # Nothing was ever played: cut whatever is streaming right now to zero.
            item_id, played_ms = self._current_item, 0
            if item_id is None:
                return
        item = self._items.get(item_id)
        if item is None or item.truncated:
            logger.debug("no audio item %s to truncate", item_id)
            return
        received_ms = item.received_bytes // self._audio.bytes_per_ms
        response = self._responses.get(item.response_id)
        complete = item.done or (response is not None and response.done)
        if complete and played_ms >= received_ms:
            return  # heard in full: nothing to cut
        item.truncated = True
        if response is not None:
            self._cancel(response)
        if self._current_item == item_id:
            self._drop_current_audio()
        self._send(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": max(0, min(played_ms, received_ms)),
            }
        )

    def _cancel(self, response: _Response) -> None:
        """Drop the rest of ``response``'s audio and stop it if it is still generating."""
        response.discarded = True
        if not response.done and not response.cancel_sent:
            response.cancel_sent = True
            self._send({"type": "response.cancel", "response_id": response.id})

    def _drop_current_audio(self) -> None:
        self._reframer.clear()
        self._audio.reset_output()
        self._current_item = None

    # -- server events -------------------------------------------------------------------
    def receive_message(self, data: str | bytes, now: float) -> None:
        """Handle one server event (a WebSocket text message)."""
        if self._state is SessionState.CLOSED:
            return
        try:
            event = json.loads(data)
        except ValueError:
            logger.warning("ignoring a server message that is not JSON (%d bytes)", len(data))
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "response.output_audio.delta":
            handler: Callable[[RealtimeSession, dict[str, Any], float], None] | None = (
                RealtimeSession._on_audio_delta
            )
        else:
            handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            return
        try:
            handler(self, event, now)
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("ignoring malformed %s event: %s", kind, exc)

    def _response(self, response_id: str) -> _Response:
        response = self._responses.get(response_id)
        if response is None:
            response = self._responses[response_id] = _Response(response_id)
            if len(self._responses) > _RESPONSES_KEPT:
                for old_id, old in self._responses.items():
                    if old.done and not old.calls and old_id != response_id:
                        del self._responses[old_id]
                        break
        return response

    def _on_session_updated(self, event: dict[str, Any], now: float) -> None:
        if self._state is not SessionState.CONFIGURING:
            return  # the answer to a later update_session()
        self._set_state(SessionState.READY)
        self._events.append(SessionReady())
        if self.config.greet_on == "ready":
            self.greet(now)

    def _on_error(self, event: dict[str, Any], now: float) -> None:
        error = _obj(event, "error")
        error_type = str(error.get("type") or "error")
        code = error.get("code")
        message = str(error.get("message") or "no message")
        if code in _BENIGN_ERROR_CODES:
            logger.debug("realtime: %s (%s)", message, code)
            return
        fatal = (
            self._state is SessionState.CONFIGURING
            or code in _FATAL_ERROR_CODES
            or error_type in _FATAL_ERROR_TYPES
        )
        detail = f"{error_type}: {message}" + (f" ({code})" if code else "")
        self._events.append(ModelError(message=detail, fatal=fatal))

    def _on_speech_started(self, event: dict[str, Any], now: float) -> None:
        self._speech_stopped_at = None
        self._events.append(SpeechStarted())
        if self._active is not None:
            response = self._responses.get(self._active)
            if response is not None and not response.discarded:
                self._cancel(response)
                current = self._items.get(self._current_item or "")
                if current is not None and current.response_id == response.id:
                    self._drop_current_audio()
        elif self._create_requested:
            # A greeting or continuation asked for just before: do not talk over the caller.
            self._discard_next = True

    def _on_speech_stopped(self, event: dict[str, Any], now: float) -> None:
        self._speech_stopped_at = now
        self._latency_excluded = self._active
        self._events.append(SpeechStopped())

    def _on_response_created(self, event: dict[str, Any], now: float) -> None:
        response = self._response(_str(_obj(event, "response"), "id"))
        self._create_requested = False
        self._active = response.id
        if self._discard_next:
            self._discard_next = False
            self._cancel(response)

    def _on_response_done(self, event: dict[str, Any], now: float) -> None:
        body = _obj(event, "response")
        response = self._response(_str(body, "id"))
        response.done = True
        response.status = str(body.get("status") or "completed")
        if self._active == response.id:
            self._active = None
        current = self._items.get(self._current_item or "")
        if current is not None and current.response_id == response.id:
            self._finish_current_audio(now)
        if response.status == "failed":
            error = _obj(_obj(body, "status_details"), "error")
            message = error.get("message") or error.get("code") or "response failed"
            self._events.append(ModelError(message=f"response failed: {message}", fatal=False))
        self._maybe_continue(response)
        if self._create_after_active and self._active is None and not self._create_requested:
            self._create_after_active = False
            if response.status == "completed":
                self._request_response()

    def _item(self, item_id: str, response_id: str) -> _AudioItem:
        item = self._items.get(item_id)
        if item is None:
            item = self._items[item_id] = _AudioItem(item_id, response_id)
            if len(self._items) > _ITEMS_KEPT:
                self._items.popitem(last=False)
        return item

    def _on_audio_delta(self, event: dict[str, Any], now: float) -> None:
        response_id, item_id = _str(event, "response_id"), _str(event, "item_id")
        try:
            data = base64.b64decode(_str(event, "delta"), validate=True)
        except binascii.Error as exc:
            raise ValueError(f"delta is not base64: {exc}") from None
        response = self._response(response_id)
        if self._active is None and not response.done and not response.discarded:
            self._active = response_id  # its response.created was missed
        item = self._item(item_id, response_id)
        if response.discarded or item.truncated:
            self.discarded_bytes += len(data)
            return
        item.received_bytes += len(data)
        if self._current_item != item_id:
            self._finish_current_audio(now)
            self._current_item = item_id
        for frame in self._reframer.push(self._audio.decode(data)):
            self._deliver(frame, item, now)

    def _finish_current_audio(self, now: float) -> None:
        """The current item's audio is complete: deliver the filter's tail and the last frame."""
        item = self._items.get(self._current_item or "")
        self._current_item = None
        if item is None:
            self._drop_current_audio()
            return
        for frame in self._reframer.push(self._audio.drain()):
            self._deliver(frame, item, now)
        last = self._reframer.flush()
        if last is not None:
            self._deliver(last, item, now)

    def _deliver(self, frame: bytes, item: _AudioItem, now: float) -> None:
        self.frames_out += 1
        self._events.append(AudioOut(payload=frame, item_id=item.id))
        stopped = self._speech_stopped_at
        if stopped is not None and item.response_id != self._latency_excluded:
            self._speech_stopped_at = None
            self._events.append(
                TurnLatency(
                    latency_ms=(now - stopped) * 1000.0,
                    response_id=item.response_id,
                    item_id=item.id,
                )
            )

    def _on_audio_done(self, event: dict[str, Any], now: float) -> None:
        item_id = _str(event, "item_id")
        item = self._items.get(item_id)
        if item is not None:
            item.done = True
        if self._current_item == item_id:
            self._finish_current_audio(now)

    def _on_output_transcript(self, event: dict[str, Any], now: float) -> None:
        text = _str(event, "transcript")
        if text:
            self._events.append(Transcript(role="agent", text=text, final=True))

    def _on_input_transcript(self, event: dict[str, Any], now: float) -> None:
        text = _str(event, "transcript")
        if text:
            self._events.append(Transcript(role="caller", text=text, final=True))

    # -- function calls ------------------------------------------------------------------
    def _on_function_call(self, event: dict[str, Any], now: float) -> None:
        call_id, name = _str(event, "call_id"), _str(event, "name")
        arguments, response_id = _str(event, "arguments"), _str(event, "response_id")
        if call_id in self._calls:
            return
        response = self._response(response_id)
        response.calls.add(call_id)
        response.had_calls = True
        self._calls[call_id] = _ToolCall(
            call_id, name, arguments, response_id, now, now + self.config.tool_timeout
        )
        self._events.append(FunctionCallRequested(call_id=call_id, name=name, arguments=arguments))

    def tool_result(
        self, call_id: str, output: str, now: float, *, error_type: str | None = None
    ) -> bool:
        """Answer function call ``call_id`` with JSON text; False if it is no longer pending."""
        call = self._calls.pop(call_id, None)
        if call is None or self._state is SessionState.CLOSED:
            return False
        self._send(
            {
                "type": "conversation.item.create",
                "item": {"type": "function_call_output", "call_id": call_id, "output": output},
            }
        )
        self._events.append(
            ToolCallFinished(
                call_id=call_id,
                name=call.name,
                arguments=call.arguments,
                output=output,
                error_type=error_type,
                duration_ms=(now - call.started) * 1000.0,
            )
        )
        response = self._responses.get(call.response_id)
        if response is not None:
            response.calls.discard(call_id)
            self._maybe_continue(response)
        return True

    def tool_failed(self, call_id: str, error_type: str, message: str, now: float) -> bool:
        """Answer function call ``call_id`` with a structured error."""
        output = error_output(error_type, message)
        return self.tool_result(call_id, output, now, error_type=error_type)

    def _maybe_continue(self, response: _Response) -> None:
        """Once a response is done and all its calls are answered, let the model go on."""
        if not response.done or response.calls or not response.had_calls or response.continued:
            return
        response.continued = True
        if response.status != "completed":
            return  # interrupted: the caller's next turn brings the results to the model
        self._continue_when_idle()


_HANDLERS: Final[dict[str, Callable[[RealtimeSession, dict[str, Any], float], None]]] = {
    "session.updated": RealtimeSession._on_session_updated,
    "error": RealtimeSession._on_error,
    "input_audio_buffer.speech_started": RealtimeSession._on_speech_started,
    "input_audio_buffer.speech_stopped": RealtimeSession._on_speech_stopped,
    "response.created": RealtimeSession._on_response_created,
    "response.done": RealtimeSession._on_response_done,
    "response.output_audio.done": RealtimeSession._on_audio_done,
    "response.output_audio_transcript.done": RealtimeSession._on_output_transcript,
    "response.function_call_arguments.done": RealtimeSession._on_function_call,
    "conversation.item.input_audio_transcription.completed": RealtimeSession._on_input_transcript,
}
