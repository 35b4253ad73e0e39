"""Agents as declared in ``config/agents/*.yaml``: the model and a strict loader.

A file holds one agent (a mapping) or several (a list of mappings)::

    name: billing
    description: Invoices, payments and refunds.
    instructions: |
      You are the billing desk of ACME. ...
    voice: marin
    greeting: Billing desk, how can I help?
    tools: [acme.billing:lookup_invoice, send_receipt]
    handoffs: [front_desk]
    numbers: ["+15550100"]
    default: false

Unknown keys, wrong types and duplicate keys are errors; every error names the file, the agent
and the field (:class:`AgentConfigError`). Whether tools import and handoff targets exist is
checked when the agents are put together (:mod:`bridge.agents.registry`).
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Annotated, Any, Final

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from .context import number_of

__all__ = [
    "AGENT_NAME_PATTERN",
    "AgentConfigError",
    "AgentSpec",
    "TOOL_REFERENCE_PATTERN",
    "agent_files",
    "load_agent_file",
    "parse_agents",
]

AGENT_NAME_PATTERN: Final = r"^[A-Za-z0-9_-]{1,52}$"
"""Letters, digits, ``_`` and ``-``: ``transfer_to_<name>`` must stay a valid 64-char tool name."""

TOOL_REFERENCE_PATTERN: Final = (
    r"^(?:[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_.]*"
    r"|[A-Za-z0-9_-]{1,64})$"
)
"""``package.module:function`` (imported) or a bare name (a ``sipagent.tools`` entry point)."""

AgentName = Annotated[str, StringConstraints(pattern=AGENT_NAME_PATTERN)]
ToolReference = Annotated[str, StringConstraints(pattern=TOOL_REFERENCE_PATTERN)]


class AgentConfigError(ValueError):
    """The agent configuration is wrong: the deployment's fault, found before any call."""


class AgentSpec(BaseModel):
    """One agent: who it is, what it may do, whom it may hand the caller to."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: AgentName
    "Unique name; the handoff tool to this agent is ``transfer_to_<name>``."

    description: str = ""
    "One line on what the agent handles: other agents read it in their handoff tool."

    instructions: Annotated[str, StringConstraints(min_length=1)]
    "The session instructions (system prompt) while this agent talks."

    voice: str | None = None
    "Realtime voice (``marin``, ``cedar``...); None: the deployment's. Only the first agent's "
    "voice is used: a session cannot change voice once it has spoken."

    greeting: str | None = None
    "What the agent says first when it answers a call; None: the deployment's greeting, "
    "empty: say nothing and wait for the caller."

    tools: list[ToolReference] = Field(default_factory=list)
    "Tool references: ``package.module:function`` or an entry-point name (``sipagent.tools``)."

    handoffs: list[AgentName] = Field(default_factory=list)
    "Agents this one may hand the caller to (each becomes a ``transfer_to_<name>`` tool)."

    numbers: list[str] = Field(default_factory=list)
    "Dialled numbers (DIDs, To users) this agent answers; see :meth:`answers`."

    default: bool = False
    "Answers calls to numbers no agent lists (exactly one agent, unless there is only one)."

    @field_validator("numbers", mode="before")
    @classmethod
    def _numbers_are_text(cls, value: Any) -> Any:
        # YAML reads +15550100 as the integer 15550100 and 0301234 as octal: insist on quotes.
        if isinstance(value, list):
            for number in value:
                if not isinstance(number, str):
                    raise ValueError(
                        f'write each number as a quoted string ("+15550100"), not {number!r}'
                    )
        return value

    def answers(self, dialled_number: str) -> bool:
        """True when ``dialled_number`` is one of :attr:`numbers`.

        Both sides are reduced to their number (:func:`~bridge.agents.context.number_of`) and
        compared with and without a leading ``+``.
        """
        wanted = _number_key(dialled_number)
        return bool(wanted) and any(_number_key(number) == wanted for number in self.numbers)


def _number_key(number: str) -> str:
    return number_of(number).lstrip("+")


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in a mapping is an error."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Hashable, Any]:
    loader.flatten_mapping(node)
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(agent)"


def parse_agents(data: Any, source: str) -> list[AgentSpec]:
    """The agents in ``data`` (one mapping or a list of them), read from ``source``."""
    if isinstance(data, dict):
        entries, multiple = [data], False
    elif isinstance(data, list):
        entries, multiple = data, True
    elif data is None:
        raise AgentConfigError(f"{source}: the file declares no agent")
    else:
        raise AgentConfigError(
            f"{source}: expected an agent (a mapping) or a list of agents, "
            f"not {type(data).__name__}"
        )
    agents: list[AgentSpec] = []
    for index, entry in enumerate(entries):
        where = f"{source}: agents[{index}]" if multiple else source
        if not isinstance(entry, dict):
            raise AgentConfigError(
                f"{where}: an agent must be a mapping, not {type(entry).__name__}"
            )
        name = entry.get("name")
        if isinstance(name, str) and name:
            where += f" ({name})"
        try:
            agents.append(AgentSpec.model_validate(entry))
        except ValidationError as exc:
            problems = "; ".join(
                f"{_location(error['loc'])}: {error['msg']}" for error in exc.errors()
            )
            raise AgentConfigError(f"{where}: {problems}") from None
    return agents


def load_agent_file(path: str | Path) -> list[AgentSpec]:
    """The agents declared in the YAML file ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AgentConfigError(f"{path}: cannot read: {exc}") from None
    try:
        loader = _StrictLoader(text)
        loader.name = str(path)  # error marks say where: in "config/agents/x.yaml", line 3
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise AgentConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_agents(data, str(path))


def agent_files(directory: str | Path) -> list[Path]:
    """The agent files of ``directory`` (``*.yaml``, ``*.yml``), sorted by name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise AgentConfigError(f"{directory}: no such directory of agents")
    return sorted(
        path
        for path in directory.iterdir()
        if path.suffix in (".yaml", ".yml") and path.is_file() and not path.name.startswith(".")
    )
