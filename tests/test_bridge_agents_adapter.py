"""The multi-agent adapter: current agent's tools, handoffs, transfer to a human.

The last test runs a handoff through the real ``openai`` model session against the local fake
Realtime server, which refuses calls to tools the session did not declare.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

from bridge.agents.adapter import InvalidResultError, MultiAgentAdapter
from bridge.agents.context import AgentCallContext
from bridge.agents.registry import AgentDirectory
from bridge.base import CallContext
from bridge.openai_realtime import OpenAIRealtimeModel
from bridge.realtime_config import RealtimeConfig
from bridge.tools import InvalidArgumentsError, ToolContext, ToolError, ToolReturn, UnknownToolError
from tests.fakes.realtime_server import FakeRealtimeServer, FunctionCall, Speech, ToolCall

MODULE = __name__
CALL = CallContext(
    call_id="a84b4c76e66710@pc33",
    session_id="0123456789ab",
    caller="sip:+15550142@pbx.example.com",
    callee="sip:+15550100@sipagent.example.com",
    codec="PCMU",
)


class Invoice(BaseModel):
    number: str
    cents: int


async def check_pin(
    ctx: AgentCallContext,
    pin: Annotated[str | None, Field(pattern=r"^[0-9]{4}$", description="Spoken PIN")] = None,
) -> dict[str, Any]:
    """Check the caller's PIN, spoken or typed (ending with #)."""
    pin = pin or ctx.take_digits("#")
    if pin is None:
        return {"status": "waiting"}
    ctx.verified["pin"] = pin == "1234"
    return {"verified": ctx.verified["pin"]}


async def lookup_invoice(ctx: AgentCallContext, number: str) -> Invoice:
    """Look an invoice up."""
    if not ctx.verified.get("pin"):
        raise ToolError("the caller is not verified")
    return Invoice(number=number, cents=4200)


async def crash(ctx: AgentCallContext) -> None:
    """Always fails."""
    raise KeyError("ledger")


async def not_json(ctx: AgentCallContext) -> object:
    """Returns something JSON cannot carry."""
    return object()


async def escalate(ctx: AgentCallContext) -> ToolReturn:
    """Changes the instructions itself."""
    return ToolReturn(output={"ok": True}, instructions="Be terse.")


AGENTS = f"""\
- name: front
  description: Greets callers and routes them.
  instructions: You are the front desk.
  voice: cedar
  greeting: ACME, how can I help?
  tools: ['{MODULE}:check_pin', '{MODULE}:crash', '{MODULE}:not_json', '{MODULE}:escalate']
  handoffs: [billing, sales]
  default: true
- name: billing
  description: Invoices and payments.
  instructions: You are the billing desk.
  tools: ['{MODULE}:lookup_invoice']
  handoffs: [front]
  numbers: ["+15550101"]
- name: sales
  instructions: You sell things.
  greeting: ""
  numbers: ["+15550100"]
  handoffs: [front]
"""


@pytest.fixture
def directory(tmp_path: Path) -> AgentDirectory:
    (tmp_path / "acme.yaml").write_text(AGENTS, encoding="utf-8")
    return AgentDirectory.load(tmp_path)


def tool_context(dtmf: str = "", call_id: str = "call_1") -> ToolContext:
    return ToolContext(call=CALL, function_call_id=call_id, dtmf=dtmf)


def names(adapter: MultiAgentAdapter) -> list[str]:
    return [tool["name"] for tool in adapter.tools()]


def test_the_dialled_number_picks_the_first_agent(directory: AgentDirectory) -> None:
    sales = MultiAgentAdapter(directory, AgentCallContext.for_call(CALL))
    assert sales.agent.name == "sales" and sales.context.current_agent == "sales"
    other = AgentCallContext.for_call(CALL, dialled_number="+15559999")
    assert MultiAgentAdapter(directory, other).agent.name == "front"
    chosen = AgentCallContext.for_call(CALL)
    chosen.current_agent = "billing"
    assert MultiAgentAdapter(directory, chosen).agent.name == "billing"
    chosen.current_agent = "nobody"
    with pytest.raises(ValueError, match="no agent named 'nobody'"):
        MultiAgentAdapter(directory, chosen)


def front_adapter(directory: AgentDirectory, **kwargs: Any) -> MultiAgentAdapter:
    ctx = AgentCallContext.for_call(CALL, dialled_number="")
    return MultiAgentAdapter(directory, ctx, **kwargs)


def test_tools_are_the_agents_plus_handoffs(directory: AgentDirectory) -> None:
    adapter = front_adapter(directory)
    assert names(adapter) == [
        "check_pin",
        "crash",
        "not_json",
        "escalate",
        "transfer_to_billing",
        "transfer_to_sales",
    ]
    handoff = adapter.tools()[4]
    assert handoff["description"].startswith("Hand the caller over to the billing agent: Invo")
    assert handoff["parameters"] == {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "reason": {
                "type": "string",
                "default": "",
                "description": "Why the caller is handed over, in a few words, for the next agent.",
            }
        },
    }


async def refer(target: str) -> bool:
    return True


def test_transfer_to_human_needs_a_callback_and_a_target(directory: AgentDirectory) -> None:
    assert "transfer_to_human" not in names(front_adapter(directory, transfer=refer))
    assert "transfer_to_human" not in names(front_adapter(directory, transfer_target="sip:x@y"))
    adapter = front_adapter(directory, transfer=refer, transfer_target="sip:desk@pbx")
    assert adapter.can_transfer and names(adapter)[-1] == "transfer_to_human"


def test_session_config_of_the_first_agent(directory: AgentDirectory) -> None:
    base = RealtimeConfig(voice="marin", greeting="Say hello.")
    front = front_adapter(directory).configure(base)
    assert front.instructions == "You are the front desk." and front.voice == "cedar"
    assert front.greeting == 'Answer the call by saying: "ACME, how can I help?"'
    billing_ctx = AgentCallContext.for_call(CALL, dialled_number="+15550101")
    billing = MultiAgentAdapter(directory, billing_ctx)
    assert (billing.voice(), billing.greeting()) == (None, None)
    assert billing.configure(base).voice == "marin"
    assert billing.configure(base).greeting == "Say hello."
    sales = MultiAgentAdapter(directory, AgentCallContext.for_call(CALL))
    assert sales.configure(base).greeting is None  # greeting: "" waits for the caller
    assert base.instructions != front.instructions  # the base is not changed


async def test_a_tool_call_sees_keypad_digits(directory: AgentDirectory) -> None:
    adapter = front_adapter(directory)
    assert await adapter.call("check_pin", "{}", tool_context(dtmf="12")) == {"status": "waiting"}
    result = await adapter.call("check_pin", "{}", tool_context(dtmf="1234#"))
    assert result == {"verified": True}
    assert adapter.context.verified == {"pin": True} and adapter.context.dtmf == []
    assert await adapter.call("check_pin", '{"pin": "0000"}', tool_context("1234#")) == {
        "verified": False
    }
    events = [(e["event"], e.get("tool"), e.get("error")) for e in adapter.context.history]
    assert events == [
        ("start", None, None),
        ("tool", "check_pin", None),
        ("tool", "check_pin", None),
        ("tool", "check_pin", None),
    ]


async def test_tool_failures_are_tool_errors(directory: AgentDirectory) -> None:
    adapter = front_adapter(directory)
    with pytest.raises(InvalidArgumentsError, match="pin: String should match pattern"):
        await adapter.call("check_pin", '{"pin": "12"}', tool_context())
    with pytest.raises(ToolError, match="crash failed: KeyError: 'ledger'") as raised:
        await adapter.call("crash", "{}", tool_context())
    assert raised.value.type == "tool_error"
    with pytest.raises(InvalidResultError, match="not_json returned something that is not JSON"):
        await adapter.call("not_json", "{}", tool_context())
    with pytest.raises(UnknownToolError, match="agent 'front' has no tool named 'lookup_invoice'"):
        await adapter.call("lookup_invoice", "{}", tool_context())
    with pytest.raises(UnknownToolError):
        await adapter.call("transfer_to_human", '{"reason": "x"}', tool_context())
    errors = [e.get("error") for e in adapter.context.history if e["event"] == "tool"]
    assert errors == [
        "invalid_arguments",
        "tool_error",
        "invalid_result",
        "unknown_tool",
        "unknown_tool",
    ]


async def test_a_tool_may_return_a_session_change(directory: AgentDirectory) -> None:
    result = await front_adapter(directory).call("escalate", "", tool_context())
    assert result == ToolReturn(output={"ok": True}, instructions="Be terse.")


async def test_handoff_switches_instructions_and_tools(directory: AgentDirectory) -> None:
    adapter = front_adapter(directory, transfer=refer, transfer_target="sip:desk@pbx")
    await adapter.call("check_pin", '{"pin": "1234"}', tool_context())
    result = await adapter.call(
        "transfer_to_billing", '{"reason": "invoice question"}', tool_context()
    )
    assert isinstance(result, ToolReturn)
    assert result.instructions == "You are the billing desk."
    assert result.output["status"] == "transferred" and result.output["agent"] == "billing"
    assert result.tools is not None
    assert [tool["name"] for tool in result.tools] == [
        "lookup_invoice",
        "transfer_to_front",
        "transfer_to_human",
    ]
    assert adapter.agent.name == "billing" and adapter.context.current_agent == "billing"
    assert adapter.tools() == list(result.tools)
    assert adapter.instructions() == "You are the billing desk."
    handoff = adapter.context.history[-1]
    assert handoff["event"] == "handoff" and handoff["agent"] == "front"
    assert handoff["to"] == "billing" and handoff["reason"] == "invoice question"
    # What front verified, billing still knows; front's tools are gone.
    assert await adapter.call("lookup_invoice", '{"number": "INV-7"}', tool_context()) == {
        "number": "INV-7",
        "cents": 4200,
    }
    with pytest.raises(UnknownToolError):
        await adapter.call("check_pin", "{}", tool_context())
    with pytest.raises(UnknownToolError):  # not a handoff billing may make
        await adapter.call("transfer_to_sales", "{}", tool_context())
    with pytest.raises(InvalidArgumentsError):
        await adapter.call("transfer_to_front", '{"reason": 5}', tool_context())
    back = await adapter.call("transfer_to_front", "", tool_context())
    assert isinstance(back, ToolReturn) and adapter.agent.name == "front"


async def test_transfer_to_human_accepted(directory: AgentDirectory) -> None:
    targets: list[str] = []
    seen_during: list[str | None] = []

    async def transfer(target: str) -> bool:
        targets.append(target)
        seen_during.append(adapter.context.transfer_requested)
        return True

    adapter = front_adapter(directory, transfer=transfer, transfer_target="sip:desk@pbx")
    result = await adapter.call("transfer_to_human", '{"reason": "angry"}', tool_context())
    assert result["status"] == "transferring"
    assert targets == ["sip:desk@pbx"] and seen_during == ["sip:desk@pbx"]
    assert adapter.context.transfer_requested == "sip:desk@pbx"
    record = adapter.context.history[-1]
    assert record["event"] == "transfer" and record["accepted"] is True
    assert record["reason"] == "angry" and record["target"] == "sip:desk@pbx"
    again = await adapter.call("transfer_to_human", '{"reason": "angry"}', tool_context())
    assert again["status"] == "transferring" and targets == ["sip:desk@pbx"]
    with pytest.raises(InvalidArgumentsError, match="reason: Field required"):
        await adapter.call("transfer_to_human", "{}", tool_context())


@pytest.mark.parametrize("outcome", ["refused", "raised"])
async def test_transfer_to_human_refused_keeps_the_call(
    directory: AgentDirectory, outcome: str
) -> None:
    async def transfer(target: str) -> bool:
        if outcome == "raised":
            raise ConnectionError("REFER timed out")
        return False

    adapter = front_adapter(directory, transfer=transfer, transfer_target="sip:desk@pbx")
    result = await adapter.call("transfer_to_human", '{"reason": "wants a person"}', tool_context())
    assert result["status"] == "failed"
    assert "Apologise" in result["message"]
    if outcome == "raised":
        assert result["reason"] == "the transfer failed: REFER timed out"
    else:
        assert result["reason"] == "the transfer was refused"
    assert adapter.context.transfer_requested is None
    assert adapter.context.history[-1]["accepted"] is False


async def test_a_cancelled_transfer_is_not_left_pending(directory: AgentDirectory) -> None:
    started = asyncio.Event()

    async def transfer(target: str) -> bool:
        started.set()
        await asyncio.sleep(10)
        return True

    adapter = front_adapter(directory, transfer=transfer, transfer_target="sip:desk@pbx")
    task = asyncio.create_task(adapter.call("transfer_to_human", '{"reason": "x"}', tool_context()))
    await started.wait()
    assert adapter.context.transfer_requested == "sip:desk@pbx"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert adapter.context.transfer_requested is None


# -- through the real session ----------------------------------------------------------------


async def test_handoff_through_the_realtime_session(directory: AgentDirectory) -> None:
    """The model hands off, then calls a tool only the new agent has (declared by then)."""
    handoff = FunctionCall(
        calls=(ToolCall("transfer_to_billing", {"reason": "invoice"}),), answer=None
    )
    lookup = FunctionCall(
        calls=(ToolCall("lookup_invoice", {"number": "INV-7"}),),
        answer=Speech("Your invoice is 42 dollars.", 200),
        at_response=1,
    )
    ctx = AgentCallContext.for_call(CALL, dialled_number="+15559999")
    ctx.verified["pin"] = True
    adapter = MultiAgentAdapter(directory, ctx)
    async with FakeRealtimeServer(scenarios=[handoff, lookup]) as server:
        model = OpenAIRealtimeModel(
            adapter.configure(RealtimeConfig(greet_on="ready")),
            client=server.client(),
            tools=adapter,
        )
        await model.open(CALL, lambda event: None)
        conn = server.connections[0]
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5.0
            while len(conn.function_outputs) < 2 or len(model.tool_calls) < 2:
                assert loop.time() < deadline, f"tool calls: {model.tool_calls}"
                await asyncio.sleep(0.01)
        finally:
            await model.close()
    assert [call.error_type for call in model.tool_calls] == [None, None]
    outputs = [json.loads(output) for output in conn.function_outputs.values()]
    assert outputs[0]["agent"] == "billing"
    assert outputs[1] == {"number": "INV-7", "cents": 4200}
    assert conn.session["instructions"] == "You are the billing desk."
    declared = [tool["name"] for tool in conn.session["tools"]]
    assert declared == ["lookup_invoice", "transfer_to_front"]
    assert conn.session["audio"]["output"]["voice"] == "cedar"
