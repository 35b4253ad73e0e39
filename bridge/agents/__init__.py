"""Agents answering calls: declared in YAML, with typed Python tools, handoffs and transfers.

* :mod:`.spec` — :class:`AgentSpec` and the strict loader of ``config/agents/*.yaml``;
* :mod:`.registry` — :class:`AgentDirectory` (tools resolved, handoffs checked, the agent for
  a dialled number) and :class:`AgentTool` (schema and validation from a function's types);
* :mod:`.context` — :class:`AgentCallContext`, the per-call state tools read and write;
* :mod:`.adapter` — :class:`MultiAgentAdapter`, the per-call :class:`~bridge.tools.ToolAdapter`;
* :mod:`.webhook` — :class:`WebhookToolAdapter`, tools served by an HTTP endpoint.
"""

from __future__ import annotations

from .adapter import InvalidResultError, MultiAgentAdapter, TransferCallback
from .context import AgentCallContext, number_of
from .registry import (
    DEFAULT_AGENTS_PATH,
    ENTRY_POINT_GROUP,
    HANDOFF_PREFIX,
    HUMAN_TRANSFER_TOOL,
    AgentDirectory,
    AgentTool,
    ToolFunction,
    resolve_tool,
)
from .spec import AgentConfigError, AgentSpec, load_agent_file, parse_agents
from .webhook import WebhookError, WebhookTimeoutError, WebhookToolAdapter, sign, verify_signature

__all__ = [
    "DEFAULT_AGENTS_PATH",
    "ENTRY_POINT_GROUP",
    "HANDOFF_PREFIX",
    "HUMAN_TRANSFER_TOOL",
    "AgentCallContext",
    "AgentConfigError",
    "AgentDirectory",
    "AgentSpec",
    "AgentTool",
    "InvalidResultError",
    "MultiAgentAdapter",
    "ToolFunction",
    "TransferCallback",
    "WebhookError",
    "WebhookTimeoutError",
    "WebhookToolAdapter",
    "load_agent_file",
    "number_of",
    "parse_agents",
    "resolve_tool",
    "sign",
    "verify_signature",
]
