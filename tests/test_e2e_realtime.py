"""Phone call to OpenAI Realtime and back, end to end, in one process over real sockets.

The real sipagent :class:`~sipagent.server.Server` runs with ``model = "openai"``: the real
openai SDK connects to the local :class:`~tests.fakes.realtime_server.FakeRealtimeServer`
(``openai_base_url``), and the scripted softphone (tests/peers/softphone.py) calls it over SIP
and RTP on 127.0.0.1. Every test leaves the ``async with FakeRealtimeServer(...)`` block, which
fails on any Realtime protocol violation the fake recorded.

The fake's audio is a 440 Hz tone rendered as PCMU, which is never the all-0xFF silence the
server sends when it has nothing to play, so "non-silence RTP" is "model audio".
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from bridge.base import ModelEvent, SpeechStarted
from bridge.fallback import fallback_frames
from bridge.tools import StaticTools, ToolContext, function_schema
from sipagent.call import Call, ModelLink
from sipagent.registry import CallRecord, CallRegistry
from sipagent.server import Server
from sipagent.settings import load_settings
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
from tests.peers.harness import RTP_SPAN, free_udp_range, wait_for
from tests.peers.sipp import free_port
from tests.peers.softphone import Received, Softphone

SILENCE = b"\xff" * 160
FRAME_S = 0.020
API_KEY = "sk-test-e2e"
WAIT = 8.0


# -- helpers ----------------------------------------------------------------------------------


async def start_server(fake_url: str, tools: StaticTools | None = None, **overrides: Any
                       ) -> Server:
    """Like ``tests.peers.harness.start_server``, with the openai model and ``tools``."""
    for attempt in range(5):
        base = free_udp_range(10000, 32000, start=os.getpid() + 11 * attempt)
        settings = load_settings(
            sip_port=free_port(udp=True, tcp=True),
            rtp_port_min=base,
            rtp_port_max=base + RTP_SPAN - 2,
            model="openai",
            openai_api_key=API_KEY,
            openai_base_url=fake_url,
            **overrides,
        )
        server = Server(settings, CallRegistry(), tools=tools)
        try:
            await server.start()
        except OSError:
            if attempt == 4:
                raise
            continue
        return server
    raise AssertionError("unreachable")


@asynccontextmanager
async def phone_call(fake: FakeRealtimeServer, *, tools: StaticTools | None = None,
                     **overrides: Any) -> AsyncIterator[tuple[Server, Softphone]]:
    """A server using ``fake`` and a softphone in a call with it, streaming silence."""
    server = await start_server(fake.base_url, tools, **overrides)
    phone = Softphone(server=("127.0.0.1", server.transport.port), user="agent")
    await phone.open()
    streaming: asyncio.Task[None] | None = None
    try:
        ok = await phone.call()
        assert ok.status == 200, ok.status
        streaming = asyncio.get_running_loop().create_task(phone.stream([SILENCE] * 1500))
        yield server, phone
    finally:
        if streaming is not None:
            streaming.cancel()
        await phone.close()
        await server.stop()


def live_record(server: Server) -> CallRecord:
    [record] = server.registry.active()
    return record


def live_call(server: Server) -> Call:
    [call] = server.calls.values()
    return call


def call_reconnects(server: Server) -> int:
    return live_call(server).reconnects


async def hang_up(server: Server, phone: Softphone) -> CallRecord:
    record = live_record(server)
    assert (await phone.hangup()).status == 200
    await wait_for(lambda: not server.calls, WAIT, "the call to end")
    return record


def runs(received: Sequence[Received]) -> list[list[Received]]:
    """Consecutive non-silence packets, in arrival order: one list per talkspurt."""
    found: list[list[Received]] = []
    current: list[Received] = []
    for packet in received:
        if bytes(packet.packet.payload) != SILENCE:
            current.append(packet)
        elif current:
            found.append(current)
            current = []
    if current:
        found.append(current)
    return found


def spurts(phone: Softphone) -> list[int]:
    """Lengths (in packets) of the talkspurts received so far."""
    return [len(run) for run in runs(phone.received)]


def payload_bytes(packets: Sequence[Received]) -> bytes:
    return b"".join(bytes(r.packet.payload) for r in packets)


def find_run(payloads: Sequence[bytes], frames: Sequence[bytes]) -> int:
    """Where ``frames`` appear as one contiguous stretch of ``payloads``, or -1."""
    count = len(frames)
    for start in range(len(payloads) - count + 1):
        if payloads[start] == frames[0] and list(payloads[start:start + count]) == list(frames):
            return start
    return -1


def payloads_of(phone: Softphone) -> list[bytes]:
    return [bytes(r.packet.payload) for r in phone.received]


def pcmu(conn: FakeConnection, duration_ms: int) -> bytes:
    return conn.server.audio.render("audio/pcmu", 0, duration_ms)


class SentClock(Scenario):
    """Notes when the fake sent each event type (loop time, after the send)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent_at: dict[str, list[float]] = {}

    async def on_sent(self, conn: FakeConnection, event: dict[str, Any]) -> None:
        self.sent_at.setdefault(event["type"], []).append(asyncio.get_running_loop().time())


class Stall(Scenario):
    """A server that accepts the WebSocket but answers nothing for ``seconds``."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    async def on_connect(self, conn: FakeConnection) -> None:
        await asyncio.sleep(self.seconds)


def tools(*, slow_s: float = 0.0) -> StaticTools:
    async def get_weather(arguments: dict[str, Any], ctx: ToolContext) -> Any:
        return {"city": arguments["city"], "sky": "sunny", "caller": ctx.call.caller}

    async def get_time(arguments: dict[str, Any], ctx: ToolContext) -> Any:
        return {"time": "12:00"}

    async def slow_lookup(arguments: dict[str, Any], ctx: ToolContext) -> Any:
        await asyncio.sleep(slow_s)
        return {"found": True}

    return StaticTools({
        "get_weather": (function_schema("get_weather", "Weather in a city", {
            "type": "object", "properties": {"city": {"type": "string"}},
            "required": ["city"]}), get_weather),
        "get_time": (function_schema("get_time", "Local time"), get_time),
        "slow_lookup": (function_schema("slow_lookup", "A slow back-end"), slow_lookup),
    })


# -- the conversation -------------------------------------------------------------------------


async def test_greeting_is_heard_byte_for_byte() -> None:
    async with FakeRealtimeServer(scenarios=[Greeting(audio_ms=1000)]) as fake, \
            phone_call(fake) as (server, phone):
        conn = await fake.wait_connection(0)
        await wait_for(lambda: sum(spurts(phone)) >= 50, WAIT, "the greeting")
        [greeting] = runs(phone.received)
        assert payload_bytes(greeting) == pcmu(conn, 1000), "PCMU forwarded untouched"
        assert greeting[0].packet.marker == 1, "the talkspurt starts with the marker bit"
        assert conn.model == "gpt-realtime"
        assert conn.headers.get("Authorization") == f"Bearer {API_KEY}"
        assert conn.input_format == "audio/pcmu"
        record = live_record(server)
        await wait_for(lambda: len(record.transcript) == 1, WAIT, "the greeting transcript")
        assert record.transcript[0]["role"] == "agent"
        assert (await hang_up(server, phone)).end_reason == "remote-bye"


async def test_caller_turn_gets_a_reply_with_transcripts_and_latency() -> None:
    reply = Speech("Sure, for what time?", 800)
    scenarios: list[Scenario] = [
        Greeting(audio_ms=400),
        ReplyOnSpeech(after_ms=600, speech_ms=800, reply=reply),
    ]
    async with FakeRealtimeServer(scenarios=scenarios) as fake, \
            phone_call(fake) as (server, phone):
        conn = await fake.wait_connection(0)
        record = live_record(server)
        await wait_for(lambda: record.turns, WAIT, "the reply's first packet")
        await wait_for(lambda: spurts(phone) == [20, 40], WAIT, "the whole reply")
        greeting, answer = runs(phone.received)
        assert payload_bytes(greeting) == pcmu(conn, 400)
        assert payload_bytes(answer) == pcmu(conn, 800)
        [turn] = record.turns
        assert set(turn) == {"speech_stopped_at", "first_audio_at", "latency_ms", "item_id"}
        assert turn["item_id"] == conn.responses[1].item_ids[0]
        assert 0 <= turn["latency_ms"] < 200  # type: ignore[operator]
        print(f"turn latency (speech stopped -> first reply RTP): {turn['latency_ms']} ms")
        await wait_for(lambda: len(record.transcript) == 3, WAIT, "three transcript lines")
        assert [(line["role"], line["text"]) for line in record.transcript] == [
            ("agent", "Hello, thanks for calling. How can I help you today?"),
            ("caller", "I would like to book a table for two."),
            ("agent", "Sure, for what time?"),
        ]
        await hang_up(server, phone)


async def test_barge_in_truncates_to_the_audio_sent_and_silences_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    processed: list[float] = []
    on_event = Call._on_model_event

    def spy(self: Call, event: ModelEvent) -> None:
        if isinstance(event, SpeechStarted):
            processed.append(asyncio.get_running_loop().time())
        on_event(self, event)

    monkeypatch.setattr(Call, "_on_model_event", spy)
    scenarios: list[Scenario] = [
        Greeting(audio_ms=3000),
        BargeIn(after_ms=700, speech_ms=600, reply=Speech("Of course, go ahead.", 600)),
        SentClock(),
    ]
    async with FakeRealtimeServer(scenarios=scenarios) as fake, \
            phone_call(fake) as (server, phone):
        conn = await fake.wait_connection(0)
        await wait_for(lambda: len(conn.truncates) == 1, WAIT, "the truncate")
        await wait_for(lambda: spurts(phone)[1:] == [30], WAIT, "the reply")
        heard, reply = runs(phone.received)
        [truncate] = conn.truncates
        greeting_item = conn.responses[0].item_ids[0]
        assert truncate.item_id == greeting_item
        sent_ms = len(heard) * 20
        assert abs(truncate.audio_end_ms - sent_ms) <= 20, (truncate.audio_end_ms, sent_ms)
        assert 300 <= sent_ms < 3000
        assert payload_bytes(heard) == pcmu(conn, sent_ms)
        assert payload_bytes(reply) == pcmu(conn, 600)
        [started] = processed
        clock = conn.scenarios[2]
        assert isinstance(clock, SentClock)
        [sent] = clock.sent_at["input_audio_buffer.speech_started"]
        last = heard[-1].at
        assert last - started <= FRAME_S, "no model audio one packet time after SpeechStarted"
        print(f"barge-in: speech_started sent -> processed {(started - sent) * 1000:.2f} ms; "
              f"processed -> last model RTP packet {(last - started) * 1000:+.2f} ms; "
              f"truncate {truncate.audio_end_ms} ms vs {sent_ms} ms sent")
        await hang_up(server, phone)


async def test_model_audio_to_rtp_latency() -> None:
    """Per 20 ms delta, real-time paced: fake's send -> the softphone receives it as RTP."""
    scenarios: list[Scenario] = [Greeting(audio_ms=3000), SentClock()]
    async with FakeRealtimeServer(scenarios=scenarios, pace=1.0, chunk_ms=20) as fake, \
            phone_call(fake) as (server, phone):
        conn = await fake.wait_connection(0)
        await wait_for(lambda: sum(spurts(phone)) >= 150, WAIT, "the greeting")
        packets = [p for run in runs(phone.received) for p in run]
        assert payload_bytes(packets) == pcmu(conn, 3000)
        clock = conn.scenarios[1]
        assert isinstance(clock, SentClock)
        deltas = clock.sent_at["response.output_audio.delta"]
        assert len(deltas) == len(packets) == 150
        latencies = sorted((p.at - d) * 1000 for p, d in zip(packets, deltas, strict=True))
        p50 = statistics.median(latencies)
        p99 = latencies[int(0.99 * (len(latencies) - 1))]
        print(f"model delta -> RTP: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {latencies[-1]:.1f}"
              f" ms over {len(latencies)} frames")
        assert latencies[0] >= 0
        assert p50 < 30 and p99 < 80  # the 20 ms grid, plus a loaded test machine
        await hang_up(server, phone)


# -- tools ------------------------------------------------------------------------------------


async def test_two_tools_in_one_response_round_trip() -> None:
    calls = (ToolCall("get_weather", {"city": "Paris"}), ToolCall("get_time"))
    scenarios: list[Scenario] = [
        FunctionCall(calls=calls, answer=Speech("Sunny in Paris, and it is noon.", 600)),
        ReplyOnSpeech(after_ms=300, speech_ms=400, reply=None),
    ]
    async with FakeRealtimeServer(scenarios=scenarios) as fake, \
            phone_call(fake, tools=tools(), realtime_greeting="") as (server, phone):
        conn = await fake.wait_connection(0)
        record = live_record(server)
        await wait_for(lambda: spurts(phone) == [30], WAIT, "the answer")
        assert payload_bytes(runs(phone.received)[0]) == pcmu(conn, 600)
        assert sorted(tool["name"] for tool in conn.session["tools"]) == [
            "get_time", "get_weather", "slow_lookup"]
        assert len(conn.function_outputs) == 2
        by_name = {str(call["name"]): call for call in record.tool_calls}
        assert set(by_name) == {"get_weather", "get_time"}
        weather = by_name["get_weather"]
        assert weather["arguments"] == {"city": "Paris"}
        assert weather["result"] == {"city": "Paris", "sky": "sunny", "caller": "phone"}
        assert weather["error"] is None and 0 <= weather["duration_ms"] < 1000  # type: ignore[operator]
        assert json.loads(conn.function_outputs[str(weather["call_id"])]) == weather["result"]
        assert by_name["get_time"]["result"] == {"time": "12:00"}
        assert conn.received_types.count("response.create") == 1, "one continuation"
        await hang_up(server, phone)


async def test_tool_timeout_is_a_structured_error_and_the_call_goes_on() -> None:
    scenarios: list[Scenario] = [
        FunctionCall(calls=(ToolCall("slow_lookup"),),
                     answer=Speech("Sorry, that took too long.", 400)),
        ReplyOnSpeech(after_ms=300, speech_ms=400, reply=None),
    ]
    async with FakeRealtimeServer(scenarios=scenarios) as fake, \
            phone_call(fake, tools=tools(slow_s=5.0), realtime_greeting="",
                       realtime_tool_timeout=0.3) as (server, phone):
        conn = await fake.wait_connection(0)
        record = live_record(server)
        await wait_for(lambda: record.tool_calls, WAIT, "the timed-out tool call")
        [tool_call] = record.tool_calls
        assert tool_call["name"] == "slow_lookup" and tool_call["result"] is None
        error = tool_call["error"]
        assert isinstance(error, dict) and error["type"] == "timeout"
        assert 300 <= tool_call["duration_ms"] < 1000  # type: ignore[operator]
        # The call records the timeout before the output has crossed the WebSocket.
        await wait_for(lambda: conn.function_outputs, WAIT, "the timeout's output at the model")
        [output] = conn.function_outputs.values()
        assert json.loads(output)["error"]["type"] == "timeout"
        await wait_for(lambda: spurts(phone) == [20], WAIT, "the answer after the timeout")
        assert live_call(server).link is ModelLink.BRIDGED
        assert (await hang_up(server, phone)).end_reason == "remote-bye"


# -- faults -----------------------------------------------------------------------------------


async def test_websocket_drop_plays_the_prompt_then_rebridges() -> None:
    def scenarios(index: int) -> list[Scenario]:
        if index == 0:
            return [Greeting(audio_ms=400), Drop(after_ms=1500)]
        return [Greeting(transcript="Sorry about that. How can I help?", audio_ms=600)]

    prompt = fallback_frames("PCMU")
    async with FakeRealtimeServer(scenarios=scenarios) as fake, \
            phone_call(fake) as (server, phone):
        first = await fake.wait_connection(0)
        record = live_record(server)
        second = await fake.wait_connection(1, timeout=5)
        await wait_for(lambda: live_call(server).link is ModelLink.BRIDGED
                       and call_reconnects(server) == 1, WAIT, "the re-bridge")
        await wait_for(lambda: [r.status for r in second.responses] == ["completed"], WAIT,
                       "the new greeting")
        await wait_for(lambda: spurts(phone)[-1:] == [30], WAIT, "the new greeting's RTP")
        assert first.close_code == 1006
        payloads = payloads_of(phone)
        at = find_run(payloads, prompt)
        assert at >= 0, "the whole fallback prompt, in order"
        before = b"".join(p for p in payloads[:at] if p != SILENCE)
        after = b"".join(p for p in payloads[at + len(prompt):] if p != SILENCE)
        assert before == pcmu(first, 400) and after == pcmu(second, 600)
        system = [(line["event"], line["text"]) for line in record.transcript
                  if line["role"] == "system"]
        assert [event for event, _ in system] == ["model-lost", "rebridged"]
        assert "1006" in str(system[0][1])
        call = live_call(server)
        assert call.reconnects == 1 and call.link is ModelLink.BRIDGED
        assert (await hang_up(server, phone)).end_reason == "remote-bye"
    assert len(fake.handshakes) == 2


async def test_fatal_error_event_plays_the_prompt_then_hangs_up() -> None:
    scenarios: list[Scenario] = [
        Greeting(audio_ms=400),
        InjectError(code="session_expired", error_type="invalid_request_error",
                    message="Your session hit the maximum duration of 60 minutes.",
                    after_ms=1500),
    ]
    prompt = fallback_frames("PCMU")
    async with FakeRealtimeServer(scenarios=scenarios) as fake, \
            phone_call(fake) as (server, phone):
        await fake.wait_connection(0)
        fake.refuse_connections = True  # the new session cannot be opened either
        record = live_record(server)
        bye = await phone.expect_bye(timeout=12)
        assert bye.method == "BYE"
        await wait_for(lambda: not server.calls, WAIT, "the call to end")
        assert record.end_reason == (
            "model-error: invalid_request_error: Your session hit the maximum duration of "
            "60 minutes. (session_expired)")
        payloads = payloads_of(phone)
        at = find_run(payloads, prompt)
        assert at >= 0, "the whole fallback prompt before the BYE"
        events = [line["event"] for line in record.transcript if line["role"] == "system"]
        assert events == ["model-lost", "rebridge-failed"]
    assert [h.status for h in fake.handshakes] == [101, 503]


async def test_model_unavailable_answers_plays_the_prompt_and_hangs_up() -> None:
    prompt = fallback_frames("PCMU")
    async with FakeRealtimeServer(reject_key=API_KEY) as fake, \
            phone_call(fake) as (server, phone):
        record = live_record(server)
        assert record.state == "answered"
        bye = await phone.expect_bye(timeout=10)
        await wait_for(lambda: not server.calls, WAIT, "the call to end")
        assert record.end_reason == "model-unavailable: unauthorized"
        [line] = record.transcript
        assert line["role"] == "system" and line["event"] == "model-unavailable"
        assert "401" in str(line["text"])
        payloads = payloads_of(phone)
        at = find_run(payloads, prompt)
        assert at >= 0, "the whole prompt"
        last_prompt_packet = phone.received[at + len(prompt) - 1].at
        assert bye.method == "BYE"
        assert all(p == SILENCE for p in payloads[at + len(prompt):])
        assert last_prompt_packet - phone.received[at].at >= (len(prompt) - 2) * FRAME_S
    assert [h.status for h in fake.handshakes] == [401]


@pytest.mark.parametrize(
    ("server_args", "reason"),
    [
        ({"refuse_connections": True, "refuse_status": 503}, "rejected"),
        ({"refuse_connections": True, "refuse_status": 429}, "rate_limited"),
        ({"scenarios": [Stall(2.0)]}, "timeout"),
        ({}, "refused"),
    ],
)
async def test_every_kind_of_unavailable_model_is_answered_with_the_prompt(
    monkeypatch: pytest.MonkeyPatch, server_args: dict[str, Any], reason: str
) -> None:
    short = fallback_frames("PCMU")[:10]
    monkeypatch.setattr("sipagent.call.fallback_frames", lambda codec: short)
    async with FakeRealtimeServer(**server_args) as fake:
        url = fake.base_url
        if reason == "refused":
            await fake.close()  # nothing listens there any more
        server = await start_server(url, realtime_open_timeout=0.5)
        phone = Softphone(server=("127.0.0.1", server.transport.port), user="agent")
        await phone.open()
        try:
            ok = await phone.call()
            assert ok.status == 200
            await phone.expect_bye(timeout=5)
            await wait_for(lambda: server.registry.ended(), WAIT, "the call to end")
            [record] = server.registry.ended()
            assert record.end_reason == f"model-unavailable: {reason}"
            assert find_run(payloads_of(phone), short) >= 0
        finally:
            await phone.close()
            await server.stop()


async def test_other_calls_are_unaffected_by_a_failing_model() -> None:
    def scenarios(index: int) -> list[Scenario]:
        if index == 0:
            return [Greeting(audio_ms=400), Drop(after_ms=800)]
        return [Greeting(audio_ms=2000)]

    async with FakeRealtimeServer(scenarios=scenarios) as fake:
        server = await start_server(fake.base_url, model_max_reconnects=0)
        first = Softphone(server=("127.0.0.1", server.transport.port), user="agent")
        second = Softphone(server=("127.0.0.1", server.transport.port), user="agent")
        await first.open()
        await second.open()
        tasks: list[asyncio.Task[None]] = []
        try:
            assert (await first.call()).status == 200
            await fake.wait_connection(0)
            assert (await second.call()).status == 200
            loop = asyncio.get_running_loop()
            tasks = [loop.create_task(p.stream([SILENCE] * 500)) for p in (first, second)]
            await first.expect_bye(timeout=10)
            assert len(server.calls) == 1
            await wait_for(lambda: sum(spurts(second)) >= 100, WAIT, "call 2 audio")
            [record] = server.registry.active()
            assert record.call_id == second.call_id and record.end_reason is None
            assert (await second.hangup()).status == 200
        finally:
            for task in tasks:
                task.cancel()
            await first.close()
            await second.close()
            await server.stop()
