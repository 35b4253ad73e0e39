"""The tool-adapter interface and its small in-process implementations."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.realtime.realtime_function_tool import RealtimeFunctionTool

from bridge.base import CallContext
from bridge.tools import (
    InvalidArgumentsError,
    NoTools,
    StaticTools,
    ToolAdapter,
    ToolContext,
    ToolError,
    ToolReturn,
    UnknownToolError,
    error_output,
    function_schema,
)

CALL = CallContext(
    call_id="abc@host", session_id="s1", caller="+15550100", callee="agent", codec="PCMU"
)
CONTEXT = ToolContext(call=CALL, function_call_id="call_1", dtmf="12")


async def weather(arguments: dict[str, Any], context: ToolContext) -> Any:
    return {"city": arguments["city"], "temp": 3, "caller": context.call.caller}


WEATHER = function_schema(
    "weather",
    "Current weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def test_schemas_are_realtime_function_tools() -> None:
    RealtimeFunctionTool.model_validate(WEATHER)
    bare = function_schema("hang_up", "End the call")
    assert bare == {
        "type": "function",
        "name": "hang_up",
        "description": "End the call",
        "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
    }


async def test_static_tools_run_with_parsed_arguments() -> None:
    tools: ToolAdapter = StaticTools({"weather": (WEATHER, weather)})
    assert tools.tools() == [WEATHER]
    result = await tools.call("weather", '{"city": "Oslo"}', CONTEXT)
    assert result == {"city": "Oslo", "temp": 3, "caller": "+15550100"}


async def test_empty_arguments_are_an_empty_object() -> None:
    async def ping(arguments: dict[str, Any], context: ToolContext) -> Any:
        return arguments

    tools = StaticTools({"ping": (function_schema("ping", ""), ping)})
    assert await tools.call("ping", "", CONTEXT) == {}


@pytest.mark.parametrize(
    ("name", "arguments", "error", "error_type"),
    [
        ("nope", "{}", UnknownToolError, "unknown_tool"),
        ("weather", "{bad", InvalidArgumentsError, "invalid_arguments"),
        ("weather", "[1]", InvalidArgumentsError, "invalid_arguments"),
    ],
)
async def test_static_tools_errors_carry_a_type(
    name: str, arguments: str, error: type[ToolError], error_type: str
) -> None:
    tools = StaticTools({"weather": (WEATHER, weather)})
    with pytest.raises(error) as raised:
        await tools.call(name, arguments, CONTEXT)
    assert raised.value.type == error_type


async def test_no_tools() -> None:
    tools = NoTools()
    assert tools.tools() == []
    with pytest.raises(UnknownToolError, match="no tool named 'x'"):
        await tools.call("x", "{}", CONTEXT)


def test_error_output_is_structured_json() -> None:
    assert json.loads(error_output("timeout", "too slow")) == {
        "error": {"type": "timeout", "message": "too slow"}
    }
    assert ToolError().type == "tool_error"


def test_tool_return_defaults_keep_the_session() -> None:
    result = ToolReturn(output={"ok": True})
    assert result.instructions is None and result.tools is None
    assert CONTEXT.dtmf == "12"
