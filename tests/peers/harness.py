"""Start an in-process sipagent server for tests: free SIP port (UDP and TCP), private RTP range.

Other test sessions and benchmarks may run on this machine with RTP ranges of their own, so
the RTP range is probed (every port bound once) right before the server starts, and a start
that still loses a port race is retried.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import Any

from sipagent.registry import CallRegistry
from sipagent.server import Server
from sipagent.settings import load_settings
from tests.peers.sipp import LOCALHOST, free_port

__all__ = ["free_udp_range", "start_server", "wait_for"]

#: RTP ports given to one test server (RTCP included): 20 calls.
RTP_SPAN = 40


def free_udp_range(low: int, high: int, size: int = RTP_SPAN, *, start: int | None = None) -> int:
    """First port of ``size`` consecutive UDP ports in [low, high) that all bind right now,
    trying even bases from a per-process starting point."""
    bases = list(range(low, high - size + 1, size))
    first = (os.getpid() if start is None else start) % len(bases)
    for base in bases[first:] + bases[:first]:
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + size):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.bind((LOCALHOST, port))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return base
    raise RuntimeError(f"no {size} free consecutive UDP ports in {low}-{high}")


async def start_server(**overrides: Any) -> Server:
    """A started Server on 127.0.0.1 with ``overrides`` applied to its settings.

    ``rtp_window=(low, high)`` chooses where its RTP range is looked for.
    """
    rtp_window: tuple[int, int] = overrides.pop("rtp_window", (10000, 32000))
    for attempt in range(5):
        base = free_udp_range(*rtp_window, start=os.getpid() + 7 * attempt)
        settings: dict[str, Any] = {
            "sip_port": free_port(udp=True, tcp=True),
            "rtp_port_min": base,
            "rtp_port_max": base + RTP_SPAN - 2,
        }
        settings.update(overrides)
        server = Server(load_settings(**settings), CallRegistry())
        try:
            await server.start()
        except OSError:
            if attempt == 4:
                raise
            continue
        return server
    raise AssertionError("unreachable")


async def wait_for(condition: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``condition`` every 20 ms until true; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met in {timeout} s: {what or condition}")
        await asyncio.sleep(0.02)
