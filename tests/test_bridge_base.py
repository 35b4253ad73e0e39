from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import pytest

import bridge
from bridge import (
    MODEL_FACTORIES,
    AudioOut,
    CallContext,
    EchoModel,
    FunctionCallRequested,
    ModelClosed,
    ModelError,
    ModelEvent,
    ModelSession,
    ModelSink,
    SpeechStarted,
    SpeechStopped,
    Transcript,
    create_model,
    register_model,
)

EVENTS: list[ModelEvent] = [
    AudioOut(payload=b"\xff" * 160, item_id="item_1"),
    SpeechStarted(),
    SpeechStopped(),
    Transcript(role="agent", text="hello", final=False),
    FunctionCallRequested(call_id="fc_1", name="lookup", arguments='{"id": 3}'),
    ModelError(message="rate limited", fatal=False),
    ModelClosed(reason="server went away"),
]


class SilentModel(ModelSession):
    """The smallest possible backend: relies on the interface's defaults."""

    name = "silent"

    def __init__(self) -> None:
        self.frames = 0

    async def open(self, context: CallContext, sink: ModelSink) -> None:
        pass

    def push_audio(self, payload: bytes) -> None:
        self.frames += 1

    def send_dtmf(self, digit: str) -> None:
        pass

    async def close(self) -> None:
        pass


@pytest.fixture
def restore_factories() -> Iterator[None]:
    saved = dict(MODEL_FACTORIES)
    yield None
    MODEL_FACTORIES.clear()
    MODEL_FACTORIES.update(saved)


@pytest.mark.parametrize("event", EVENTS, ids=lambda event: type(event).__name__)
def test_events_are_frozen_slotted(event: ModelEvent) -> None:
    assert not hasattr(event, "__dict__")
    fields = dataclasses.fields(event)
    if fields:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(event, fields[0].name, None)


def test_events_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        AudioOut(b"\xff" * 160)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ModelClosed("bye")  # type: ignore[call-arg]


def test_audio_out_item_id_defaults_to_none() -> None:
    assert AudioOut(payload=b"\x00").item_id is None


def test_events_compare_by_value() -> None:
    assert Transcript(role="caller", text="hi", final=True) == Transcript(
        role="caller", text="hi", final=True
    )
    assert SpeechStarted() == SpeechStarted()
    started: object = SpeechStarted()
    assert started != SpeechStopped()


def test_call_context_is_immutable() -> None:
    context = CallContext(call_id="c1", session_id="s1", caller="a", callee="b", codec="PCMA")
    with pytest.raises(dataclasses.FrozenInstanceError):
        context.codec = "PCMU"  # type: ignore[misc]


def test_model_session_is_abstract() -> None:
    with pytest.raises(TypeError):
        ModelSession()  # type: ignore[abstract]


def test_default_barge_in_and_function_result_hooks(caplog: pytest.LogCaptureFixture) -> None:
    model = SilentModel()
    model.audio_interrupted("item_1", 340)
    with caplog.at_level(logging.WARNING, logger="bridge.base"):
        model.send_function_result("fc_1", '{"ok": true}')
    assert "fc_1" in caplog.text


def test_create_model_echo() -> None:
    first = create_model("echo")
    second = create_model("echo", settings=object())
    assert isinstance(first, EchoModel)
    assert first.name == "echo"
    assert first is not second


def test_create_model_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'gpt-9'.*echo"):
        create_model("gpt-9")


@pytest.mark.usefixtures("restore_factories")
def test_register_model_passes_settings() -> None:
    seen: list[object | None] = []

    def factory(settings: object | None) -> ModelSession:
        seen.append(settings)
        return SilentModel()

    register_model("silent", factory)
    settings = {"voice": "alloy"}
    model = create_model("silent", settings)
    assert isinstance(model, SilentModel)
    assert seen == [settings]
    assert "silent" in bridge.MODEL_FACTORIES


def test_unknown_name_lists_registered_models(restore_factories: object) -> None:
    register_model("silent", lambda settings: SilentModel())
    with pytest.raises(ValueError, match="echo, openai, silent"):
        create_model("nope")
