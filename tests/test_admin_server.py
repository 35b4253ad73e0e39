from __future__ import annotations

import signal
import socket

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from admin.app import create_app
from admin.server import AdminStartupError, start_admin
from sipagent.registry import CallRegistry


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class IdleController:
    async def hangup(self, session_id: str) -> bool:
        return False

    def ready(self) -> dict[str, object]:
        return {"ready": True}


async def test_serves_over_tcp_and_stops() -> None:
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    admin = await start_admin(create_app(CallRegistry(), IdleController()), "127.0.0.1", 0)
    try:
        assert admin.port > 0
        assert admin.url == f"http://127.0.0.1:{admin.port}"
        async with httpx.AsyncClient(base_url=admin.url, trust_env=False) as client:
            response = await client.get("/health")
            assert response.status_code == 200
            assert response.json() == {"status": "ok"}
            assert (await client.get("/sessions")).json() == {"count": 0, "sessions": []}
        # uvicorn must leave the host process's signal handling alone.
        assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
    finally:
        await admin.stop()
    assert admin.task.done()
    assert admin.task.exception() is None
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=admin.url, trust_env=False) as client:
            await client.get("/health")
    await admin.stop()  # idempotent
    # The port was released on stop.
    again = await start_admin(create_app(CallRegistry(), IdleController()), "127.0.0.1", admin.port)
    await again.stop()


async def test_port_in_use() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(AdminStartupError, match=f"127.0.0.1:{port}"):
            await start_admin(create_app(CallRegistry(), IdleController()), "127.0.0.1", port)


async def test_unresolvable_host() -> None:
    with pytest.raises(AdminStartupError, match="resolve"):
        await start_admin(create_app(CallRegistry(), IdleController()), "no-such-host.invalid", 0)


async def test_app_startup_failure_is_reported() -> None:
    async def failing_app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})

    port = free_port()
    with pytest.raises(AdminStartupError, match="failed to start"):
        await start_admin(failing_app, "127.0.0.1", port)
    # The socket was released: a working app can take the same port.
    admin = await start_admin(create_app(CallRegistry(), IdleController()), "127.0.0.1", port)
    assert admin.port == port
    await admin.stop()
