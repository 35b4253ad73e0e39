"""The fake Realtime server, driven by the real openai SDK (``client.realtime.connect``)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from openai import AsyncOpenAI
from openai.types.realtime import RealtimeServerEvent
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from tests.fakes.realtime_server import (
    FIXTURES,
    AudioSource,
    BargeIn,
    Drop,
    FakeRealtimeServer,
    FunctionCall,
    Greeting,
    InjectError,
    ReplyOnSpeech,
    Scenario,
    Speech,
    ToolCall,
    fake_realtime,  # noqa: F401  (the fixture)
)
from tests.peers.pcap import read_rtp, rtp_payloads

TIMEOUT = 5.0
PCMU_SESSION: dict[str, Any] = {
    "type": "realtime",
    "instructions": "You answer the phone.",
    "audio": {
        "input": {"format": {"type": "audio/pcmu"},
                  "transcription": {"model": "gpt-4o-transcribe"}},
        "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
    },
}
WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
TIME_TOOL = {"type": "function", "name": "get_time", "description": "Local time in a city",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
SILENCE_20MS = base64.b64encode(b"\xff" * 160).decode()

GREETING_SEQUENCE = [
    "response.created", "response.output_item.added", "conversation.item.added",
    "response.content_part.added",
]
GREETING_TAIL = [
    "response.output_audio.done", "response.output_audio_transcript.done",
    "response.content_part.done", "response.output_item.done", "conversation.item.done",
    "response.done",
]


@asynccontextmanager
async def connected(server: FakeRealtimeServer, session: dict[str, Any] | None = None,
                    api_key: str = "sk-test-fake", **connect_kwargs: Any) -> AsyncIterator[Any]:
    """An SDK connection past ``session.created`` (and ``session.updated`` if ``session``)."""
    client = server.client(api_key=api_key)
    async with client.realtime.connect(model="gpt-realtime", **connect_kwargs) as connection:
        first = await asyncio.wait_for(connection.recv(), TIMEOUT)
        assert first.type == "session.created"
        if session is not None:
            await connection.session.update(session=session)
            updated = await next_of(connection, "session.updated")
            assert updated.session.audio is not None
        yield connection


async def next_of(connection: Any, event_type: str) -> Any:
    return (await until(connection, event_type))[-1]


async def until(connection: Any, event_type: str, limit: int = 2000) -> list[Any]:
    """Events up to and including the first ``event_type`` (bounded in count and time)."""
    events = []
    for _ in range(limit):
        event = await asyncio.wait_for(connection.recv(), TIMEOUT)
        events.append(event)
        if event.type == event_type:
            return events
    raise AssertionError(f"no {event_type} in {limit} events")


async def append_audio(connection: Any, frames: int) -> None:
    for _ in range(frames):
        await connection.input_audio_buffer.append(audio=SILENCE_20MS)


def types(events: Sequence[Any]) -> list[str]:
    return [event.type for event in events]


def audio_of(events: Sequence[Any]) -> bytes:
    return b"".join(base64.b64decode(e.delta) for e in events
                    if e.type == "response.output_audio.delta")


# --------------------------------------------------------------------------- connecting, session


async def test_urls_point_the_sdk_at_the_fake() -> None:
    async with FakeRealtimeServer() as server:
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
        assert server.websocket_base_url == f"ws://127.0.0.1:{server.port}/v1"
        configurations: list[dict[str, Any]] = [
            {"base_url": server.base_url},
            {"base_url": "http://unused.invalid/v1",
             "websocket_base_url": server.websocket_base_url},
        ]
        for kwargs in configurations:
            client = AsyncOpenAI(api_key="sk-test-key", **kwargs)
            async with client.realtime.connect(model="gpt-realtime") as connection:
                assert (await asyncio.wait_for(connection.recv(), TIMEOUT)).type == \
                    "session.created"
        assert [h.path for h in server.handshakes] == ["/v1/realtime?model=gpt-realtime"] * 2
        assert server.handshakes[0].headers["Authorization"] == "Bearer sk-test-key"
        assert server.connections[0].model == "gpt-realtime"


async def test_session_update_is_echoed_with_the_effective_config() -> None:
    async with FakeRealtimeServer() as server:
        client = server.client()
        async with client.realtime.connect(model="gpt-realtime") as connection:
            created = await asyncio.wait_for(connection.recv(), TIMEOUT)
            assert created.session.audio.input.format.type == "audio/pcm"
            await connection.session.update(session={**PCMU_SESSION, "tools": [WEATHER_TOOL]})
            updated = await next_of(connection, "session.updated")
        session = updated.session
        assert session.audio.input.format.type == "audio/pcmu"
        assert session.audio.output.format.type == "audio/pcmu"
        assert session.audio.output.voice == "marin"
        assert session.audio.input.turn_detection.type == "server_vad"  # default kept
        assert session.instructions == "You answer the phone."
        assert session.tools[0].name == "get_weather"
        record = server.connections[0]
        assert record.input_format == "audio/pcmu"
        assert record.received_types == ["session.update"]
        assert record.sent_types == ["session.created", "session.updated"]


# ------------------------------------------------------------------------------------ scenarios


@pytest.mark.parametrize(("audio_format", "bytes_per_ms"),
                         [("audio/pcmu", 8), ("audio/pcma", 8), ("audio/pcm", 48)])
async def test_greeting_streams_a_complete_audio_response(audio_format: str,
                                                          bytes_per_ms: int) -> None:
    fmt: dict[str, Any] = {"type": audio_format}
    session = {"type": "realtime", "audio": {"input": {"format": fmt}, "output": {"format": fmt}}}
    greeting = Greeting(transcript="Hello there, how can I help?", audio_ms=1000)
    async with FakeRealtimeServer(scenarios=[greeting]) as server, \
            connected(server, session) as connection:
        await connection.response.create()
        events = await until(connection, "response.done")
    sequence = types(events)
    assert sequence[:4] == GREETING_SEQUENCE
    assert sequence[-6:] == GREETING_TAIL
    assert sequence.count("response.output_audio.delta") == 10  # 100 ms per delta
    assert len(audio_of(events)) == 1000 * bytes_per_ms
    transcript = "".join(e.delta for e in events
                         if e.type == "response.output_audio_transcript.delta")
    assert transcript == "Hello there, how can I help?"
    done = events[-1].response
    assert done.status == "completed"
    assert done.output[0].content[0].transcript == transcript
    item_id, response_id = events[1].item.id, events[0].response.id
    assert all(e.item_id == item_id and e.response_id == response_id
               for e in events if e.type.startswith("response.output_audio"))
    event_ids = [e.event_id for e in events]
    assert len(set(event_ids)) == len(event_ids)
    assert server.connections[0].items[item_id].audio_ms_sent == 1000


async def test_pcmu_source_is_sent_byte_exact() -> None:
    fixture = b"".join(rtp_payloads(read_rtp(FIXTURES / "speech_pcmu.pcap")))
    speech = AudioSource.from_pcap()
    assert speech.pcmu == AudioSource.speech().pcmu == fixture
    async with FakeRealtimeServer(audio=speech, scenarios=[Greeting(audio_ms=2000)]) as server, \
            connected(server, PCMU_SESSION) as connection:
        await connection.response.create()
        events = await until(connection, "response.done")
    assert audio_of(events) == fixture[:16000]


async def test_real_time_pacing() -> None:
    async with FakeRealtimeServer(scenarios=[Greeting(audio_ms=400)], pace=1.0) as server, \
            connected(server, PCMU_SESSION) as connection:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await connection.response.create()
        await until(connection, "response.done")
        assert 0.3 <= loop.time() - start < 2.0


async def test_reply_on_speech() -> None:
    scenario = ReplyOnSpeech(after_ms=200, speech_ms=400, transcript="Book a table please",
                             reply=Speech("Sure, for how many?", 500))
    async with FakeRealtimeServer(scenarios=[scenario]) as server, \
            connected(server, PCMU_SESSION) as connection:
        await append_audio(connection, 9)  # 180 ms: not yet
        await append_audio(connection, 2)  # 220 ms
        started = await next_of(connection, "input_audio_buffer.speech_started")
        assert started.audio_start_ms == 200
        await append_audio(connection, 20)
        events = await until(connection, "response.done")
        record = server.connections[0]
        assert types(events)[:6] == [
            "input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
            "conversation.item.added", "conversation.item.done",
            "conversation.item.input_audio_transcription.completed", "response.created"]
        stopped, committed, added, _, transcribed = events[:5]
        assert stopped.audio_end_ms == 600 and stopped.item_id == started.item_id
        assert committed.item_id == added.item.id == transcribed.item_id == started.item_id
        assert added.item.role == "user" and added.item.content[0].type == "input_audio"
        assert transcribed.transcript == "Book a table please"
        assert events[-1].response.output[0].content[0].transcript == "Sure, for how many?"
        assert record.audio_in_ms == 31 * 20
        assert bytes(record.audio_in) == b"\xff" * 160 * 31
        assert record.responses[0].trigger == "vad"


async def test_no_transcription_event_unless_the_session_asks() -> None:
    session = {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}},
                                             "output": {"format": {"type": "audio/pcmu"}}}}
    async with FakeRealtimeServer(scenarios=[ReplyOnSpeech(after_ms=100, speech_ms=100)]
                                  ) as server, connected(server, session) as connection:
        await append_audio(connection, 12)
        events = await until(connection, "response.done")
    assert "conversation.item.input_audio_transcription.completed" not in types(events)


async def test_barge_in_with_client_cancel_and_truncate() -> None:
    session = {**PCMU_SESSION, "audio": {**PCMU_SESSION["audio"], "input": {
        **PCMU_SESSION["audio"]["input"],
        "turn_detection": {"type": "server_vad", "interrupt_response": False}}}}
    barge_in = BargeIn(after_ms=300, speech_ms=200, reply=Speech("Go ahead.", 300))
    async with FakeRealtimeServer(scenarios=[Greeting(audio_ms=5000), barge_in],
                                  pace=1.0) as server, connected(server, session) as connection:
        await connection.response.create()
        first_delta = await next_of(connection, "response.output_audio.delta")
        await append_audio(connection, 16)
        started = await next_of(connection, "input_audio_buffer.speech_started")
        assert started.audio_start_ms == 300
        await connection.response.cancel()
        await connection.conversation.item.truncate(item_id=first_delta.item_id,
                                                    content_index=0, audio_end_ms=100)
        done = await next_of(connection, "response.done")
        assert done.response.status == "cancelled"
        assert done.response.status_details.reason == "client_cancelled"
        assert done.response.output[0].status == "incomplete"
        truncated = await next_of(connection, "conversation.item.truncated")
        assert (truncated.item_id, truncated.audio_end_ms) == (first_delta.item_id, 100)
        await append_audio(connection, 10)
        reply = await next_of(connection, "response.done")
        assert reply.response.output[0].content[0].transcript == "Go ahead."
        record = server.connections[0]
        assert [t.audio_end_ms for t in record.truncates] == [100]
        assert len(record.cancels) == 1
        assert record.items[first_delta.item_id].truncated_ms == 100
        assert record.responses[0].audio_ms_sent < 5000
        assert record.errors_sent == []


async def test_barge_in_server_vad_cancels_the_response_itself() -> None:
    async with FakeRealtimeServer(scenarios=[Greeting(audio_ms=5000),
                                             BargeIn(after_ms=100, reply=None)],
                                  pace=1.0) as server, \
            connected(server, PCMU_SESSION) as connection:
        await connection.response.create()
        first_delta = await next_of(connection, "response.output_audio.delta")
        await append_audio(connection, 6)
        events = await until(connection, "response.done")
        assert "input_audio_buffer.speech_started" in types(events)
        assert events[-1].response.status_details.reason == "turn_detected"
        await connection.response.cancel()  # too late: the real API answers with an error
        error = await next_of(connection, "error")
        assert error.error.code == "response_cancel_not_active"
        await connection.conversation.item.truncate(item_id=first_delta.item_id,
                                                    content_index=0, audio_end_ms=50)
        await next_of(connection, "conversation.item.truncated")
    assert server.violations == []


async def test_barge_in_on_the_wall_clock() -> None:
    async with FakeRealtimeServer(scenarios=[Greeting(audio_ms=3000),
                                             BargeIn(after_ms=150, speech_ms=100, clock="wall",
                                                     reply=None)],
                                  pace=1.0) as server, \
            connected(server, PCMU_SESSION) as connection:
        await connection.response.create()
        events = await until(connection, "input_audio_buffer.speech_stopped")
        assert "input_audio_buffer.speech_started" in types(events)
        assert server.connections[0].responses[0].status == "cancelled"


async def test_truncate_beyond_the_audio_sent_is_a_violation() -> None:
    async with FakeRealtimeServer(scenarios=[Greeting(audio_ms=1000)],
                                  check_violations=False) as server, \
            connected(server, PCMU_SESSION) as connection:
        await connection.response.create()
        events = await until(connection, "response.done")
        item_id = events[1].item.id
        await connection.conversation.item.truncate(item_id=item_id, content_index=0,
                                                    audio_end_ms=5000)
        error = await next_of(connection, "error")
    assert (error.error.code, error.error.param) == ("invalid_value", "audio_end_ms")
    (violation,) = server.violations
    assert (violation.kind, violation.param) == ("semantic", "audio_end_ms")


async def test_function_call_then_spoken_answer() -> None:
    call = FunctionCall(calls=(ToolCall("get_weather", {"city": "Paris"}, "call_weather_1"),),
                        answer=Speech("It is sunny in Paris.", 500))
    async with FakeRealtimeServer(scenarios=[call]) as server, \
            connected(server, {**PCMU_SESSION, "tools": [WEATHER_TOOL]}) as connection:
        await connection.response.create()
        events = await until(connection, "response.done")
        assert types(events) == [
            "response.created", "response.output_item.added", "conversation.item.added",
            "response.function_call_arguments.delta", "response.function_call_arguments.delta",
            "response.function_call_arguments.delta", "response.function_call_arguments.done",
            "response.output_item.done", "conversation.item.done", "response.done"]
        assert events[1].item.type == "function_call"
        arguments_done = events[6]
        assert (arguments_done.call_id, arguments_done.name) == ("call_weather_1", "get_weather")
        assert json.loads(arguments_done.arguments) == {"city": "Paris"}
        assert "".join(e.delta for e in events[3:6]) == arguments_done.arguments
        assert events[-1].response.output[0].call_id == "call_weather_1"
        await connection.conversation.item.create(item={
            "type": "function_call_output", "call_id": "call_weather_1",
            "output": json.dumps({"sky": "clear"})})
        added = await next_of(connection, "conversation.item.added")
        assert added.item.type == "function_call_output"
        await connection.response.create()
        answer = await until(connection, "response.done")
        assert answer[-1].response.output[0].content[0].transcript == "It is sunny in Paris."
    assert server.connections[0].function_outputs == {"call_weather_1": '{"sky": "clear"}'}


async def test_two_tools_in_one_response() -> None:
    calls = (ToolCall("get_weather", {"city": "Oslo"}), ToolCall("get_time", {"city": "Oslo"}))
    async with FakeRealtimeServer(scenarios=[FunctionCall(calls=calls)]) as server, \
            connected(server, {**PCMU_SESSION, "tools": [WEATHER_TOOL, TIME_TOOL]}) as connection:
        await connection.response.create()
        events = await until(connection, "response.done")
        done = [e for e in events if e.type == "response.function_call_arguments.done"]
        assert [(e.name, e.output_index) for e in done] == [("get_weather", 0), ("get_time", 1)]
        assert len({e.call_id for e in done}) == 2
        for event in done:
            await connection.conversation.item.create(item={
                "type": "function_call_output", "call_id": event.call_id, "output": "{}"})
            await next_of(connection, "conversation.item.done")
        await connection.response.create()
        answer = await until(connection, "response.done")
    assert answer[-1].response.output[0].type == "message"
    assert server.connections[0].scenarios[0].state == "answered"  # type: ignore[attr-defined]


async def test_tool_calls_are_checked_against_the_session() -> None:
    async with FakeRealtimeServer(scenarios=[FunctionCall()], check_violations=False) as server, \
            connected(server, PCMU_SESSION) as connection:  # no tools declared
        await connection.response.create()
        await until(connection, "response.done")
        await connection.conversation.item.create(item={
            "type": "function_call_output", "call_id": "call_nobody", "output": "{}"})
        await next_of(connection, "conversation.item.done")
    assert [(v.kind, v.code) for v in server.violations] == [
        ("semantic", "tool_not_declared"), ("semantic", "invalid_value")]


# ---------------------------------------------------------------------------- validation, errors


@pytest.mark.parametrize(("raw", "code", "param"), [
    ({"type": "session.updaet", "session": {"type": "realtime"}}, "invalid_value", "type"),
    ({"session": {"type": "realtime"}}, "missing_required_parameter", "type"),
    ({"type": "session.update", "session": {"type": "realtime", "voice": "alloy"}},
     "unknown_parameter", "session.voice"),
    ({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
        "format": {"type": "audio/pcmu", "rate": 8000}}}}},
     "unknown_parameter", "session.audio.input.format.rate"),
    ({"type": "session.update", "session": {"type": "realtime", "audio": {"output": {
        "format": {"type": "audio/g729"}}}}}, "invalid_value", "session.audio.output.format.type"),
    ({"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0,
      "audio_end_ms": "120"}, "invalid_type", "audio_end_ms"),
    ({"type": "conversation.item.create", "item": {"type": "function_call_output",
                                                   "output": "{}"}},
     "missing_required_parameter", "item.call_id"),
    ({"type": "input_audio_buffer.append"}, "missing_required_parameter", "audio"),
    ({"type": "response.create", "response": {"output_modalities": ["video"]}},
     "invalid_value", "response.output_modalities[0]"),
    ("{not json", "invalid_json", None),
])
async def test_invalid_client_events_are_violations(raw: Any, code: str,
                                                    param: str | None) -> None:
    async with FakeRealtimeServer(check_violations=False) as server, \
            connected(server) as connection:
        payload = raw if isinstance(raw, str) else json.dumps({"event_id": "evt_bad", **raw})
        await connection.send_raw(payload)
        error = await next_of(connection, "error")
        assert (error.error.type, error.error.code, error.error.param) == \
            ("invalid_request_error", code, param)
        if not isinstance(raw, str):
            assert error.error.event_id == "evt_bad"
        await connection.session.update(session=PCMU_SESSION)  # the session goes on
        await next_of(connection, "session.updated")
    (violation,) = server.violations
    assert (violation.direction, violation.kind, violation.code, violation.param) == \
        ("client", "schema", code, param)
    assert server.connections[0].received_types == ["session.update"]


async def test_leaving_the_server_asserts_no_violations() -> None:
    server = FakeRealtimeServer()
    with pytest.raises(AssertionError, match="unknown_parameter"):
        async with server, connected(server) as connection:
            await connection.send_raw(json.dumps({"type": "input_audio_buffer.clear", "x": 1}))
            await next_of(connection, "error")


async def test_the_fake_validates_what_it_sends() -> None:
    async with FakeRealtimeServer(check_violations=False) as server, \
            connected(server) as connection:
        record = server.connections[0]
        await record.send({"type": "response.output_audio.delta", "delta": "AAAA"})
        await record.send({"type": "input_audio_buffer.cleared"})
        assert (await asyncio.wait_for(connection.recv(), TIMEOUT)).type == \
            "input_audio_buffer.cleared"
    (violation,) = server.violations
    assert (violation.direction, violation.event_type) == ("server", "response.output_audio.delta")


async def test_every_sent_event_parses_as_a_server_event() -> None:
    import pydantic

    adapter: Any = pydantic.TypeAdapter(RealtimeServerEvent)
    scenarios: list[Scenario] = [Greeting(), ReplyOnSpeech(after_ms=100, speech_ms=100)]
    async with FakeRealtimeServer(scenarios=scenarios) as server, \
            connected(server, PCMU_SESSION) as connection:
        await connection.response.create()
        await until(connection, "response.done")
        await append_audio(connection, 12)
        await until(connection, "response.done")
    for event in server.connections[0].sent:
        assert adapter.validate_python(event).type == event["type"]


async def test_races_get_the_real_errors_without_violations() -> None:
    async with FakeRealtimeServer(scenarios=[Greeting(audio_ms=3000)], pace=1.0) as server, \
            connected(server, PCMU_SESSION) as connection:
        await connection.response.cancel()
        assert (await next_of(connection, "error")).error.code == "response_cancel_not_active"
        await connection.input_audio_buffer.commit()
        assert (await next_of(connection, "error")).error.code == \
            "input_audio_buffer_commit_empty"
        await connection.response.create()
        await next_of(connection, "response.created")
        await connection.response.create()
        assert (await next_of(connection, "error")).error.code == \
            "conversation_already_has_active_response"
        await connection.response.cancel()
        assert (await next_of(connection, "response.done")).response.status == "cancelled"
        await connection.session.update(session={"type": "realtime", "audio": {
            "output": {"voice": "cedar"}}})
        assert (await next_of(connection, "error")).error.code == "cannot_update_voice"
    assert [e["error"]["code"] for e in server.connections[0].errors_sent] == [
        "response_cancel_not_active", "input_audio_buffer_commit_empty",
        "conversation_already_has_active_response", "cannot_update_voice"]


async def test_commit_and_conversation_items() -> None:
    async with FakeRealtimeServer() as server, connected(server, PCMU_SESSION) as connection:
        await append_audio(connection, 10)
        await connection.input_audio_buffer.commit()
        committed = await next_of(connection, "input_audio_buffer.committed")
        await next_of(connection, "conversation.item.done")  # the committed audio's item
        await connection.conversation.item.create(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "hello"}]})
        added = await next_of(connection, "conversation.item.added")
        assert added.previous_item_id == committed.item_id
        await connection.conversation.item.delete(item_id=added.item.id)
        assert (await next_of(connection, "conversation.item.deleted")).item_id == added.item.id
        await connection.conversation.item.retrieve(item_id=added.item.id)
        assert (await next_of(connection, "error")).error.param == "item_id"
        await connection.send({"type": "response.create", "response": {
            "conversation": "none",
            "input": [{"type": "item_reference", "id": committed.item_id}]}})
        await next_of(connection, "response.done")
        await connection.input_audio_buffer.clear()
        await next_of(connection, "input_audio_buffer.cleared")


# -------------------------------------------------------------------- auth, refusal, drops, errors


async def test_rejected_key_fails_the_handshake_with_401() -> None:
    async with FakeRealtimeServer(reject_key="sk-revoked-0000") as server:
        client = server.client(api_key="sk-revoked-0000")
        with pytest.raises(InvalidStatus) as raised:
            async with client.realtime.connect(model="gpt-realtime"):
                pass
        assert raised.value.response.status_code == 401
        assert json.loads(raised.value.response.body)["error"]["code"] == "invalid_api_key"
        assert [h.status for h in server.handshakes] == [401]
        assert server.connections == []


async def test_only_the_configured_key_is_accepted() -> None:
    async with FakeRealtimeServer(api_key="sk-good") as server:
        with pytest.raises(InvalidStatus):
            async with server.client(api_key="sk-other").realtime.connect(model="gpt-realtime"):
                pass
        async with connected(server, api_key="sk-good"):
            pass
        assert [h.status for h in server.handshakes] == [401, 101]


async def test_refused_connections_get_503() -> None:
    async with FakeRealtimeServer(refuse_connections=True) as server:
        with pytest.raises(InvalidStatus) as raised:
            async with server.client().realtime.connect(model="gpt-realtime"):
                pass
        assert raised.value.response.status_code == 503


async def test_drop_aborts_without_a_close_frame() -> None:
    async with FakeRealtimeServer(scenarios=[Greeting(), Drop(after_sent=5)]) as server, \
            connected(server, PCMU_SESSION) as connection:
        await connection.response.create()
        with pytest.raises(ConnectionClosedError) as raised:
            await until(connection, "response.done")
        assert raised.value.rcvd is None  # 1006: no close frame
        record = server.connections[0]
        assert await record.wait_closed() == 1006
        assert len(record.sent) == 5


async def test_drop_with_a_close_code_and_the_sdk_reconnects() -> None:
    reconnects: list[int] = []

    def on_reconnecting(event: Any) -> None:
        reconnects.append(event.close_code)

    drop = Drop(after_received="session.update", close_code=1011, connections=(0,))
    async with FakeRealtimeServer(scenarios=[drop]) as server:
        client = server.client()
        async with client.realtime.connect(model="gpt-realtime", on_reconnecting=on_reconnecting,
                                           initial_delay=0.01, max_delay=0.05) as connection:
            await connection.session.update(session=PCMU_SESSION)
            seen = []
            async for event in connection:
                seen.append(event.type)
                if len(seen) == 3:
                    break
        assert seen == ["session.created", "session.updated", "session.created"]
        assert reconnects == [1011]
        assert [c.index for c in server.connections] == [0, 1]
        assert server.connections[0].close_code == 1011


async def test_drop_after_a_delay() -> None:
    async with FakeRealtimeServer(scenarios=[Drop(after_ms=50)]) as server, \
            connected(server) as connection:
        with pytest.raises(ConnectionClosedError):
            await asyncio.wait_for(connection.recv(), TIMEOUT)
        assert await server.connections[0].wait_closed() == 1006


async def test_injected_errors() -> None:
    scenarios: list[Scenario] = [
        InjectError(code="rate_limit_exceeded", message="Rate limit reached.",
                    after_sent="session.updated"),
        InjectError(after_received="response.create", close_code=1011),
    ]
    async with FakeRealtimeServer(scenarios=scenarios) as server, \
            connected(server, PCMU_SESSION) as connection:
        error = await next_of(connection, "error")
        assert (error.error.type, error.error.code) == ("invalid_request_error",
                                                       "rate_limit_exceeded")
        await connection.response.create()
        error = await next_of(connection, "error")
        assert (error.error.type, error.error.code) == ("server_error", "server_error")
        with pytest.raises(ConnectionClosedError) as raised:
            await until(connection, "response.done")
        assert raised.value.rcvd is not None and raised.value.rcvd.code == 1011


async def test_per_connection_scenarios_and_the_fixture(
        fake_realtime: FakeRealtimeServer) -> None:  # noqa: F811
    fake_realtime.scenarios = lambda index: [Greeting(transcript=f"Connection {index}.")]
    for index in range(2):
        async with connected(fake_realtime) as connection:
            await connection.response.create()
            done = await next_of(connection, "response.done")
            assert done.response.output[0].content[0].transcript == f"Connection {index}."
    first = await fake_realtime.wait_connection(0)
    assert await first.wait_closed() == 1000
    assert (await first.wait_received("response.create"))[0].type == "response.create"
