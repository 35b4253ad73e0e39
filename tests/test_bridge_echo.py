from __future__ import annotations

import pytest

from bridge import AudioOut, CallContext, ModelEvent, Transcript, create_model
from bridge.echo import EchoModel

CONTEXT = CallContext(
    call_id="a84b4c76e66710@pc33",
    session_id="0123456789ab",
    caller="sip:alice@example.com",
    callee="sip:agent@example.com",
    codec="PCMU",
)


def frame(n: int) -> bytes:
    """A distinct 20 ms PCMU frame."""
    return bytes((n + i) % 256 for i in range(160))


@pytest.fixture
async def opened() -> tuple[EchoModel, list[ModelEvent]]:
    events: list[ModelEvent] = []
    model = EchoModel()
    await model.open(CONTEXT, events.append)
    return model, events


async def test_frames_come_back_identical_and_in_order(
    opened: tuple[EchoModel, list[ModelEvent]],
) -> None:
    model, events = opened
    frames = [frame(n) for n in range(50)]
    for payload in frames:
        model.push_audio(payload)
    assert events == [AudioOut(payload=payload, item_id=None) for payload in frames]


async def test_each_frame_is_echoed_before_push_returns(
    opened: tuple[EchoModel, list[ModelEvent]],
) -> None:
    model, events = opened
    for n in range(3):
        model.push_audio(frame(n))
        assert len(events) == n + 1
        assert events[-1] == AudioOut(payload=frame(n))


async def test_dtmf_becomes_caller_transcript(opened: tuple[EchoModel, list[ModelEvent]]) -> None:
    model, events = opened
    model.send_dtmf("5")
    model.send_dtmf("#")
    assert events == [
        Transcript(role="caller", text="DTMF 5", final=True),
        Transcript(role="caller", text="DTMF #", final=True),
    ]


async def test_close_stops_echo(opened: tuple[EchoModel, list[ModelEvent]]) -> None:
    model, events = opened
    model.push_audio(frame(1))
    await model.close()
    model.push_audio(frame(2))
    model.send_dtmf("1")
    assert events == [AudioOut(payload=frame(1))]
    assert model.closed


async def test_close_is_idempotent_and_emits_nothing(
    opened: tuple[EchoModel, list[ModelEvent]],
) -> None:
    model, events = opened
    await model.close()
    await model.close()
    assert events == []


async def test_cannot_reopen_after_close() -> None:
    model = EchoModel()
    await model.close()
    with pytest.raises(RuntimeError):
        await model.open(CONTEXT, lambda event: None)


def test_push_before_open_is_ignored() -> None:
    model = EchoModel()
    model.push_audio(frame(0))
    model.send_dtmf("3")
    assert model.context is None


async def test_open_keeps_context() -> None:
    model = create_model("echo")
    await model.open(CONTEXT, lambda event: None)
    assert isinstance(model, EchoModel)
    assert model.context == CONTEXT
