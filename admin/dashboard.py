"""The live dashboard: its page and the ``/events`` Server-Sent Events stream behind it.

``GET /events`` first sends a ``snapshot`` of the live calls, then one ``added`` /
``updated`` / ``removed`` event per registry change, each carrying :func:`live_summary`
JSON, and a comment line every :data:`KEEPALIVE_INTERVAL` seconds so idle proxies keep
the connection. Each client has a bounded queue: when it overflows, the oldest changes are
dropped and the client gets a fresh ``snapshot`` instead, so it never misses a removal.
Records are serialized when sent, not when changed: a burst of updates to one call goes
out once, with its latest state.

The page (``admin/static/``) is plain HTML and JavaScript, with no build step and nothing
loaded from other origins.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable
from pathlib import Path
from typing import Final

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from sipagent.registry import CallRecord, CallRegistry, ChangeKind, iso_utc

__all__ = [
    "KEEPALIVE_INTERVAL",
    "QUEUE_SIZE",
    "STATIC_DIR",
    "SessionEvents",
    "add_dashboard",
    "live_summary",
]

logger = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).parent / "static"
KEEPALIVE_INTERVAL: Final = 15.0
"Seconds between keep-alive comments on an idle stream."
QUEUE_SIZE: Final = 256
"Changes queued per client before the oldest are dropped (and a snapshot sent instead)."
TRANSCRIPT_TAIL = 3
"Transcript lines carried by each change (the call page fetches the full detail)."
RECONNECT_MS = 3000

# The page shows what callers say: no script or frame from anywhere but here.
PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def live_summary(record: CallRecord) -> dict[str, object]:
    """What the dashboard shows of a call in its list: the summary plus live details."""
    summary = record.to_summary()
    last_latency = record.turns[-1].get("latency_ms") if record.turns else None
    summary.update(
        {
            "caller_number": record.caller_number,
            "ended_at": iso_utc(record.ended_at),
            "end_reason": record.end_reason,
            "last_latency_ms": last_latency,
            "turn_count": len(record.turns),
            "tool_call_count": len(record.tool_calls),
            "dtmf": "".join(record.dtmf),
            "transcript_count": len(record.transcript),
            "transcript_tail": [dict(line) for line in record.transcript[-TRANSCRIPT_TAIL:]],
        }
    )
    return summary


def _sse(event: str, payload: object) -> str:
    data = json.dumps(payload, separators=(",", ":"), default=str)
    return f"event: {event}\ndata: {data}\n\n"


def _coalesce(
    batch: Iterable[tuple[ChangeKind, CallRecord]],
) -> list[tuple[ChangeKind, CallRecord]]:
    """Drop updates followed by another change of the same call: it would send the same state."""
    changes = list(batch)
    last = {record.session_id: index for index, (_, record) in enumerate(changes)}
    return [
        (kind, record)
        for index, (kind, record) in enumerate(changes)
        if kind is not ChangeKind.UPDATED or last[record.session_id] == index
    ]


class _Subscriber:
    """One client's queue of changes, filled by the registry, drained by its stream."""

    def __init__(self, size: int) -> None:
        self.pending: deque[tuple[ChangeKind, CallRecord]] = deque(maxlen=size)
        self.lagged = False
        self.wakeup = asyncio.Event()

    def __call__(self, kind: ChangeKind, record: CallRecord) -> None:
        if len(self.pending) == self.pending.maxlen:
            self.lagged = True  # the deque drops the oldest change
        self.pending.append((kind, record))
        self.wakeup.set()


class SessionEvents:
    """Fans registry changes out to Server-Sent Events streams, one bounded queue each."""

    def __init__(
        self,
        registry: CallRegistry,
        *,
        queue_size: int = QUEUE_SIZE,
        keepalive: float = KEEPALIVE_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.registry = registry
        "Where the changes come from."
        self.queue_size = queue_size
        "Changes kept per client before the oldest are dropped."
        self.keepalive = keepalive
        "Seconds of silence before a keep-alive comment."
        self._clock = clock
        self._subscribers: set[_Subscriber] = set()
        self._closed = False

    @property
    def subscribers(self) -> int:
        """Streams currently open."""
        return len(self._subscribers)

    def close(self) -> None:
        """End every open stream (and refuse new ones): call before stopping the server."""
        self._closed = True
        for subscriber in self._subscribers:
            subscriber.wakeup.set()

    def snapshot(self) -> str:
        """A ``snapshot`` event: every live call, and the server's clock for ticking durations."""
        sessions = [live_summary(record) for record in self.registry.active()]
        return _sse("snapshot", {"server_time": self._clock(), "sessions": sessions})

    async def stream(self) -> AsyncGenerator[str, None]:
        """The event stream of one client; unsubscribes when closed or cancelled."""
        if self._closed:
            return
        subscriber = _Subscriber(self.queue_size)
        self.registry.subscribe(subscriber)
        self._subscribers.add(subscriber)
        logger.debug("event stream opened (%d open)", len(self._subscribers))
        try:
            yield f"retry: {RECONNECT_MS}\n\n" + self.snapshot()
            while not self._closed:
                if not subscriber.pending:
                    subscriber.wakeup.clear()
                    try:
                        await asyncio.wait_for(subscriber.wakeup.wait(), self.keepalive)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                    continue
                batch = list(subscriber.pending)
                subscriber.pending.clear()
                if subscriber.lagged:
                    subscriber.lagged = False
                    logger.debug("event stream fell behind: sending a snapshot")
                    yield self.snapshot()
                    continue
                yield "".join(
                    _sse(str(kind), live_summary(record)) for kind, record in _coalesce(batch)
                )
        finally:
            self.registry.unsubscribe(subscriber)
            self._subscribers.discard(subscriber)
            logger.debug("event stream closed (%d open)", len(self._subscribers))


def add_dashboard(app: FastAPI, api: APIRouter, events: SessionEvents) -> None:
    """Serve the page and its assets on ``app`` and the event stream on ``api``.

    ``api`` carries the authentication; call this before ``app.include_router(api)``.
    """

    @app.get("/", include_in_schema=False)
    async def dashboard_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    # check_dir=False: an install without the package data still serves the API.
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")

    @api.get(
        "/events",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "Call changes."}},
    )
    async def session_events() -> StreamingResponse:
        """Server-Sent Events: a ``snapshot``, then ``added``/``updated``/``removed`` calls."""
        return StreamingResponse(
            events.stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
