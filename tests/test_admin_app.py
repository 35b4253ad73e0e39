from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from admin.app import (
    CallController,
    HistoryLike,
    HistoryLookup,
    TransferController,
    create_app,
)
from admin.dashboard import SessionEvents
from admin.metrics import Metrics
from admin.server import AdminServer, start_admin
from sipagent.registry import CallRecord, CallRegistry, CallState
from tests.test_admin_metrics import METRIC_NAMES

T0 = 1_714_564_800.0
TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Bounds every wait on a live event stream.
STREAM_TIMEOUT = 5.0


class RecordingController:
    """Hangs calls up in the registry, as the server would, and remembers which."""

    def __init__(self, registry: CallRegistry) -> None:
        self.registry = registry
        self.hangups: list[str] = []
        self.is_ready = True

    async def hangup(self, session_id: str) -> bool:
        self.hangups.append(session_id)
        record = self.registry.get(session_id)
        if record is None or record.ended:
            return False
        record.end_reason = "admin"
        return True

    def ready(self) -> dict[str, object]:
        return {"ready": self.is_ready, "transports": ["udp:127.0.0.1:5060"], "calls": 2}


class TransferringController(RecordingController):
    """Also transfers calls, as a server with REFER support would."""

    def __init__(self, registry: CallRegistry) -> None:
        super().__init__(registry)
        self.transfers: list[tuple[str, str]] = []
        self.refuse: str | None = None
        self.started = True

    async def transfer(self, session_id: str, target: str) -> bool:
        self.transfers.append((session_id, target))
        if self.refuse is not None:
            raise ValueError(self.refuse)
        return self.started


class FakeHistory:
    """A history store that remembers how it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, int]] = []

    async def list(self, limit: int, offset: int) -> Mapping[str, object]:
        self.asked.append((limit, offset))
        calls = [{"session_id": f"h{n}", "end_reason": "remote-bye"} for n in range(3)]
        return {"total": 3, "calls": calls[offset : offset + limit]}


class RacingController(RecordingController):
    """The call ends on its own just as the admin asks to hang it up."""

    async def hangup(self, session_id: str) -> bool:
        self.hangups.append(session_id)
        return False


def make_record(n: int, state: str) -> CallRecord:
    return CallRecord(
        session_id=f"s{n:011d}",
        call_id=f"c{n}@host",
        from_uri=f"sip:{n}@a",
        to_uri="sip:b@c",
        created_at=T0 + n,
        model="echo",
        state=state,
        codec="PCMU",
    )


def in_process_client(app: FastAPI) -> httpx.AsyncClient:
    """A client of ``app`` called in process, with no socket."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin")


@pytest.fixture
def registry() -> CallRegistry:
    registry = CallRegistry()
    registry.add(make_record(1, CallState.RINGING))
    registry.add(make_record(2, CallState.ANSWERED))
    registry.add(make_record(3, CallState.HELD))
    ended = make_record(4, CallState.ANSWERED)
    registry.add(ended)
    ended.end_reason = "bye"
    registry.remove(ended.session_id)
    return registry


@pytest.fixture
def controller(registry: CallRegistry) -> RecordingController:
    return RecordingController(registry)


@pytest.fixture
async def client(
    registry: CallRegistry, controller: RecordingController
) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_client(create_app(registry, controller)) as client:
        yield client


def test_controller_satisfies_protocol(controller: RecordingController) -> None:
    typed: CallController = controller
    assert typed is controller


async def test_health(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready(client: httpx.AsyncClient, controller: RecordingController) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json()["ready"] is True
    controller.is_ready = False
    response = await client.get("/ready")
    assert response.status_code == 503
    assert response.json() == {"ready": False, "transports": ["udp:127.0.0.1:5060"], "calls": 2}


async def test_list_active_sessions(client: httpx.AsyncClient) -> None:
    response = await client.get("/sessions")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3
    assert [s["session_id"] for s in body["sessions"]] == [
        "s00000000001",
        "s00000000002",
        "s00000000003",
    ]
    assert body["sessions"][0]["from"] == "sip:1@a"
    assert body["sessions"][0]["rtp"]["packets_in"] == 0


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("ringing", ["s00000000001"]),
        ("answered", ["s00000000002"]),
        ("held", ["s00000000003"]),
        ("ended", ["s00000000004"]),
    ],
)
async def test_list_sessions_by_state(
    client: httpx.AsyncClient, state: str, expected: list[str]
) -> None:
    response = await client.get("/sessions", params={"state": state})
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == len(expected)
    assert [s["session_id"] for s in body["sessions"]] == expected
    assert {s["state"] for s in body["sessions"]} == {state}


async def test_list_sessions_bad_state(client: httpx.AsyncClient) -> None:
    response = await client.get("/sessions", params={"state": "dancing"})
    assert response.status_code == 422


async def test_session_detail(client: httpx.AsyncClient) -> None:
    response = await client.get("/sessions/s00000000002")
    assert response.status_code == 200
    body = response.json()
    assert body["session_id"] == "s00000000002"
    assert body["created_at"] == "2024-05-01T12:00:02.000Z"
    assert body["transcript"] == []
    assert "dropped_malformed" in body["rtp"]


async def test_ended_session_detail(client: httpx.AsyncClient) -> None:
    response = await client.get("/sessions/s00000000004")
    assert response.status_code == 200
    assert response.json()["state"] == "ended"
    assert response.json()["end_reason"] == "bye"


async def test_unknown_session_detail(client: httpx.AsyncClient) -> None:
    response = await client.get("/sessions/nope")
    assert response.status_code == 404
    assert set(response.json()) == {"detail"}
    assert "nope" in response.json()["detail"]


async def test_hangup(client: httpx.AsyncClient, controller: RecordingController) -> None:
    response = await client.delete("/sessions/s00000000002")
    assert response.status_code == 202
    assert response.json() == {"status": "hanging up", "session_id": "s00000000002"}
    assert controller.hangups == ["s00000000002"]


async def test_hangup_unknown_or_ended(
    client: httpx.AsyncClient, controller: RecordingController
) -> None:
    for session_id in ("nope", "s00000000004"):
        response = await client.delete(f"/sessions/{session_id}")
        assert response.status_code == 404
        assert "detail" in response.json()
    assert controller.hangups == []


async def test_hangup_race_is_404(registry: CallRegistry) -> None:
    controller = RacingController(registry)
    async with in_process_client(create_app(registry, controller)) as client:
        response = await client.delete("/sessions/s00000000001")
    assert response.status_code == 404
    assert controller.hangups == ["s00000000001"]


def test_optional_protocols() -> None:
    registry = CallRegistry()
    assert isinstance(TransferringController(registry), TransferController)
    assert not isinstance(RecordingController(registry), TransferController)
    history: HistoryLike = FakeHistory()
    assert history is not None


# -- authentication -------------------------------------------------------------------------

# Every endpoint that needs the token, with the status it answers when given it.
PROTECTED = [
    ("GET", "/ready", None, 200),
    ("GET", "/sessions", None, 200),
    ("GET", "/sessions/s00000000002", None, 200),
    ("GET", "/sessions/s00000000002/recording", None, 404),
    ("DELETE", "/sessions/s00000000002", None, 202),
    ("POST", "/sessions/s00000000002/transfer", {"target": "sip:desk@pbx"}, 202),
    ("GET", "/metrics", None, 200),
    ("GET", "/history", None, 200),
    ("GET", "/registrations", None, 200),
    ("GET", "/events", None, 200),
]
PUBLIC = ["/health", "/", "/static/dashboard.js", "/static/dashboard.css", "/docs", "/openapi.json"]


@pytest.fixture
async def secured(registry: CallRegistry) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        registry,
        TransferringController(registry),
        token=TOKEN,
        metrics=Metrics(),
        history=FakeHistory(),
    )
    # Ended streams answer at once: httpx's ASGITransport waits for the whole body.
    app.state.events.close()
    async with in_process_client(app) as client:
        yield client


def test_every_api_route_is_listed(registry: CallRegistry) -> None:
    app = create_app(registry, RecordingController(registry), token=TOKEN)
    routes = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    listed = {
        (method, path.replace("s00000000002", "{session_id}")) for method, path, *_ in PROTECTED
    }
    public = {("GET", "/health")}
    assert routes - public == listed


@pytest.mark.parametrize(("method", "path", "body", "status"), PROTECTED)
async def test_protected_endpoints(
    secured: httpx.AsyncClient, method: str, path: str, body: object, status: int
) -> None:
    response = await secured.request(method, path, json=body)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"

    for wrong in ("Bearer nope", f"Bearer {TOKEN}x", f"Basic {TOKEN}", "Bearer "):
        response = await secured.request(method, path, json=body, headers={"Authorization": wrong})
        assert response.status_code == 401, wrong
        assert response.headers["www-authenticate"].startswith("Bearer")

    response = await secured.request(method, path, json=body, headers=AUTH)
    assert response.status_code == status


@pytest.mark.parametrize("path", PUBLIC)
async def test_public_endpoints(secured: httpx.AsyncClient, path: str) -> None:
    response = await secured.get(path)
    assert response.status_code == 200


async def test_openapi_documents_the_bearer_scheme(secured: httpx.AsyncClient) -> None:
    schema = (await secured.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert schema["paths"]["/sessions"]["get"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in schema["paths"]["/health"]["get"]


def test_empty_token_is_refused(registry: CallRegistry) -> None:
    with pytest.raises(ValueError, match="empty"):
        create_app(registry, RecordingController(registry), token="")


# -- dashboard page ---------------------------------------------------------------------------


async def test_dashboard_page(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert 'src="static/dashboard.js"' in response.text
    script = await client.get("/static/dashboard.js")
    assert script.status_code == 200
    assert "text/event-stream" in script.text


# -- transfer ---------------------------------------------------------------------------------


async def test_transfer_not_supported(client: httpx.AsyncClient) -> None:
    response = await client.post("/sessions/s00000000002/transfer", json={"target": "sip:a@b"})
    assert response.status_code == 501
    assert "transfer" in response.json()["detail"]


@pytest.fixture
def transferring(registry: CallRegistry) -> TransferringController:
    return TransferringController(registry)


@pytest.fixture
async def transfer_client(
    registry: CallRegistry, transferring: TransferringController
) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_client(create_app(registry, transferring)) as client:
        yield client


async def test_transfer_is_delegated(
    transfer_client: httpx.AsyncClient, transferring: TransferringController
) -> None:
    response = await transfer_client.post(
        "/sessions/s00000000002/transfer", json={"target": "sip:frontdesk@pbx.example"}
    )
    assert response.status_code == 202
    assert response.json() == {
        "status": "transferring",
        "session_id": "s00000000002",
        "target": "sip:frontdesk@pbx.example",
    }
    assert transferring.transfers == [("s00000000002", "sip:frontdesk@pbx.example")]


@pytest.mark.parametrize(
    "body",
    [{}, {"target": ""}, {"target": "sip:a@b\r\nX-Evil: 1"}, {"target": "<sip:a@b>"}, {"t": 1}],
)
async def test_transfer_bad_target(
    transfer_client: httpx.AsyncClient, transferring: TransferringController, body: object
) -> None:
    response = await transfer_client.post("/sessions/s00000000002/transfer", json=body)
    assert response.status_code == 422
    assert transferring.transfers == []


async def test_transfer_refused_by_the_server(
    transfer_client: httpx.AsyncClient, transferring: TransferringController
) -> None:
    transferring.refuse = "no transfer target allowed here"
    response = await transfer_client.post("/sessions/s00000000002/transfer", json={"target": "1"})
    assert response.status_code == 400
    assert response.json()["detail"] == "no transfer target allowed here"


async def test_transfer_unknown_ended_or_racing(
    transfer_client: httpx.AsyncClient, transferring: TransferringController
) -> None:
    for session_id in ("nope", "s00000000004"):
        response = await transfer_client.post(
            f"/sessions/{session_id}/transfer", json={"target": "sip:a@b"}
        )
        assert response.status_code == 404
    assert transferring.transfers == []
    transferring.started = False
    response = await transfer_client.post(
        "/sessions/s00000000001/transfer", json={"target": "sip:a@b"}
    )
    assert response.status_code == 404
    assert transferring.transfers == [("s00000000001", "sip:a@b")]


# -- history ----------------------------------------------------------------------------------


async def test_history_not_configured(client: httpx.AsyncClient) -> None:
    response = await client.get("/history")
    assert response.status_code == 503
    assert "history" in response.json()["detail"]


async def test_history_is_delegated(registry: CallRegistry) -> None:
    history = FakeHistory()
    app = create_app(registry, RecordingController(registry), history=history)
    async with in_process_client(app) as client:
        first = await client.get("/history")
        page = await client.get("/history", params={"limit": 2, "offset": 1})
        for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"limit": "x"}):
            assert (await client.get("/history", params=bad)).status_code == 422
    assert first.status_code == 200
    assert first.json()["total"] == 3
    assert page.json() == {
        "total": 3,
        "calls": [
            {"session_id": "h1", "end_reason": "remote-bye"},
            {"session_id": "h2", "end_reason": "remote-bye"},
        ],
    }
    assert history.asked == [(50, 0), (2, 1)]


# -- metrics ----------------------------------------------------------------------------------


async def test_metrics_not_configured(client: httpx.AsyncClient) -> None:
    assert (await client.get("/metrics")).status_code == 503


async def test_metrics_exposition(registry: CallRegistry) -> None:
    metrics = Metrics()
    metrics.sip_counters({"rx_INVITE": 2, "tx_200": 1})
    app = create_app(registry, RecordingController(registry), metrics=metrics)
    async with in_process_client(app) as client:
        before = await client.get("/metrics")
        metrics.call_started()
        metrics.call_started()
        ended = registry.get("s00000000004")
        assert ended is not None
        ended.turns.append({"latency_ms": 640.0})
        metrics.call_ended(ended)
        after = await client.get("/metrics")
        openmetrics = await client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert before.status_code == 200
    assert before.headers["content-type"].startswith("text/plain; version=0.0.4")
    for name in METRIC_NAMES:
        assert f"# TYPE {name} " in before.text
    assert "sipagent_active_calls 0.0" in before.text
    assert 'sipagent_sip_requests_total{direction="rx",method="INVITE"} 2.0' in before.text
    assert "sipagent_active_calls 1.0" in after.text
    assert 'sipagent_calls_total{outcome="completed"} 1.0' in after.text
    assert "sipagent_voice_latency_ms_count 1.0" in after.text
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")


# -- live events (a real server: httpx's ASGITransport buffers whole responses) ----------------


@dataclass
class Served:
    admin: AdminServer
    events: SessionEvents


@pytest.fixture
async def served(registry: CallRegistry) -> AsyncIterator[Served]:
    app = create_app(registry, RecordingController(registry), token=TOKEN)
    admin = await start_admin(app, "127.0.0.1", 0)
    try:
        yield Served(admin, app.state.events)
    finally:
        app.state.events.close()
        await admin.stop()


async def next_event(lines: AsyncIterator[str]) -> tuple[str, dict[str, object]]:
    """The next Server-Sent Event (type, JSON data), skipping comments."""
    kind, data = "message", list[str]()
    async with asyncio.timeout(STREAM_TIMEOUT):
        async for line in lines:
            if not line:
                if data:
                    payload: dict[str, object] = json.loads("\n".join(data))
                    return kind, payload
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                kind = value
            elif field == "data":
                data.append(value)
    raise AssertionError("the event stream ended")


@contextlib.asynccontextmanager
async def event_stream(served: Served) -> AsyncIterator[httpx.Response]:
    async with (
        httpx.AsyncClient(
            base_url=served.admin.url, trust_env=False, timeout=STREAM_TIMEOUT
        ) as client,
        client.stream("GET", "/events", headers=AUTH) as response,
    ):
        yield response


async def wait_until_no_subscribers(served: Served) -> None:
    async with asyncio.timeout(STREAM_TIMEOUT):
        while served.events.subscribers:
            await asyncio.sleep(0.01)


async def test_events_stream_registry_changes(served: Served, registry: CallRegistry) -> None:
    async with event_stream(served) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        lines = response.aiter_lines()

        kind, snapshot = await next_event(lines)
        assert kind == "snapshot"
        sessions = snapshot["sessions"]
        assert isinstance(sessions, list)
        assert [s["session_id"] for s in sessions] == [
            "s00000000001",
            "s00000000002",
            "s00000000003",
        ]
        assert isinstance(snapshot["server_time"], float)

        record = make_record(9, CallState.RINGING)
        registry.add(record)
        kind, added = await next_event(lines)
        assert (kind, added["session_id"], added["state"]) == ("added", "s00000000009", "ringing")
        assert added["transcript_tail"] == []

        record.state = CallState.ANSWERED
        record.transcript.append({"role": "caller", "text": "hello?", "at": T0 + 10})
        record.turns.append({"latency_ms": 512.5})
        registry.touch(record)
        kind, updated = await next_event(lines)
        assert kind == "updated"
        assert updated["state"] == "answered"
        assert updated["transcript_tail"] == [{"role": "caller", "text": "hello?", "at": T0 + 10}]
        assert updated["last_latency_ms"] == 512.5

        record.end_reason = "remote-bye"
        registry.remove(record.session_id)
        kind, removed = await next_event(lines)
        assert (kind, removed["state"], removed["end_reason"]) == (
            "removed",
            "ended",
            "remote-bye",
        )
    # The client went away: the stream unsubscribed from the registry.
    await wait_until_no_subscribers(served)
    assert registry._listeners == []


async def test_events_keep_alive(served: Served) -> None:
    served.events.keepalive = 0.05
    async with event_stream(served) as response:
        lines = response.aiter_lines()
        assert (await next_event(lines))[0] == "snapshot"
        async with asyncio.timeout(STREAM_TIMEOUT):
            async for line in lines:
                if line == ": keep-alive":
                    break
    await wait_until_no_subscribers(served)


async def test_events_close_ends_open_streams(served: Served) -> None:
    async with event_stream(served) as response:
        lines = response.aiter_lines()
        assert (await next_event(lines))[0] == "snapshot"
        served.events.close()
        async with asyncio.timeout(STREAM_TIMEOUT):
            rest = [line async for line in lines]
    assert rest == []
    await wait_until_no_subscribers(served)



async def test_registrations_are_listed_when_the_controller_registers() -> None:
    class Registering(RecordingController):
        def registrations(self) -> list[dict[str, object]]:
            return [{"state": "registered", "registrar": "sip:pbx.test", "expires_in": 42.0}]

    registry = CallRegistry()
    for controller, expected in ((RecordingController(registry), []), (Registering(registry), [
        {"state": "registered", "registrar": "sip:pbx.test", "expires_in": 42.0}
    ])):
        app = create_app(registry, controller)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
            body = (await client.get("/registrations")).json()
        assert body == {"count": len(expected), "registrations": expected}


# -- recordings -----------------------------------------------------------------------------

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(28)  # what is served is not parsed


class RecordedHistory(FakeHistory):
    """A history that also returns one call, recorded, by id."""

    def __init__(self, rows: dict[str, dict[str, object]]) -> None:
        super().__init__()
        self.rows = rows

    async def list(self, limit: int, offset: int) -> Mapping[str, object]:
        return {"total": len(self.rows), "calls": list(self.rows.values())}

    async def get(self, session_id: str) -> Mapping[str, object] | None:
        return self.rows.get(session_id)


@pytest.fixture
def recordings(tmp_path: Path) -> Path:
    day = tmp_path / "rec" / "20240501"
    day.mkdir(parents=True)
    for name in ("s00000000002.wav", "notes.txt"):
        (day / name).write_bytes(WAV)
    (tmp_path / "secret.wav").write_bytes(b"not yours")
    return tmp_path / "rec"


@pytest.fixture
async def recorded(
    registry: CallRegistry, recordings: Path
) -> AsyncIterator[httpx.AsyncClient]:
    day = recordings / "20240501"
    stored = {
        2: str(day / "s00000000002.wav"),
        1: str(day / ".." / ".." / "secret.wav"),  # outside the recordings dir
        3: str(day / "notes.txt"),  # not a WAV
    }
    for n, path in stored.items():
        record = registry.get(f"s{n:011d}")
        assert record is not None
        record.recording_path = path
    history = RecordedHistory({
        "h1": {"session_id": "h1", "recording_path": str(day / "s00000000002.wav")},
        "h2": {"session_id": "h2", "recording_path": str(day / "gone.wav")},
        "h3": {"session_id": "h3", "recording_path": None},
    })
    app = create_app(registry, RecordingController(registry), token=TOKEN, history=history,
                     recordings_dir=recordings)
    async with in_process_client(app) as client:
        yield client


async def test_recording_of_a_call_is_served_as_wav(recorded: httpx.AsyncClient) -> None:
    response = await recorded.get("/sessions/s00000000002/recording", headers=AUTH)
    assert response.status_code == 200
    assert response.content == WAV
    assert response.headers["content-type"] == "audio/wav"
    assert 'filename="s00000000002.wav"' in response.headers["content-disposition"]
    assert (await recorded.get("/sessions/s00000000002/recording")).status_code == 401
    detail = (await recorded.get("/sessions/s00000000002", headers=AUTH)).json()
    assert detail["recording_url"] == "/sessions/s00000000002/recording"
    assert detail["recording_path"].endswith("s00000000002.wav")
    assert detail["recording_truncated"] is False


@pytest.mark.parametrize(
    "session_id",
    ["s00000000001", "s00000000003", "s00000000004", "nope", "h2", "h3", "..%2F..%2Fsecret"],
)
async def test_no_recording_outside_the_dir_or_without_one(
    recorded: httpx.AsyncClient, session_id: str
) -> None:
    response = await recorded.get(f"/sessions/{session_id}/recording", headers=AUTH)
    assert response.status_code == 404
    assert b"not yours" not in response.content


async def test_ended_call_recording_comes_from_the_history(recorded: httpx.AsyncClient) -> None:
    response = await recorded.get("/sessions/h1/recording", headers=AUTH)
    assert response.status_code == 200 and response.content == WAV


async def test_history_rows_link_their_recording(recorded: httpx.AsyncClient) -> None:
    rows = (await recorded.get("/history", headers=AUTH)).json()["calls"]
    assert [row["recording_url"] for row in rows] == [
        "/sessions/h1/recording", "/sessions/h2/recording", None,
    ]
    detail = (await recorded.get("/sessions/s00000000004", headers=AUTH)).json()
    assert detail["recording_url"] is None


async def test_recordings_are_not_served_without_a_recordings_dir(
    registry: CallRegistry, recordings: Path
) -> None:
    record = registry.get("s00000000002")
    assert record is not None
    record.recording_path = str(recordings / "20240501" / "s00000000002.wav")
    assert isinstance(RecordedHistory({}), HistoryLookup)
    assert not isinstance(FakeHistory(), HistoryLookup)
    async with in_process_client(create_app(registry, RecordingController(registry))) as client:
        response = await client.get("/sessions/s00000000002/recording")
    assert response.status_code == 404
