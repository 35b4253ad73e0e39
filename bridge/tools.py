"""The seam between a model session and the tools it may call.

A :class:`ToolAdapter` lists the tools the model is offered (:meth:`ToolAdapter.tools`, JSON
schemas in the Realtime API's function-tool shape) and runs one call at a time
(:meth:`ToolAdapter.call`). The multi-agent adapter (agents, handoffs, ``transfer_to_human``)
and the HTTP webhook adapter implement it; :class:`StaticTools` is the small in-process one used
by tests and simple deployments, :class:`NoTools` the default.

Errors are data, not exceptions, by the time they reach the model: the session turns whatever
:meth:`ToolAdapter.call` raises into :func:`error_output` JSON, ``{"error": {"type": ...,
"message": ...}}``. A tool that wants to choose the ``type`` raises :class:`ToolError`.

A tool may also change the session: returning a :class:`ToolReturn` with new ``instructions``
or ``tools`` makes the session send a ``session.update`` before the output (a handoff).
"""

from __future__ import annotations

import abc
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from openai.types.realtime.realtime_function_tool_param import RealtimeFunctionToolParam

from .base import CallContext

__all__ = [
    "JsonValue",
    "NoTools",
    "StaticTools",
    "ToolAdapter",
    "ToolContext",
    "ToolError",
    "ToolFunction",
    "ToolReturn",
    "ToolSchema",
    "UnknownToolError",
    "InvalidArgumentsError",
    "error_output",
    "function_schema",
]

JsonValue: TypeAlias = Any
"""Anything :func:`json.dumps` accepts (dicts, lists, strings, numbers, booleans, None)."""

ToolSchema: TypeAlias = RealtimeFunctionToolParam
"""One function tool as the Realtime API wants it: ``type``, ``name``, ``description``,
``parameters`` (a JSON schema object)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolContext:
    """What a tool knows about the call it runs in."""

    call: CallContext
    "The phone call (Call-ID, caller, callee, codec, registry session id)."

    function_call_id: str
    "The model's id for this function call."

    dtmf: str = ""
    "Keypad digits the caller pressed so far in this call, in order."


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolReturn:
    """A tool result that also changes the session (e.g. a handoff to another agent)."""

    output: JsonValue
    "What the model reads as the function's result."

    instructions: str | None = None
    "New session instructions, or None to keep the current ones."

    tools: Sequence[ToolSchema] | None = None
    "New tool list, or None to keep the current one."


class ToolError(Exception):
    """A tool failed in a way it wants the model to know about.

    ``type`` becomes ``error.type`` in the output the model sees; ``str(exc)`` its message.
    """

    type: str = "tool_error"


class UnknownToolError(ToolError):
    """The model asked for a tool the adapter does not have."""

    type = "unknown_tool"


class InvalidArgumentsError(ToolError):
    """The arguments are not a JSON object, or not what the tool accepts."""

    type = "invalid_arguments"


def error_output(error_type: str, message: str) -> str:
    """The JSON text returned to the model when a tool call failed."""
    return json.dumps({"error": {"type": error_type, "message": message}})


class ToolAdapter(abc.ABC):
    """Offers tools to a model session and runs the calls it makes."""

    @abc.abstractmethod
    def tools(self) -> list[ToolSchema]:
        """The tools offered at session start (sent in ``session.update``)."""

    @abc.abstractmethod
    async def call(self, name: str, arguments: str, context: ToolContext) -> JsonValue:
        """Run tool ``name`` with ``arguments`` (JSON object text, as the model wrote it).

        Returns a JSON-able result or a :class:`ToolReturn`. May raise anything: the session
        reports :class:`ToolError` with its ``type``, other exceptions as ``tool_error``, and
        cancels the call when it exceeds the session's tool timeout.
        """


class NoTools(ToolAdapter):
    """Offers nothing; any call is an unknown tool."""

    def tools(self) -> list[ToolSchema]:
        return []

    async def call(self, name: str, arguments: str, context: ToolContext) -> JsonValue:
        raise UnknownToolError(f"no tool named {name!r}")


ToolFunction: TypeAlias = Callable[[dict[str, Any], ToolContext], Awaitable[JsonValue]]
"""An async tool body: parsed arguments and the call context in, JSON-able result out."""


def function_schema(
    name: str, description: str, parameters: Mapping[str, Any] | None = None
) -> ToolSchema:
    """A function tool schema; ``parameters`` defaults to an object without properties."""
    schema = (
        dict(parameters)
        if parameters is not None
        else {"type": "object", "properties": {}, "additionalProperties": False}
    )
    return {"type": "function", "name": name, "description": description, "parameters": schema}


class StaticTools(ToolAdapter):
    """A fixed set of async functions, each with its schema."""

    def __init__(self, functions: Mapping[str, tuple[ToolSchema, ToolFunction]]) -> None:
        self._functions = dict(functions)

    def tools(self) -> list[ToolSchema]:
        return [schema for schema, _ in self._functions.values()]

    async def call(self, name: str, arguments: str, context: ToolContext) -> JsonValue:
        try:
            _, function = self._functions[name]
        except KeyError:
            raise UnknownToolError(f"no tool named {name!r}") from None
        try:
            parsed = json.loads(arguments) if arguments.strip() else {}
        except ValueError as exc:
            raise InvalidArgumentsError(f"arguments are not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise InvalidArgumentsError("arguments must be a JSON object")
        return await function(parsed, context)
