"""The tool adapter of one call served by a set of agents.

:class:`MultiAgentAdapter` offers the model the tools of the agent talking now, plus one
generated ``transfer_to_<agent>`` tool per handoff that agent may make, plus
``transfer_to_human`` when the call layer can transfer the call. A handoff answers with a
:class:`~bridge.tools.ToolReturn` carrying the new agent's instructions and tools, which the
session sends as a ``session.update`` before the tool's output: the conversation goes on in the
same session, with a new persona and a new tool set.

The call layer creates one adapter per call::

    directory = AgentDirectory.load("config/agents")          # once, at start-up
    context = AgentCallContext.for_call(call_context, caller_number=..., dialled_number=...)
    adapter = MultiAgentAdapter(directory, context, transfer=refer, transfer_target="sip:...")
    model = create_openai_model(settings, tools=adapter, observer=...)
    model.config = adapter.configure(model.config)             # first agent's prompt, voice

``transfer`` is ``async def refer(target: str) -> bool``: it asks the caller's side to call
``target`` (SIP REFER) and answers whether that was accepted. Until it returns,
:attr:`~bridge.agents.context.AgentCallContext.transfer_requested` holds the target; after a
refusal it is None again and the model is told to apologise and carry on.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Final

from pydantic import Field
from pydantic_core import PydanticSerializationError, to_jsonable_python

from bridge.realtime_config import RealtimeConfig
from bridge.tools import (
    JsonValue,
    ToolAdapter,
    ToolContext,
    ToolError,
    ToolReturn,
    ToolSchema,
    UnknownToolError,
    function_schema,
)

from .context import AgentCallContext
from .registry import HANDOFF_PREFIX, HUMAN_TRANSFER_TOOL, AgentDirectory, AgentTool
from .spec import AgentSpec

__all__ = ["InvalidResultError", "MultiAgentAdapter", "TransferCallback"]

logger = logging.getLogger(__name__)

TransferCallback = Callable[[str], Awaitable[bool]]
"""``async (target) -> accepted``: transfer the call to ``target`` (a sip:/tel: URI)."""

_MESSAGE_LIMIT: Final = 300


class InvalidResultError(ToolError):
    """The tool returned something that is not JSON."""

    type = "invalid_result"


async def _handoff(
    reason: Annotated[
        str, Field(description="Why the caller is handed over, in a few words, for the next agent.")
    ] = "",
) -> None:
    """Template of the ``transfer_to_<agent>`` tools: only its arguments are used."""


async def _human(
    reason: Annotated[str, Field(description="Why the caller needs a person, in a few words.")],
) -> None:
    """Template of ``transfer_to_human``: only its arguments are used."""


_HANDOFF: Final = AgentTool.from_function(_handoff, name="transfer_to_agent", description="")
_HUMAN: Final = AgentTool.from_function(
    _human,
    name=HUMAN_TRANSFER_TOOL,
    description=(
        "Transfer the phone call to a human colleague. Use it when the caller asks for a "
        "person or when you cannot help; tell the caller before you call it."
    ),
)


def _handoff_schema(agent: AgentSpec) -> ToolSchema:
    about = f": {agent.description}" if agent.description else "."
    description = (
        f"Hand the caller over to the {agent.name} agent{about} The conversation continues "
        "with that agent's instructions and tools."
    )
    return function_schema(f"{HANDOFF_PREFIX}{agent.name}", description, _HANDOFF.parameters)


def _short(text: str) -> str:
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 1] + "…"


class MultiAgentAdapter(ToolAdapter):
    """Tools, handoffs and the human transfer of one call; see the module docstring."""

    def __init__(
        self,
        directory: AgentDirectory,
        context: AgentCallContext,
        *,
        transfer: TransferCallback | None = None,
        transfer_target: str | None = None,
    ) -> None:
        """Serve ``context``'s call; it starts with ``context.current_agent`` if set, else with
        the agent answering ``context.dialled_number``.

        ``transfer_to_human`` is offered only with both ``transfer`` and ``transfer_target``.
        """
        self.directory = directory
        self.context = context
        self._transfer = transfer
        self._transfer_target = transfer_target
        if context.current_agent:
            if context.current_agent not in directory:
                raise ValueError(f"no agent named {context.current_agent!r}")
        else:
            context.current_agent = directory.agent_for(context.dialled_number).name
        context.record("start", dialled_number=context.dialled_number)
        logger.info(
            "call %s: agent %s answers %s",
            context.call.call_id,
            context.current_agent,
            context.dialled_number or "(no number)",
        )

    # -- the current agent -------------------------------------------------------------------
    @property
    def agent(self) -> AgentSpec:
        """The agent talking now."""
        return self.directory[self.context.current_agent]

    @property
    def can_transfer(self) -> bool:
        """Whether ``transfer_to_human`` is offered."""
        return self._transfer is not None and self._transfer_target is not None

    def instructions(self) -> str:
        """The current agent's session instructions."""
        return self.agent.instructions

    def voice(self) -> str | None:
        """The current agent's voice, None for the deployment's."""
        return self.agent.voice

    def greeting(self) -> str | None:
        """What the current agent says first; None: the deployment's, empty: nothing."""
        return self.agent.greeting

    def configure(self, config: RealtimeConfig) -> RealtimeConfig:
        """``config`` with the current agent's instructions, voice and greeting."""
        greeting = self.greeting()
        if greeting is None:
            greeting_instruction = config.greeting
        elif greeting:
            greeting_instruction = f'Answer the call by saying: "{greeting}"'
        else:
            greeting_instruction = None
        return dataclasses.replace(
            config,
            instructions=self.instructions(),
            voice=self.voice() or config.voice,
            greeting=greeting_instruction,
        )

    def tools(self) -> list[ToolSchema]:
        """The current agent's tools, its handoffs, and ``transfer_to_human`` if available."""
        return self._schemas(self.agent)

    def _schemas(self, agent: AgentSpec) -> list[ToolSchema]:
        schemas = [tool.schema for tool in self.directory.tools_of(agent.name)]
        schemas += [_handoff_schema(self.directory[target]) for target in agent.handoffs]
        if self.can_transfer:
            schemas.append(_HUMAN.schema)
        return schemas

    # -- calls -------------------------------------------------------------------------------
    async def call(self, name: str, arguments: str, context: ToolContext) -> JsonValue:
        ctx = self.context
        ctx.sync_dtmf(context.dtmf)
        agent = self.agent
        if name == HUMAN_TRANSFER_TOOL and self.can_transfer:
            return await self._transfer_to_human(arguments)
        if name.startswith(HANDOFF_PREFIX) and name.removeprefix(HANDOFF_PREFIX) in agent.handoffs:
            return self._hand_off(
                agent, self.directory[name.removeprefix(HANDOFF_PREFIX)], arguments
            )
        tool = next((t for t in self.directory.tools_of(agent.name) if t.name == name), None)
        if tool is None:
            ctx.record("tool", tool=name, error=UnknownToolError.type)
            raise UnknownToolError(f"agent {agent.name!r} has no tool named {name!r}")
        try:
            result = await tool.invoke(ctx, arguments)
        except ToolError as exc:
            ctx.record("tool", tool=name, error=exc.type)
            raise
        except Exception as exc:
            logger.warning("call %s: tool %s raised", ctx.call.call_id, name, exc_info=True)
            ctx.record("tool", tool=name, error=ToolError.type)
            raise ToolError(_short(f"{name} failed: {type(exc).__name__}: {exc}")) from exc
        if isinstance(result, ToolReturn):
            ctx.record("tool", tool=name, error=None)
            return result
        try:
            output = to_jsonable_python(result)
        except PydanticSerializationError as exc:
            ctx.record("tool", tool=name, error=InvalidResultError.type)
            raise InvalidResultError(f"{name} returned something that is not JSON: {exc}") from None
        ctx.record("tool", tool=name, error=None)
        return output

    def _hand_off(self, source: AgentSpec, target: AgentSpec, arguments: str) -> ToolReturn:
        reason = _HANDOFF.parse_arguments(arguments)["reason"]
        ctx = self.context
        ctx.record("handoff", to=target.name, reason=reason)
        ctx.current_agent = target.name
        logger.info(
            "call %s: handoff %s -> %s (%s)", ctx.call.call_id, source.name, target.name, reason
        )
        return ToolReturn(
            output={
                "status": "transferred",
                "agent": target.name,
                "message": (
                    f"You are now the {target.name} agent: follow your new instructions and "
                    "carry on the conversation without greeting the caller again."
                ),
            },
            instructions=target.instructions,
            tools=self._schemas(target),
        )

    async def _transfer_to_human(self, arguments: str) -> JsonValue:
        reason = _HUMAN.parse_arguments(arguments)["reason"]
        transfer, target = self._transfer, self._transfer_target
        assert transfer is not None and target is not None  # checked by can_transfer
        ctx = self.context
        if ctx.transfer_requested is not None:
            return {"status": "transferring", "message": "The transfer is already under way."}
        ctx.transfer_requested = target
        logger.info("call %s: transfer to %s (%s)", ctx.call.call_id, target, reason)
        failure = "the transfer was refused"
        try:
            accepted = await transfer(target)
        except BaseException as exc:
            ctx.transfer_requested = None
            if not isinstance(exc, Exception):
                raise  # cancelled: the session gave up on this call
            logger.warning(
                "call %s: transfer to %s failed", ctx.call.call_id, target, exc_info=True
            )
            accepted, failure = False, _short(f"the transfer failed: {exc}")
        ctx.record("transfer", target=target, reason=reason, accepted=accepted)
        if accepted:
            return {
                "status": "transferring",
                "message": (
                    "The caller is being connected to a colleague: say a short goodbye at most."
                ),
            }
        ctx.transfer_requested = None
        return {
            "status": "failed",
            "reason": failure,
            "message": (
                "Apologise: nobody can take the call right now. Keep helping the caller "
                "yourself, or offer a call back."
            ),
        }
