"""A fake OpenAI Realtime API server (GA protocol) for driving the real ``openai`` SDK in tests.

Point the SDK at it by base URL; nothing else changes::

    async with FakeRealtimeServer(scenarios=[Greeting(), ReplyOnSpeech()]) as server:
        client = AsyncOpenAI(api_key="sk-test", base_url=server.base_url)   # or server.client()
        async with client.realtime.connect(model="gpt-realtime") as connection:
            ...
        connection_record = server.connections[0]   # what the fake received and sent

``base_url`` is ``http://127.0.0.1:PORT/v1``; the SDK swaps the scheme to ``ws`` and appends
``/realtime?model=...`` (``websocket_base_url``, ``ws://127.0.0.1:PORT/v1``, works too).
The environment equivalent is ``OPENAI_BASE_URL`` (there is no environment variable for the
WebSocket URL; it derives from the base URL).

Honesty rules, so that passing against the fake means something:

- Every client event is validated against the SDK's ``RealtimeClientEvent`` union (the variant
  picked by ``type``, pydantic strict mode, and no unknown fields anywhere: the SDK models allow
  extras, the real API answers ``unknown_parameter``). A mismatch is a :class:`Violation` in
  ``server.violations`` and the client gets an ``error`` event shaped like the real API's.
- Every server event is validated against ``RealtimeServerEvent`` before it is sent; one that does
  not validate is not sent and is recorded as a violation of the fake itself.
- Some semantic mistakes are violations too (they are client bugs the real API rejects or that
  would make the real model behave differently): undecodable audio, truncating an unknown item or
  beyond the audio sent for it, a function output for an unknown ``call_id``, a tool the session
  never declared. Races the real API also reports (``response.cancel`` with no active response,
  ``response.create`` during a response, committing an empty buffer) only produce the real
  ``error`` event, recorded in ``connection.errors_sent``.
- Leaving ``async with FakeRealtimeServer(...)`` (or the :func:`fake_realtime` fixture) asserts
  that there were no violations.

Scenarios are small objects with hooks (:class:`Scenario`); a server takes a list of them and
every connection gets its own deep copy, so per-connection state lives on the scenario. The first
scenario (in list order) whose ``plan_response`` returns outputs decides what a response says;
otherwise the server's ``default_reply`` is spoken.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import http
import json
import logging
import math
import random
import re
import string
import time
import typing
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pydantic
import pytest
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from openai.types.realtime.conversation_item_truncate_event import ConversationItemTruncateEvent
from openai.types.realtime.response_cancel_event import ResponseCancelEvent
from openai.types.realtime.response_create_event import ResponseCreateEvent
from openai.types.realtime.response_item_reference import ResponseItemReference
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.http11 import Request, Response

from tests.peers.audio import alaw_encode, read_wav, ulaw_decode, ulaw_encode

__all__ = [
    "CLIENT_EVENTS",
    "FIXTURES",
    "SERVER_EVENTS",
    "AudioSource",
    "BargeIn",
    "Drop",
    "EventSchema",
    "FakeConnection",
    "FakeRealtimeServer",
    "FunctionCall",
    "Greeting",
    "Handshake",
    "InjectError",
    "ItemRecord",
    "ReplyOnSpeech",
    "ResponseRecord",
    "ResponseRequest",
    "Scenario",
    "Speech",
    "ToolCall",
    "Violation",
    "fake_realtime",
]

log = logging.getLogger(__name__)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
WAIT_TIMEOUT = 5.0
Event: TypeAlias = dict[str, Any]
ClientEvent: TypeAlias = RealtimeClientEvent

# Bytes per millisecond of each Realtime audio format (G.711 at 8 kHz, PCM16 at 24 kHz).
BYTES_PER_MS = {"audio/pcmu": 8, "audio/pcma": 8, "audio/pcm": 48}


# ------------------------------------------------------------------------------------ validation


@dataclass(frozen=True, slots=True, kw_only=True)
class Violation:
    """One thing the fake caught: a client event the real API would reject, or a fake's own bug."""

    connection: int | None
    """Index of the connection in ``server.connections`` (None before one exists)."""
    direction: Literal["client", "server"]
    """Who produced the bad event: the SDK client, or the fake itself (a bug in the fake)."""
    kind: Literal["schema", "semantic", "fake"]
    """Schema mismatch, protocol misuse the real API rejects, or an exception inside the fake."""
    event_type: str | None
    """The ``type`` of the offending event, when it had one."""
    code: str | None
    """The real API's error code for it (``unknown_parameter``, ``invalid_value``, ...)."""
    param: str | None
    """Dotted path of the offending field, when known."""
    message: str
    """Human-readable explanation (the ``error.message`` sent to the client)."""
    raw: str = ""
    """The offending message as received (truncated to 500 characters)."""


@dataclass(frozen=True, slots=True)
class _Problem:
    code: str
    param: str | None
    message: str


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "bytes"})
_JSON_TYPE_NAMES = {
    "int_type": "an integer", "int_from_float": "an integer", "string_type": "a string",
    "float_type": "a number", "bool_type": "a boolean", "list_type": "an array",
    "dict_type": "an object", "model_type": "an object", "model_attributes_type": "an object",
}


def _is_tag(part: object) -> bool:
    # pydantic puts union member names ('AudioPCMU', "literal['auto']", 'str') into error locs.
    return isinstance(part, str) and (
        part[:1].isupper() or part in _TYPE_TAGS or any(c in part for c in "[]'-,")
    )


def _param(loc: Sequence[object]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not _is_tag(part):
            text += f".{part}" if text else str(part)
    return text


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number" if isinstance(value, float) else "an integer"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _problem_from(errors: list[Any]) -> _Problem:
    """The most relevant pydantic error, phrased like the real API."""
    # A union member whose own `type` literal did not match was not the intended variant.
    rejected = {
        tuple(e["loc"][:-1]) for e in errors
        if e["type"] == "literal_error" and e["loc"] and e["loc"][-1] == "type"
        and len(e["loc"]) >= 2 and _is_tag(e["loc"][-2])
    }
    relevant = [
        e for e in errors
        if not any(tuple(e["loc"][: len(prefix)]) == prefix for prefix in rejected)
    ]
    if not relevant:  # no variant accepted the `type`: report it as an invalid value
        first = errors[0]
        prefix = tuple(first["loc"][:-2])
        expected = sorted({
            str(e["ctx"]["expected"]) for e in errors
            if e["type"] == "literal_error" and tuple(e["loc"][:-2]) == prefix
        })
        param = _param((*prefix, "type"))
        return _Problem("invalid_value", param, f"Invalid value: {first['input']!r}. "
                        f"Supported values are: {', '.join(expected)}.")
    error = relevant[0]
    param = _param(error["loc"])
    kind = error["type"]
    if kind == "missing":
        return _Problem("missing_required_parameter", param,
                        f"Missing required parameter: '{param}'.")
    if kind == "literal_error":
        return _Problem("invalid_value", param, f"Invalid value: {error['input']!r}. "
                        f"Supported values are: {error['ctx']['expected']}.")
    if kind in _JSON_TYPE_NAMES:
        return _Problem("invalid_type", param, f"Invalid type for '{param}': expected "
                        f"{_JSON_TYPE_NAMES[kind]}, but got {_json_kind(error['input'])} instead.")
    return _Problem("invalid_value", param, f"Invalid value for '{param}': {error['msg']}.")


def _unknown_fields(value: object, path: str) -> list[str]:
    """Dotted paths of fields the SDK models accepted only because they allow extras."""
    found: list[str] = []
    if isinstance(value, pydantic.BaseModel):
        found += [f"{path}.{name}" if path else name for name in value.model_extra or {}]
        for name in type(value).model_fields:
            found += _unknown_fields(getattr(value, name), f"{path}.{name}" if path else name)
    elif isinstance(value, list):
        for index, element in enumerate(value):
            found += _unknown_fields(element, f"{path}[{index}]")
    return found


class EventSchema:
    """Strict validation of one event against a discriminated union of the SDK (by ``type``)."""

    def __init__(self, union: object, *, allowed_extra: Collection[str] = ()) -> None:
        members = typing.get_args(typing.get_args(union)[0])
        self.variants: dict[str, type[pydantic.BaseModel]] = {}
        for member in members:
            (literal,) = typing.get_args(member.model_fields["type"].annotation)
            self.variants[literal] = member
        self.allowed_extra = frozenset(allowed_extra)

    def validate(self, payload: object) -> tuple[pydantic.BaseModel | None, _Problem | None]:
        if not isinstance(payload, dict):
            return None, _Problem("invalid_type", None, "Expected an event object.")
        if "type" not in payload:
            return None, _Problem("missing_required_parameter", "type",
                                  "Missing required parameter: 'type'.")
        event_type = payload["type"]
        variant = self.variants.get(event_type) if isinstance(event_type, str) else None
        if variant is None:
            supported = ", ".join(repr(name) for name in self.variants)
            return None, _Problem("invalid_value", "type", f"Invalid value: {event_type!r}. "
                                  f"Supported values are: {supported}.")
        payload, problem = self._split_item_references(payload)
        if problem is not None:
            return None, problem
        try:
            model = variant.model_validate(payload, strict=True)
        except pydantic.ValidationError as exc:
            return None, _problem_from(exc.errors())
        unknown = [path for path in _unknown_fields(model, "") if path not in self.allowed_extra]
        if unknown:
            return None, _Problem("unknown_parameter", unknown[0],
                                  f"Unknown parameter: '{unknown[0]}'.")
        return model, None

    @staticmethod
    def _split_item_references(payload: Event) -> tuple[Event, _Problem | None]:
        # `response.create` may reference items by id (ResponseCreateEventWithReferencesParam);
        # RealtimeClientEvent does not model those, so validate them apart.
        response = payload.get("response")
        if payload["type"] != "response.create" or not isinstance(response, dict):
            return payload, None
        items = response.get("input")
        if not isinstance(items, list):
            return payload, None
        kept = []
        for index, item in enumerate(items):
            if isinstance(item, dict) and item.get("type") == "item_reference":
                try:
                    ResponseItemReference.model_validate(item, strict=True)
                except pydantic.ValidationError as exc:
                    problem = _problem_from(exc.errors())
                    param = f"response.input[{index}].{problem.param}"
                    return payload, _Problem(problem.code, param, problem.message)
            else:
                kept.append(item)
        return {**payload, "response": {**response, "input": kept}}, None


CLIENT_EVENTS = EventSchema(RealtimeClientEvent)
# The real session object carries these three fields, which the SDK model does not declare.
SERVER_EVENTS = EventSchema(
    RealtimeServerEvent, allowed_extra={"session.id", "session.object", "session.expires_at"}
)


# ----------------------------------------------------------------------------------------- audio


class AudioSource:
    """What the fake "says": 8 kHz samples rendered into the session's output format, looped."""

    def __init__(self, samples: np.ndarray, *, pcmu: bytes | None = None) -> None:
        if len(samples) < 8:
            raise ValueError("an audio source needs at least 1 ms of samples")
        self.samples = np.asarray(samples, dtype=np.int16)
        self.pcmu = pcmu  # kept byte-exact so PCMU end to end can be compared byte for byte

    @classmethod
    def tone(cls, frequency: float = 440.0, level: float = 0.25, duration_ms: int = 1000
             ) -> AudioSource:
        """A sine tone (``duration_ms`` long, looped; 440 Hz loops seamlessly over 1 s)."""
        t = np.arange(duration_ms * 8) / 8000.0
        samples = np.round(level * 32767 * np.sin(2 * math.pi * frequency * t))
        return cls(samples.astype(np.int16))

    @classmethod
    def from_pcmu(cls, payload: bytes) -> AudioSource:
        """μ-law bytes as they come, e.g. the payloads of an RTP capture."""
        return cls(ulaw_decode(payload), pcmu=bytes(payload))

    @classmethod
    def from_pcap(cls, path: str | Path = FIXTURES / "speech_pcmu.pcap") -> AudioSource:
        """The PCMU (PT 0) RTP payloads of a capture, in sequence order."""
        from tests.peers.pcap import read_rtp, rtp_payloads

        return cls.from_pcmu(b"".join(rtp_payloads(read_rtp(path, payload_type=0))))

    @classmethod
    def speech(cls, path: str | Path = FIXTURES / "speech_8k.wav") -> AudioSource:
        """The speech fixture (8 kHz WAV; the same samples as ``speech_pcmu.pcap``)."""
        samples, rate = read_wav(path)
        if rate != 8000:
            raise ValueError(f"{path}: expected 8 kHz, got {rate}")
        return cls(samples, pcmu=ulaw_encode(samples))

    def _span(self, data: np.ndarray | bytes, start: int, count: int) -> Any:
        indices = (np.arange(start, start + count) % len(data)).astype(np.intp)
        if isinstance(data, bytes):
            return np.frombuffer(data, dtype=np.uint8)[indices].tobytes()
        return data[indices]

    def render(self, audio_format: str, start_ms: int, duration_ms: int) -> bytes:
        """``duration_ms`` of audio from ``start_ms`` on, encoded as ``audio_format``."""
        start, count = start_ms * 8, duration_ms * 8
        if audio_format == "audio/pcmu":
            if self.pcmu is not None:
                return bytes(self._span(self.pcmu, start, count))
            return ulaw_encode(self._span(self.samples, start, count))
        if audio_format == "audio/pcma":
            return alaw_encode(self._span(self.samples, start, count))
        if audio_format == "audio/pcm":  # 24 kHz little-endian PCM16, linear interpolation
            narrow = self._span(self.samples, start, count + 1).astype(np.float64)
            wide = np.interp(np.arange(count * 3) / 3.0, np.arange(count + 1), narrow)
            return bytes(np.round(wide).astype("<i2").tobytes())
        raise ValueError(f"unsupported audio format {audio_format!r}")


# -------------------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Speech:
    """A spoken assistant message: ``audio_ms`` of the server's audio source plus a transcript."""

    transcript: str
    audio_ms: int = 1000


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model makes; ``arguments`` may be a dict (JSON-encoded on the wire)."""

    name: str
    arguments: str | Mapping[str, Any] = "{}"
    call_id: str | None = None

    @property
    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(dict(self.arguments))


Output: TypeAlias = Speech | ToolCall


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseRequest:
    """A response about to be produced, offered to the scenarios' ``plan_response``."""

    index: int
    """0-based count of responses on this connection."""
    trigger: Literal["client", "vad"]
    """``response.create`` from the client, or the end of a user turn under server VAD."""
    event: ResponseCreateEvent | None = None
    """The client's ``response.create`` (None when VAD created the response)."""


@dataclass(slots=True, kw_only=True)
class ItemRecord:
    """A conversation item as the fake knows it."""

    id: str
    type: str
    role: str | None = None
    call_id: str | None = None
    audio_ms_sent: int = 0
    """Assistant audio sent for it: the limit for ``conversation.item.truncate``."""
    truncated_ms: int | None = None
    item: Event = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class ResponseRecord:
    """One response the fake produced."""

    id: str
    index: int
    trigger: str
    outputs: list[Output]
    status: str = "in_progress"
    reason: str | None = None
    item_ids: list[str] = field(default_factory=list)
    audio_ms_sent: int = 0
    first_audio_monotonic: float | None = None
    cancel_reason: str | None = None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Handshake:
    """One WebSocket opening handshake the fake answered."""

    path: str
    headers: dict[str, str]
    status: int
    """101 when accepted, else the HTTP status of the refusal."""


# ---------------------------------------------------------------------------------- scenarios


@dataclass(kw_only=True)
class Scenario:
    """Base scenario: hooks that do nothing. Subclass and override what you need.

    Hooks run inside the connection's receive loop, so they must be quick; use
    ``connection.spawn(...)`` for anything that waits.
    """

    connections: Collection[int] | None = None
    """Connection indices this scenario is active on (None: all), e.g. ``(0,)`` to drop only
    the first connection of a reconnect test."""

    async def on_connect(self, conn: FakeConnection) -> None:
        """After ``session.created`` was sent."""

    async def on_client_event(self, conn: FakeConnection, event: ClientEvent) -> None:
        """After the fake handled a valid client event."""

    async def on_audio(self, conn: FakeConnection) -> None:
        """After ``input_audio_buffer.append`` grew ``conn.audio_in_ms``."""

    async def on_sent(self, conn: FakeConnection, event: Event) -> None:
        """After a server event went out."""

    def plan_response(self, conn: FakeConnection, request: ResponseRequest
                      ) -> Sequence[Output] | None:
        """The outputs of the response ``request``, or None to let the next scenario decide."""
        return None


@dataclass(kw_only=True)
class Greeting(Scenario):
    """Answers the first client ``response.create`` with speech."""

    transcript: str = "Hello, thanks for calling. How can I help you today?"
    audio_ms: int = 1000

    def plan_response(self, conn: FakeConnection, request: ResponseRequest
                      ) -> Sequence[Output] | None:
        if request.index == 0 and request.trigger == "client":
            return [Speech(self.transcript, self.audio_ms)]
        return None


@dataclass(kw_only=True)
class ReplyOnSpeech(Scenario):
    """Server VAD on the audio clock: after ``after_ms`` of appended audio the caller "speaks"
    for ``speech_ms``; then the turn is committed, transcribed and answered with ``reply``.

    ``after_ms`` counts from the connection start, then from each reply's ``response.done``.
    Follows the session: no VAD when ``turn_detection`` is null, no transcription event unless
    ``audio.input.transcription`` is set, no automatic reply if ``create_response`` is false.
    """

    after_ms: int = 600
    speech_ms: int = 800
    transcript: str = "I would like to book a table for two."
    reply: Speech | None = field(default_factory=lambda: Speech("Sure, for what time?", 800))
    turns: int = 1
    _armed_at: float | None = field(default=0.0, init=False, repr=False)
    _speaking_since: float | None = field(default=None, init=False, repr=False)
    _turns_done: int = field(default=0, init=False, repr=False)
    _awaiting_reply: bool = field(default=False, init=False, repr=False)

    async def on_audio(self, conn: FakeConnection) -> None:
        if self._turns_done >= self.turns or not conn.vad_enabled:
            return
        if self._speaking_since is None:
            if (self._armed_at is not None and conn.active_response is None
                    and conn.audio_in_ms >= self._armed_at + self.after_ms):
                self._speaking_since = conn.audio_in_ms
                await conn.user_speech_started()
        elif conn.audio_in_ms >= self._speaking_since + self.speech_ms:
            self._speaking_since, self._armed_at = None, None
            self._turns_done += 1
            self._awaiting_reply = True
            await conn.user_speech_stopped(self.transcript)

    def plan_response(self, conn: FakeConnection, request: ResponseRequest
                      ) -> Sequence[Output] | None:
        if request.trigger == "vad" and self._awaiting_reply and self.reply is not None:
            self._awaiting_reply = False
            return [self.reply]
        return None

    async def on_sent(self, conn: FakeConnection, event: Event) -> None:
        if event["type"] == "response.done" and self._armed_at is None:
            self._armed_at = conn.audio_in_ms


@dataclass(kw_only=True)
class BargeIn(Scenario):
    """The caller talks over a response: ``after_ms`` after that response's first audio delta,
    ``input_audio_buffer.speech_started``; ``speech_ms`` later the turn ends (speech_stopped,
    committed, user item, transcript) and ``reply`` answers it.

    ``clock="audio"`` measures in appended input audio (what the real VAD sees), ``"wall"`` in
    seconds. If the session's ``interrupt_response`` is on (the server_vad default) and the
    response is still streaming, the fake cancels it itself (``response.done`` cancelled,
    ``turn_detected``), as the real server does; the client still has to truncate.
    """

    after_ms: int = 500
    speech_ms: int = 600
    transcript: str = "Sorry, wait, stop."
    reply: Speech | None = field(default_factory=lambda: Speech("Of course, go ahead.", 600))
    clock: Literal["audio", "wall"] = "audio"
    response_index: int | None = None
    """Which response to talk over (None: the first one with audio)."""
    state: str = field(default="waiting", init=False)
    target_response_id: str | None = field(default=None, init=False)
    _mark: float = field(default=0.0, init=False, repr=False)
    _awaiting_reply: bool = field(default=False, init=False, repr=False)

    async def on_sent(self, conn: FakeConnection, event: Event) -> None:
        if self.state != "waiting" or event["type"] != "response.output_audio.delta":
            return
        record = conn.response_by_id(event["response_id"])
        if self.response_index is not None and (record is None
                                                or record.index != self.response_index):
            return
        self.state, self.target_response_id = "armed", event["response_id"]
        self._mark = conn.audio_in_ms
        if self.clock == "wall":
            conn.spawn(self._wall_clock(conn))

    async def _wall_clock(self, conn: FakeConnection) -> None:
        await asyncio.sleep(self.after_ms / 1000)
        self.state = "speaking"
        await conn.user_speech_started()
        await asyncio.sleep(self.speech_ms / 1000)
        await self._stop(conn)

    async def on_audio(self, conn: FakeConnection) -> None:
        if self.clock != "audio":
            return
        if self.state == "armed" and conn.audio_in_ms >= self._mark + self.after_ms:
            self.state, self._mark = "speaking", conn.audio_in_ms
            await conn.user_speech_started()
        elif self.state == "speaking" and conn.audio_in_ms >= self._mark + self.speech_ms:
            await self._stop(conn)

    async def _stop(self, conn: FakeConnection) -> None:
        self.state, self._awaiting_reply = "done", True
        await conn.user_speech_stopped(self.transcript)

    def plan_response(self, conn: FakeConnection, request: ResponseRequest
                      ) -> Sequence[Output] | None:
        if request.trigger == "vad" and self._awaiting_reply and self.reply is not None:
            self._awaiting_reply = False
            return [self.reply]
        return None


@dataclass(kw_only=True)
class FunctionCall(Scenario):
    """The model calls ``calls`` (one or more tools in one response), then, once the client has
    sent a ``function_call_output`` for every call_id, answers the next response with ``answer``.

    ``at_response`` is the 0-based response index that makes the calls (None: the first one).
    With ``require_declared`` a tool missing from ``session.tools``/``response.tools`` is a
    violation (the real model cannot call it).
    """

    calls: Sequence[ToolCall] = (ToolCall("get_weather", {"city": "Paris"}),)
    answer: Speech | None = field(default_factory=lambda: Speech("It is sunny in Paris.", 800))
    at_response: int | None = None
    require_declared: bool = True
    call_ids: list[str] = field(default_factory=list, init=False)
    state: str = field(default="pending", init=False)

    def plan_response(self, conn: FakeConnection, request: ResponseRequest
                      ) -> Sequence[Output] | None:
        if self.state == "pending" and self.at_response in (None, request.index):
            declared = conn.declared_tools(request)
            calls = []
            for call in self.calls:
                if self.require_declared and call.name not in declared:
                    conn.violation("semantic", None, "tool_not_declared", "session.tools",
                                   f"Tool {call.name!r} is not declared in the session or "
                                   f"response tools ({sorted(declared)}); the model cannot "
                                   "call it.")
                call_id = call.call_id or conn.new_id("call", 16)
                calls.append(ToolCall(call.name, call.arguments, call_id))
                self.call_ids.append(call_id)
            self.state = "called"
            return calls
        outputs = conn.function_outputs
        if self.state == "called" and all(call_id in outputs for call_id in self.call_ids):
            self.state = "answered"
            return [self.answer] if self.answer is not None else None
        return None


@dataclass(kw_only=True)
class Drop(Scenario):
    """Ends the connection abruptly: TCP abort without a close frame (the client sees 1006), or
    a close frame with ``close_code`` (e.g. 1011). Triggers: after ``after_sent`` server events
    (counting ``session.created``), ``after_ms`` after connect, or on a client event type."""

    after_sent: int | None = None
    after_ms: float | None = None
    after_received: str | None = None
    close_code: int | None = None
    _sent: int = field(default=0, init=False, repr=False)

    async def on_connect(self, conn: FakeConnection) -> None:
        if self.after_ms is not None:
            conn.spawn(self._later(conn, self.after_ms))

    async def _later(self, conn: FakeConnection, delay_ms: float) -> None:
        await asyncio.sleep(delay_ms / 1000)
        await conn.drop(self.close_code)

    async def on_sent(self, conn: FakeConnection, event: Event) -> None:
        self._sent += 1
        if self.after_sent is not None and self._sent == self.after_sent:
            await conn.drop(self.close_code)

    async def on_client_event(self, conn: FakeConnection, event: ClientEvent) -> None:
        if self.after_received is not None and getattr(event, "type", None) == self.after_received:
            await conn.drop(self.close_code)


@dataclass(kw_only=True)
class InjectError(Scenario):
    """Sends an ``error`` event (e.g. ``server_error``, ``rate_limit_exceeded``) once: after the
    fake sent event type ``after_sent``, after the client sent type ``after_received``, or
    ``after_ms`` after connect (no trigger: right after ``session.created``). With
    ``close_code`` the connection is then closed with that code."""

    code: str = "server_error"
    error_type: str | None = None
    """Default: ``server_error`` for code ``server_error``, else ``invalid_request_error``."""
    message: str = "The server had an error while processing your request. Sorry about that!"
    after_sent: str | None = None
    after_received: str | None = None
    after_ms: float | None = None
    close_code: int | None = None
    fired: bool = field(default=False, init=False)

    async def _fire(self, conn: FakeConnection) -> None:
        if self.fired:
            return
        self.fired = True
        error_type = self.error_type or (
            "server_error" if self.code == "server_error" else "invalid_request_error")
        await conn.send_error(error_type, self.code, self.message)
        if self.close_code is not None:
            await conn.drop(self.close_code)

    async def on_connect(self, conn: FakeConnection) -> None:
        if self.after_ms is not None:
            conn.spawn(self._later(conn))
        elif self.after_sent is None and self.after_received is None:
            await self._fire(conn)

    async def _later(self, conn: FakeConnection) -> None:
        assert self.after_ms is not None
        await asyncio.sleep(self.after_ms / 1000)
        await self._fire(conn)

    async def on_sent(self, conn: FakeConnection, event: Event) -> None:
        if self.after_sent is not None and event["type"] == self.after_sent:
            await self._fire(conn)

    async def on_client_event(self, conn: FakeConnection, event: ClientEvent) -> None:
        if self.after_received is not None and getattr(event, "type", None) == self.after_received:
            await self._fire(conn)



# ----------------------------------------------------------------------------------- connection


def _default_session(session_id: str, model: str) -> Event:
    """What the real API announces in ``session.created`` (GA defaults)."""
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "You are a helpful, witty, and friendly AI.",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "expires_at": int(time.time()) + 3600,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": {
                    "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                    "silence_duration_ms": 200, "idle_timeout_ms": None,
                    "create_response": True, "interrupt_response": True,
                },
            },
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy",
                       "speed": 1.0},
        },
        "include": None,
    }


# Only these levels of session.update merge field by field; anything below is replaced whole
# (a new `format` or `turn_detection` object replaces the old one, as in the real API).
_MERGED_LEVELS = frozenset({(), ("audio",), ("audio", "input"), ("audio", "output")})


def _merge_session(base: Event, update: Mapping[str, Any], path: tuple[str, ...] = ()) -> None:
    for key, value in update.items():
        here = (*path, key)
        if here in _MERGED_LEVELS and isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge_session(base[key], value, here)
        else:
            base[key] = copy.deepcopy(value)


def _dig(mapping: object, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


class FakeConnection:
    """One accepted WebSocket: the conversation state and everything exchanged on it."""

    def __init__(self, server: FakeRealtimeServer, ws: ServerConnection, index: int,
                 scenarios: list[Scenario]) -> None:
        self.server = server
        self.ws = ws
        self.index = index
        self.scenarios = scenarios
        """This connection's own copies of the scenarios (their state is inspectable)."""
        target = urlsplit(ws.request.path if ws.request else "")
        self.path = target.path
        self.query = {key: values[-1] for key, values in parse_qs(target.query).items()}
        self.model = self.query.get("model", "")
        self.headers = dict(ws.request.headers.raw_items()) if ws.request else {}
        self.received: list[ClientEvent] = []
        """Valid client events, parsed into the SDK's models, in order."""
        self.received_raw: list[str | bytes] = []
        """Every message received, valid or not."""
        self.sent: list[Event] = []
        """Every server event sent (validated), in order."""
        self.errors_sent: list[Event] = []
        self.audio_in = bytearray()
        """Decoded ``input_audio_buffer.append`` audio, in the input format of the moment."""
        self.audio_in_ms = 0.0
        """Total input audio appended, in ms: the clock of the fake's VAD."""
        self.input_buffer_ms = 0.0
        self.truncates: list[ConversationItemTruncateEvent] = []
        self.cancels: list[ResponseCancelEvent] = []
        self.function_outputs: dict[str, str] = {}
        """call_id → output of the client's ``function_call_output`` items."""
        self.call_ids: set[str] = set()
        self.items: dict[str, ItemRecord] = {}
        self.responses: list[ResponseRecord] = []
        self.active_response: ResponseRecord | None = None
        self.conversation_id = self.new_id("conv")
        self.session = _default_session(self.new_id("sess"), self.model)
        self.dropped = False
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self._assistant_audio_sent = False
        self._pending_user_item: str | None = None
        self._changed = asyncio.Condition()
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- queries

    def new_id(self, prefix: str, length: int = 21) -> str:
        return self.server.new_id(prefix, length)

    @property
    def received_types(self) -> list[str]:
        return [str(getattr(event, "type", "")) for event in self.received]

    @property
    def sent_types(self) -> list[str]:
        return [event["type"] for event in self.sent]

    @property
    def input_format(self) -> str:
        return str(_dig(self.session, "audio", "input", "format", "type") or "audio/pcm")

    @property
    def turn_detection(self) -> Event | None:
        value = _dig(self.session, "audio", "input", "turn_detection")
        return value if isinstance(value, dict) else None

    @property
    def vad_enabled(self) -> bool:
        return self.turn_detection is not None

    def output_format(self, request: ResponseRequest | None = None) -> str:
        override = None
        if request is not None and request.event is not None and request.event.response:
            audio = request.event.response.audio
            if audio and audio.output and audio.output.format:
                override = audio.output.format.type
        return str(override or _dig(self.session, "audio", "output", "format", "type")
                   or "audio/pcm")

    def declared_tools(self, request: ResponseRequest) -> set[str]:
        names = {tool.get("name") for tool in self.session.get("tools") or []
                 if isinstance(tool, dict)}
        if request.event is not None and request.event.response and request.event.response.tools:
            names |= {getattr(tool, "name", None) for tool in request.event.response.tools}
        return {name for name in names if isinstance(name, str)}

    def response_by_id(self, response_id: str) -> ResponseRecord | None:
        return next((r for r in self.responses if r.id == response_id), None)

    def _last_item_id(self) -> str | None:
        return next(reversed(self.items), None)

    # -- waiting (always bounded)

    async def _wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(predicate), timeout)
            except TimeoutError:
                raise AssertionError(f"connection {self.index}: timed out after {timeout}s "
                                     f"waiting for {what}; received {self.received_types}, "
                                     f"sent {self.sent_types}") from None

    async def wait_received(self, event_type: str, count: int = 1,
                            timeout: float = WAIT_TIMEOUT) -> list[ClientEvent]:
        """The first ``count`` client events of ``event_type``, once they arrived."""
        await self._wait(lambda: self.received_types.count(event_type) >= count, timeout,
                         f"{count} x {event_type}")
        return [e for e in self.received if getattr(e, "type", None) == event_type][:count]

    async def wait_sent(self, event_type: str, count: int = 1,
                        timeout: float = WAIT_TIMEOUT) -> list[Event]:
        await self._wait(lambda: self.sent_types.count(event_type) >= count, timeout,
                         f"{count} x sent {event_type}")
        return [e for e in self.sent if e["type"] == event_type][:count]

    async def wait_closed(self, timeout: float = WAIT_TIMEOUT) -> int | None:
        await self._wait(self.closed.is_set, timeout, "the connection to close")
        return self.close_code

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- plumbing

    def spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        """Run ``coroutine`` alongside the connection; cancelled when it closes."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, ConnectionClosed):
                self.violation("fake", None, None, None, f"fake task crashed: {exc!r}",
                               direction="server")
                log.error("fake task crashed", exc_info=exc)

    def violation(self, kind: Literal["schema", "semantic", "fake"], event_type: str | None,
                  code: str | None, param: str | None, message: str, *, raw: str | bytes = "",
                  direction: Literal["client", "server"] = "client") -> None:
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        entry = Violation(connection=self.index, direction=direction, kind=kind,
                          event_type=event_type, code=code, param=param, message=message,
                          raw=text[:500])
        log.warning("realtime fake: %s", entry)
        self.server.violations.append(entry)

    async def _hooks(self, name: str, *args: Any) -> None:
        for scenario in self.scenarios:
            try:
                await getattr(scenario, name)(self, *args)
            except ConnectionClosed:
                raise
            except Exception as exc:
                log.exception("scenario %s.%s failed", type(scenario).__name__, name)
                self.violation("fake", None, None, None,
                               f"{type(scenario).__name__}.{name} raised {exc!r}",
                               direction="server")

    async def send(self, event: Mapping[str, Any]) -> None:
        """Send one server event (an ``event_id`` is added), after validating it."""
        if self.dropped:
            raise ConnectionClosedError(None, None)
        event = {"type": event["type"], "event_id": self.new_id("event"),
                 **{k: v for k, v in event.items() if k != "type"}}
        _, problem = SERVER_EVENTS.validate(event)
        if problem is not None:
            self.violation("schema", event["type"], problem.code, problem.param,
                           f"the fake built an invalid server event: {problem.message}",
                           raw=json.dumps(event), direction="server")
            return
        async with self._send_lock:
            await self.ws.send(json.dumps(event))
        self.sent.append(event)
        if event["type"] == "error":
            self.errors_sent.append(event)
        await self._notify()
        await self._hooks("on_sent", event)

    async def send_error(self, error_type: str, code: str | None, message: str, *,
                         param: str | None = None, event_id: str | None = None) -> None:
        await self.send({"type": "error", "error": {
            "type": error_type, "code": code, "message": message, "param": param,
            "event_id": event_id}})

    async def drop(self, close_code: int | None = None, reason: str = "") -> None:
        """Abort the TCP connection without a close frame (1006), or close with ``close_code``."""
        if self.dropped:
            return
        self.dropped = True
        if close_code is None:
            self.ws.transport.abort()
        else:
            await self.ws.close(close_code, reason)

    # -- the receive loop

    async def run(self) -> None:
        try:
            await self.send({"type": "session.created", "session": copy.deepcopy(self.session)})
            await self._hooks("on_connect")
            async for message in self.ws:
                try:
                    await self._receive(message)
                except ConnectionClosed:
                    raise
                except Exception as exc:  # a bug in the fake: record it, keep serving
                    log.exception("realtime fake failed on %r", message[:200])
                    self.violation("fake", None, None, None, f"fake crashed: {exc!r}",
                                   raw=message, direction="server")
        except ConnectionClosed:
            pass
        finally:
            self.close_code = 1006 if self.dropped and self.ws.close_code is None \
                else self.ws.close_code
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=WAIT_TIMEOUT)
            self.closed.set()
            await self._notify()

    async def _receive(self, message: str | bytes) -> None:
        self.received_raw.append(message)
        try:
            if isinstance(message, bytes):
                raise ValueError("binary frame")
            payload = json.loads(message)
        except ValueError as exc:
            text = f"We could not parse the JSON body of your request. ({exc})"
            self.violation("schema", None, "invalid_json", None, text, raw=message)
            await self.send_error("invalid_request_error", "invalid_json", text)
            return
        event, problem = CLIENT_EVENTS.validate(payload)
        event_id = payload.get("event_id") if isinstance(payload, dict) else None
        if problem is not None or event is None:
            assert problem is not None
            event_type = payload.get("type") if isinstance(payload, dict) else None
            self.violation("schema", event_type if isinstance(event_type, str) else None,
                           problem.code, problem.param, problem.message, raw=message)
            await self.send_error("invalid_request_error", problem.code, problem.message,
                                  param=problem.param,
                                  event_id=event_id if isinstance(event_id, str) else None)
            return
        self.received.append(typing.cast(ClientEvent, event))
        await self._notify()
        event_type = str(getattr(event, "type", ""))
        handler = getattr(self, "_on_" + event_type.replace(".", "_"))
        await handler(event, payload)
        await self._hooks("on_client_event", event)

    # -- client event handlers (one per RealtimeClientEvent variant)

    async def _on_session_update(self, event: Any, payload: Event) -> None:
        update = payload["session"]
        if update.get("type") != "realtime":
            message = (f"Invalid value: {update.get('type')!r}. This connection holds a "
                       f"'realtime' session.")
            self.violation("semantic", event.type, "invalid_value", "session.type", message)
            await self.send_error("invalid_request_error", "invalid_value", message,
                                  param="session.type", event_id=event.event_id)
            return
        voice = _dig(update, "audio", "output", "voice")
        current = _dig(self.session, "audio", "output", "voice")
        if voice is not None and voice != current and self._assistant_audio_sent:
            await self.send_error(
                "invalid_request_error", "cannot_update_voice",
                "Cannot update a conversation's voice if assistant audio is present.",
                param="session.audio.output.voice", event_id=event.event_id)
            return
        _merge_session(self.session, update)
        await self.send({"type": "session.updated", "session": copy.deepcopy(self.session)})

    async def _on_input_audio_buffer_append(self, event: Any, payload: Event) -> None:
        try:
            audio = base64.b64decode(event.audio, validate=True)
        except ValueError:
            message = "Invalid 'audio'. Expected base64-encoded audio bytes."
            self.violation("semantic", event.type, "invalid_value", "audio", message)
            await self.send_error("invalid_request_error", "invalid_value", message,
                                  param="audio", event_id=event.event_id)
            return
        self.audio_in += audio
        milliseconds = len(audio) / BYTES_PER_MS.get(self.input_format, 48)
        self.audio_in_ms += milliseconds
        self.input_buffer_ms += milliseconds
        await self._hooks("on_audio")

    async def _on_input_audio_buffer_commit(self, event: Any, payload: Event) -> None:
        if self.input_buffer_ms < 100:
            await self.send_error(
                "invalid_request_error", "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"100ms of audio, but buffer only has {self.input_buffer_ms:.2f}ms of audio.",
                event_id=event.event_id)
            return
        await self._commit_user_item(self.new_id("item"), None)

    async def _on_input_audio_buffer_clear(self, event: Any, payload: Event) -> None:
        self.input_buffer_ms = 0.0
        await self.send({"type": "input_audio_buffer.cleared"})

    async def _on_output_audio_buffer_clear(self, event: Any, payload: Event) -> None:
        """WebRTC/SIP only: over a WebSocket the client owns playout; recorded, no answer."""

    async def _on_conversation_item_create(self, event: Any, payload: Event) -> None:
        item = copy.deepcopy(payload["item"])
        item.setdefault("id", self.new_id("item"))
        item.setdefault("object", "realtime.item")
        item.setdefault("status", "completed")
        if item["type"] == "function_call_output":
            if item["call_id"] not in self.call_ids:
                self.violation("semantic", event.type, "invalid_value", "item.call_id",
                               f"function_call_output for unknown call_id {item['call_id']!r} "
                               f"(calls made: {sorted(self.call_ids)})")
            self.function_outputs[item["call_id"]] = item["output"]
        elif item["type"] == "function_call" and item.get("call_id"):
            self.call_ids.add(item["call_id"])
        previous = payload.get("previous_item_id") or self._last_item_id()
        self.items[item["id"]] = ItemRecord(id=item["id"], type=item["type"],
                                            role=item.get("role"), call_id=item.get("call_id"),
                                            item=item)
        await self.send({"type": "conversation.item.added", "previous_item_id": previous,
                         "item": item})
        await self.send({"type": "conversation.item.done", "previous_item_id": previous,
                         "item": item})

    async def _item_not_found(self, event: Any) -> None:
        await self.send_error("invalid_request_error", "invalid_value",
                              f"Item with item_id not found: {event.item_id}",
                              param="item_id", event_id=event.event_id)

    async def _on_conversation_item_delete(self, event: Any, payload: Event) -> None:
        if self.items.pop(event.item_id, None) is None:
            await self._item_not_found(event)
            return
        await self.send({"type": "conversation.item.deleted", "item_id": event.item_id})

    async def _on_conversation_item_retrieve(self, event: Any, payload: Event) -> None:
        record = self.items.get(event.item_id)
        if record is None:
            await self._item_not_found(event)
            return
        await self.send({"type": "conversation.item.retrieved", "item": record.item})

    async def _on_conversation_item_truncate(self, event: Any, payload: Event) -> None:
        self.truncates.append(event)
        record = self.items.get(event.item_id)
        if record is None or record.role != "assistant":
            self.violation("semantic", event.type, "invalid_value", "item_id",
                           f"truncate of unknown or non-assistant item {event.item_id!r}")
            await self._item_not_found(event)
            return
        problem = None
        if event.content_index != 0:
            problem = ("content_index", f"Invalid 'content_index': {event.content_index}. "
                       "The item has a single audio content part (index 0).")
        elif event.audio_end_ms < 0 or event.audio_end_ms > record.audio_ms_sent:
            problem = ("audio_end_ms", f"Audio content of {record.audio_ms_sent}ms is already "
                       f"shorter than {event.audio_end_ms}ms")
        if problem is not None:
            self.violation("semantic", event.type, "invalid_value", problem[0], problem[1])
            await self.send_error("invalid_request_error", "invalid_value", problem[1],
                                  param=problem[0], event_id=event.event_id)
            return
        record.truncated_ms = event.audio_end_ms
        await self.send({"type": "conversation.item.truncated", "item_id": event.item_id,
                         "content_index": event.content_index,
                         "audio_end_ms": event.audio_end_ms})

    async def _on_response_cancel(self, event: Any, payload: Event) -> None:
        self.cancels.append(event)
        active = self.active_response
        if active is None or (event.response_id and event.response_id != active.id):
            await self.send_error("invalid_request_error", "response_cancel_not_active",
                                  "Cancellation failed: no active response found",
                                  event_id=event.event_id)
            return
        await self.cancel_response(active, "client_cancelled")

    async def _on_response_create(self, event: Any, payload: Event) -> None:
        if self.active_response is not None:
            await self.send_error(
                "invalid_request_error", "conversation_already_has_active_response",
                "Conversation already has an active response in progress: "
                f"{self.active_response.id}. Wait until the response is finished before "
                "creating a new one.", event_id=event.event_id)
            return
        await self.start_response("client", event)

    # -- user turns (server VAD)

    async def user_speech_started(self) -> None:
        """``input_audio_buffer.speech_started`` now; interrupts a response like the real VAD."""
        self._pending_user_item = self.new_id("item")
        await self.send({"type": "input_audio_buffer.speech_started",
                         "audio_start_ms": int(self.audio_in_ms),
                         "item_id": self._pending_user_item})
        detection = self.turn_detection or {}
        if self.active_response is not None and detection.get("interrupt_response", True):
            await self.cancel_response(self.active_response, "turn_detected")

    async def user_speech_stopped(self, transcript: str | None) -> None:
        """End the user's turn: stopped, committed, user item, transcript, maybe a response."""
        item_id = self._pending_user_item or self.new_id("item")
        self._pending_user_item = None
        await self.send({"type": "input_audio_buffer.speech_stopped",
                         "audio_end_ms": int(self.audio_in_ms), "item_id": item_id})
        await self._commit_user_item(item_id, transcript)
        detection = self.turn_detection or {}
        if detection.get("create_response", True) and self.active_response is None:
            await self.start_response("vad")

    async def _commit_user_item(self, item_id: str, transcript: str | None) -> None:
        previous = self._last_item_id()
        await self.send({"type": "input_audio_buffer.committed", "item_id": item_id,
                         "previous_item_id": previous})
        seconds = self.input_buffer_ms / 1000
        self.input_buffer_ms = 0.0
        item = {"id": item_id, "type": "message", "role": "user", "status": "completed",
                "object": "realtime.item", "content": [{"type": "input_audio", "transcript": None}]}
        self.items[item_id] = ItemRecord(id=item_id, type="message", role="user", item=item)
        await self.send({"type": "conversation.item.added", "previous_item_id": previous,
                         "item": item})
        await self.send({"type": "conversation.item.done", "previous_item_id": previous,
                         "item": item})
        if transcript is not None and _dig(self.session, "audio", "input", "transcription"):
            await self.send({"type": "conversation.item.input_audio_transcription.completed",
                             "item_id": item_id, "content_index": 0, "transcript": transcript,
                             "usage": {"type": "duration", "seconds": round(seconds, 3)}})

    # -- responses

    async def start_response(self, trigger: Literal["client", "vad"],
                             event: Any = None) -> ResponseRecord:
        request = ResponseRequest(index=len(self.responses), trigger=trigger, event=event)
        outputs: Sequence[Output] | None = None
        for scenario in self.scenarios:
            outputs = scenario.plan_response(self, request)
            if outputs is not None:
                break
        if outputs is None:
            outputs = [self.server.default_reply]
        record = ResponseRecord(id=self.new_id("resp"), index=request.index, trigger=trigger,
                                outputs=list(outputs))
        self.responses.append(record)
        self.active_response = record
        record.task = self.spawn(self._stream_response(record, request))
        return record

    async def cancel_response(self, record: ResponseRecord, reason: str) -> None:
        """Stop a streaming response; returns once its ``response.done`` (cancelled) is out."""
        if record.cancel_reason is None:
            record.cancel_reason = reason
            record.cancelled.set()
        task = record.task
        if task is not None and task is not asyncio.current_task() and not task.done():
            await asyncio.wait([task], timeout=WAIT_TIMEOUT)

    def _response_object(self, record: ResponseRecord, audio_format: str,
                         output: list[Event]) -> Event:
        voice = _dig(self.session, "audio", "output", "voice")
        fmt: Event = {"type": audio_format}
        if audio_format == "audio/pcm":
            fmt["rate"] = 24000
        response: Event = {
            "object": "realtime.response", "id": record.id, "status": record.status,
            "status_details": None, "output": output, "conversation_id": self.conversation_id,
            "output_modalities": ["audio"], "max_output_tokens": "inf",
            "audio": {"output": {"format": fmt, "voice": voice if isinstance(voice, str)
                                 else None}},
            "usage": None, "metadata": None,
        }
        if record.status == "cancelled":
            response["status_details"] = {"type": "cancelled", "reason": record.cancel_reason}
        if record.status != "in_progress":
            audio_tokens = record.audio_ms_sent // 50
            text_tokens = sum(len(o.transcript.split()) if isinstance(o, Speech)
                              else len(o.arguments_json) // 4 for o in record.outputs)
            response["usage"] = {
                "total_tokens": 120 + audio_tokens + text_tokens, "input_tokens": 120,
                "output_tokens": audio_tokens + text_tokens,
                "input_token_details": {"text_tokens": 100, "audio_tokens": 20, "image_tokens": 0,
                                        "cached_tokens": 0, "cached_tokens_details": {
                                            "text_tokens": 0, "audio_tokens": 0,
                                            "image_tokens": 0}},
                "output_token_details": {"text_tokens": text_tokens,
                                         "audio_tokens": audio_tokens},
            }
        return response

    async def _pace(self, record: ResponseRecord, audio_ms: int) -> None:
        delay = audio_ms / 1000 * self.server.pace
        if delay <= 0 or record.cancel_reason:
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(record.cancelled.wait(), delay)

    async def _stream_response(self, record: ResponseRecord, request: ResponseRequest) -> None:
        audio_format = self.output_format(request)
        try:
            await self.send({"type": "response.created",
                             "response": self._response_object(record, audio_format, [])})
            output: list[Event] = []
            for output_index, planned in enumerate(record.outputs):
                if record.cancel_reason:
                    break
                if isinstance(planned, Speech):
                    output.append(await self._stream_speech(record, output_index, planned,
                                                            audio_format))
                else:
                    output.append(await self._stream_call(record, output_index, planned))
            record.status = "cancelled" if record.cancel_reason else "completed"
            record.reason = record.cancel_reason
            if self.active_response is record:  # free before response.done: the client may
                self.active_response = None     # answer it with response.create at once
            await self.send({"type": "response.done",
                             "response": self._response_object(record, audio_format, output)})
            await self.send({"type": "rate_limits.updated", "rate_limits": [
                {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
                {"name": "tokens", "limit": 40000, "remaining": 38000, "reset_seconds": 3.0}]})
        finally:
            if self.active_response is record:
                self.active_response = None

    async def _open_item(self, record: ResponseRecord, output_index: int, item: Event
                         ) -> tuple[Event, str | None]:
        previous = self._last_item_id()
        self.items[item["id"]] = ItemRecord(id=item["id"], type=item["type"],
                                            role=item.get("role"), call_id=item.get("call_id"),
                                            item=item)
        record.item_ids.append(item["id"])
        await self.send({"type": "response.output_item.added", "response_id": record.id,
                         "output_index": output_index, "item": item})
        await self.send({"type": "conversation.item.added", "previous_item_id": previous,
                         "item": item})
        return item, previous

    async def _close_item(self, record: ResponseRecord, output_index: int, item: Event,
                          previous: str | None) -> Event:
        self.items[item["id"]].item = item
        await self.send({"type": "response.output_item.done", "response_id": record.id,
                         "output_index": output_index, "item": item})
        await self.send({"type": "conversation.item.done", "previous_item_id": previous,
                         "item": item})
        return item

    async def _stream_speech(self, record: ResponseRecord, output_index: int, speech: Speech,
                             audio_format: str) -> Event:
        item_id = self.new_id("item")
        item, previous = await self._open_item(record, output_index, {
            "id": item_id, "type": "message", "role": "assistant", "status": "in_progress",
            "object": "realtime.item", "content": []})
        where = {"response_id": record.id, "item_id": item_id, "output_index": output_index,
                 "content_index": 0}
        await self.send({"type": "response.content_part.added", **where,
                         "part": {"type": "audio", "transcript": ""}})
        words = re.findall(r"\S+\s*", speech.transcript)
        chunk_ms = self.server.chunk_ms
        chunks = math.ceil(speech.audio_ms / chunk_ms)
        spoken, words_sent = "", 0
        item_record = self.items[item_id]
        for n in range(chunks):
            if record.cancel_reason:
                break
            while words_sent < math.ceil((n + 1) * len(words) / chunks):
                await self.send({"type": "response.output_audio_transcript.delta", **where,
                                 "delta": words[words_sent]})
                spoken += words[words_sent]
                words_sent += 1
            duration = min(chunk_ms, speech.audio_ms - n * chunk_ms)
            audio = self.server.audio.render(audio_format, n * chunk_ms, duration)
            await self.send({"type": "response.output_audio.delta", **where,
                             "delta": base64.b64encode(audio).decode("ascii")})
            item_record.audio_ms_sent += duration
            record.audio_ms_sent += duration
            if record.first_audio_monotonic is None:
                record.first_audio_monotonic = asyncio.get_running_loop().time()
            self._assistant_audio_sent = True
            await self._pace(record, duration)
        if not record.cancel_reason:
            while words_sent < len(words):  # a response without audio still has its words
                await self.send({"type": "response.output_audio_transcript.delta", **where,
                                 "delta": words[words_sent]})
                spoken += words[words_sent]
                words_sent += 1
        await self.send({"type": "response.output_audio.done", **where})
        await self.send({"type": "response.output_audio_transcript.done", **where,
                         "transcript": spoken})
        await self.send({"type": "response.content_part.done", **where,
                         "part": {"type": "audio", "transcript": spoken}})
        status = "incomplete" if record.cancel_reason else "completed"
        return await self._close_item(record, output_index, {
            **item, "status": status, "content": [{"type": "output_audio", "transcript": spoken}]},
            previous)

    async def _stream_call(self, record: ResponseRecord, output_index: int, call: ToolCall
                           ) -> Event:
        call_id = call.call_id or self.new_id("call", 16)
        self.call_ids.add(call_id)
        item, previous = await self._open_item(record, output_index, {
            "id": self.new_id("item"), "type": "function_call", "status": "in_progress",
            "object": "realtime.item", "name": call.name, "call_id": call_id,
            "arguments": ""})
        where = {"response_id": record.id, "item_id": item["id"], "output_index": output_index,
                 "call_id": call_id}
        arguments = call.arguments_json
        size = max(1, math.ceil(len(arguments) / 3))
        sent = ""
        for start in range(0, len(arguments), size):
            if record.cancel_reason:
                break
            await self.send({"type": "response.function_call_arguments.delta", **where,
                             "delta": arguments[start:start + size]})
            sent += arguments[start:start + size]
            await self._pace(record, 0)
        if not record.cancel_reason:
            await self.send({"type": "response.function_call_arguments.done", **where,
                             "name": call.name, "arguments": arguments})
        status = "incomplete" if record.cancel_reason else "completed"
        return await self._close_item(record, output_index,
                                      {**item, "status": status, "arguments": sent}, previous)


# --------------------------------------------------------------------------------------- server


def _http_error(status: int, message: str, error_type: str, code: str | None) -> Response:
    body = json.dumps({"error": {"message": message, "type": error_type, "param": None,
                                 "code": code}}).encode()
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                       ("Connection", "close")])
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


class FakeRealtimeServer:
    """The fake Realtime API on 127.0.0.1 (see the module docstring).

    ``scenarios`` is a list of :class:`Scenario` templates (deep-copied for every connection) or
    a callable ``index -> list`` choosing per connection; it may be reassigned between
    connections. ``pace`` is the fraction of real time audio deltas take (0: as fast as the
    loop allows, like the real server; 1: real time), ``chunk_ms`` the audio per delta.
    """

    def __init__(
        self,
        *,
        scenarios: Sequence[Scenario] | Callable[[int], Sequence[Scenario]] = (),
        api_key: str | None = None,
        reject_key: str | None = None,
        refuse_connections: bool = False,
        refuse_status: int = 503,
        audio: AudioSource | None = None,
        chunk_ms: int = 100,
        pace: float = 0.0,
        default_reply: Speech = Speech("Okay.", 600),
        seed: int = 0,
        check_violations: bool = True,
    ) -> None:
        self.scenarios = scenarios
        self.api_key = api_key
        """If set, the only key accepted (others get HTTP 401)."""
        self.reject_key = reject_key
        """A key answered with HTTP 401 ``invalid_api_key`` at the handshake."""
        self.refuse_connections = refuse_connections
        self.refuse_status = refuse_status
        self.audio = audio if audio is not None else AudioSource.tone()
        self.chunk_ms = chunk_ms
        self.pace = pace
        self.default_reply = default_reply
        self.check_violations = check_violations
        self.connections: list[FakeConnection] = []
        self.handshakes: list[Handshake] = []
        self.violations: list[Violation] = []
        self._random = random.Random(seed)
        self._server: Server | None = None
        self._arrived = asyncio.Condition()

    # -- lifecycle

    async def start(self) -> FakeRealtimeServer:
        self._server = await serve(self._handle, "127.0.0.1", 0,
                                   process_request=self._process_request,
                                   max_size=16 * 2**20, close_timeout=2, compression=None)
        return self

    async def close(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), WAIT_TIMEOUT)

    async def __aenter__(self) -> FakeRealtimeServer:
        return await self.start()

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        await self.close()
        if exc_type is None and self.check_violations:
            self.assert_no_violations()

    # -- addresses and the SDK

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeRealtimeServer is not started")
        return int(next(iter(self._server.sockets)).getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def websocket_base_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1"

    def sdk_kwargs(self, api_key: str = "sk-test-fake") -> dict[str, Any]:
        """Keyword arguments for ``AsyncOpenAI(...)`` that reach this server."""
        return {"api_key": api_key, "base_url": self.base_url,
                "websocket_base_url": self.websocket_base_url, "max_retries": 0}

    def client(self, api_key: str = "sk-test-fake", **overrides: Any) -> Any:
        from openai import AsyncOpenAI

        return AsyncOpenAI(**{**self.sdk_kwargs(api_key), **overrides})

    # -- results

    def new_id(self, prefix: str, length: int = 21) -> str:
        alphabet = string.ascii_letters + string.digits
        return prefix + "_" + "".join(self._random.choices(alphabet, k=length))

    def assert_no_violations(self) -> None:
        if self.violations:
            listing = "\n".join(f"  - {v}" for v in self.violations)
            raise AssertionError(f"{len(self.violations)} Realtime protocol violation(s):\n"
                                 f"{listing}")

    async def wait_connection(self, index: int = 0, timeout: float = WAIT_TIMEOUT
                              ) -> FakeConnection:
        async with self._arrived:
            try:
                await asyncio.wait_for(
                    self._arrived.wait_for(lambda: len(self.connections) > index), timeout)
            except TimeoutError:
                raise AssertionError(f"no connection #{index} within {timeout}s "
                                     f"({len(self.handshakes)} handshakes)") from None
        return self.connections[index]

    # -- WebSocket plumbing

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        response = self._check_request(request)
        self.handshakes.append(Handshake(path=request.path,
                                         headers=dict(request.headers.raw_items()),
                                         status=101 if response is None
                                         else response.status_code))
        return response

    def _check_request(self, request: Request) -> Response | None:
        if self.refuse_connections:
            return _http_error(self.refuse_status, "The server is overloaded or not ready yet.",
                               "server_error", None)
        target = urlsplit(request.path)
        if target.path != "/v1/realtime":
            return _http_error(404, f"Invalid URL (GET {target.path})",
                               "invalid_request_error", None)
        authorization = request.headers.get("Authorization", "")
        if not authorization.startswith("Bearer ") or not authorization[7:].strip():
            return _http_error(401, "You didn't provide an API key. You need to provide your API "
                               "key in an Authorization header using Bearer auth.",
                               "invalid_request_error", None)
        key = authorization[7:].strip()
        if key == self.reject_key or (self.api_key is not None and key != self.api_key):
            shown = f"{key[:3]}*****{key[-4:]}" if len(key) > 8 else key
            return _http_error(401, f"Incorrect API key provided: {shown}. You can find your "
                               "API key at https://platform.openai.com/account/api-keys.",
                               "invalid_request_error", "invalid_api_key")
        if not parse_qs(target.query).get("model"):
            return _http_error(400, "Missing required parameter: 'model'.",
                               "invalid_request_error", "missing_required_parameter")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        index = len(self.connections)
        templates = self.scenarios(index) if callable(self.scenarios) else self.scenarios
        scenarios = [s for s in copy.deepcopy(list(templates))
                     if s.connections is None or index in s.connections]
        connection = FakeConnection(self, ws, index, scenarios)
        self.connections.append(connection)
        async with self._arrived:
            self._arrived.notify_all()
        await connection.run()


@pytest.fixture
async def fake_realtime() -> AsyncIterator[FakeRealtimeServer]:
    """A started :class:`FakeRealtimeServer`; set ``.scenarios`` before connecting. Fails the
    test at teardown if any client event broke the protocol.

    Use it from a test module with ``from tests.fakes.realtime_server import fake_realtime``
    (or register the module in a conftest with ``pytest_plugins``)."""
    async with FakeRealtimeServer() as server:
        yield server
