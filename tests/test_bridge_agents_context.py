"""The per-call context agents' tools share: numbers, keypad digits, records."""

from __future__ import annotations

import json

import pytest

from bridge.agents.context import AgentCallContext, number_of
from bridge.base import CallContext

CALL = CallContext(
    call_id="a84b4c76e66710@pc33",
    session_id="0123456789ab",
    caller='"Alice" <sip:+1 (555) 0100@pbx.example.com;user=phone>',
    callee="sip:+15550199@sipagent.example.com",
    codec="PCMU",
)


@pytest.mark.parametrize(
    ("address", "number"),
    [
        ("sip:+15550100@pbx", "+15550100"),
        ('"Alice" <sip:+15550100@pbx;user=phone>;tag=1', "+15550100"),
        ("<sips:0301234@pbx:5061>", "0301234"),
        ("tel:+49-30-1234;ext=5", "+49301234"),
        ("+1 (555) 0100", "+15550100"),
        ("sip:support@pbx", "support"),
        ("support", "support"),
        ("sip:pbx.example.com", ""),
        ("  15550100  ", "15550100"),
    ],
)
def test_number_of(address: str, number: str) -> None:
    assert number_of(address) == number


def test_for_call_derives_numbers_from_the_call() -> None:
    ctx = AgentCallContext.for_call(CALL)
    assert ctx.caller_number == "+15550100"
    assert ctx.dialled_number == "+15550199"
    assert (ctx.current_agent, ctx.dtmf, ctx.memory, ctx.verified) == ("", [], {}, {})
    assert ctx.transfer_requested is None


def test_for_call_takes_the_numbers_the_call_layer_knows() -> None:
    ctx = AgentCallContext.for_call(CALL, caller_number="+15550142", dialled_number="")
    assert (ctx.caller_number, ctx.dialled_number) == ("+15550142", "")


def test_take_digits_up_to_the_terminator() -> None:
    ctx = AgentCallContext(call=CALL)
    ctx.add_dtmf("12")
    assert ctx.take_digits() is None  # no '#' yet: nothing consumed
    assert ctx.dtmf == ["1", "2"]
    ctx.add_dtmf("34#5")
    assert ctx.take_digits("#") == "1234"
    assert ctx.dtmf == ["5"]
    ctx.add_dtmf("*")
    assert ctx.take_digits("*") == "5"
    assert ctx.dtmf == []
    ctx.add_dtmf("#")
    assert ctx.take_digits() == ""  # just the terminator


def test_take_every_digit_without_terminator() -> None:
    ctx = AgentCallContext(call=CALL)
    assert ctx.take_digits(None) is None
    ctx.add_dtmf("9#1")
    assert ctx.take_digits(None) == "9#1"
    assert ctx.dtmf == [] and ctx.dtmf_received == 3


def test_sync_adds_only_digits_not_seen_yet() -> None:
    ctx = AgentCallContext(call=CALL)
    ctx.add_dtmf("1")  # the call layer reported one digit itself
    ctx.sync_dtmf("12")  # the session's record of the whole call
    ctx.sync_dtmf("12")
    assert ctx.dtmf == ["1", "2"]
    assert ctx.take_digits(None) == "12"
    ctx.sync_dtmf("12")  # taken digits do not come back
    assert ctx.dtmf == []
    ctx.sync_dtmf("123#")
    assert ctx.take_digits() == "3"
    ctx.sync_dtmf("1")  # an older record: nothing to add
    assert ctx.dtmf == [] and ctx.dtmf_received == 4


def test_record_appends_to_history() -> None:
    ctx = AgentCallContext(call=CALL, current_agent="front_desk")
    entry = ctx.record("handoff", to="billing", reason="invoice")
    assert ctx.history == [entry]
    assert entry["event"] == "handoff" and entry["agent"] == "front_desk"
    assert entry["to"] == "billing" and isinstance(entry["at"], float)


def test_snapshot_is_json() -> None:
    ctx = AgentCallContext.for_call(CALL)
    ctx.current_agent = "billing"
    ctx.add_dtmf("42")
    ctx.verified["pin"] = True
    ctx.memory.update(order="A-1", handle=object())
    snapshot = ctx.snapshot()
    assert json.loads(json.dumps(snapshot)) == snapshot
    assert snapshot["call_id"] == CALL.call_id
    assert snapshot["caller_number"] == "+15550100"
    assert snapshot["dtmf"] == "42" and snapshot["verified"] == {"pin": True}
    assert snapshot["memory"]["order"] == "A-1"
    assert snapshot["memory"]["handle"].startswith("<object object")
