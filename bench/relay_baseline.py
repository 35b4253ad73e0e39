"""The floor to compare the server with: a bare asyncio + uvloop RTP echo, paced, no SIP.

    .venv/bin/python -m bench.relay_baseline --base 20200 --calls 100

Binds ``--calls`` UDP sockets on 127.0.0.1 at ``--base``, ``--base``+2, … (one per call, like
the server's RTP ports), prints ``READY`` and echoes: each socket learns its peer from the first
packet, queues the payloads it receives (at most :data:`QUEUE_FRAMES`, the oldest dropped) and
sends one RTP packet per 20 ms on the absolute grid ``start + n · 20 ms`` with its own SSRC,
sequence and timestamp (the next queued payload, or PCMU silence). One ``call_at`` chain per
call. A timer that fires late sends the missed frames back to back; more than 200 ms behind,
it skips them and advances the timestamp (what the server's pacer does). No jitter buffer, no
RTCP, no statistics beyond counters: the cost of moving the packets and pacing them on this
event loop, which bench/capacity.py ``--baseline`` compares the server's CPU with.

Runs until SIGTERM/SIGINT or ``--max-seconds``; prints its counters as JSON at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import struct
import sys
import time
from collections import deque
from typing import Any, cast

__all__ = ["RelayCall"]

LOCALHOST = "127.0.0.1"
FRAME_S = 0.020
FRAME_SAMPLES = 160
MAX_BEHIND_FRAMES = 10
QUEUE_FRAMES = 10
SILENCE = b"\xff" * FRAME_SAMPLES
RTP_HEADER = struct.Struct("!BBHII")


class RelayCall(asyncio.DatagramProtocol):
    """One call: echo what arrives, paced on the 20 ms grid."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.DatagramTransport | None = None
        self.peer: tuple[str, int] | None = None
        self.queue: deque[bytes] = deque(maxlen=QUEUE_FRAMES)
        rand = int.from_bytes(os.urandom(8), "big")
        self.ssrc = rand & 0xFFFF_FFFF
        self.seq0 = (rand >> 32) & 0xFFFF
        self.ts0 = (rand >> 48) & 0xFFFF
        self.start = 0.0
        self.index = 0
        self.sent = 0
        self.received = 0
        self.skipped = 0
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12:
            return
        if self.peer is None:
            self.peer = addr
            self.start = self.loop.time() + FRAME_S
            self.timer = self.loop.call_at(self.start, self.tick)
        elif addr != self.peer:
            return
        self.received += 1
        self.queue.append(data[12:])

    def tick(self) -> None:
        now = self.loop.time()
        due = int((now - self.start) / FRAME_S) + 1 - self.index  # frames due (incl. this one)
        if due > MAX_BEHIND_FRAMES:
            self.skipped += due - 1
            self.index += due - 1
            due = 1
        transport, peer = self.transport, self.peer
        for _ in range(max(1, due)):
            payload = self.queue.popleft() if self.queue else SILENCE
            header = RTP_HEADER.pack(0x80, 0, (self.seq0 + self.sent) & 0xFFFF,
                                     (self.ts0 + self.index * FRAME_SAMPLES) & 0xFFFF_FFFF,
                                     self.ssrc)
            if transport is not None and peer is not None:
                transport.sendto(header + payload, peer)
            self.sent += 1
            self.index += 1
        self.timer = self.loop.call_at(self.start + self.index * FRAME_S, self.tick)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.transport is not None:
            self.transport.close()


async def serve(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    calls: list[RelayCall] = []
    for i in range(args.calls):
        _, protocol = await loop.create_datagram_endpoint(
            lambda: RelayCall(loop), local_addr=(args.host, args.base + 2 * i))
        calls.append(protocol)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {args.base} {args.calls}", flush=True)
    started = time.monotonic()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=args.max_seconds)
    for call in calls:
        call.close()
    return {
        "calls": args.calls, "seconds": round(time.monotonic() - started, 3),
        "received": sum(c.received for c in calls), "sent": sum(c.sent for c in calls),
        "skipped": sum(c.skipped for c in calls),
        "peers": sum(1 for c in calls if c.peer is not None),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.relay_baseline",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=LOCALHOST)
    parser.add_argument("--base", type=int, required=True, help="first port (then +2 each)")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--max-seconds", type=float, default=600.0,
                        help="exit after this long at the latest (default 600)")
    parser.add_argument("--asyncio", action="store_true", help="default loop, not uvloop")
    args = parser.parse_args(argv)
    if not 1 <= args.calls <= 2000 or not 1024 <= args.base <= 65535 - 2 * args.calls:
        parser.error("--calls 1..2000 and the ports must fit below 65536")
    if not 1 <= args.max_seconds <= 3600:
        parser.error("--max-seconds must be 1..3600")
    if args.asyncio:
        loop = asyncio.new_event_loop()
    else:
        import uvloop

        loop = uvloop.new_event_loop()
    try:
        result = loop.run_until_complete(serve(args))
    finally:
        loop.close()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
