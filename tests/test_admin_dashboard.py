from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets

from admin.app import create_app
from admin.dashboard import SessionEvents, live_summary
from admin.server import start_admin
from sipagent.registry import CallRecord, CallRegistry, CallState, RtpSnapshot
from tests.peers.audio import write_wav

TOKEN = "dashboard-token"
ARTIFACTS = Path(__file__).parent / ".artifacts"
BROWSER_TIMEOUT = 20.0


def make_record(n: int, *, answered_ago: float | None = None) -> CallRecord:
    now = time.time()
    return CallRecord(
        session_id=f"s{n:011d}",
        call_id=f"c{n}@host",
        from_uri=f"sip:+1555000{n:04d}@trunk.example",
        to_uri="sip:agent@sipagent.example",
        created_at=now - (answered_ago or 0) - 2,
        model="echo",
        caller_number=f"+1555000{n:04d}",
        state=CallState.ANSWERED if answered_ago is not None else CallState.RINGING,
        codec="PCMU",
        answered_at=now - answered_ago if answered_ago is not None else None,
    )


def parse(chunk: str) -> list[tuple[str, dict[str, Any]]]:
    """The events of a chunk of the stream, comments and retry lines skipped."""
    events = []
    for block in chunk.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


# -- the event stream, without HTTP -------------------------------------------------------------


def test_live_summary() -> None:
    record = make_record(1)
    record.transcript.extend({"role": "caller", "text": f"line {n}"} for n in range(5))
    record.turns.extend([{"latency_ms": 700.0}, {"latency_ms": 420.5}])
    record.tool_calls.append({"name": "lookup"})
    record.dtmf.extend("12#")
    summary = live_summary(record)
    assert summary["session_id"] == "s00000000001"
    assert summary["from"] == "sip:+15550000001@trunk.example"
    assert summary["caller_number"] == "+15550000001"
    assert summary["last_latency_ms"] == 420.5
    assert summary["turn_count"] == 2
    assert summary["tool_call_count"] == 1
    assert summary["dtmf"] == "12#"
    assert summary["transcript_count"] == 5
    assert summary["transcript_tail"] == [
        {"role": "caller", "text": "line 2"},
        {"role": "caller", "text": "line 3"},
        {"role": "caller", "text": "line 4"},
    ]
    assert live_summary(make_record(2))["last_latency_ms"] is None


async def test_stream_snapshot_then_changes() -> None:
    registry = CallRegistry()
    registry.add(make_record(1))
    events = SessionEvents(registry, clock=lambda: 1234.5)
    stream = events.stream()
    first = await anext(stream)
    assert first.startswith("retry: 3000\n\n")
    [(kind, snapshot)] = parse(first)
    assert kind == "snapshot"
    assert snapshot["server_time"] == 1234.5
    assert [s["session_id"] for s in snapshot["sessions"]] == ["s00000000001"]
    assert events.subscribers == 1

    record = make_record(2)
    registry.add(record)
    record.state = CallState.ANSWERED
    registry.touch(record)
    registry.touch(record)
    registry.remove("s00000000001")
    # One batch; the repeated updates of one call go out once, with its latest state.
    batch = parse(await anext(stream))
    assert [(kind, s["session_id"]) for kind, s in batch] == [
        ("added", "s00000000002"),
        ("updated", "s00000000002"),
        ("removed", "s00000000001"),
    ]
    assert batch[0][1]["state"] == "answered"
    assert batch[2][1]["state"] == "ended"

    await stream.aclose()
    assert events.subscribers == 0
    assert registry._listeners == []


async def test_overflow_drops_oldest_and_resends_a_snapshot() -> None:
    registry = CallRegistry()
    events = SessionEvents(registry, queue_size=3)
    stream = events.stream()
    await anext(stream)
    for n in range(1, 6):
        registry.add(make_record(n))
    registry.remove("s00000000005")
    [(kind, snapshot)] = parse(await anext(stream))
    assert kind == "snapshot"
    assert [s["session_id"] for s in snapshot["sessions"]] == [f"s{n:011d}" for n in range(1, 5)]
    # Back to single changes afterwards.
    registry.remove("s00000000001")
    assert [kind for kind, _ in parse(await anext(stream))] == ["removed"]
    await stream.aclose()


async def test_keep_alive_and_close() -> None:
    registry = CallRegistry()
    events = SessionEvents(registry, keepalive=0.01)
    stream = events.stream()
    await anext(stream)
    async with asyncio.timeout(5):
        assert await anext(stream) == ": keep-alive\n\n"
    waiting = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    events.close()
    async with asyncio.timeout(5):
        with pytest.raises(StopAsyncIteration):
            await waiting
    assert events.subscribers == 0
    # A closed broker opens no new streams.
    assert [chunk async for chunk in events.stream()] == []


def test_queue_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="queue_size"):
        SessionEvents(CallRegistry(), queue_size=0)


# -- the page in a real browser ---------------------------------------------------------------


def chromium_binary() -> str | None:
    for name in (os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        if name and (path := shutil.which(name)):
            return path
    return None


class DevTools:
    """A minimal Chrome DevTools Protocol client for one page."""

    def __init__(self, connection: websockets.ClientConnection) -> None:
        self.connection = connection
        self.errors: list[str] = []
        self._next_id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        request_id = self._next_id
        await self.connection.send(
            json.dumps({"id": request_id, "method": method, "params": params})
        )
        while True:
            message = json.loads(await self.connection.recv())
            if message.get("method") == "Runtime.exceptionThrown":
                self.errors.append(json.dumps(message["params"]["exceptionDetails"]))
            elif message.get("method") == "Runtime.consoleAPICalled":
                if message["params"]["type"] == "error":
                    self.errors.append(json.dumps(message["params"]["args"]))
            elif message.get("id") == request_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def navigate(self, url: str) -> None:
        """Open ``url`` and wait until it has loaded."""
        await self.call("Page.navigate", url=url)
        await self.wait_for(
            f"location.href === {json.dumps(url)} && document.readyState === 'complete'", url
        )

    async def wait_for(self, expression: str, what: str) -> Any:
        """Poll ``expression`` until it is truthy."""
        try:
            async with asyncio.timeout(BROWSER_TIMEOUT):
                while not (value := await self.evaluate(expression)):
                    await asyncio.sleep(0.05)
        except TimeoutError:
            body = await self.evaluate("document.body.innerText")
            raise AssertionError(f"page never showed {what}; it shows:\n{body}") from None
        return value


@contextlib.asynccontextmanager
async def chromium(binary: str, profile: Path) -> AsyncIterator[DevTools]:
    """Headless Chromium on a blank page, driven over its DevTools WebSocket."""
    log = (profile.parent / "chromium.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-proxy-server",
        "--window-size=1280,1000",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "about:blank",
        stdout=log,
        stderr=log,
        start_new_session=True,  # the Debian launcher is a shell script: stop its whole group
    )
    try:
        port_file = profile / "DevToolsActivePort"
        async with asyncio.timeout(BROWSER_TIMEOUT):
            while not port_file.exists() or not port_file.read_text().strip():
                if process.returncode is not None:
                    raise RuntimeError(f"chromium exited with {process.returncode}")
                await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        async with httpx.AsyncClient(trust_env=False) as client:
            targets = (await client.get(f"http://127.0.0.1:{port}/json/list")).json()
        page = next(target for target in targets if target["type"] == "page")
        async with websockets.connect(page["webSocketDebuggerUrl"], max_size=None) as connection:
            devtools = DevTools(connection)
            await devtools.call("Runtime.enable")
            await devtools.call("Page.enable")
            yield devtools
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        log.close()


class IdleController:
    def __init__(self) -> None:
        self.hangups: list[str] = []

    async def hangup(self, session_id: str) -> bool:
        self.hangups.append(session_id)
        return True

    def ready(self) -> dict[str, object]:
        return {"ready": True}


def row(session_id: str) -> str:
    return f"document.querySelector('#call-rows tr[data-session=\"{session_id}\"]')"


def has_row(session_id: str) -> str:
    return f"!!{row(session_id)}"


async def test_dashboard_in_headless_chromium(tmp_path: Path) -> None:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("Chromium is not installed (Debian package `chromium`, see .ci/setup)")
    registry = CallRegistry()
    waiting = make_record(1)
    registry.add(waiting)
    controller = IdleController()
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    wav = recordings / "s00000000002.wav"
    write_wav(wav, np.zeros(800, dtype=np.int16))  # 0.1 s of silence
    app = create_app(registry, controller, token=TOKEN, recordings_dir=recordings)
    admin = await start_admin(app, "127.0.0.1", 0)
    try:
        async with chromium(binary, tmp_path / "profile") as page:
            await page.navigate(f"{admin.url}/")

            # The token is asked for once, on the first 401.
            await page.wait_for("!document.getElementById('token-form').hidden", "the token form")
            await page.evaluate(
                f"document.getElementById('token-input').value = {json.dumps(TOKEN)};"
                "document.getElementById('token-form').requestSubmit()"
            )
            await page.wait_for(
                "document.getElementById('connection').dataset.state === 'live'", "'live'"
            )
            assert await page.evaluate("sessionStorage.getItem('sipagent.admin.token')") == TOKEN
            # The call that was there before the page: from the snapshot.
            await page.wait_for(has_row("s00000000001"), "the snapshot row")

            # A new call appears by SSE.
            call = make_record(2, answered_ago=65)
            call.rtp = RtpSnapshot(packets_in=3250, packets_out=3240, lost=3, jitter_ms=4.25)
            call.recording_path = str(wav)
            registry.add(call)
            await page.wait_for(has_row("s00000000002"), "the added row")
            cells = await page.evaluate(
                f"[...{row('s00000000002')}.cells].map(cell => cell.innerText)"
            )
            assert cells[0].startswith("+15550000002")
            assert cells[1] == "answered"
            assert cells[2] in ("1:04", "1:05", "1:06", "1:07")  # ticks client-side
            assert cells[3] == "PCMU"
            assert cells[4:7] == ["3250 / 3240", "3", "4.25 ms"]
            assert await page.evaluate("document.getElementById('call-count').innerText") == "2"

            # Its transcript and latency follow.
            call.transcript.append({"role": "caller", "text": "Hi, where is my order?"})
            call.transcript.append({"role": "agent", "text": "Let me look that up <b>now</b>."})
            call.turns.append({"latency_ms": 612.4})
            call.tool_calls.append(
                {
                    "name": "lookup_order",
                    "arguments": {"order": 42},
                    "result": {"status": "shipped"},
                    "error": None,
                    "duration_ms": 85.0,
                }
            )
            registry.touch(call)
            await page.wait_for(
                f"{row('s00000000002')}.innerText"
                ".includes('agent: Let me look that up <b>now</b>.')",
                "the transcript line, as text",
            )
            assert await page.evaluate(f"{row('s00000000002')}.cells[7].innerText") == "612 ms"

            # The call page: details, full transcript, actions.
            await page.evaluate(f"{row('s00000000002')}.click()")
            await page.wait_for(
                "document.getElementById('transcript').children.length === 2", "the transcript"
            )
            assert "session=s00000000002" in await page.evaluate("location.search")
            assert await page.evaluate("document.getElementById('call-title').innerText") == (
                "Call from +15550000002"
            )
            assert await page.evaluate("document.getElementById('tool-calls').innerText") == (
                'lookup_order\t{"order":42}\t{"status":"shipped"}\t85'
            )
            assert not await page.evaluate("document.getElementById('hangup').disabled")
            # The recording: a button that fetches the WAV with the token, saved from a blob.
            recording = "document.querySelector('[data-fact=recording] button')"
            assert await page.evaluate(f"{recording}.innerText") == "Download WAV"
            await page.evaluate(
                "window.savedBlobs = []; const made = URL.createObjectURL;"
                "URL.createObjectURL = (blob) => { window.savedBlobs.push(blob.size);"
                " return made(blob); };"
                f"{recording}.click()"
            )
            await page.wait_for("window.savedBlobs.length === 1", "the recording download")
            assert await page.evaluate("window.savedBlobs[0]") == wav.stat().st_size
            ARTIFACTS.mkdir(exist_ok=True)
            shot = await page.call(
                "Page.captureScreenshot", format="png", captureBeyondViewport=True
            )
            (ARTIFACTS / "dashboard.png").write_bytes(base64.b64decode(shot["data"]))

            # Hang up asks for a second click; this server cannot transfer.
            await page.evaluate("document.getElementById('hangup').click()")
            assert controller.hangups == []
            await page.evaluate("document.getElementById('hangup').click()")
            await page.wait_for(
                "document.getElementById('action-status').innerText === 'Hanging up…'", "hangup"
            )
            assert controller.hangups == ["s00000000002"]
            await page.evaluate(
                "document.getElementById('transfer-target').value = 'sip:desk@pbx.example';"
                "document.getElementById('transfer-form').requestSubmit()"
            )
            await page.wait_for(
                "document.getElementById('action-status').innerText"
                " === 'this server cannot transfer calls'",
                "the transfer refusal",
            )

            # The call ends: its row goes, the open call page shows it ended.
            call.end_reason = "remote-bye"
            registry.remove(call.session_id)
            await page.wait_for(f"!{has_row('s00000000002')}", "the row gone")
            await page.wait_for(
                "document.getElementById('hangup').disabled", "the actions disabled"
            )
            assert await page.evaluate("document.getElementById('call-count').innerText") == "1"

            # A call's own page, opened by URL: the token is remembered for the session.
            await page.navigate(f"{admin.url}/?session=s00000000002")
            await page.wait_for(
                "document.querySelector('#call-facts .state')?.innerText === 'ended'",
                "the ended call's page",
            )
            assert await page.evaluate("document.getElementById('token-form').hidden")
            assert page.errors == []
    finally:
        app.state.events.close()
        await admin.stop()
    assert registry._listeners == []
