"""The HTTP webhook tool adapter against a real local HTTP server that checks signatures."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from bridge.agents.context import AgentCallContext
from bridge.agents.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookError,
    WebhookTimeoutError,
    WebhookToolAdapter,
    sign,
    verify_signature,
)
from bridge.base import CallContext
from bridge.tools import InvalidArgumentsError, ToolContext, ToolError, ToolReturn

SECRET = "s3cret"
CALL = CallContext(
    call_id="a84b4c76e66710@pc33",
    session_id="0123456789ab",
    caller="sip:+15550142@pbx.example.com",
    callee="sip:+15550100@sipagent.example.com",
    codec="PCMA",
)
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "lookup_order",
        "description": "Look an order up.",
        "parameters": {
            "type": "object",
            "properties": {"order": {"type": "string"}},
            "required": ["order"],
        },
    },
    {"name": "hang_up", "description": "End the call."},
]


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Endpoint:
    url: str
    received: list[Received] = field(default_factory=list)


def _handler(endpoint: Endpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def reply(self, status: int, body: Any, *, raw: bytes | None = None) -> None:
            data = raw if raw is not None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def authentic(self, body: bytes) -> bool:
            endpoint.received.append(
                Received(self.command, self.path, dict(self.headers.items()), body)
            )
            return verify_signature(
                body,
                self.headers.get(SIGNATURE_HEADER),
                SECRET,
                timestamp=self.headers.get(TIMESTAMP_HEADER),
            )

        def do_GET(self) -> None:
            if not self.authentic(b""):
                self.reply(401, {"error": {"type": "unauthorized", "message": "bad signature"}})
            elif self.path == "/hook/tools":
                self.reply(200, {"tools": TOOLS})
            elif self.path == "/bad/tools":
                self.reply(200, [{"name": "no spaces allowed"}])
            else:
                self.reply(404, {"detail": "not found"})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if not self.authentic(body):
                self.reply(401, {"error": {"type": "unauthorized", "message": "bad signature"}})
                return
            request = json.loads(body)
            if request["timestamp"] != int(self.headers[TIMESTAMP_HEADER]):
                self.reply(400, {"error": {"type": "replay", "message": "timestamp mismatch"}})
                return
            tool, arguments = request["tool"], request["arguments"]
            if tool == "lookup_order":
                self.reply(200, {"order": arguments["order"], "status": "shipped", **request})
            elif tool == "slow":
                time.sleep(1.0)
                self.reply(200, {"late": True})
            elif tool == "missing":
                self.reply(200, {"error": {"type": "not_found", "message": "no such order"}})
            elif tool == "boom":
                self.reply(500, None, raw=b"Internal Server Error")
            elif tool == "garbage":
                self.reply(200, None, raw=b"<html>oops</html>")
            elif tool == "nothing":
                self.send_response(204)
                self.end_headers()
            elif tool == "handoff":
                self.reply(
                    200,
                    {
                        "output": {"agent": "billing"},
                        "instructions": "You are billing.",
                        "tools": [{"name": "pay", "parameters": {"type": "object"}}],
                    },
                )
            elif tool == "plain_output":
                self.reply(200, {"output": "just a field called output"})
            else:
                self.reply(404, {"error": {"type": "unknown_tool", "message": f"no {tool}"}})

    return Handler


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    state = Endpoint(url=f"http://127.0.0.1:{server.server_address[1]}/hook")
    server.RequestHandlerClass = _handler(state)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def tool_context(dtmf: str = "12#") -> ToolContext:
    return ToolContext(call=CALL, function_call_id="call_9", dtmf=dtmf)


def test_sign_and_verify() -> None:
    body = b'{"a":1}'
    signature = sign(body, SECRET)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert sign(body, SECRET.encode()) == signature
    assert verify_signature(body, signature, SECRET)
    assert not verify_signature(body + b" ", signature, SECRET)
    assert not verify_signature(body, signature, "other")
    assert not verify_signature(body, None, SECRET)
    assert verify_signature(body, signature, SECRET, timestamp="1000", now=1100.0)
    assert not verify_signature(body, signature, SECRET, timestamp="1000", now=1400.0)
    assert not verify_signature(body, signature, SECRET, timestamp="soon", now=1000.0)


def test_a_secret_is_required() -> None:
    with pytest.raises(ValueError, match="secret"):
        WebhookToolAdapter("http://127.0.0.1:9/hook", "")


async def test_tools_fetched_from_the_endpoint(endpoint: Endpoint) -> None:
    async with await WebhookToolAdapter.connect(endpoint.url, SECRET) as adapter:
        tools = adapter.tools()
    assert [tool["name"] for tool in tools] == ["lookup_order", "hang_up"]
    assert tools[0]["parameters"] == TOOLS[0]["parameters"]
    assert tools[1] == {
        "type": "function",
        "name": "hang_up",
        "description": "End the call.",
        "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
    }
    [request] = endpoint.received
    assert (request.method, request.path) == ("GET", "/hook/tools")
    assert request.headers[SIGNATURE_HEADER] == sign(b"", SECRET)


async def test_tools_must_be_known_before_the_session(endpoint: Endpoint) -> None:
    adapter = WebhookToolAdapter(endpoint.url, SECRET)
    with pytest.raises(RuntimeError, match="fetch_tools"):
        adapter.tools()
    bad = WebhookToolAdapter(endpoint.url.replace("/hook", "/bad"), SECRET)
    with pytest.raises(WebhookError, match="invalid tool name"):
        await bad.fetch_tools()
    await bad.aclose()
    await adapter.aclose()
    given = WebhookToolAdapter(endpoint.url, SECRET, tools=TOOLS)
    assert [tool["name"] for tool in given.tools()] == ["lookup_order", "hang_up"]


async def test_a_call_is_a_signed_post(endpoint: Endpoint) -> None:
    async with WebhookToolAdapter(endpoint.url, SECRET, tools=TOOLS) as adapter:
        result = await adapter.call("lookup_order", '{"order": "A-1"}', tool_context())
    assert result["order"] == "A-1" and result["status"] == "shipped"
    assert result["tool"] == "lookup_order" and result["arguments"] == {"order": "A-1"}
    assert result["call"] == {
        "call_id": CALL.call_id,
        "session_id": CALL.session_id,
        "caller": CALL.caller,
        "callee": CALL.callee,
        "codec": "PCMA",
        "caller_number": "+15550142",
        "dialled_number": "+15550100",
        "dtmf": "12#",
        "function_call_id": "call_9",
    }
    [request] = endpoint.received
    assert request.headers[SIGNATURE_HEADER] == sign(request.body, SECRET)
    assert request.headers["Content-Type"] == "application/json"
    assert abs(int(request.headers[TIMESTAMP_HEADER]) - time.time()) < 5


async def test_a_per_call_adapter_sends_the_agent_context(endpoint: Endpoint) -> None:
    ctx = AgentCallContext.for_call(CALL)
    ctx.current_agent = "billing"
    ctx.verified["pin"] = True
    adapter = WebhookToolAdapter(endpoint.url, SECRET, tools=TOOLS, context=ctx)
    try:
        result = await adapter.call("lookup_order", '{"order": "A-2"}', tool_context("7"))
    finally:
        await adapter.aclose()
    call = result["call"]
    assert call["current_agent"] == "billing" and call["verified"] == {"pin": True}
    assert call["dtmf"] == "7" and call["function_call_id"] == "call_9"


async def test_a_wrong_secret_is_refused(endpoint: Endpoint) -> None:
    async with WebhookToolAdapter(endpoint.url, "wrong", tools=TOOLS) as adapter:
        with pytest.raises(ToolError, match="bad signature") as raised:
            await adapter.call("lookup_order", '{"order": "A-1"}', tool_context())
    assert raised.value.type == "unauthorized"


@pytest.mark.parametrize(
    ("tool", "error", "error_type", "message"),
    [
        ("missing", ToolError, "not_found", "no such order"),
        ("boom", WebhookError, "webhook_error", "the webhook answered HTTP 500"),
        ("garbage", WebhookError, "webhook_error", "not JSON"),
        ("nope", ToolError, "unknown_tool", "no nope"),
    ],
)
async def test_failures_are_tool_errors(
    endpoint: Endpoint, tool: str, error: type[ToolError], error_type: str, message: str
) -> None:
    async with WebhookToolAdapter(endpoint.url, SECRET, tools=TOOLS) as adapter:
        with pytest.raises(error, match=message) as raised:
            await adapter.call(tool, "{}", tool_context())
    assert raised.value.type == error_type


async def test_timeout_is_a_tool_error(endpoint: Endpoint) -> None:
    async with WebhookToolAdapter(endpoint.url, SECRET, timeout=0.2, tools=TOOLS) as adapter:
        started = time.monotonic()
        with pytest.raises(WebhookTimeoutError, match=r"did not answer within 0\.2 s") as raised:
            await adapter.call("slow", "{}", tool_context())
    assert raised.value.type == "timeout"
    assert time.monotonic() - started < 0.9


async def test_unreachable_endpoint() -> None:
    async with WebhookToolAdapter("http://127.0.0.1:9/hook", SECRET, tools=TOOLS) as adapter:
        with pytest.raises(WebhookError, match="cannot be reached"):
            await adapter.call("lookup_order", "{}", tool_context())


async def test_bad_arguments_are_not_sent(endpoint: Endpoint) -> None:
    async with WebhookToolAdapter(endpoint.url, SECRET, tools=TOOLS) as adapter:
        with pytest.raises(InvalidArgumentsError, match="not valid JSON"):
            await adapter.call("lookup_order", "{", tool_context())
        with pytest.raises(InvalidArgumentsError, match="JSON object"):
            await adapter.call("lookup_order", "[]", tool_context())
    assert endpoint.received == []


async def test_empty_answer_and_session_changes(endpoint: Endpoint) -> None:
    async with WebhookToolAdapter(endpoint.url, SECRET, tools=TOOLS) as adapter:
        assert await adapter.call("nothing", "", tool_context()) is None
        plain = await adapter.call("plain_output", "", tool_context())
        assert plain == {"output": "just a field called output"}
        change = await adapter.call("handoff", "", tool_context())
    assert isinstance(change, ToolReturn)
    assert change.output == {"agent": "billing"}
    assert change.instructions == "You are billing."
    assert change.tools is not None and [tool["name"] for tool in change.tools] == ["pay"]


async def test_a_given_client_is_not_closed(endpoint: Endpoint) -> None:
    async with httpx.AsyncClient() as client:
        async with WebhookToolAdapter(endpoint.url, SECRET, tools=TOOLS, client=client) as adapter:
            await adapter.call("lookup_order", '{"order": "A-1"}', tool_context())
        assert not client.is_closed
