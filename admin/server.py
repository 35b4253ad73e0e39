"""Run the admin app with uvicorn as a task in the already running event loop.

The SIP/RTP server owns the process: uvicorn installs no signal handlers and does
not touch the logging configuration. We bind the listening socket ourselves so a
busy port fails :func:`start_admin` with the real OS error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator

import uvicorn
from starlette.types import ASGIApp

__all__ = ["AdminServer", "AdminStartupError", "start_admin"]

logger = logging.getLogger(__name__)

# Bounds stop() when a client keeps a request open.
SHUTDOWN_TIMEOUT = 5


class AdminStartupError(RuntimeError):
    """The admin server could not start (port in use, bad address, app startup failed)."""


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signals to its host and reports startup."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.startup_done = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The host process decides what SIGINT/SIGTERM mean.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.startup_done.set()


async def _bind(host: str, port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise AdminStartupError(f"admin server cannot resolve {host!r}: {exc}") from exc
    family, _, _, _, address = infos[0]
    try:
        return socket.create_server(address[:2], family=family, backlog=2048)
    except OSError as exc:
        raise AdminStartupError(
            f"admin server cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from exc


class AdminServer:
    """A running admin server; :meth:`stop` it before the loop closes."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None], sock: socket.socket):
        self.server = server
        "The uvicorn server."
        self.task = task
        "The task running :meth:`uvicorn.Server.serve`."
        address = sock.getsockname()
        self.host: str = address[0]
        "The bound address."
        self.port: int = address[1]
        "The bound port (the real one when 0 was asked for)."

    @property
    def url(self) -> str:
        """Base URL of the admin API."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        """Stop accepting connections, finish open requests, and wait for the task. Idempotent."""
        self.server.should_exit = True
        # The done callback already logged an unexpected end; only wait here.
        await asyncio.wait({self.task})


async def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
    try:
        await server.serve(sockets=[sock])
    except SystemExit as exc:
        # uvicorn calls sys.exit() on startup failure; never let that reach the loop.
        sock.close()
        raise AdminStartupError("admin app failed to start (see uvicorn.error log)") from exc


def _log_unexpected_end(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        logger.warning("admin server task was cancelled")
    elif task.exception() is not None:
        logger.error("admin server stopped: %s", task.exception())


async def start_admin(app: ASGIApp, host: str, port: int) -> AdminServer:
    """Start serving ``app`` on ``host:port`` (0 picks a free port) and return once listening.

    Raises :class:`AdminStartupError` when the address cannot be bound or the app fails
    its startup.
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="auto",
        timeout_graceful_shutdown=SHUTDOWN_TIMEOUT,
    )
    server = _EmbeddedServer(config)
    sock = await _bind(host, port)
    task = asyncio.create_task(_serve(server, sock), name="admin-server")
    started = asyncio.create_task(server.startup_done.wait())
    try:
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        server.should_exit = True
        task.cancel()
        raise
    finally:
        started.cancel()
    if task.done():
        # Ended before listening: re-raise its startup error.
        await task
        raise AdminStartupError("admin server exited during startup")
    task.add_done_callback(_log_unexpected_end)
    admin = AdminServer(server, task, sock)
    logger.info("admin API listening on %s", admin.url)
    return admin
