"""The sans-I/O Realtime core, driven with a fake clock and SDK-typed server events."""

from __future__ import annotations

import base64
import json
import typing
from typing import Any

import pydantic
import pytest
from openai.types.realtime import RealtimeClientEvent
from openai.types.realtime.conversation_item_input_audio_transcription_completed_event import (
    ConversationItemInputAudioTranscriptionCompletedEvent,
)
from openai.types.realtime.input_audio_buffer_speech_started_event import (
    InputAudioBufferSpeechStartedEvent,
)
from openai.types.realtime.input_audio_buffer_speech_stopped_event import (
    InputAudioBufferSpeechStoppedEvent,
)
from openai.types.realtime.realtime_error_event import RealtimeErrorEvent
from openai.types.realtime.response_audio_delta_event import ResponseAudioDeltaEvent
from openai.types.realtime.response_audio_done_event import ResponseAudioDoneEvent
from openai.types.realtime.response_audio_transcript_done_event import (
    ResponseAudioTranscriptDoneEvent,
)
from openai.types.realtime.response_created_event import ResponseCreatedEvent
from openai.types.realtime.response_done_event import ResponseDoneEvent
from openai.types.realtime.response_function_call_arguments_done_event import (
    ResponseFunctionCallArgumentsDoneEvent,
)
from openai.types.realtime.session_updated_event import SessionUpdatedEvent

from bridge.base import (
    AudioOut,
    FunctionCallRequested,
    ModelClosed,
    ModelError,
    SpeechStarted,
    SpeechStopped,
    Transcript,
)
from bridge.realtime import (
    CoreEvent,
    RealtimeSession,
    SessionReady,
    SessionState,
    ToolCallCancelled,
    ToolCallFinished,
    TurnLatency,
)
from bridge.realtime_config import RealtimeConfig
from bridge.tools import function_schema

# -- helpers -------------------------------------------------------------------------------

_CLIENT_MODELS: dict[str, type[pydantic.BaseModel]] = {
    typing.get_args(model.model_fields["type"].annotation)[0]: model
    for model in typing.get_args(typing.get_args(RealtimeClientEvent)[0])
}
_serial = 0


def _next_id(prefix: str) -> str:
    global _serial
    _serial += 1
    return f"{prefix}_{_serial}"


def server(model: type[pydantic.BaseModel], **fields: Any) -> str:
    """A server event built (and so validated) by the SDK's own model, as JSON text."""
    fields.setdefault("event_id", _next_id("event"))
    fields["type"] = typing.get_args(model.model_fields["type"].annotation)[0]
    return model(**fields).model_dump_json(exclude_unset=True)


def session_updated() -> str:
    return server(SessionUpdatedEvent, session={"type": "realtime"})


def response_created(response_id: str) -> str:
    return server(
        ResponseCreatedEvent,
        response={"id": response_id, "object": "realtime.response", "status": "in_progress"},
    )


def response_done(response_id: str, status: str = "completed", **extra: Any) -> str:
    body = {"id": response_id, "object": "realtime.response", "status": status, **extra}
    return server(ResponseDoneEvent, response=body)


def audio_delta(response_id: str, item_id: str, data: bytes) -> str:
    return server(
        ResponseAudioDeltaEvent,
        response_id=response_id,
        item_id=item_id,
        output_index=0,
        content_index=0,
        delta=base64.b64encode(data).decode(),
    )


def audio_done(response_id: str, item_id: str) -> str:
    return server(
        ResponseAudioDoneEvent,
        response_id=response_id,
        item_id=item_id,
        output_index=0,
        content_index=0,
    )


def speech_started(ms: int = 0) -> str:
    return server(InputAudioBufferSpeechStartedEvent, audio_start_ms=ms, item_id="item_user")


def speech_stopped(ms: int = 0) -> str:
    return server(InputAudioBufferSpeechStoppedEvent, audio_end_ms=ms, item_id="item_user")


def function_call(response_id: str, call_id: str, name: str, arguments: str = "{}") -> str:
    return server(
        ResponseFunctionCallArgumentsDoneEvent,
        response_id=response_id,
        item_id=f"item_{call_id}",
        output_index=0,
        call_id=call_id,
        name=name,
        arguments=arguments,
    )


def error(error_type: str, message: str, code: str | None = None) -> str:
    return server(RealtimeErrorEvent, error={"type": error_type, "message": message, "code": code})


def validated(data: str) -> dict[str, Any]:
    """A client event, checked against the SDK model for its type."""
    event: dict[str, Any] = json.loads(data)
    _CLIENT_MODELS[event["type"]].model_validate(event)
    return event


class Harness:
    """A core, a fake clock, and what came out of it."""

    def __init__(self, config: RealtimeConfig | None = None, codec: str = "PCMU") -> None:
        self.now = 1000.0
        tools = [function_schema("lookup", "Look something up"), function_schema("weather", "")]
        self.core = RealtimeSession(
            config or RealtimeConfig(greeting=None), codec=codec, tools=tools
        )

    def start(self) -> None:
        self.core.start(self.now)
        self.sent()
        self.receive(session_updated())
        assert self.events() == [SessionReady()]

    def receive(self, data: str) -> None:
        self.core.receive_message(data, self.now)

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sent(self) -> list[dict[str, Any]]:
        return [validated(data) for data in self.core.data_to_send()]

    def events(self) -> list[CoreEvent]:
        out = []
        while (event := self.core.next_event()) is not None:
            out.append(event)
        return out

    def audio(self) -> list[AudioOut]:
        return [e for e in self.events() if isinstance(e, AudioOut)]


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    harness.start()
    return harness


def pcmu(n: int, fill: int = 0x55) -> bytes:
    return bytes([fill]) * n


# -- session set-up ------------------------------------------------------------------------


def test_start_sends_one_valid_session_update() -> None:
    harness = Harness(RealtimeConfig(greeting=None, voice="cedar", instructions="Be brief."))
    harness.core.start(harness.now)
    [update] = harness.sent()
    session = update["session"]
    assert update["type"] == "session.update"
    assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "cedar"}
    assert session["instructions"] == "Be brief."
    assert [tool["name"] for tool in session["tools"]] == ["lookup", "weather"]
    assert harness.core.state is SessionState.CONFIGURING


def test_session_updated_makes_it_ready_once() -> None:
    harness = Harness()
    harness.start()
    assert harness.core.state is SessionState.READY
    harness.receive(session_updated())  # the answer to a later update: nothing new
    assert harness.events() == []


def test_start_twice_is_an_illegal_transition(h: Harness) -> None:
    with pytest.raises(RuntimeError, match="READY -> CONFIGURING"):
        h.core.start(h.now)


def test_greeting_on_ready_asks_for_the_first_response() -> None:
    harness = Harness(RealtimeConfig(greeting="Say hello.", greet_on="ready", instructions="X."))
    harness.start()
    [create] = harness.sent()
    assert create["type"] == "response.create"
    assert create["response"]["instructions"] == "X.\n\nSay hello."


def test_greeting_on_media_waits_for_the_first_frame() -> None:
    harness = Harness(RealtimeConfig(greeting="Say hello.", greet_on="media"))
    harness.start()
    assert harness.sent() == []
    harness.core.push_audio(pcmu(160), harness.now)
    assert [event["type"] for event in harness.sent()] == ["response.create"]
    harness.core.push_audio(pcmu(160), harness.now)
    assert [event["type"] for event in harness.sent()] == ["input_audio_buffer.append"]


def test_no_greeting_means_the_caller_speaks_first(h: Harness) -> None:
    for _ in range(2):  # 40 ms: one append
        h.core.push_audio(pcmu(160), h.now)
    assert [event["type"] for event in h.sent()] == ["input_audio_buffer.append"]


# -- inbound audio -------------------------------------------------------------------------


def test_frames_before_ready_are_dropped() -> None:
    harness = Harness()
    harness.core.push_audio(pcmu(160), harness.now)
    harness.core.start(harness.now)
    harness.core.push_audio(pcmu(160), harness.now)
    assert [event["type"] for event in harness.sent()] == ["session.update"]
    assert harness.core.frames_dropped == 2


def test_each_20ms_frame_is_appended_untouched() -> None:
    h = Harness(RealtimeConfig(greeting=None, append_ms=20))
    h.start()
    frames = [bytes(range(n, n + 160)) for n in range(3)]
    for frame in frames:
        h.core.push_audio(frame, h.now)
    appends = h.sent()
    assert [base64.b64decode(a["audio"]) for a in appends] == frames
    assert h.core.frames_in == 3


def test_40ms_batching_halves_the_messages() -> None:
    harness = Harness(RealtimeConfig(greeting=None))  # 40 ms is the default
    harness.start()
    frames = [bytes([n]) * 160 for n in range(5)]
    for frame in frames:
        harness.core.push_audio(frame, harness.now)
    appends = harness.sent()
    assert [base64.b64decode(a["audio"]) for a in appends] == [
        frames[0] + frames[1],
        frames[2] + frames[3],
    ]


# -- outbound audio ------------------------------------------------------------------------


def test_deltas_are_reframed_into_exact_160_byte_frames(h: Harness) -> None:
    stream = bytes(range(256)) * 3  # 768 bytes, cut at awkward places
    h.receive(response_created("resp_1"))
    for start, end in ((0, 100), (100, 350), (350, 700), (700, 768)):
        h.receive(audio_delta("resp_1", "item_a", stream[start:end]))
    frames = h.audio()
    assert [len(f.payload) for f in frames] == [160] * 4
    assert {f.item_id for f in frames} == {"item_a"}
    h.receive(audio_done("resp_1", "item_a"))
    [last] = h.audio()
    assert last.payload == stream[640:] + b"\xff" * (160 - 128)
    assert b"".join(f.payload for f in [*frames, last]).startswith(stream)
    assert h.core.frames_out == 5


def test_pcma_tail_is_padded_with_alaw_silence() -> None:
    harness = Harness(codec="PCMA")
    harness.start()
    harness.receive(audio_delta("resp_1", "item_a", b"\x01" * 10))
    harness.receive(response_done("resp_1"))
    [frame] = harness.audio()
    assert frame.payload == b"\x01" * 10 + b"\xd5" * 150


def test_a_new_item_flushes_the_previous_one(h: Harness) -> None:
    h.receive(audio_delta("resp_1", "item_a", b"\x01" * 200))
    h.receive(audio_delta("resp_1", "item_b", b"\x02" * 160))
    frames = h.audio()
    assert [(f.item_id, f.payload[:1]) for f in frames] == [
        ("item_a", b"\x01"),
        ("item_a", b"\x01"),
        ("item_b", b"\x02"),
    ]


# -- barge-in ------------------------------------------------------------------------------


def speak(h: Harness, response_id: str, item_id: str, ms: int, done: bool = False) -> None:
    h.receive(response_created(response_id))
    h.receive(audio_delta(response_id, item_id, pcmu(ms * 8)))
    if done:
        h.receive(audio_done(response_id, item_id))
        h.receive(response_done(response_id))
    h.events()


def test_barge_in_cancels_and_truncates_to_what_was_played(h: Harness) -> None:
    speak(h, "resp_1", "item_a", 1000)
    h.receive(speech_started())
    assert h.events() == [SpeechStarted()]
    assert h.sent() == [{"type": "response.cancel", "response_id": "resp_1"}]
    h.core.audio_interrupted("item_a", 340, h.now)
    assert h.sent() == [
        {
            "type": "conversation.item.truncate",
            "item_id": "item_a",
            "content_index": 0,
            "audio_end_ms": 340,
        }
    ]


def test_truncation_never_exceeds_the_audio_received(h: Harness) -> None:
    speak(h, "resp_1", "item_a", 500)
    h.receive(speech_started())
    h.sent()
    h.core.audio_interrupted("item_a", 900, h.now)  # e.g. padding, or a confused playout
    [truncate] = h.sent()
    assert truncate["audio_end_ms"] == 500


def test_audio_of_the_cancelled_response_is_discarded(h: Harness) -> None:
    speak(h, "resp_1", "item_a", 200)
    h.receive(speech_started())
    h.core.audio_interrupted("item_a", 100, h.now)
    h.events()
    h.receive(audio_delta("resp_1", "item_a", pcmu(800)))
    h.receive(audio_done("resp_1", "item_a"))
    h.receive(response_done("resp_1", "cancelled"))
    assert h.audio() == []
    assert h.core.discarded_bytes == 800
    # The next response plays normally.
    h.receive(response_created("resp_2"))
    h.receive(audio_delta("resp_2", "item_b", pcmu(160)))
    assert [f.item_id for f in h.audio()] == ["item_b"]


def test_partial_frame_of_the_interrupted_item_is_not_played(h: Harness) -> None:
    h.receive(response_created("resp_1"))
    h.receive(audio_delta("resp_1", "item_a", pcmu(250)))
    h.events()
    h.receive(speech_started())
    h.receive(response_done("resp_1", "cancelled"))
    assert h.events() == [SpeechStarted()]


def test_barge_in_on_a_finished_response_still_playing_truncates_without_cancel(
    h: Harness,
) -> None:
    speak(h, "resp_1", "item_a", 3000, done=True)
    h.receive(speech_started())
    assert h.sent() == []  # nothing in progress to cancel
    h.core.audio_interrupted("item_a", 1200, h.now)
    [truncate] = h.sent()
    assert truncate["type"] == "conversation.item.truncate"
    assert truncate["audio_end_ms"] == 1200


def test_an_item_heard_in_full_is_not_truncated(h: Harness) -> None:
    speak(h, "resp_1", "item_a", 600, done=True)
    h.receive(speech_started())
    h.core.audio_interrupted("item_a", 620, h.now)  # played includes the padded last frame
    assert h.sent() == []


def test_interrupt_without_item_cuts_the_streaming_item_to_zero(h: Harness) -> None:
    speak(h, "resp_1", "item_a", 100)
    h.core.audio_interrupted(None, 0, h.now)
    assert [(e["type"], e.get("audio_end_ms")) for e in h.sent()] == [
        ("response.cancel", None),
        ("conversation.item.truncate", 0),
    ]


def test_interrupt_of_unknown_or_no_item_sends_nothing(h: Harness) -> None:
    h.core.audio_interrupted(None, 0, h.now)
    h.core.audio_interrupted("item_nobody_heard", 200, h.now)
    assert h.sent() == []


def test_item_is_truncated_once(h: Harness) -> None:
    speak(h, "resp_1", "item_a", 1000)
    h.core.audio_interrupted("item_a", 200, h.now)
    h.sent()
    h.core.audio_interrupted("item_a", 400, h.now)
    assert h.sent() == []


def test_speech_during_a_requested_greeting_cancels_it() -> None:
    harness = Harness(RealtimeConfig(greeting="Hi.", greet_on="ready"))
    harness.start()
    harness.sent()
    harness.receive(speech_started())
    harness.receive(response_created("resp_greeting"))
    assert harness.sent() == [{"type": "response.cancel", "response_id": "resp_greeting"}]
    harness.receive(audio_delta("resp_greeting", "item_g", pcmu(320)))
    assert harness.audio() == []


def test_benign_cancel_race_is_not_an_error(h: Harness) -> None:
    h.receive(error("invalid_request_error", "no active response", "response_cancel_not_active"))
    assert h.events() == []


# -- turn latency --------------------------------------------------------------------------


def test_turn_latency_is_speech_stopped_to_first_reply_frame(h: Harness) -> None:
    h.receive(speech_started())
    h.advance(1.2)
    h.receive(speech_stopped())
    h.advance(0.3)
    h.receive(response_created("resp_1"))
    h.advance(0.25)
    h.receive(audio_delta("resp_1", "item_a", pcmu(480)))
    events = h.events()
    assert events[:3] == [
        SpeechStarted(),
        SpeechStopped(),
        AudioOut(payload=pcmu(160), item_id="item_a"),
    ]
    [latency] = [e for e in events if isinstance(e, TurnLatency)]
    assert latency.latency_ms == pytest.approx(550.0)
    assert (latency.response_id, latency.item_id) == ("resp_1", "item_a")
    assert events.index(latency) == 3  # right after the first reply frame
    h.receive(audio_delta("resp_1", "item_a", pcmu(480)))
    assert not [e for e in h.events() if isinstance(e, TurnLatency)]  # once per turn


# -- function calls ------------------------------------------------------------------------


def test_two_tool_calls_then_one_response_create(h: Harness) -> None:
    h.receive(response_created("resp_1"))
    h.receive(function_call("resp_1", "call_1", "lookup", '{"q": "a"}'))
    h.receive(function_call("resp_1", "call_2", "weather", '{"city": "Oslo"}'))
    assert h.events() == [
        FunctionCallRequested(call_id="call_1", name="lookup", arguments='{"q": "a"}'),
        FunctionCallRequested(call_id="call_2", name="weather", arguments='{"city": "Oslo"}'),
    ]
    h.advance(0.1)
    assert h.core.tool_result("call_2", '{"temp": 3}', h.now)
    [output] = h.sent()
    assert output["item"] == {
        "type": "function_call_output",
        "call_id": "call_2",
        "output": '{"temp": 3}',
    }
    h.receive(response_done("resp_1"))
    assert h.sent() == []  # call_1 still pending
    h.advance(0.2)
    assert h.core.tool_result("call_1", '"found"', h.now)
    assert [e["type"] for e in h.sent()] == ["conversation.item.create", "response.create"]
    records = [e for e in h.events() if isinstance(e, ToolCallFinished)]
    assert [(r.call_id, r.error_type, round(r.duration_ms)) for r in records] == [
        ("call_2", None, 100),
        ("call_1", None, 300),
    ]


def test_results_before_response_done_wait_for_it(h: Harness) -> None:
    h.receive(response_created("resp_1"))
    h.receive(function_call("resp_1", "call_1", "lookup"))
    h.core.tool_result("call_1", "{}", h.now)
    assert [e["type"] for e in h.sent()] == ["conversation.item.create"]
    h.receive(response_done("resp_1"))
    assert [e["type"] for e in h.sent()] == ["response.create"]


def test_tool_timeout_answers_with_a_structured_error(h: Harness) -> None:
    h.receive(response_created("resp_1"))
    h.receive(function_call("resp_1", "call_1", "lookup"))
    h.receive(response_done("resp_1"))
    h.events()
    assert h.core.get_timer() == pytest.approx(h.now + 5.0)
    h.advance(4.9)
    h.core.handle_timer(h.now)
    assert h.sent() == []
    h.advance(0.1)
    h.core.handle_timer(h.now)
    output, create = h.sent()
    assert json.loads(output["item"]["output"]) == {
        "error": {"type": "timeout", "message": "tool 'lookup' did not answer within 5 s"}
    }
    assert create["type"] == "response.create"
    cancelled, finished = h.events()
    assert cancelled == ToolCallCancelled(call_id="call_1")
    assert isinstance(finished, ToolCallFinished) and finished.error_type == "timeout"
    assert h.core.get_timer() is None
    assert not h.core.tool_result("call_1", '"too late"', h.now)
    assert h.sent() == []


def test_tool_error_is_returned_as_structured_json(h: Harness) -> None:
    h.receive(function_call("resp_1", "call_1", "lookup"))
    h.core.tool_failed("call_1", "tool_error", "ValueError: boom", h.now)
    [output] = h.sent()
    assert json.loads(output["item"]["output"]) == {
        "error": {"type": "tool_error", "message": "ValueError: boom"}
    }


def test_continuation_waits_for_a_response_in_progress(h: Harness) -> None:
    h.receive(response_created("resp_1"))
    h.receive(function_call("resp_1", "call_1", "lookup"))
    h.receive(response_done("resp_1"))
    h.receive(response_created("resp_2"))  # the caller spoke meanwhile
    h.core.tool_result("call_1", "{}", h.now)
    assert [e["type"] for e in h.sent()] == ["conversation.item.create"]
    h.receive(response_done("resp_2"))
    assert [e["type"] for e in h.sent()] == ["response.create"]


def test_no_continuation_after_an_interrupted_response(h: Harness) -> None:
    h.receive(response_created("resp_1"))
    h.receive(function_call("resp_1", "call_1", "lookup"))
    h.receive(speech_started())
    h.receive(response_done("resp_1", "cancelled"))
    h.sent()
    h.core.tool_result("call_1", "{}", h.now)
    assert [e["type"] for e in h.sent()] == ["conversation.item.create"]


def test_duplicate_function_call_event_runs_once(h: Harness) -> None:
    h.receive(function_call("resp_1", "call_1", "lookup"))
    h.receive(function_call("resp_1", "call_1", "lookup"))
    assert len(h.events()) == 1
    assert h.core.pending_calls == ["call_1"]


def test_update_session_changes_tools_and_instructions(h: Harness) -> None:
    h.core.update_session(instructions="You are Bob.", tools=[function_schema("bye", "Hang up")])
    [update] = h.sent()
    assert update["session"] == {
        "type": "realtime",
        "instructions": "You are Bob.",
        "tools": [function_schema("bye", "Hang up")],
    }
    h.core.update_session()
    assert h.sent() == []


# -- transcripts, errors, end --------------------------------------------------------------


def test_transcripts_of_both_sides(h: Harness) -> None:
    h.receive(
        server(
            ConversationItemInputAudioTranscriptionCompletedEvent,
            item_id="item_user",
            content_index=0,
            transcript="What time is it?",
            usage={"type": "duration", "seconds": 1.5},
        )
    )
    h.receive(
        server(
            ResponseAudioTranscriptDoneEvent,
            response_id="resp_1",
            item_id="item_a",
            output_index=0,
            content_index=0,
            transcript="It is noon.",
        )
    )
    assert h.events() == [
        Transcript(role="caller", text="What time is it?", final=True),
        Transcript(role="agent", text="It is noon.", final=True),
    ]


@pytest.mark.parametrize(
    ("error_type", "code", "fatal"),
    [
        ("invalid_request_error", "item_truncate_invalid", False),
        ("server_error", None, False),
        ("invalid_request_error", "session_expired", True),
        ("authentication_error", None, True),
    ],
)
def test_error_events_become_model_errors(
    h: Harness, error_type: str, code: str | None, fatal: bool
) -> None:
    h.receive(error(error_type, "something happened", code))
    [event] = h.events()
    assert isinstance(event, ModelError)
    assert event.fatal is fatal
    assert "something happened" in event.message


def test_error_before_ready_is_fatal() -> None:
    harness = Harness()
    harness.core.start(harness.now)
    harness.receive(error("invalid_request_error", "Invalid value: 'robot'", "invalid_value"))
    [event] = harness.events()
    assert event == ModelError(
        message="invalid_request_error: Invalid value: 'robot' (invalid_value)", fatal=True
    )


def test_failed_response_is_reported(h: Harness) -> None:
    h.receive(
        response_done(
            "resp_1",
            "failed",
            status_details={"type": "failed", "error": {"type": "server_error", "message": "oops"}},
        )
    )
    assert h.events() == [ModelError(message="response failed: oops", fatal=False)]


def test_malformed_messages_are_ignored(h: Harness) -> None:
    for data in (
        "not json",
        "[1, 2]",
        '{"type": "response.output_audio.delta", "item_id": "x"}',
        '{"type": "response.output_audio.delta", "item_id": "x", "response_id": "r", '
        '"delta": "!!"}',
        '{"type": "response.created", "response": {}}',
        '{"type": "some.future.event", "x": 1}',
    ):
        h.receive(data)
    assert h.events() == []
    assert h.core.state is SessionState.READY


def test_connection_lost_gives_up_pending_tools_and_reports(h: Harness) -> None:
    h.receive(function_call("resp_1", "call_1", "lookup"))
    h.events()
    h.core.connection_lost("Realtime connection closed (code 1006)", h.now)
    assert h.events() == [
        ToolCallCancelled(call_id="call_1"),
        ModelClosed(reason="Realtime connection closed (code 1006)"),
    ]
    h.core.connection_lost("again", h.now)
    h.receive(speech_started())
    h.core.push_audio(pcmu(160), h.now)
    assert h.events() == [] and h.sent() == []
    assert h.core.get_timer() is None


def test_close_silences_everything(h: Harness) -> None:
    h.receive(function_call("resp_1", "call_1", "lookup"))
    h.core.close(h.now)
    assert h.events() == [] and h.sent() == []
    h.core.close(h.now)
    h.core.handle_timer(h.now + 10)
    assert not h.core.tool_result("call_1", "{}", h.now)
    assert h.core.state is SessionState.CLOSED


# -- DTMF ----------------------------------------------------------------------------------


def test_dtmf_digits_go_to_the_model_after_a_pause(h: Harness) -> None:
    for digit in "12":
        h.core.send_dtmf(digit, h.now)
        h.advance(0.5)
    assert h.sent() == []
    assert h.core.get_timer() == pytest.approx(h.now + 1.0)
    h.advance(1.0)
    h.core.handle_timer(h.now)
    message, create = h.sent()
    assert message["item"]["content"][0]["text"].endswith("keypad: 12]")
    assert create["type"] == "response.create"
    assert h.core.dtmf == "12"


def test_the_timer_is_the_earliest_tool_or_keypad_deadline(h: Harness) -> None:
    start = h.now
    h.receive(response_created("resp_1"))
    h.receive(function_call("resp_1", "call_1", "lookup"))
    h.advance(1.0)
    h.receive(function_call("resp_1", "call_2", "lookup"))
    assert h.core.get_timer() == pytest.approx(start + 5.0)
    h.advance(3.0)
    h.core.send_dtmf("7", h.now)
    assert h.core.get_timer() == pytest.approx(start + 5.0)  # the first tool's, still earlier
    h.core.tool_result("call_1", "{}", h.now)
    assert h.core.get_timer() == pytest.approx(h.now + 1.5)  # the keypad's, before call_2's
    h.advance(1.5)
    h.core.handle_timer(h.now)
    assert h.core.get_timer() == pytest.approx(start + 6.0)


def test_hash_sends_digits_at_once(h: Harness) -> None:
    h.receive(response_created("resp_1"))
    for digit in "9#":
        h.core.send_dtmf(digit, h.now)
    [message] = h.sent()  # the model is talking: the response waits until it is done
    assert message["item"]["content"][0]["text"].endswith("keypad: 9#]")
    assert h.core.get_timer() is None
    h.receive(response_done("resp_1"))
    assert [e["type"] for e in h.sent()] == ["response.create"]


# -- edges ---------------------------------------------------------------------------------


def test_calls_before_ready_are_ignored() -> None:
    harness = Harness()
    harness.core.send_dtmf("1", harness.now)
    harness.core.audio_interrupted("item_a", 100, harness.now)
    harness.core.update_session(instructions="x")
    assert harness.sent() == [] and harness.core.dtmf == ""


def test_wrongly_typed_fields_are_ignored(h: Harness) -> None:
    h.receive(
        '{"type": "response.output_audio.delta", "item_id": 5, "response_id": "r", "delta": ""}'
    )
    h.receive('{"type": "response.output_audio_transcript.done", "transcript": ""}')
    h.receive('{"type": "conversation.item.input_audio_transcription.completed", "transcript": ""}')
    h.receive('{"type": "response.output_audio.done", "item_id": "never_seen"}')
    assert h.events() == []


def test_only_instructions_can_be_updated(h: Harness) -> None:
    h.core.update_session(instructions="Shorter.")
    [update] = h.sent()
    assert update["session"] == {"type": "realtime", "instructions": "Shorter."}
    h.core.update_session(tools=[])
    [update] = h.sent()
    assert update["session"] == {"type": "realtime", "tools": []}


def test_second_speech_start_does_not_cancel_twice(h: Harness) -> None:
    speak(h, "resp_1", "item_a", 500)
    h.receive(speech_started())
    h.receive(speech_started())
    assert h.sent() == [{"type": "response.cancel", "response_id": "resp_1"}]


def test_bookkeeping_stays_bounded(h: Harness) -> None:
    for n in range(100):
        speak(h, f"resp_{n}", f"item_{n}", 20, done=True)
    assert len(h.core._responses) <= 17
    assert len(h.core._items) <= 32
    # A very old item is forgotten: nothing to truncate.
    h.core.audio_interrupted("item_0", 0, h.now)
    assert h.sent() == []


def test_deferred_continuation_is_dropped_when_the_other_response_is_interrupted(
    h: Harness,
) -> None:
    h.receive(response_created("resp_1"))
    h.receive(function_call("resp_1", "call_1", "lookup"))
    h.receive(response_done("resp_1"))
    h.receive(response_created("resp_2"))
    h.core.tool_result("call_1", "{}", h.now)
    h.sent()
    h.receive(speech_started())
    h.receive(response_done("resp_2", "cancelled"))
    assert [e["type"] for e in h.sent()] == ["response.cancel"]


def test_pcm_path_resamples_both_ways() -> None:
    harness = Harness(RealtimeConfig(greeting=None, audio_format="pcm"))
    harness.core.start(harness.now)
    [update] = harness.sent()
    assert update["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    harness.receive(session_updated())
    harness.events()
    for _ in range(10):
        harness.core.push_audio(b"\xff" * 160, harness.now)
    appended = b"".join(base64.b64decode(a["audio"]) for a in harness.sent())
    assert abs(len(appended) - 10 * 960) <= 2 * 960  # 24 kHz, 16 bit, minus filter delay
    # 300 ms of 24 kHz PCM becomes 15 frames of 20 ms once the item ends.
    harness.receive(audio_delta("resp_1", "item_a", b"\x00\x00" * 7200))
    harness.receive(audio_done("resp_1", "item_a"))
    frames = harness.audio()
    assert all(len(f.payload) == 160 for f in frames)
    assert len(frames) == 15
    harness.receive(response_done("resp_1"))
    harness.receive(response_created("resp_2"))
    harness.receive(audio_delta("resp_2", "item_b", b"\x00\x00" * 7200))
    harness.receive(speech_started())
    harness.core.audio_interrupted("item_b", 1000, harness.now)
    cancel, truncate = harness.sent()
    assert cancel["type"] == "response.cancel"
    assert truncate["audio_end_ms"] == 300  # received ms counted in 24 kHz wire bytes
