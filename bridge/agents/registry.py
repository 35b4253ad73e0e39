"""Agents put together: tool functions resolved, schemas derived, handoffs checked.

A tool is an async function whose first parameter takes the call's
:class:`~bridge.agents.context.AgentCallContext` and whose other parameters are what the model
passes, typed with ordinary annotations (pydantic types, ``Annotated[str, Field(description=
...)]``, ``Literal``, models, defaults)::

    async def verify_pin(
        ctx: AgentCallContext,
        pin: Annotated[str, Field(pattern=r"^[0-9]{4}$", description="The 4-digit PIN")],
    ) -> dict[str, bool]:
        \"\"\"Check the caller's PIN.\"\"\"

:class:`AgentTool` turns it into a Realtime function-tool schema (name: the function's name,
description: the docstring's first paragraph, parameters: the JSON schema pydantic derives from
the annotations) and validates the model's arguments against the same types before the call.

Tools are referenced from agent files as ``package.module:function`` (imported) or by a bare
name that a package registered as an entry point of the group ``sipagent.tools``::

    [project.entry-points."sipagent.tools"]
    lookup_invoice = "acme.billing:lookup_invoice"

:class:`AgentDirectory` loads the agents (:meth:`AgentDirectory.load`), resolves every tool
once, checks the handoffs, and picks the agent that answers a dialled number.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import re
import typing
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from bridge.tools import InvalidArgumentsError, ToolSchema, function_schema

from .context import AgentCallContext, number_of
from .spec import AgentConfigError, AgentSpec, agent_files, load_agent_file

__all__ = [
    "DEFAULT_AGENTS_PATH",
    "ENTRY_POINT_GROUP",
    "AgentDirectory",
    "AgentTool",
    "HANDOFF_PREFIX",
    "HUMAN_TRANSFER_TOOL",
    "ToolFunction",
    "resolve_tool",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP: Final = "sipagent.tools"
"""The entry-point group through which installed packages register tools by name."""

DEFAULT_AGENTS_PATH: Final = "config/agents"

HANDOFF_PREFIX: Final = "transfer_to_"
"""Handoff tools are named ``transfer_to_<agent>``; agent tools may not use the prefix."""

HUMAN_TRANSFER_TOOL: Final = "transfer_to_human"

_TOOL_NAME: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

_ANNOTATED: Any = typing.Annotated
"""``Annotated`` built at run time from a variable hint (mypy only takes literal types)."""

ToolFunction = Callable[..., Awaitable[Any]]
"""``async def tool(ctx: AgentCallContext, <typed parameters>) -> JSON-able``."""


def _description(function: Callable[..., Any]) -> str:
    """The docstring's first paragraph on one line."""
    doc = inspect.getdoc(function) or ""
    paragraph = doc.strip().split("\n\n", 1)[0]
    return " ".join(paragraph.split())


def _inline_refs(schema: Any, definitions: Mapping[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """``schema`` with its ``$ref``s replaced by the definitions and pydantic's titles dropped."""
    if isinstance(schema, list):
        return [_inline_refs(item, definitions, seen) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref.removeprefix("#/$defs/")
        if name in seen:
            raise TypeError(f"recursive type {name!r} cannot be a tool parameter")
        merged = {**definitions[name], **{k: v for k, v in schema.items() if k != "$ref"}}
        return _inline_refs(merged, definitions, (*seen, name))
    cleaned: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "$defs" or (key == "title" and isinstance(value, str)):
            continue
        if key == "properties" and isinstance(value, dict):
            # Keys here are parameter names, not schema keywords: keep every one.
            cleaned[key] = {
                name: _inline_refs(prop, definitions, seen) for name, prop in value.items()
            }
        else:
            cleaned[key] = _inline_refs(value, definitions, seen)
    return cleaned


def _takes_context(parameter: inspect.Parameter, hint: Any) -> bool:
    if hint is inspect.Parameter.empty:
        return parameter.name in ("ctx", "context")
    if typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    return isinstance(hint, type) and issubclass(hint, AgentCallContext)


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentTool:
    """One tool function with the schema the model sees and the model of its arguments."""

    name: str
    "The name the model calls it by."

    description: str
    "What the model reads about it."

    function: ToolFunction
    "The async function."

    arguments: type[BaseModel]
    "Validates the model's arguments (built from the function's annotations)."

    takes_context: bool
    "Whether the function's first parameter receives the :class:`AgentCallContext`."

    parameters: dict[str, Any]
    "The JSON schema of the arguments (``$ref``s inlined, pydantic titles dropped)."

    schema: ToolSchema
    "The Realtime function-tool schema the model is offered."

    reference: str = ""
    "How an agent file named it (``module:function`` or an entry-point name)."

    @classmethod
    def from_function(
        cls,
        function: ToolFunction,
        *,
        name: str | None = None,
        description: str | None = None,
        reference: str = "",
    ) -> AgentTool:
        """Derive schema and validation from ``function``'s signature and docstring.

        Raises :class:`TypeError` when the function is not async, a parameter has no
        annotation, is variadic or positional-only, or the name is not a valid tool name.
        """
        name = name if name is not None else getattr(function, "__name__", "")
        if not _TOOL_NAME.match(name):
            raise TypeError(f"{name!r} is not a valid tool name (letters, digits, _ and -)")
        if not inspect.iscoroutinefunction(function):
            raise TypeError(f"tool {name!r} must be an async function (async def)")
        try:
            hints = typing.get_type_hints(function, include_extras=True)
        except Exception as exc:
            raise TypeError(f"cannot read the annotations of tool {name!r}: {exc}") from exc
        parameters = list(inspect.signature(function).parameters.values())
        takes_context = bool(parameters) and _takes_context(
            parameters[0], hints.get(parameters[0].name, inspect.Parameter.empty)
        )
        if takes_context:
            if parameters[0].kind is inspect.Parameter.KEYWORD_ONLY:
                raise TypeError(f"the context parameter of tool {name!r} must be positional")
            parameters = parameters[1:]
        fields: dict[str, Any] = {}
        for index, parameter in enumerate(parameters):
            if parameter.kind not in (
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                inspect.Parameter.KEYWORD_ONLY,
            ):
                raise TypeError(
                    f"parameter {parameter.name!r} of tool {name!r} must be a plain or "
                    "keyword parameter (no *args, **kwargs or positional-only)"
                )
            if parameter.name not in hints:
                raise TypeError(f"parameter {parameter.name!r} of tool {name!r} has no annotation")
            default = ... if parameter.default is inspect.Parameter.empty else parameter.default
            # Fields are named p0, p1... with the parameter name as alias, so that parameters
            # such as `json` or `schema` cannot clash with BaseModel's own attributes.
            hint = _ANNOTATED[hints[parameter.name], Field(alias=parameter.name)]
            fields[f"p{index}"] = (hint, default)
        arguments = create_model(
            f"{name}_arguments",
            __config__=ConfigDict(extra="forbid"),
            **fields,
        )
        raw = arguments.model_json_schema(by_alias=True)
        parameters = _inline_refs(raw, raw.get("$defs", {}))
        parameters.setdefault("properties", {})
        description = description if description is not None else _description(function)
        return cls(
            name=name,
            description=description,
            function=function,
            arguments=arguments,
            parameters=parameters,
            schema=function_schema(name, description, parameters),
            takes_context=takes_context,
            reference=reference,
        )

    def parse_arguments(self, arguments: str) -> dict[str, Any]:
        """The model's arguments (JSON object text) validated, keyed by parameter name.

        Raises :class:`~bridge.tools.InvalidArgumentsError` naming every bad field.
        """
        text = arguments.strip() or "{}"
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InvalidArgumentsError(f"arguments are not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidArgumentsError("arguments must be a JSON object")
        try:
            parsed = self.arguments.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'arguments'}: {error['msg']}"
                for error in exc.errors(include_url=False)
            )
            raise InvalidArgumentsError(f"invalid arguments for {self.name}: {problems}") from None
        fields = type(parsed).model_fields
        return {str(fields[key].alias): getattr(parsed, key) for key in fields}

    async def invoke(self, context: AgentCallContext, arguments: str) -> Any:
        """Validate ``arguments`` and run the function; its exceptions propagate."""
        values = self.parse_arguments(arguments)
        if self.takes_context:
            return await self.function(context, **values)
        return await self.function(**values)


def _load_reference(reference: str) -> object:
    if ":" in reference:
        module_name, _, attribute = reference.partition(":")
        try:
            target: object = importlib.import_module(module_name)
        except ImportError as exc:
            raise AgentConfigError(
                f"tool {reference!r}: cannot import {module_name}: {exc}"
            ) from exc
        for part in attribute.split("."):
            try:
                target = getattr(target, part)
            except AttributeError:
                raise AgentConfigError(
                    f"tool {reference!r}: {module_name} has no attribute {attribute!r}"
                ) from None
        return target
    found = entry_points(group=ENTRY_POINT_GROUP, name=reference)
    if not found:
        raise AgentConfigError(
            f"tool {reference!r}: no entry point of that name in group {ENTRY_POINT_GROUP!r} "
            "(write package.module:function to import it directly)"
        )
    entry_point = next(iter(found))
    try:
        return entry_point.load()
    except Exception as exc:
        raise AgentConfigError(
            f"tool {reference!r}: entry point {entry_point.value!r} does not load: {exc}"
        ) from exc


def resolve_tool(reference: str) -> AgentTool:
    """The tool an agent file refers to: ``package.module:function`` or an entry-point name.

    An entry-point tool is offered under the entry point's name. Raises
    :class:`~bridge.agents.spec.AgentConfigError`.
    """
    target = _load_reference(reference)
    if isinstance(target, AgentTool):
        return target
    if not callable(target):
        raise AgentConfigError(f"tool {reference!r} is not a function")
    name = None if ":" in reference else reference
    try:
        return AgentTool.from_function(target, name=name, reference=reference)
    except TypeError as exc:
        raise AgentConfigError(f"tool {reference!r}: {exc}") from None


class AgentDirectory:
    """Every agent of the deployment, with resolved tools; shared by all calls (read-only)."""

    def __init__(
        self,
        agents: Sequence[AgentSpec],
        *,
        sources: Mapping[str, str] | None = None,
        resolve: Callable[[str], AgentTool] = resolve_tool,
    ) -> None:
        """Check ``agents`` and resolve their tools (each reference once).

        ``sources`` maps agent names to where they were declared, for error messages.
        Raises :class:`~bridge.agents.spec.AgentConfigError`.
        """
        sources = dict(sources or {})

        def where(agent: AgentSpec) -> str:
            source = sources.get(agent.name)
            return f"{source}: agent {agent.name!r}" if source else f"agent {agent.name!r}"

        if not agents:
            raise AgentConfigError("no agents are configured")
        self._agents: dict[str, AgentSpec] = {}
        for agent in agents:
            if agent.name in self._agents:
                raise AgentConfigError(f"{where(agent)}: another agent has the same name")
            self._agents[agent.name] = agent
        defaults = [agent for agent in agents if agent.default]
        if len(defaults) > 1:
            names = ", ".join(agent.name for agent in defaults)
            raise AgentConfigError(f"more than one default agent: {names}")
        if not defaults and len(agents) > 1:
            raise AgentConfigError("no default agent: mark the one that answers with default: true")
        self.default: AgentSpec = defaults[0] if defaults else agents[0]
        "The agent answering numbers that no agent lists."
        numbers: dict[str, str] = {}
        resolved: dict[str, AgentTool] = {}
        self._tools: dict[str, list[AgentTool]] = {}
        for agent in agents:
            for number in agent.numbers:
                key = number_of(number).lstrip("+")
                if key in numbers:
                    raise AgentConfigError(
                        f"{where(agent)}: number {number!r} is also answered by {numbers[key]!r}"
                    )
                numbers[key] = agent.name
            for target in agent.handoffs:
                if target not in self._agents:
                    raise AgentConfigError(f"{where(agent)}: handoffs: no agent named {target!r}")
                if target == agent.name:
                    raise AgentConfigError(
                        f"{where(agent)}: handoffs: an agent cannot hand off to itself"
                    )
            tools: dict[str, AgentTool] = {}
            for reference in agent.tools:
                tool = resolved.get(reference)
                if tool is None:
                    try:
                        tool = resolved[reference] = resolve(reference)
                    except AgentConfigError as exc:
                        raise AgentConfigError(f"{where(agent)}: {exc}") from exc.__cause__
                if tool.name.startswith(HANDOFF_PREFIX):
                    raise AgentConfigError(
                        f"{where(agent)}: tool {tool.name!r}: names starting with "
                        f"{HANDOFF_PREFIX!r} are reserved for handoffs"
                    )
                if tool.name in tools:
                    raise AgentConfigError(
                        f"{where(agent)}: two tools are named {tool.name!r} "
                        f"({tools[tool.name].reference} and {reference})"
                    )
                tools[tool.name] = tool
            self._tools[agent.name] = list(tools.values())

    @classmethod
    def load(cls, path: str | Path = DEFAULT_AGENTS_PATH) -> AgentDirectory:
        """Load every ``*.yaml``/``*.yml`` agent file of the directory ``path`` (or one file)."""
        path = Path(path)
        files = [path] if path.is_file() else agent_files(path)
        agents: list[AgentSpec] = []
        sources: dict[str, str] = {}
        for file in files:
            for agent in load_agent_file(file):
                if agent.name in sources:
                    raise AgentConfigError(
                        f"{file}: agent {agent.name!r} is already declared in {sources[agent.name]}"
                    )
                sources[agent.name] = str(file)
                agents.append(agent)
        if not agents:
            raise AgentConfigError(f"{path}: no agent files (*.yaml)")
        directory = cls(agents, sources=sources)
        logger.info(
            "loaded %d agents from %s (default: %s)", len(agents), path, directory.default.name
        )
        return directory

    # -- lookup ------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> AgentSpec:
        return self._agents[name]

    def __contains__(self, name: object) -> bool:
        return name in self._agents

    def __iter__(self) -> Iterator[AgentSpec]:
        return iter(self._agents.values())

    def __len__(self) -> int:
        return len(self._agents)

    @property
    def names(self) -> list[str]:
        """Every agent's name, in declaration order."""
        return list(self._agents)

    def tools_of(self, name: str) -> list[AgentTool]:
        """The resolved tools of agent ``name``, in the order its file lists them."""
        return list(self._tools[name])

    def agent_for(self, dialled_number: str | None) -> AgentSpec:
        """The agent listing ``dialled_number`` among its numbers, else the default agent."""
        if dialled_number:
            for agent in self._agents.values():
                if agent.answers(dialled_number):
                    return agent
        return self.default
