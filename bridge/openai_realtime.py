"""The ``openai`` model: the OpenAI Realtime API over the official SDK's WebSocket client.

A thin asyncio shell around the sans-I/O :class:`bridge.realtime.RealtimeSession`, like aioquic's
``asyncio/protocol.py`` around ``QuicConnection``: one WebSocket per call
(``AsyncOpenAI.realtime.connect``), one reader task feeding
:meth:`~bridge.realtime.RealtimeSession.receive_message`, one writer task draining
:meth:`~bridge.realtime.RealtimeSession.data_to_send`, one ``call_at`` timer, and one task per
running tool, so a slow tool never holds up audio.

Messages are read with the SDK connection's raw ``recv_bytes``: its ``recv()`` builds a pydantic
model per event (~50 µs per audio delta), and its typed ``send()`` transforms every event
(~110 µs for one audio append), both more than the whole per-frame budget in
/work/shared/PERF-NOTES.md. The core types its events with the SDK's own TypedDicts instead.

Sending is the hot path (50 appends per call-second): even ``send_raw`` costs a writer-task
wake-up, the SDK's reconnect send queue (it looks up the current anyio task per message) and
websockets' ``async with send_context()`` around each frame. So while the socket takes data, the
shell frames the core's messages with the websockets connection's sans-I/O protocol (the one the
SDK connection wraps) and writes them at once, in the call that produced them; only when the
transport pushes back (or that connection is not the kind expected) do they queue for the writer
task and ``send_raw``, which waits for the buffer to drain. The SDK still opens, authenticates
and closes the connection.

Failures to connect raise :class:`RealtimeConnectError` from :meth:`OpenAIRealtimeModel.open`
(with a ``reason`` the call can act on); a mid-call drop becomes :class:`~bridge.base.ModelClosed`,
an ``error`` event :class:`~bridge.base.ModelError`. Nothing raises out of the call-facing methods.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from openai import AsyncOpenAI, OpenAIError
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.protocol import State

from .base import (
    AudioOut,
    CallContext,
    FunctionCallRequested,
    ModelClosed,
    ModelError,
    ModelEvent,
    ModelSession,
    ModelSink,
)
from .realtime import (
    CoreEvent,
    RealtimeSession,
    SessionReady,
    ToolCallCancelled,
    ToolCallFinished,
    TurnLatency,
)
from .realtime_config import RealtimeConfig
from .tools import NoTools, ToolAdapter, ToolContext, ToolError, ToolReturn

__all__ = [
    "Observation",
    "OpenAIRealtimeModel",
    "RealtimeConnectError",
    "config_from_settings",
    "create_openai_model",
]

logger = logging.getLogger(__name__)


class _CallLog(logging.LoggerAdapter[logging.Logger]):
    """Every line carries the Call-ID (``extra``), like the call's own log."""

    def process(self, msg: str, kwargs: Any) -> tuple[str, Any]:
        # sipagent.logs prints the Call-ID from the record, not from the text.
        return msg, {**kwargs, "extra": {**(self.extra or {}), **kwargs.get("extra", {})}}


Observation = ToolCallFinished | TurnLatency
"""Records the call may log or export: finished tool calls and per-turn latency."""

_OUTBOX_LIMIT: Final = 1000  # ~20 s of appends: the link is stalled, not slow
_CLOSE_TIMEOUT: Final = 2.0


class RealtimeConnectError(ConnectionError):
    """The Realtime API could not be reached, or refused the session.

    ``reason`` is one of ``refused`` (nothing listening / DNS), ``unauthorized`` (401/403),
    ``rate_limited`` (429), ``rejected`` (another HTTP status, or an ``error`` event before the
    session was ready), ``closed`` (the server hung up during set-up), ``timeout`` and ``config``
    (no API key, bad URL). ``retryable`` says whether trying again later may succeed.
    """

    def __init__(self, reason: str, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        "Why, as one word (see the class docstring)."
        self.status = status
        "The HTTP status of a rejected WebSocket upgrade, if that is what happened."

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later (overload, network), unlike a bad key."""
        if self.reason == "rejected" and self.status is not None:
            return self.status >= 500
        return self.reason in ("refused", "rate_limited", "closed", "timeout")


def _connect_error(exc: BaseException) -> RealtimeConnectError:
    if isinstance(exc, RealtimeConnectError):
        return exc
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        body = exc.response.body.decode("utf-8", "replace")[:200] if exc.response.body else ""
        reason = {401: "unauthorized", 403: "unauthorized", 429: "rate_limited"}.get(
            status, "rejected"
        )
        detail = f"HTTP {status}" + (f": {body}" if body else "")
        return RealtimeConnectError(
            reason, f"Realtime API refused the connection ({detail})", status=status
        )
    if isinstance(exc, TimeoutError):
        return RealtimeConnectError("timeout", "Realtime API did not become ready in time")
    if isinstance(exc, ConnectionClosed):
        return RealtimeConnectError("closed", f"Realtime API closed the connection ({exc})")
    if isinstance(exc, OSError):
        return RealtimeConnectError("refused", f"cannot reach the Realtime API ({exc})")
    if isinstance(exc, OpenAIError | InvalidURI | ValueError):
        return RealtimeConnectError("config", f"cannot connect to the Realtime API: {exc}")
    if isinstance(exc, InvalidHandshake):
        return RealtimeConnectError("rejected", f"Realtime API handshake failed ({exc})")
    return RealtimeConnectError("rejected", f"cannot connect to the Realtime API: {exc!r}")


def _websocket_of(connection: AsyncRealtimeConnection) -> ClientConnection | None:
    """The websockets connection the SDK connection wraps, or None if it is not one."""
    websocket = getattr(connection, "_connection", None)
    return websocket if isinstance(websocket, ClientConnection) else None


def _write_now(websocket: ClientConnection, messages: list[str]) -> bool:
    """Frame ``messages`` as text frames and write them to the socket; False (nothing sent)
    when the connection is not open or its transport pushes back."""
    transport = websocket.transport
    protocol = websocket.protocol
    if protocol.state is not State.OPEN or websocket.paused or transport.is_closing():
        return False
    for message in messages:
        protocol.send_text(message.encode())
    chunks = protocol.data_to_send()
    if len(chunks) == 1:
        transport.write(chunks[0])
    else:
        transport.write(b"".join(chunks))
    return True


class OpenAIRealtimeModel(ModelSession):
    """One call's conversation with the OpenAI Realtime API."""

    name = "openai"

    def __init__(
        self,
        config: RealtimeConfig | None = None,
        *,
        client: AsyncOpenAI | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        websocket_base_url: str | None = None,
        tools: ToolAdapter | None = None,
        observer: Callable[[Observation], None] | None = None,
        open_timeout: float = 10.0,
    ) -> None:
        self.config = config or RealtimeConfig()
        self._client = client
        self._client_args: dict[str, Any] = {
            "api_key": api_key,
            "base_url": base_url,
            "websocket_base_url": websocket_base_url,
        }
        self._tools = tools or NoTools()
        self._observer = observer
        self._open_timeout = open_timeout
        self._context: CallContext | None = None
        self._log = _CallLog(logger, {"call_id": "?"})
        self._sink: ModelSink | None = None
        self._core: RealtimeSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connection: AsyncRealtimeConnection | None = None
        self._websocket: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._outbox: deque[str] = deque()
        self._outbox_ready = asyncio.Event()
        self._writer_busy = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tool_tasks: dict[str, asyncio.Task[None]] = {}
        self._settled = asyncio.Event()
        self._ready = False
        self._failure: RealtimeConnectError | None = None
        self._pumping = False
        self._closed = False
        self.tool_calls: list[ToolCallFinished] = []
        "Every tool call answered in this call, in order."
        self.turn_latencies_ms: list[float] = []
        "Per caller turn: speech stopped → first reply frame, in milliseconds."
        self.sends_queued = 0
        "Messages that waited for the socket to drain instead of being written at once."

    @property
    def session(self) -> RealtimeSession | None:
        """The protocol core (counters, state), once opened."""
        return self._core

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    # -- opening -------------------------------------------------------------------------
    async def open(self, context: CallContext, sink: ModelSink) -> None:
        if self._closed or self._core is not None:
            raise RuntimeError("openai model session cannot be opened twice")
        loop = self._loop = asyncio.get_running_loop()
        self._context, self._sink = context, sink
        self._log = _CallLog(logger, {"call_id": context.call_id})
        try:
            self._core = RealtimeSession(
                self.config, codec=context.codec, tools=self._tools.tools()
            )
            async with asyncio.timeout(self._open_timeout):
                await self._connect()
                if self._closed:
                    return
                self._core.start(loop.time())
                self._pump()
                await self._settled.wait()
        except Exception as exc:
            error = _connect_error(exc)
            self._log.info("%s", error)
            await self._shutdown()
            raise error from exc
        if self._failure is not None:
            await self._shutdown()
            raise self._failure
        if not self._closed:
            self._log.debug("realtime session ready (%s)", self.config.model)

    async def _connect(self) -> None:
        client = self._client
        if client is None:
            client = self._client = AsyncOpenAI(**self._client_args)
        manager = client.realtime.connect(model=self.config.model)
        connection = await manager.enter()
        if self._closed:  # close() ran while the handshake was in flight
            await connection.close()
            return
        self._connection = connection
        self._websocket = _websocket_of(connection)
        self._reader = asyncio.create_task(self._read(connection), name="realtime-reader")
        self._writer = asyncio.create_task(self._write(connection), name="realtime-writer")

    # -- the call's side -----------------------------------------------------------------
    def push_audio(self, payload: bytes) -> None:
        core, loop = self._core, self._loop
        if core is None or loop is None or self._closed:
            return
        try:
            # The loop kept from open(): get_running_loop() costs a getpid() syscall per frame.
            core.push_audio(payload, loop.time())
            self._pump()
        except Exception:
            self._log.exception("realtime: push_audio failed")

    def send_dtmf(self, digit: str) -> None:
        core = self._core
        if core is None or self._closed:
            return
        try:
            core.send_dtmf(digit, asyncio.get_running_loop().time())
            self._pump()
        except Exception:
            self._log.exception("realtime: send_dtmf failed")

    def send_note(self, text: str) -> None:
        core = self._core
        if core is None or self._closed:
            return
        try:
            core.send_note(text, asyncio.get_running_loop().time())
            self._pump()
        except Exception:
            self._log.exception("realtime: send_note failed")

    def audio_interrupted(self, item_id: str | None, played_ms: int) -> None:
        core = self._core
        if core is None or self._closed:
            return
        try:
            core.audio_interrupted(item_id, played_ms, asyncio.get_running_loop().time())
            self._pump()
        except Exception:
            self._log.exception("realtime: audio_interrupted failed")

    def send_function_result(self, call_id: str, output: str) -> None:
        """Answer a function call from outside (first answer wins over the tool adapter's)."""
        core = self._core
        if core is None or self._closed:
            return
        try:
            if core.tool_result(call_id, output, asyncio.get_running_loop().time()):
                task = self._tool_tasks.pop(call_id, None)
                if task is not None:
                    task.cancel()
            self._pump()
        except Exception:
            self._log.exception("realtime: send_function_result failed")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sink = None
        self._settled.set()
        if self._core is not None:
            self._core.close(asyncio.get_running_loop().time())
        await self._shutdown()

    async def _shutdown(self) -> None:
        """Stop the timer, tasks and connection; safe to call more than once."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        tasks = [*self._tool_tasks.values(), self._reader, self._writer]
        self._tool_tasks.clear()
        current = asyncio.current_task()
        running = [task for task in tasks if task is not None and task is not current]
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        connection, self._connection = self._connection, None
        self._websocket = None
        if connection is not None:
            try:
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await connection.close()
            except Exception as exc:  # already gone, or the peer does not answer the close
                self._log.debug("realtime: closing the connection: %r", exc)

    # -- the connection's side -----------------------------------------------------------
    async def _read(self, connection: AsyncRealtimeConnection) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await connection.recv_bytes()
                core = self._core
                if core is None:
                    return
                core.receive_message(data, loop.time())
                self._pump()
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            detail = f": {exc.rcvd.reason}" if exc.rcvd is not None and exc.rcvd.reason else ""
            self._lost(f"Realtime connection closed (code {code}{detail})")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._log.exception("realtime: reader failed")
            self._lost(f"Realtime connection failed: {exc!r}")

    async def _write(self, connection: AsyncRealtimeConnection) -> None:
        """The slow path: what could not be written at once, sent as the socket drains."""
        outbox, ready = self._outbox, self._outbox_ready
        try:
            while True:
                await ready.wait()
                ready.clear()
                self._writer_busy = True
                while outbox:
                    await connection.send_raw(outbox.popleft())
                self._writer_busy = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the reader sees the close too; report the first cause
            self._lost(f"Realtime connection failed while sending: {exc!r}")

    def _lost(self, reason: str) -> None:
        core = self._core
        if core is None or self._closed:
            return
        core.connection_lost(reason, asyncio.get_running_loop().time())
        self._pump()

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        core = self._core
        if core is None or self._closed:
            return
        try:
            core.handle_timer(asyncio.get_running_loop().time())
            self._pump()
        except Exception:
            self._log.exception("realtime: timer failed")

    # -- plumbing --------------------------------------------------------------------------
    def _pump(self) -> None:
        """Act on everything the core produced: events, data to send, the next deadline."""
        core = self._core
        if core is None or self._pumping:
            return  # re-entered from the sink: the outer loop picks up what was added
        self._pumping = True
        try:
            while (event := core.next_event()) is not None:
                self._handle(event)
            data = core.data_to_send()
            if data and self._connection is not None and not self._closed:
                failure = self._send(data)
                if failure is not None:
                    core.connection_lost(failure, asyncio.get_running_loop().time())
                    while (event := core.next_event()) is not None:
                        self._handle(event)
            self._arm_timer(core.get_timer())
        finally:
            self._pumping = False

    def _send(self, data: list[str]) -> str | None:
        """Write ``data`` now if the socket takes it, else queue it in order for the writer;
        returns why the connection must be given up, or None."""
        outbox = self._outbox
        websocket = self._websocket
        if websocket is not None and not outbox and not self._writer_busy:
            try:
                if _write_now(websocket, data):
                    return None
            except Exception as exc:
                return f"Realtime connection failed while sending: {exc!r}"
        outbox.extend(data)
        self.sends_queued += len(data)
        self._outbox_ready.set()
        if len(outbox) > _OUTBOX_LIMIT:
            outbox.clear()
            return "Realtime connection stalled (send queue full)"
        return None

    def _arm_timer(self, when: float | None) -> None:
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = (
            None if when is None else asyncio.get_running_loop().call_at(when, self._on_timer)
        )

    def _handle(self, event: CoreEvent) -> None:
        if type(event) is AudioOut:  # nearly every event: skip the other checks
            self._deliver(event)
        elif isinstance(event, SessionReady):
            self._ready = True
            self._settled.set()
        elif isinstance(event, FunctionCallRequested):
            self._start_tool(event)
            self._deliver(event)
        elif isinstance(event, ToolCallCancelled):
            task = self._tool_tasks.pop(event.call_id, None)
            if task is not None:
                task.cancel()
        elif isinstance(event, ToolCallFinished | TurnLatency):
            self._observe(event)
        elif not self._ready and isinstance(event, ModelError | ModelClosed):
            # Set-up failed: open() raises instead of the call hearing about it.
            if self._failure is None:
                if isinstance(event, ModelError):
                    self._failure = RealtimeConnectError("rejected", event.message)
                else:
                    self._failure = RealtimeConnectError("closed", event.reason)
            if isinstance(event, ModelClosed) or event.fatal:
                self._settled.set()
        else:
            self._deliver(event)

    def _deliver(self, event: ModelEvent) -> None:
        sink = self._sink
        if sink is None:
            return
        try:
            sink(event)
        except Exception:
            self._log.exception("realtime: the call's sink failed on %s", type(event).__name__)

    def _observe(self, event: Observation) -> None:
        if isinstance(event, ToolCallFinished):
            self.tool_calls.append(event)
            self._log.info(
                "tool %s (%s) answered in %.0f ms%s",
                event.name,
                event.call_id,
                event.duration_ms,
                f": {event.error_type}" if event.error_type else "",
            )
        else:
            self.turn_latencies_ms.append(event.latency_ms)
        if self._observer is not None:
            try:
                self._observer(event)
            except Exception:
                self._log.exception("realtime: observer failed")

    # -- tools -----------------------------------------------------------------------------
    def _start_tool(self, event: FunctionCallRequested) -> None:
        core, call = self._core, self._context
        if core is None or call is None or self._closed:
            return
        context = ToolContext(call=call, function_call_id=event.call_id, dtmf=core.dtmf)
        self._tool_tasks[event.call_id] = asyncio.get_running_loop().create_task(
            self._run_tool(event, context), name=f"tool-{event.name}"
        )

    async def _run_tool(self, event: FunctionCallRequested, context: ToolContext) -> None:
        call_id = event.call_id
        error: tuple[str, str] | None = None
        output: Any = None
        update: ToolReturn | None = None
        try:
            result = await self._tools.call(event.name, event.arguments, context)
        except asyncio.CancelledError:
            raise
        except ToolError as exc:
            error = (exc.type, str(exc) or exc.type)
        except Exception as exc:
            self._log.warning("tool %s (%s) raised", event.name, call_id, exc_info=True)
            error = ("tool_error", f"{type(exc).__name__}: {exc}")
        else:
            if isinstance(result, ToolReturn):
                update, output = result, result.output
            else:
                output = result
        finally:
            self._tool_tasks.pop(call_id, None)
        core = self._core
        if core is None or self._closed:
            return
        now = asyncio.get_running_loop().time()
        if error is None:
            try:
                text = json.dumps(output)
            except (TypeError, ValueError) as exc:
                error = ("invalid_result", f"the tool's result is not JSON: {exc}")
            else:
                if update is not None and event.call_id in core.pending_calls:
                    core.update_session(instructions=update.instructions, tools=update.tools)
                core.tool_result(call_id, text, now)
        if error is not None:
            core.tool_failed(call_id, error[0], error[1], now)
        self._pump()


def _setting(settings: object | None, name: str, default: Any) -> Any:
    return getattr(settings, name, default) if settings is not None else default


def config_from_settings(settings: object | None) -> RealtimeConfig:
    """A :class:`RealtimeConfig` from ``realtime_<field>`` settings; absent ones keep defaults."""
    values = {
        name: getattr(settings, f"realtime_{name}")
        for name in RealtimeConfig.__dataclass_fields__
        if settings is not None and hasattr(settings, f"realtime_{name}")
    }
    return RealtimeConfig(**values)


_CLIENTS: dict[tuple[str | None, str | None, str | None], AsyncOpenAI] = {}


def create_openai_model(
    settings: object | None,
    *,
    tools: ToolAdapter | None = None,
    observer: Callable[[Observation], None] | None = None,
) -> OpenAIRealtimeModel:
    """A new session configured from ``settings``; calls share one SDK client per key and URL.

    Reads ``openai_api_key`` (a ``SecretStr`` or text; None: ``OPENAI_API_KEY``),
    ``openai_base_url`` (None: the SDK's ``OPENAI_BASE_URL`` or the default),
    ``openai_websocket_base_url`` (None: ``OPENAI_WEBSOCKET_BASE_URL``, else derived from the
    base URL), ``realtime_open_timeout`` and every ``realtime_<field>`` of :class:`RealtimeConfig`.
    """
    secret = _setting(settings, "openai_api_key", None)
    api_key = secret.get_secret_value() if hasattr(secret, "get_secret_value") else secret
    base_url = _setting(settings, "openai_base_url", None)
    websocket_base_url = _setting(settings, "openai_websocket_base_url", None) or os.environ.get(
        "OPENAI_WEBSOCKET_BASE_URL"
    )
    # The SDK reads OPENAI_API_KEY / OPENAI_BASE_URL when these are None: key the cache on them.
    key = (
        api_key or os.environ.get("OPENAI_API_KEY"),
        base_url or os.environ.get("OPENAI_BASE_URL"),
        websocket_base_url,
    )
    client = _CLIENTS.get(key)
    if client is None:
        try:
            client = _CLIENTS[key] = AsyncOpenAI(
                api_key=api_key, base_url=base_url, websocket_base_url=websocket_base_url
            )
        except OpenAIError:
            client = None  # no key anywhere: open() reports it as a 'config' failure
    return OpenAIRealtimeModel(
        config_from_settings(settings),
        client=client,
        api_key=api_key,
        base_url=base_url,
        websocket_base_url=websocket_base_url,
        tools=tools,
        observer=observer,
        open_timeout=float(_setting(settings, "realtime_open_timeout", 10.0)),
    )
