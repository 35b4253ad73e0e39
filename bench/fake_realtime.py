"""The fake OpenAI Realtime server of the tests, in a process of its own, for load runs.

    .venv/bin/python -m bench.fake_realtime --port 8765          # until SIGTERM / SIGINT
    curl http://127.0.0.1:8765/bench/stats                       # counters as JSON

Runs :class:`tests.fakes.realtime_server.FakeRealtimeServer` unchanged (every client and server
event validated against the openai SDK's types; violation checking on) with a conversation that
keeps model audio flowing most of the time, paced in real time:

1. the bridge's first ``response.create`` (the greeting) is answered with ``--greeting-ms`` of
   speech (``Greeting``);
2. then, over and over (``ReplyOnSpeech`` with many turns, on the appended-audio clock):
   ``--gap-ms`` after the last response ends the caller "speaks" for ``--speech-ms``
   (speech_started ... speech_stopped, committed, transcribed), and the fake answers with
   ``--reply-ms`` of speech.

Audio deltas carry ``--chunk-ms`` each and are paced at ``--pace`` times real time (1.0: a delta
every ``chunk_ms``, the first one at once). With the defaults a call hears model audio
~4000 / (4000 + 300 + 100) ≈ 90 % of the time.

``GET /bench/stats`` on the same port (answered in the WebSocket handshake hook, so it costs no
second listener) returns cumulative counters: connections, WebSocket messages received / sent by
event type, responses, violations. On SIGTERM/SIGINT, or after ``--max-seconds``, the server
closes, prints a summary with every violation, writes ``--stats-file`` (if given) and exits
with status 1 if there was any violation, else 0.

To keep the fake's memory and garbage collector flat over long runs, the per-connection logs
the tests inspect (``received``, ``received_raw``, ``sent``, ``audio_in``) are emptied every
few hundred messages; nothing in the scenarios used here reads them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # python bench/fake_realtime.py as well as python -m
    sys.path.insert(0, str(REPO))

from websockets.asyncio.server import ServerConnection, serve  # noqa: E402
from websockets.datastructures import Headers  # noqa: E402
from websockets.http11 import Request, Response  # noqa: E402

from tests.fakes.realtime_server import (  # noqa: E402
    Event,
    FakeConnection,
    FakeRealtimeServer,
    Greeting,
    ReplyOnSpeech,
    Scenario,
    Speech,
)

STATS_PATH = "/bench/stats"
TRIM_AT = 500
"""Empty a connection's message logs when one of them reaches this many entries."""

log = logging.getLogger("bench.fake_realtime")


class Counters(Scenario):
    """Counts every valid client event and every server event, across all connections.

    Deep copies return the same object (the server copies its scenarios per connection), so
    the counts are global. It plans no response.
    """

    def __init__(self) -> None:
        super().__init__()
        self.received: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()

    def __deepcopy__(self, memo: dict[int, Any]) -> Counters:
        return self

    async def on_client_event(self, conn: FakeConnection, event: Any) -> None:
        self.received[str(getattr(event, "type", "?"))] += 1
        if len(conn.received) >= TRIM_AT:
            trim(conn)

    async def on_sent(self, conn: FakeConnection, event: Event) -> None:
        self.sent[event["type"]] += 1
        if len(conn.sent) >= TRIM_AT:
            conn.sent.clear()


def trim(conn: FakeConnection) -> None:
    conn.received.clear()
    conn.received_raw.clear()
    conn.audio_in.clear()
    conn.sent.clear()


class BenchFakeServer(FakeRealtimeServer):
    """The fake on a fixed port, answering ``GET /bench/stats`` besides the Realtime API."""

    def __init__(self, *, port: int, counters: Counters, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bind_port = port
        self.counters = counters
        self.started_monotonic = time.monotonic()

    async def start(self) -> BenchFakeServer:
        # As FakeRealtimeServer.start, on the requested port instead of an ephemeral one.
        self._server = await serve(self._handle, "127.0.0.1", self.bind_port,
                                   process_request=self._process_request,
                                   max_size=16 * 2**20, close_timeout=2, compression=None)
        return self

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        if request.path == STATS_PATH:
            body = json.dumps(self.stats()).encode()
            headers = Headers([("Content-Type", "application/json"),
                               ("Content-Length", str(len(body))), ("Connection", "close")])
            return Response(200, "OK", headers, body)
        return super()._process_request(ws, request)

    def stats(self) -> dict[str, Any]:
        connections = list(self.connections)
        open_now = sum(1 for c in connections if not c.closed.is_set())
        statuses = Counter(str(h.status) for h in self.handshakes)
        received = dict(self.counters.received)
        sent = dict(self.counters.sent)
        return {
            "pid": os.getpid(),
            "monotonic": time.monotonic(),
            "uptime_s": round(time.monotonic() - self.started_monotonic, 3),
            "connections": {"total": len(connections), "open": open_now,
                            "closed": len(connections) - open_now},
            "handshakes": dict(statuses),
            "received_total": sum(received.values()),
            "sent_total": sum(sent.values()),
            "received": received,
            "sent": sent,
            "responses": sum(len(c.responses) for c in connections),
            "errors_sent": sum(len(c.errors_sent) for c in connections),
            "error_codes": dict(Counter(str(e.get("error", {}).get("code"))
                                        for c in connections for e in c.errors_sent)),
            "violations": len(self.violations),
            "violations_first": [str(v) for v in self.violations[:5]],
            "settings": {"chunk_ms": self.chunk_ms, "pace": self.pace},
        }


def scenarios(args: argparse.Namespace, counters: Counters) -> list[Scenario]:
    return [
        counters,
        Greeting(transcript="Hello, thanks for calling. How can I help you today?",
                 audio_ms=args.greeting_ms),
        ReplyOnSpeech(after_ms=args.gap_ms, speech_ms=args.speech_ms,
                      transcript="I would like to book a table for two tonight.",
                      reply=Speech("Sure, I can help with that. For what time would you like the "
                                   "table, and is it for two people?", args.reply_ms),
                      turns=args.turns),
    ]


async def housekeeping(server: BenchFakeServer, stop: asyncio.Event, deadline: float) -> None:
    """Every 2 s, empty the logs of closed connections; ends at ``stop`` or ``deadline``."""
    trimmed: set[int] = set()
    while not stop.is_set() and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), min(2.0, max(0.0, deadline - time.monotonic())))
        for conn in list(server.connections):
            if conn.index not in trimmed and conn.closed.is_set():
                trim(conn)
                trimmed.add(conn.index)
    stop.set()


async def serve_until_stopped(args: argparse.Namespace) -> int:
    counters = Counters()
    server = BenchFakeServer(port=args.port, counters=counters,
                             scenarios=scenarios(args, counters), chunk_ms=args.chunk_ms,
                             pace=args.pace, check_violations=True)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("fake Realtime server on %s (stats: http://127.0.0.1:%d%s), pid %d",
             server.base_url, server.port, STATS_PATH, os.getpid())
    print(f"READY {server.port}", flush=True)
    await housekeeping(server, stop, time.monotonic() + args.max_seconds)
    await server.close()
    final = server.stats()
    if args.stats_file:
        Path(args.stats_file).write_text(json.dumps(final, indent=2) + "\n")
    print(f"connections {final['connections']['total']}, messages received "
          f"{final['received_total']}, sent {final['sent_total']}, responses "
          f"{final['responses']}, errors sent {final['errors_sent']} {final['error_codes']}",
          flush=True)
    if server.violations:
        print(f"{len(server.violations)} VIOLATION(S):", flush=True)
        for violation in server.violations:
            print(f"  - {violation}", flush=True)
        return 1
    print("violations: none", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fake_realtime",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    parser.add_argument("--chunk-ms", type=int, default=100,
                        help="audio per response.output_audio.delta (default 100)")
    parser.add_argument("--pace", type=float, default=1.0,
                        help="audio deltas at this fraction of real time (default 1.0)")
    parser.add_argument("--greeting-ms", type=int, default=3000,
                        help="length of the greeting (default 3000)")
    parser.add_argument("--reply-ms", type=int, default=4000,
                        help="length of each reply (default 4000)")
    parser.add_argument("--speech-ms", type=int, default=300,
                        help="caller turn, speech_started to speech_stopped (default 300)")
    parser.add_argument("--gap-ms", type=int, default=100,
                        help="caller audio between a response's end and the next turn "
                             "(default 100)")
    parser.add_argument("--turns", type=int, default=100_000,
                        help="caller turns answered per connection (default 100000)")
    parser.add_argument("--max-seconds", type=float, default=3600.0,
                        help="exit by itself after this long (default 3600)")
    parser.add_argument("--stats-file", type=Path, default=None,
                        help="write the final counters here as JSON at exit")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="event loop (default uvloop when installed)")
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error("--port must be 1..65535")
    if not (0 < args.max_seconds <= 86400):
        parser.error("--max-seconds must be 0..86400")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    runner = asyncio.run
    if args.loop == "uvloop":
        with contextlib.suppress(ImportError):
            import uvloop

            runner = uvloop.run
    return runner(serve_until_stopped(args))


if __name__ == "__main__":
    sys.exit(main())
