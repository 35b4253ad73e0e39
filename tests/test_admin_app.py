from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from admin.app import CallController, create_app
from sipagent.registry import CallRecord, CallRegistry, CallState

T0 = 1_714_564_800.0


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
    app = create_app(registry, controller)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
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
    transport = httpx.ASGITransport(app=create_app(registry, controller))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        response = await client.delete("/sessions/s00000000001")
    assert response.status_code == 404
    assert controller.hangups == ["s00000000001"]
