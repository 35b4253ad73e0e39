"""The ``openai`` model end to end: the real openai SDK against the local fake Realtime server.

Every client event the model sends is validated by the fake against the SDK's GA types (strict,
no unknown fields); leaving ``async with FakeRealtimeServer(...)`` fails on any violation.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr
from websockets.asyncio.server import ServerConnection, serve

from bridge import create_model
from bridge.base import (
    AudioOut,
    CallContext,
    ModelClosed,
    ModelError,
    ModelEvent,
    SpeechStarted,
    Transcript,
)
from bridge.openai_realtime import (
    Observation,
    OpenAIRealtimeModel,
    RealtimeConnectError,
    config_from_settings,
)
from bridge.realtime import TurnLatency
from bridge.realtime_config import RealtimeConfig
from bridge.tools import StaticTools, ToolContext, ToolError, ToolReturn, function_schema
from rtp.pacer import PlayoutQueue
from tests.fakes.realtime_server import (
    BargeIn,
    Drop,
    FakeConnection,
    FakeRealtimeServer,
    FunctionCall,
    Greeting,
    InjectError,
    ReplyOnSpeech,
    Scenario,
    Speech,
    ToolCall,
)

TIMEOUT = 5.0
SILENCE = b"\xff" * 160


def context(codec: str = "PCMU") -> CallContext:
    return CallContext(
        call_id="a84b4c76e66710@pc33",
        session_id="0123456789ab",
        caller="+15550100",
        callee="sip:agent@example.com",
        codec=codec,
    )


class CallSim:
    """What ``sipagent.call.Call`` does with a model, minus RTP: one playout frame per tick."""

    def __init__(self) -> None:
        self.events: list[ModelEvent] = []
        self.playout = PlayoutQueue()
        self.model: OpenAIRealtimeModel | None = None
        self.interrupts: list[tuple[str | None, int]] = []

    def sink(self, event: ModelEvent) -> None:
        self.events.append(event)
        if isinstance(event, AudioOut):
            self.playout.push(event.payload, event.item_id)
        elif isinstance(event, SpeechStarted):
            item = self.playout.current_item
            played = self.playout.played_ms(item) if item is not None else 0
            self.playout.flush()
            self.interrupts.append((item, played))
            assert self.model is not None
            self.model.audio_interrupted(item, played)

    def of(self, kind: type[Any]) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]

    async def talk(self, ms: int, tick: float = 0.0) -> None:
        """Push ``ms`` of caller audio, playing one outbound frame per inbound one."""
        assert self.model is not None
        for _ in range(ms // 20):
            self.model.push_audio(SILENCE)
            self.playout.pop()
            await asyncio.sleep(tick)


async def until(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@asynccontextmanager
async def opened(
    scenarios: list[Scenario],
    config: RealtimeConfig | None = None,
    *,
    codec: str = "PCMU",
    tools: StaticTools | None = None,
    observer: Callable[[Observation], None] | None = None,
    **server_args: Any,
) -> AsyncIterator[tuple[OpenAIRealtimeModel, CallSim, FakeConnection]]:
    async with FakeRealtimeServer(scenarios=scenarios, **server_args) as server:
        call = CallSim()
        model = OpenAIRealtimeModel(
            config or RealtimeConfig(greet_on="ready"),
            client=server.client(),
            tools=tools,
            observer=observer,
        )
        call.model = model
        await model.open(context(codec), call.sink)
        try:
            yield model, call, server.connections[0]
        finally:
            await model.close()


def weather_tools(delay: float = 0.0, *, fail: bool = False) -> StaticTools:
    async def get_weather(arguments: dict[str, Any], ctx: ToolContext) -> Any:
        await asyncio.sleep(delay)
        if fail:
            raise LookupError(f"no station in {arguments.get('city')}")
        return {"city": arguments.get("city"), "sky": "sunny", "caller": ctx.call.caller}

    async def get_time(arguments: dict[str, Any], ctx: ToolContext) -> Any:
        return {"time": "12:00"}

    return StaticTools(
        {
            "get_weather": (function_schema("get_weather", "Weather in a city"), get_weather),
            "get_time": (function_schema("get_time", "Local time"), get_time),
        }
    )


def stuck_weather_tool() -> tuple[StaticTools, asyncio.Event]:
    """A ``get_weather`` that never answers, and the event it sets when it is cancelled."""
    cancelled = asyncio.Event()

    async def slow(arguments: dict[str, Any], ctx: ToolContext) -> Any:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    return StaticTools({"get_weather": (function_schema("get_weather", ""), slow)}), cancelled


@asynccontextmanager
async def mute_server() -> AsyncIterator[str]:
    """A WebSocket server that accepts connections and never says a word; yields its base URL."""

    async def mute(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async with serve(mute, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"http://127.0.0.1:{port}/v1"


# -- set-up and greeting -------------------------------------------------------------------


async def test_open_returns_when_the_session_is_configured() -> None:
    async with opened([], RealtimeConfig(greeting=None, voice="cedar")) as (model, _call, conn):
        assert conn.received_types == ["session.update"]
        assert conn.model == "gpt-realtime"
        assert conn.input_format == "audio/pcmu" and conn.output_format() == "audio/pcmu"
        assert conn.session["audio"]["output"]["voice"] == "cedar"
        assert conn.session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        assert "session.updated" in conn.sent_types
        assert model.session is not None and model.session.state.name == "READY"


async def test_greeting_arrives_as_160_byte_pcmu_frames() -> None:
    greeting = Greeting(transcript="Hello, Acme here.", audio_ms=1000)
    async with opened([greeting], chunk_ms=70) as (_model, call, conn):
        await until(
            lambda: Transcript(role="agent", text="Hello, Acme here.", final=True) in call.events,
            "the greeting transcript",
        )
        frames = call.of(AudioOut)
        assert len(frames) == 50
        assert all(len(frame.payload) == 160 for frame in frames)
        item_ids = {frame.item_id for frame in frames}
        assert len(item_ids) == 1 and None not in item_ids
        sent = b"".join(frame.payload for frame in frames)
        assert sent == conn.server.audio.render("audio/pcmu", 0, 1000)  # forwarded untouched
        create = conn.received[1]
        assert create.type == "response.create"


async def test_pcma_call_uses_alaw_end_to_end() -> None:
    async with opened([Greeting(audio_ms=400)], codec="PCMA") as (_model, call, conn):
        assert conn.input_format == "audio/pcma"
        await until(lambda: len(call.of(AudioOut)) == 20, "the greeting")
        sent = b"".join(frame.payload for frame in call.of(AudioOut))
        assert sent == conn.server.audio.render("audio/pcma", 0, 400)


async def test_pcm_path_resamples_into_exact_frames() -> None:
    config = RealtimeConfig(greet_on="ready", audio_format="pcm")
    async with opened([Greeting(audio_ms=600)], config) as (_model, call, conn):
        assert conn.input_format == "audio/pcm"
        await until(lambda: len(call.of(Transcript)) == 1, "the greeting")
        frames = call.of(AudioOut)
        assert all(len(frame.payload) == 160 for frame in frames)
        assert len(frames) in (30, 31)  # 600 ms, plus at most one padded frame of filter tail
        await call.talk(200)
        # The QQ filter's delay and a last partial 40 ms append stay behind.
        await until(lambda: conn.audio_in_ms >= 140, "resampled caller audio")


async def test_greeting_on_media_waits_for_caller_audio() -> None:
    config = RealtimeConfig(greet_on="media")
    async with opened([Greeting(audio_ms=200)], config) as (_model, call, conn):
        await asyncio.sleep(0.05)
        assert conn.received_types == ["session.update"]
        await call.talk(40)
        await until(lambda: len(call.of(AudioOut)) == 10, "the greeting")
        assert conn.received_types[:3] == [
            "session.update",
            "response.create",
            "input_audio_buffer.append",
        ]


# -- caller audio, turns, transcripts, latency ---------------------------------------------


async def test_caller_frames_are_appended_untouched() -> None:
    frames = [bytes([n]) * 160 for n in range(1, 6)]
    async with opened([], RealtimeConfig(greeting=None, append_ms=20)) as (model, _call, conn):
        for frame in frames:
            model.push_audio(frame)
        await until(lambda: conn.audio_in_ms >= 100, "5 appends")
        assert bytes(conn.audio_in) == b"".join(frames)
        assert conn.received_types.count("input_audio_buffer.append") == 5
        assert model.sends_queued == 0, "written in the call that produced them, no writer task"


async def test_a_full_socket_queues_appends_in_order_until_it_drains() -> None:
    frames = [struct.pack(">H", n) * 80 for n in range(900)]  # every frame different
    async with opened([], RealtimeConfig(greeting=None, append_ms=20)) as (model, _call, conn):
        # Small socket buffers and a fake that stops reading: the client's transport fills up.
        server_socket = conn.ws.transport.get_extra_info("socket")
        server_socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn.ws.transport.pause_reading()
        assert model._websocket is not None
        client_socket = model._websocket.transport.get_extra_info("socket")
        client_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        for frame in frames:
            model.push_audio(frame)
        assert 0 < model.sends_queued < len(frames), "some written at once, then queued"
        conn.ws.transport.resume_reading()
        await until(lambda: conn.audio_in_ms >= 18000, "every append")
        assert bytes(conn.audio_in) == b"".join(frames), "nothing lost or reordered"
        model.push_audio(frames[0])
        await until(lambda: conn.audio_in_ms >= 18020, "one more append")


async def test_40ms_appends_halve_the_messages() -> None:
    config = RealtimeConfig(greeting=None, append_ms=40)
    async with opened([], config) as (_model, call, conn):
        await call.talk(200)
        await until(lambda: conn.audio_in_ms >= 200, "200 ms of audio")
        assert conn.received_types.count("input_audio_buffer.append") == 5


async def test_reply_turn_gives_transcripts_and_latency() -> None:
    observed: list[Observation] = []
    reply = ReplyOnSpeech(after_ms=200, speech_ms=400, reply=Speech("Sure, for what time?", 400))
    config = RealtimeConfig(greeting=None)
    async with opened([reply], config, observer=observed.append) as (model, call, _conn):
        await call.talk(800, tick=0.001)
        await until(lambda: len(call.of(Transcript)) == 2, "both transcripts")
        assert call.of(Transcript) == [
            Transcript(role="caller", text="I would like to book a table for two.", final=True),
            Transcript(role="agent", text="Sure, for what time?", final=True),
        ]
        assert len(model.turn_latencies_ms) == 1
        [latency] = observed
        assert isinstance(latency, TurnLatency) and 0 <= latency.latency_ms < 1000
        assert latency.item_id == call.of(AudioOut)[0].item_id


# -- barge-in ------------------------------------------------------------------------------


async def test_barge_in_truncates_to_what_was_played() -> None:
    # The greeting streams in real time; the caller talks over it 300 ms in.
    scenarios: list[Scenario] = [
        Greeting(audio_ms=3000),
        BargeIn(after_ms=300, speech_ms=200, clock="wall", reply=Speech("Go ahead.", 200)),
    ]
    async with opened(scenarios, pace=1.0, chunk_ms=40) as (_model, call, conn):
        talking = asyncio.create_task(call.talk(2000, tick=0.02))
        await until(lambda: len(conn.truncates) == 1, "the truncate", timeout=8)
        talking.cancel()
        [(item, played)] = call.interrupts
        [truncate] = conn.truncates
        greeting_item = conn.responses[0].item_ids[0]
        assert (truncate.item_id, truncate.content_index) == (greeting_item, 0) == (item, 0)
        assert truncate.audio_end_ms == played
        assert 0 < played <= conn.items[greeting_item].audio_ms_sent
        assert conn.responses[0].status == "cancelled"
        # Nothing of the cancelled greeting reaches the call after the barge-in.
        after = call.events[call.events.index(SpeechStarted()) :]
        assert not [e for e in after if isinstance(e, AudioOut) and e.item_id == greeting_item]
        assert not call.of(ModelError)  # our response.cancel racing the server's is benign


async def test_barge_in_after_the_greeting_finished_streaming() -> None:
    # Audio arrives faster than real time: the response is done while the call still plays it.
    scenarios: list[Scenario] = [Greeting(audio_ms=2000), BargeIn(after_ms=500, speech_ms=200)]
    async with opened(scenarios) as (_model, call, conn):
        await until(lambda: len(call.of(AudioOut)) == 100, "the whole greeting")
        await call.talk(1000, tick=0.001)
        await until(lambda: len(conn.truncates) == 1, "the truncate")
        [(_item, played)] = call.interrupts
        assert conn.truncates[0].audio_end_ms == played
        assert 400 <= played <= 600
        assert conn.cancels == []  # nothing in progress to cancel


# -- function calls ------------------------------------------------------------------------


async def test_function_call_round_trip() -> None:
    scenario = FunctionCall(calls=(ToolCall("get_weather", {"city": "Paris"}),))
    async with opened([scenario], tools=weather_tools()) as (model, call, conn):
        await until(lambda: len(call.of(Transcript)) == 1, "the answer")
        [call_id] = list(conn.function_outputs)
        assert json.loads(conn.function_outputs[call_id]) == {
            "city": "Paris",
            "sky": "sunny",
            "caller": "+15550100",
        }
        assert call.of(Transcript) == [
            Transcript(role="agent", text="It is sunny in Paris.", final=True)
        ]
        assert conn.received_types.count("response.create") == 2
        [record] = model.tool_calls
        assert (record.name, record.error_type) == ("get_weather", None)
        assert conn.session["tools"][0]["name"] == "get_weather"


async def test_two_tools_in_one_response_then_one_continuation() -> None:
    scenario = FunctionCall(
        calls=(ToolCall("get_weather", {"city": "Oslo"}), ToolCall("get_time", {"city": "Oslo"}))
    )
    async with opened([scenario], tools=weather_tools(delay=0.1)) as (model, call, conn):
        await until(lambda: len(call.of(Transcript)) == 1, "the answer")
        assert len(conn.function_outputs) == 2
        assert conn.received_types.count("response.create") == 2
        creates = [i for i, t in enumerate(conn.received_types) if t == "response.create"]
        outputs = [i for i, t in enumerate(conn.received_types) if t == "conversation.item.create"]
        assert max(outputs) < creates[1]  # continuation only once both are answered
        assert [r.name for r in model.tool_calls] == ["get_time", "get_weather"]


async def test_slow_tool_times_out_without_blocking_audio() -> None:
    tools, cancelled = stuck_weather_tool()
    config = RealtimeConfig(greet_on="ready", tool_timeout=0.3)
    async with opened([FunctionCall()], config, tools=tools) as (_model, call, conn):
        await call.talk(200, tick=0.001)  # audio flows while the tool is stuck
        await until(lambda: len(conn.function_outputs) == 1, "the timeout output")
        assert conn.audio_in_ms >= 200
        [output] = conn.function_outputs.values()
        assert json.loads(output)["error"]["type"] == "timeout"
        await asyncio.wait_for(cancelled.wait(), TIMEOUT)
        await until(lambda: len(call.of(Transcript)) == 1, "the answer after the timeout")


async def test_failing_tool_returns_a_structured_error() -> None:
    async with opened([FunctionCall()], tools=weather_tools(fail=True)) as (_model, _call, conn):
        await until(lambda: len(conn.function_outputs) == 1, "the error output")
        [output] = conn.function_outputs.values()
        assert json.loads(output) == {
            "error": {"type": "tool_error", "message": "LookupError: no station in Paris"}
        }


async def test_handoff_updates_the_session_before_the_output() -> None:
    async def transfer(arguments: dict[str, Any], ctx: ToolContext) -> Any:
        return ToolReturn(output={"ok": True}, instructions="You are the billing agent.")

    tools = StaticTools({"get_weather": (function_schema("get_weather", ""), transfer)})
    async with opened([FunctionCall()], tools=tools) as (_model, _call, conn):
        await until(lambda: len(conn.function_outputs) == 1, "the output")
        types = conn.received_types
        assert types.index("session.update", 1) < types.index("conversation.item.create")
        assert conn.session["instructions"] == "You are the billing agent."


# -- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize(("close_code", "shown"), [(None, "1006"), (1011, "1011")])
async def test_drop_mid_call_becomes_model_closed(close_code: int | None, shown: str) -> None:
    config = RealtimeConfig(greeting=None)
    async with opened([Drop(after_ms=100, close_code=close_code)], config) as (model, call, _):
        await until(lambda: bool(call.of(ModelClosed)), "ModelClosed")
        [closed] = call.of(ModelClosed)
        assert shown in closed.reason
        model.push_audio(SILENCE)  # harmless after the drop
        await model.close()
        await model.close()


async def test_error_event_is_reported_and_the_call_goes_on() -> None:
    scenarios: list[Scenario] = [
        InjectError(code="server_error", after_sent="session.updated"),
        Greeting(audio_ms=200),
    ]
    async with opened(scenarios) as (_model, call, _conn):
        await until(lambda: bool(call.of(ModelError)), "ModelError")
        [error] = call.of(ModelError)
        assert not error.fatal and "server_error" in error.message
        await until(lambda: len(call.of(AudioOut)) == 10, "the greeting despite the error")


async def test_fatal_error_event_then_close() -> None:
    scenario = InjectError(
        code="session_expired",
        message="Your session hit the maximum duration of 60 minutes.",
        after_sent="session.updated",
        close_code=1000,
    )
    async with opened([scenario], RealtimeConfig(greeting=None)) as (_model, call, _conn):
        await until(lambda: bool(call.of(ModelClosed)), "ModelClosed")
        [error] = call.of(ModelError)
        assert error.fatal and "60 minutes" in error.message


async def test_error_before_ready_fails_open() -> None:
    async with FakeRealtimeServer(scenarios=[InjectError(code="invalid_value")]) as server:
        model = OpenAIRealtimeModel(RealtimeConfig(), client=server.client())
        with pytest.raises(RealtimeConnectError) as raised:
            await model.open(context(), lambda event: None)
        assert raised.value.reason == "rejected" and not raised.value.retryable
        await model.close()


@pytest.mark.parametrize(
    ("server_args", "reason", "status", "retryable"),
    [
        ({"reject_key": "sk-test-fake"}, "unauthorized", 401, False),
        ({"refuse_connections": True, "refuse_status": 429}, "rate_limited", 429, True),
        ({"refuse_connections": True, "refuse_status": 503}, "rejected", 503, True),
    ],
)
async def test_refused_handshakes(
    server_args: dict[str, Any], reason: str, status: int, retryable: bool
) -> None:
    events: list[ModelEvent] = []
    async with FakeRealtimeServer(**server_args) as server:
        model = OpenAIRealtimeModel(client=server.client())
        with pytest.raises(RealtimeConnectError) as raised:
            await model.open(context(), events.append)
        error = raised.value
        assert (error.reason, error.status, error.retryable) == (reason, status, retryable)
        assert events == []
        await model.close()


async def test_connection_refused() -> None:
    server = await FakeRealtimeServer().start()
    client = server.client()
    await server.close()  # nothing listens on that port any more
    model = OpenAIRealtimeModel(client=client)
    with pytest.raises(RealtimeConnectError) as raised:
        await model.open(context(), lambda event: None)
    assert raised.value.reason == "refused" and raised.value.retryable


async def test_silent_server_times_out() -> None:
    async with mute_server() as base_url:
        model = OpenAIRealtimeModel(api_key="sk-test", base_url=base_url, open_timeout=0.3)
        with pytest.raises(RealtimeConnectError) as raised:
            await model.open(context(), lambda event: None)
        assert raised.value.reason == "timeout"


async def test_missing_api_key_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    model = OpenAIRealtimeModel()
    with pytest.raises(RealtimeConnectError) as raised:
        await model.open(context(), lambda event: None)
    assert raised.value.reason == "config"


async def test_no_events_after_close() -> None:
    async with opened([Greeting(audio_ms=3000)], pace=1.0) as (model, call, conn):
        await until(lambda: bool(call.of(AudioOut)), "some greeting audio")
        await model.close()
        count = len(call.events)
        await asyncio.sleep(0.2)
        assert len(call.events) == count
        assert model.closed
        await conn.wait_closed()


async def test_open_twice_is_refused() -> None:
    async with opened([], RealtimeConfig(greeting=None)) as (model, call, _conn):
        with pytest.raises(RuntimeError, match="twice"):
            await model.open(context(), call.sink)


# -- DTMF and the factory ------------------------------------------------------------------


async def test_dtmf_becomes_a_caller_message() -> None:
    async with opened([], RealtimeConfig(greeting=None)) as (model, _call, conn):
        for digit in "42#":
            model.send_dtmf(digit)
        await until(lambda: "response.create" in conn.received_types, "the response")
        [item] = [e.model_dump() for e in conn.received if e.type == "conversation.item.create"]
        assert item["item"]["role"] == "user"
        assert item["item"]["content"][0]["text"].endswith("keypad: 42#]")


async def test_factory_builds_from_settings() -> None:
    async with FakeRealtimeServer(scenarios=[Greeting(audio_ms=200)]) as server:
        settings = SimpleNamespace(
            openai_api_key=SecretStr("sk-test-factory"),
            openai_base_url=server.base_url,
            realtime_voice="cedar",
            realtime_greeting="Say hi.",
            realtime_greet_on="ready",
            realtime_turn_detection="semantic_vad",
            realtime_eagerness="low",
            realtime_tool_timeout=2.0,
        )
        model = create_model("openai", settings)
        assert isinstance(model, OpenAIRealtimeModel)
        assert model.config.tool_timeout == 2.0
        call = CallSim()
        call.model = model
        await model.open(context(), call.sink)
        try:
            await until(lambda: len(call.of(AudioOut)) == 10, "the greeting")
            conn = server.connections[0]
            assert conn.headers["Authorization"] == "Bearer sk-test-factory"
            assert conn.session["audio"]["output"]["voice"] == "cedar"
            detection = conn.session["audio"]["input"]["turn_detection"]
            assert (detection["type"], detection["eagerness"]) == ("semantic_vad", "low")
        finally:
            await model.close()


async def test_openai_base_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeRealtimeServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-env")
        model = create_model("openai", None)
        assert isinstance(model, OpenAIRealtimeModel)
        await model.open(context(), lambda event: None)
        await model.close()
        assert server.handshakes[0].path.startswith("/v1/realtime?model=gpt-realtime")


def test_config_from_settings_keeps_defaults() -> None:
    assert config_from_settings(None) == RealtimeConfig()
    assert config_from_settings(SimpleNamespace(realtime_greeting=None)).greeting is None


# -- edges ---------------------------------------------------------------------------------


async def test_drop_during_set_up_fails_open() -> None:
    async with FakeRealtimeServer(scenarios=[Drop(after_sent=1)]) as server:
        model = OpenAIRealtimeModel(client=server.client())
        with pytest.raises(RealtimeConnectError) as raised:
            await model.open(context(), lambda event: None)
        assert raised.value.reason == "closed" and raised.value.retryable


async def test_close_while_opening_returns_quietly() -> None:
    async with mute_server() as base_url:
        model = OpenAIRealtimeModel(api_key="sk-test", base_url=base_url)
        opening = asyncio.create_task(model.open(context(), lambda event: None))
        await asyncio.sleep(0.1)
        await model.close()
        await asyncio.wait_for(opening, TIMEOUT)  # returns, does not raise


async def test_calls_before_open_are_no_ops() -> None:
    model = OpenAIRealtimeModel()
    model.push_audio(SILENCE)
    model.send_dtmf("1")
    model.audio_interrupted("item", 100)
    model.send_function_result("call_1", "{}")
    assert model.session is None
    await model.close()
    model.push_audio(SILENCE)


async def test_external_function_result_wins_over_the_adapter() -> None:
    tools, cancelled = stuck_weather_tool()
    async with opened([FunctionCall()], tools=tools) as (model, _call, conn):
        await until(lambda: bool(model.session and model.session.pending_calls), "the call")
        [call_id] = model.session.pending_calls if model.session else []
        model.send_function_result(call_id, '{"sky": "grey"}')
        await until(lambda: len(conn.function_outputs) == 1, "the output")
        assert conn.function_outputs[call_id] == '{"sky": "grey"}'
        await asyncio.wait_for(cancelled.wait(), TIMEOUT)


@pytest.mark.parametrize(("result", "error_type"), [(object(), "invalid_result"), (None, None)])
async def test_tool_results_that_are_not_json(result: Any, error_type: str | None) -> None:
    async def odd(arguments: dict[str, Any], ctx: ToolContext) -> Any:
        return result

    tools = StaticTools({"get_weather": (function_schema("get_weather", ""), odd)})
    async with opened([FunctionCall()], tools=tools) as (_model, _call, conn):
        await until(lambda: len(conn.function_outputs) == 1, "the output")
        [output] = conn.function_outputs.values()
        if error_type is None:
            assert output == "null"
        else:
            assert json.loads(output)["error"]["type"] == error_type


async def test_tool_error_type_reaches_the_model() -> None:
    class NotVerified(ToolError):
        type = "not_verified"

    async def verify(arguments: dict[str, Any], ctx: ToolContext) -> Any:
        raise NotVerified("caller is not verified")

    tools = StaticTools({"get_weather": (function_schema("get_weather", ""), verify)})
    async with opened([FunctionCall()], tools=tools) as (_model, _call, conn):
        await until(lambda: len(conn.function_outputs) == 1, "the output")
        [output] = conn.function_outputs.values()
        assert json.loads(output) == {
            "error": {"type": "not_verified", "message": "caller is not verified"}
        }


async def test_a_failing_sink_or_observer_does_not_stop_the_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    frames: list[ModelEvent] = []

    def sink(event: ModelEvent) -> None:
        frames.append(event)
        raise RuntimeError("call bug")

    def observer(event: Observation) -> None:
        raise RuntimeError("metrics bug")

    async with FakeRealtimeServer(scenarios=[FunctionCall(answer=Speech("Done.", 200))]) as server:
        model = OpenAIRealtimeModel(
            RealtimeConfig(greet_on="ready"),
            client=server.client(),
            tools=weather_tools(),
            observer=observer,
        )
        await model.open(context(), sink)
        await until(lambda: len([e for e in frames if isinstance(e, AudioOut)]) == 10, "audio")
        await model.close()
    assert "call's sink failed" in caplog.text and "observer failed" in caplog.text
