"""Tools served by an HTTP endpoint: how an external (multi-)agent system plugs in.

Every tool call is one signed ``POST <url>`` with a JSON body::

    {"timestamp": 1718000000,
     "call": {"call_id": ..., "session_id": ..., "caller": ..., "callee": ...,
              "caller_number": ..., "dialled_number": ..., "codec": ..., "dtmf": "12#",
              "function_call_id": ...},
     "tool": "lookup_order",
     "arguments": {"order": "A-1"}}

and the headers ``X-Sipagent-Timestamp`` (unix seconds, the body's ``timestamp``) and
``X-Sipagent-Signature: sha256=<hex HMAC-SHA256 of the raw body, keyed with the secret>``.
Since the timestamp is inside the signed body, a receiver that checks both the signature and
the age (:func:`verify_signature`) also refuses replays.

The response body (JSON) is the tool's result, as the model reads it. Two shapes are special:

* ``{"error": {"type": "...", "message": "..."}}`` is a failed call with that error type;
* ``{"output": ..., "instructions": "...", "tools": [...]}`` (``output`` and at least one of
  the other two, nothing else) is a :class:`~bridge.tools.ToolReturn`: the session switches to
  the new instructions/tools before the model reads ``output`` (the endpoint's own handoff).

A timeout, a transport error, a non-2xx status or a body that is not JSON becomes a
:class:`WebhookError` (``timeout`` or ``webhook_error``) that the model reads as a failed call.

The tool list is given to the constructor or fetched once with :meth:`WebhookToolAdapter.
fetch_tools` from ``GET <url>/tools`` (signed likewise, over the empty body): a JSON list of
``{"name", "description", "parameters"}`` objects (or ``{"tools": [...]}``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Final

import httpx

from bridge.tools import (
    InvalidArgumentsError,
    JsonValue,
    ToolAdapter,
    ToolContext,
    ToolError,
    ToolReturn,
    ToolSchema,
    function_schema,
)

from .context import AgentCallContext, number_of

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookError",
    "WebhookTimeoutError",
    "WebhookToolAdapter",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER: Final = "X-Sipagent-Signature"
TIMESTAMP_HEADER: Final = "X-Sipagent-Timestamp"
_TOOL_NAME: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_RETURN_KEYS: Final = frozenset({"output", "instructions", "tools"})


class WebhookError(ToolError):
    """The webhook could not be reached or did not answer properly."""

    type = "webhook_error"


class WebhookTimeoutError(WebhookError):
    """The webhook did not answer in time."""

    type = "timeout"


def sign(body: bytes, secret: str | bytes) -> str:
    """The ``X-Sipagent-Signature`` value of ``body``: ``sha256=<hex HMAC-SHA256>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(
    body: bytes,
    signature: str | None,
    secret: str | bytes,
    *,
    timestamp: str | None = None,
    now: float | None = None,
    tolerance: float = 300.0,
) -> bool:
    """What a receiver checks: the signature matches, and (with ``timestamp``) is fresh.

    ``timestamp`` is the ``X-Sipagent-Timestamp`` header; it must be within ``tolerance``
    seconds of ``now`` (default: the clock).
    """
    if not signature or not hmac.compare_digest(signature, sign(body, secret)):
        return False
    if timestamp is None:
        return True
    try:
        sent = float(timestamp)
    except ValueError:
        return False
    return abs((time.time() if now is None else now) - sent) <= tolerance


def _schema(entry: Any) -> ToolSchema:
    if not isinstance(entry, dict):
        raise WebhookError(f"a tool must be an object, not {type(entry).__name__}")
    name, parameters = entry.get("name"), entry.get("parameters")
    if not isinstance(name, str) or not _TOOL_NAME.match(name):
        raise WebhookError(f"invalid tool name {name!r}")
    if parameters is not None and not isinstance(parameters, dict):
        raise WebhookError(f"tool {name!r}: parameters must be a JSON schema object")
    if entry.get("type", "function") != "function":
        raise WebhookError(f"tool {name!r}: only function tools are supported")
    return function_schema(name, str(entry.get("description") or ""), parameters)


def _tool_list(data: Any) -> list[ToolSchema]:
    if isinstance(data, dict) and "tools" in data:
        data = data["tools"]
    if not isinstance(data, list):
        raise WebhookError("the tool list must be a JSON list of tools")
    return [_schema(entry) for entry in data]


def _error(data: Any) -> ToolError | None:
    """A ``{"error": {"type", "message"}}`` body as an exception, else None."""
    if not (isinstance(data, dict) and data.keys() == {"error"}):
        return None
    error = data["error"]
    if not isinstance(error, dict):
        return None
    exc = ToolError(str(error.get("message") or "the tool failed"))
    exc.type = str(error.get("type") or ToolError.type)
    return exc


class WebhookToolAdapter(ToolAdapter):
    """Offers the tools of an HTTP endpoint and runs each call as a signed POST.

    One adapter may serve every call (the call's identity travels in each request), or one
    call, with ``context`` (its :meth:`~bridge.agents.context.AgentCallContext.snapshot` is
    sent instead: current agent, verified flags, memory too).
    """

    def __init__(
        self,
        url: str,
        secret: str | bytes,
        timeout: float = 5.0,
        tools: Sequence[ToolSchema | Mapping[str, Any]] | None = None,
        *,
        context: AgentCallContext | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if not secret:
            raise ValueError("a webhook needs a secret to sign its requests")
        self.url = url
        self.tools_url = url.rstrip("/") + "/tools"
        self.timeout = timeout
        self.context = context
        self._secret = secret
        self._tools: list[ToolSchema] | None = (
            None if tools is None else [_schema(dict(entry)) for entry in tools]
        )
        self._client = client
        self._owns_client = client is None

    @classmethod
    async def connect(
        cls,
        url: str,
        secret: str | bytes,
        timeout: float = 5.0,
        *,
        context: AgentCallContext | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> WebhookToolAdapter:
        """An adapter whose tools were fetched from ``GET <url>/tools``."""
        adapter = cls(url, secret, timeout, context=context, client=client)
        await adapter.fetch_tools()
        return adapter

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient()
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP client (when the adapter made it)."""
        if self._client is not None and self._owns_client:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> WebhookToolAdapter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _headers(self, body: bytes, timestamp: int) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "Accept": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(body, self._secret),
        }

    async def _request(self, method: str, url: str, body: bytes, timestamp: int) -> Any:
        try:
            response = await self._http().request(
                method,
                url,
                content=body,
                headers=self._headers(body, timestamp),
                timeout=self.timeout,
            )
        except httpx.TimeoutException:
            raise WebhookTimeoutError(
                f"the webhook did not answer within {self.timeout:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise WebhookError(f"the webhook cannot be reached: {exc}") from None
        data: Any = None
        if response.content:
            try:
                data = response.json()
            except ValueError:
                if response.is_success:
                    raise WebhookError(
                        "the webhook answered with something that is not JSON"
                    ) from None
        error = _error(data)
        if error is not None:
            raise error
        if not response.is_success:
            raise WebhookError(f"the webhook answered HTTP {response.status_code}")
        return data

    # -- tools -------------------------------------------------------------------------------
    async def fetch_tools(self) -> list[ToolSchema]:
        """Fetch (again) the tool list from ``GET <url>/tools``; raises :class:`WebhookError`."""
        data = await self._request("GET", self.tools_url, b"", int(time.time()))
        self._tools = _tool_list(data)
        return list(self._tools)

    def tools(self) -> list[ToolSchema]:
        if self._tools is None:
            raise RuntimeError("the webhook's tools are not known: await fetch_tools() first")
        return list(self._tools)

    def _call_info(self, context: ToolContext) -> dict[str, Any]:
        if self.context is not None:
            self.context.sync_dtmf(context.dtmf)
            info = self.context.snapshot()
        else:
            call = context.call
            info = {
                "call_id": call.call_id,
                "session_id": call.session_id,
                "caller": call.caller,
                "callee": call.callee,
                "codec": call.codec,
                "caller_number": number_of(call.caller),
                "dialled_number": number_of(call.callee),
                "dtmf": context.dtmf,
            }
        info["function_call_id"] = context.function_call_id
        return info

    async def call(self, name: str, arguments: str, context: ToolContext) -> JsonValue:
        # No check against the tool list: the endpoint may have switched tools (a handoff),
        # and answers {"error": {"type": "unknown_tool", ...}} itself.
        try:
            parsed = json.loads(arguments) if arguments.strip() else {}
        except ValueError as exc:
            raise InvalidArgumentsError(f"arguments are not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise InvalidArgumentsError("arguments must be a JSON object")
        timestamp = int(time.time())
        payload = {
            "timestamp": timestamp,
            "call": self._call_info(context),
            "tool": name,
            "arguments": parsed,
        }
        body = json.dumps(payload, separators=(",", ":")).encode()
        data = await self._request("POST", self.url, body, timestamp)
        if (
            isinstance(data, dict)
            and "output" in data
            and data.keys() <= _RETURN_KEYS
            and len(data) > 1
        ):
            instructions, tools = data.get("instructions"), data.get("tools")
            if instructions is not None and not isinstance(instructions, str):
                raise WebhookError("instructions must be a string")
            return ToolReturn(
                output=data["output"],
                instructions=instructions,
                tools=None if tools is None else _tool_list(tools),
            )
        return data
