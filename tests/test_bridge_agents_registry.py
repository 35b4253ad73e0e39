"""Tool functions become schemas and validators; agents are put together and checked."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from openai.types.realtime.realtime_function_tool import RealtimeFunctionTool
from pydantic import BaseModel, Field

from bridge.agents.context import AgentCallContext
from bridge.agents.registry import (
    ENTRY_POINT_GROUP,
    AgentDirectory,
    AgentTool,
    resolve_tool,
)
from bridge.agents.spec import AgentConfigError, AgentSpec
from bridge.base import CallContext
from bridge.tools import InvalidArgumentsError

MODULE = __name__
CALL = CallContext(
    call_id="c1@host",
    session_id="s1",
    caller="sip:+15550100@pbx",
    callee="sip:+15550199@x",
    codec="PCMU",
)


class Item(BaseModel):
    sku: Annotated[str, Field(description="Stock keeping unit")]
    quantity: int = 1


async def place_order(
    ctx: AgentCallContext,
    items: Annotated[list[Item], Field(min_length=1, description="What to order")],
    delivery: Literal["standard", "express"] = "standard",
    note: str | None = None,
) -> dict[str, Any]:
    """Place an order for the caller.

    Only call this once the caller confirmed every item.
    """
    ctx.memory["ordered"] = [item.sku for item in items]
    return {"items": len(items), "delivery": delivery, "note": note, "caller": ctx.caller_number}


async def current_time() -> str:
    """The time of day."""
    return "12:00"


async def untyped_context(ctx, json: int) -> int:  # type: ignore[no-untyped-def]
    """A parameter named like a BaseModel attribute still works."""
    assert isinstance(ctx, AgentCallContext)
    return json * 2


def sync_tool(ctx: AgentCallContext) -> None:
    """Not async."""


async def unannotated(ctx: AgentCallContext, city) -> None:  # type: ignore[no-untyped-def]
    """Missing annotation."""


async def variadic(ctx: AgentCallContext, *cities: str) -> None:
    """Variadic."""


@dataclass
class Node:
    name: str
    children: list[Node]


async def recursive(ctx: AgentCallContext, tree: Node) -> None:
    """Recursive types cannot be inlined."""


async def transfer_to_somewhere(ctx: AgentCallContext) -> None:
    """Takes a reserved name."""


NOT_A_FUNCTION = 42


def context() -> AgentCallContext:
    return AgentCallContext.for_call(CALL)


# -- AgentTool ---------------------------------------------------------------------------------


def test_schema_from_the_signature() -> None:
    tool = AgentTool.from_function(place_order)
    RealtimeFunctionTool.model_validate(tool.schema)
    assert tool.name == "place_order" and tool.takes_context
    assert tool.description == "Place an order for the caller."
    assert tool.schema["parameters"] == tool.parameters
    assert tool.parameters == {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "items": {
                "type": "array",
                "description": "What to order",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "sku": {"type": "string", "description": "Stock keeping unit"},
                        "quantity": {"type": "integer", "default": 1},
                    },
                    "required": ["sku"],
                },
            },
            "delivery": {"type": "string", "enum": ["standard", "express"], "default": "standard"},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        },
        "required": ["items"],
    }


def test_a_tool_without_parameters_or_context() -> None:
    tool = AgentTool.from_function(current_time, name="what_time", description="Tell the time.")
    assert not tool.takes_context
    assert tool.schema == {
        "type": "function",
        "name": "what_time",
        "description": "Tell the time.",
        "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
    }


async def test_invoke_validates_and_passes_the_context() -> None:
    ctx = context()
    tool = AgentTool.from_function(place_order)
    result = await tool.invoke(ctx, '{"items": [{"sku": "A-1"}, {"sku": "B-2", "quantity": "3"}]}')
    assert result == {"items": 2, "delivery": "standard", "note": None, "caller": "+15550100"}
    assert ctx.memory["ordered"] == ["A-1", "B-2"]
    assert await AgentTool.from_function(current_time).invoke(ctx, "") == "12:00"
    doubled = AgentTool.from_function(untyped_context)
    assert doubled.takes_context and list(doubled.parameters["properties"]) == ["json"]
    assert await doubled.invoke(ctx, '{"json": 21}') == 42


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("{", "arguments are not valid JSON"),
        ("[1]", "arguments must be a JSON object"),
        ("{}", "items: Field required"),
        ('{"items": []}', "items: List should have at least 1 item"),
        ('{"items": [{"sku": 5}]}', "items.0.sku: Input should be a valid string"),
        ('{"items": [{"sku": "a"}], "delivery": "drone"}', "delivery: Input should be 'standard'"),
        ('{"items": [{"sku": "a"}], "colour": "red"}', "colour: Extra inputs are not permitted"),
    ],
)
async def test_invalid_arguments_never_reach_the_function(arguments: str, message: str) -> None:
    ctx = context()
    with pytest.raises(InvalidArgumentsError, match=message):
        await AgentTool.from_function(place_order).invoke(ctx, arguments)
    assert "ordered" not in ctx.memory


@pytest.mark.parametrize(
    ("function", "name", "message"),
    [
        (sync_tool, None, "must be an async function"),
        (unannotated, None, "parameter 'city' of tool 'unannotated' has no annotation"),
        (variadic, None, "must be a plain or keyword parameter"),
        (recursive, None, "recursive type"),
        (current_time, "no spaces", "is not a valid tool name"),
    ],
)
def test_functions_that_cannot_be_tools(function: Any, name: str | None, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        AgentTool.from_function(function, name=name)


# -- resolving references ----------------------------------------------------------------------


def test_resolve_module_function() -> None:
    tool = resolve_tool(f"{MODULE}:place_order")
    assert tool.name == "place_order" and tool.function is place_order
    assert tool.reference == f"{MODULE}:place_order"


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("no_such_module_xyz:tool", "cannot import no_such_module_xyz"),
        (f"{MODULE}:missing", "has no attribute 'missing'"),
        (f"{MODULE}:NOT_A_FUNCTION", "is not a function"),
        (f"{MODULE}:sync_tool", "must be an async function"),
        ("no_such_entry_point", "no entry point of that name in group 'sipagent.tools'"),
    ],
)
def test_resolve_errors(reference: str, message: str) -> None:
    with pytest.raises(AgentConfigError, match=message):
        resolve_tool(reference)


@pytest.fixture
def installed_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A tiny installed distribution registering two tools under ``sipagent.tools``."""
    (tmp_path / "acme_phone_tools.py").write_text(
        "from bridge.agents import AgentCallContext\n\n"
        "async def lookup(ctx: AgentCallContext, order: str) -> dict[str, str]:\n"
        '    """Look an order up."""\n'
        '    return {"order": order, "caller": ctx.caller_number}\n'
    )
    dist_info = tmp_path / "acme_phone_tools-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: acme-phone-tools\nVersion: 1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n"
        "lookup_order = acme_phone_tools:lookup\n"
        "broken = acme_phone_tools:missing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("acme_phone_tools", None)


async def test_entry_point_tools_are_offered_under_their_name(installed_tools: Path) -> None:
    tool = resolve_tool("lookup_order")
    assert tool.name == "lookup_order"
    assert tool.description == "Look an order up."
    assert await tool.invoke(context(), '{"order": "A-1"}') == {
        "order": "A-1",
        "caller": "+15550100",
    }
    with pytest.raises(AgentConfigError, match="entry point 'acme_phone_tools:missing'"):
        resolve_tool("broken")
    agents = [AgentSpec(name="shop", instructions="x", tools=["lookup_order"])]
    assert AgentDirectory(agents).tools_of("shop")[0].name == "lookup_order"


# -- AgentDirectory ----------------------------------------------------------------------------


def agent(name: str, **fields: Any) -> AgentSpec:
    return AgentSpec(name=name, instructions=f"You are {name}.", **fields)


def test_directory_resolves_tools_and_picks_agents_by_number() -> None:
    directory = AgentDirectory(
        [
            agent("front", default=True, handoffs=["shop"], tools=[f"{MODULE}:current_time"]),
            agent("shop", numbers=["+15550199", "shop"], tools=[f"{MODULE}:place_order"]),
        ]
    )
    assert directory.names == ["front", "shop"] and len(directory) == 2
    assert "shop" in directory and "nobody" not in directory
    assert [a.name for a in directory] == ["front", "shop"]
    assert [t.name for t in directory.tools_of("shop")] == ["place_order"]
    assert directory.agent_for("sip:+15550199@sipagent").name == "shop"
    assert directory.agent_for("15550199").name == "shop"
    assert directory.agent_for("sip:shop@pbx").name == "shop"
    assert directory.agent_for("+15550000").name == "front"
    assert directory.agent_for(None).name == "front"
    assert directory.default.name == "front"


def test_a_single_agent_is_the_default() -> None:
    assert AgentDirectory([agent("only")]).default.name == "only"


def test_each_reference_is_resolved_once() -> None:
    seen: list[str] = []

    def resolve(reference: str) -> AgentTool:
        seen.append(reference)
        return resolve_tool(reference)

    reference = f"{MODULE}:current_time"
    AgentDirectory(
        [agent("a", default=True, tools=[reference]), agent("b", tools=[reference])],
        resolve=resolve,
    )
    assert seen == [reference]


@pytest.mark.parametrize(
    ("agents", "message"),
    [
        ([], "no agents are configured"),
        ([agent("a"), agent("a")], "agent 'a': another agent has the same name"),
        ([agent("a", default=True), agent("b", default=True)], "more than one default agent: a, b"),
        ([agent("a"), agent("b")], "no default agent"),
        ([agent("a", handoffs=["zed"])], "agent 'a': handoffs: no agent named 'zed'"),
        ([agent("a", handoffs=["a"])], "cannot hand off to itself"),
        (
            [agent("a", default=True, numbers=["+15550100"]), agent("b", numbers=["15550100"])],
            "agent 'b': number '15550100' is also answered by 'a'",
        ),
        ([agent("a", tools=["no_such_module_xyz:f"])], "agent 'a': tool 'no_such_module_xyz:f'"),
        ([agent("a", tools=[f"{MODULE}:transfer_to_somewhere"])], "reserved for handoffs"),
        (
            [agent("a", tools=[f"{MODULE}:current_time", f"{MODULE}:current_time"])],
            "two tools are named 'current_time'",
        ),
    ],
)
def test_directory_errors(agents: list[AgentSpec], message: str) -> None:
    with pytest.raises(AgentConfigError, match=message):
        AgentDirectory(agents)


def test_load_a_directory_of_files(tmp_path: Path) -> None:
    (tmp_path / "front.yaml").write_text(
        f"name: front\ninstructions: Hi.\ndefault: true\nhandoffs: [shop]\n"
        f"tools: ['{MODULE}:current_time']\n"
    )
    (tmp_path / "more.yaml").write_text(
        f"- name: shop\n  instructions: Sell.\n  numbers: ['+15550199']\n"
        f"  tools: ['{MODULE}:place_order']\n- name: desk\n  instructions: Help.\n"
    )
    (tmp_path / "README.md").write_text("# not an agent\n")
    directory = AgentDirectory.load(tmp_path)
    assert directory.names == ["front", "shop", "desk"]
    assert directory.agent_for("+15550199").name == "shop"
    solo = tmp_path / "solo"
    solo.mkdir()
    (solo / "only.yml").write_text("name: only\ninstructions: Hi.\n")
    assert AgentDirectory.load(solo / "only.yml").default.name == "only"


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: a\ninstructions: x\ndefault: true\n")
    (tmp_path / "b.yaml").write_text("name: b\ninstructions: x\nhandoffs: [c]\n")
    with pytest.raises(AgentConfigError, match=r"b\.yaml: agent 'b': handoffs: no agent named"):
        AgentDirectory.load(tmp_path)
    (tmp_path / "b.yaml").write_text("name: a\ninstructions: x\n")
    with pytest.raises(
        AgentConfigError, match=r"b\.yaml: agent 'a' is already declared in .*a\.yaml"
    ):
        AgentDirectory.load(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AgentConfigError, match="no agent files"):
        AgentDirectory.load(empty)


def test_the_shipped_agents_load() -> None:
    directory = AgentDirectory.load(Path(__file__).parent.parent / "config/agents")
    assert "echo_demo" in directory
    assert directory.agent_for("sip:echo@sipagent.example.com").name == "echo_demo"
