"""The admin HTTP API: health, readiness, calls, metrics, call history and the live dashboard.

The app only reads the :class:`~sipagent.registry.CallRegistry` and asks a
:class:`CallController` to act (hang up, transfer); it never reaches into SIP or RTP.

Call recordings (``SIPAGENT_RECORDINGS_DIR``): ``/sessions/{id}`` and ``/history`` rows carry a
``recording_url`` next to the stored ``recording_path``; ``GET /sessions/{id}/recording`` serves
the WAV of a live or ended call, only from a stored path inside the recordings directory.

Authentication: with a ``token``, every endpoint except ``/health`` needs
``Authorization: Bearer <token>`` and answers 401 with ``WWW-Authenticate: Bearer`` otherwise.
The dashboard page (``/``, ``/static/*``) and the API docs (``/docs``, ``/openapi.json``) carry
no call data and are served without it: the page asks for the token once, keeps it in
``sessionStorage`` and sends it as a header on every request, including the ``/events`` stream,
which it reads with ``fetch()`` rather than ``EventSource`` precisely so that the token never
has to travel in a URL (where proxies and access logs would keep it).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Protocol, runtime_checkable

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client.exposition import choose_encoder
from pydantic import BaseModel, Field

from sipagent.registry import CallRecord, CallRegistry, CallState

from .dashboard import SessionEvents, add_dashboard
from .metrics import Metrics

__all__ = [
    "RegistrationController",
    "CallController",
    "HistoryLike",
    "HistoryLookup",
    "TransferController",
    "TransferRequest",
    "create_app",
]

logger = logging.getLogger(__name__)

MAX_HISTORY_PAGE = 500


class CallController(Protocol):
    """What the admin may ask of the running server."""

    async def hangup(self, session_id: str) -> bool:
        """Start ending a live call; False when there is no such live call."""
        ...

    def ready(self) -> dict[str, object]:
        """Readiness report; must contain ``"ready": bool`` (plus any JSON-ready details)."""
        ...


@runtime_checkable
class RegistrationController(Protocol):
    """A controller that registers with registrars (SIPAGENT_REGISTRAR)."""

    def registrations(self) -> list[dict[str, object]]:
        """One status per registration: state, registrar, aor, expires_in, last_status..."""
        ...


@runtime_checkable
class TransferController(Protocol):
    """A controller that can also hand a live call to someone else (SIP REFER)."""

    async def transfer(self, session_id: str, target: str) -> bool:
        """Start transferring a live call to ``target``; False when there is no such live call.

        Raises :class:`ValueError` when ``target`` is not acceptable.
        """
        ...


class HistoryLike(Protocol):
    """A store of ended calls (SQLite, Postgres...)."""

    async def list(self, limit: int, offset: int) -> Mapping[str, object]:
        """Ended calls, newest first: ``{"total": n, "calls": [...]}``."""
        ...


@runtime_checkable
class HistoryLookup(Protocol):
    """A history store that can also return one ended call."""

    async def get(self, session_id: str) -> Mapping[str, object] | None:
        """The stored row of one call (with ``recording_path``), or None."""
        ...


def _recording_url(row: Mapping[str, object]) -> str | None:
    """Where the admin serves the recording of a call row, if it has one."""
    if not row.get("recording_path"):
        return None
    return f"/sessions/{row['session_id']}/recording"


def _with_recording_url(row: object) -> object:
    if not isinstance(row, Mapping) or "recording_path" not in row:
        return row
    return {**row, "recording_url": _recording_url(row)}


class TransferRequest(BaseModel):
    """Body of ``POST /sessions/{id}/transfer``."""

    # No whitespace, controls, quotes or angle brackets: the target ends up in a Refer-To header.
    target: str = Field(
        min_length=1,
        max_length=256,
        pattern=r'^[^\x00-\x20\x7f<>"]+$',
        description="Where to send the caller: a SIP URI (sip:agent@pbx.example) or a number.",
        examples=["sip:frontdesk@pbx.example"],
    )


_BEARER = HTTPBearer(auto_error=False, description="The admin token.")


class _BearerGuard:
    """A dependency accepting only ``Authorization: Bearer <token>``."""

    def __init__(self, token: str) -> None:
        # Compare digests so neither the content nor the length of the token shows in timing.
        self._expected = hashlib.sha256(token.encode()).digest()

    async def __call__(
        self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]
    ) -> None:
        if credentials is None:
            raise HTTPException(
                status_code=401,
                detail="a bearer token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        given = hashlib.sha256(credentials.credentials.encode()).digest()
        if not hmac.compare_digest(given, self._expected):
            raise HTTPException(
                status_code=401,
                detail="invalid bearer token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )


def create_app(
    registry: CallRegistry,
    controller: CallController,
    *,
    token: str | None = None,
    metrics: Metrics | None = None,
    history: HistoryLike | None = None,
    recordings_dir: Path | None = None,
) -> FastAPI:
    """Build the admin app over ``registry``, acting through ``controller``.

    ``token`` protects everything but ``/health`` (and the static dashboard and docs);
    ``metrics`` is what ``/metrics`` exposes and ``history`` what ``/history`` pages through
    (each endpoint answers 503 without it); ``recordings_dir`` is the only directory
    recordings are served from. Call ``app.state.events.close()`` before
    stopping the server so open ``/events`` streams end at once.
    """
    if token is not None and not token:
        raise ValueError("the admin token must not be empty (use None for no token)")
    app = FastAPI(title="sipagent admin", docs_url="/docs", redoc_url=None)
    guard = [Depends(_BearerGuard(token))] if token is not None else []
    api = APIRouter(dependencies=guard)
    events = SessionEvents(registry)
    app.state.events = events

    def find_live(session_id: str) -> CallRecord:
        record = registry.get(session_id)
        if record is None or record.ended:
            raise HTTPException(status_code=404, detail=f"no live session {session_id}")
        return record

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/ready")
    async def ready() -> JSONResponse:
        report = controller.ready()
        status_code = 200 if report.get("ready") is True else 503
        return JSONResponse(status_code=status_code, content=report)

    @api.get("/sessions")
    async def list_sessions(state: CallState | None = None) -> dict[str, object]:
        if state is None:
            records = registry.active()
        elif state == CallState.ENDED:
            records = registry.ended()
        else:
            records = [record for record in registry.active() if record.state == state]
        sessions = [record.to_summary() for record in records]
        return {"count": len(sessions), "sessions": sessions}

    @api.get("/sessions/{session_id}")
    async def get_session(session_id: str) -> dict[str, object]:
        record = registry.get(session_id)
        if record is None:
            raise HTTPException(status_code=404, detail=f"unknown session {session_id}")
        detail = record.to_detail()
        detail["recording_url"] = _recording_url(detail)
        return detail

    @api.get(
        "/sessions/{session_id}/recording",
        response_class=FileResponse,
        responses={
            200: {"content": {"audio/wav": {}}, "description": "Stereo WAV: caller left."},
            404: {"description": "No such call, or it has no recording."},
        },
    )
    async def get_recording(session_id: str) -> FileResponse:
        stored: object = None
        record = registry.get(session_id)
        if record is not None:
            stored = record.recording_path
        elif isinstance(history, HistoryLookup):
            row = await history.get(session_id)
            stored = row.get("recording_path") if row is not None else None
        path = _servable(stored)
        if path is None:
            raise HTTPException(status_code=404, detail=f"no recording of session {session_id}")
        return FileResponse(path, media_type="audio/wav", filename=f"{session_id}.wav")

    def _servable(stored: object) -> Path | None:
        """The stored recording path, if it is a WAV file inside ``recordings_dir``."""
        if recordings_dir is None or not isinstance(stored, str) or not stored:
            return None
        path = Path(stored).resolve()
        root = recordings_dir.expanduser().resolve()
        if not path.is_relative_to(root) or path.suffix != ".wav":
            logger.warning("refusing to serve recording outside the recordings dir: %r", stored)
            return None
        return path if path.is_file() else None

    @api.delete("/sessions/{session_id}", status_code=202)
    async def hangup_session(session_id: str) -> dict[str, str]:
        find_live(session_id)
        if not await controller.hangup(session_id):
            # The call ended between the lookup and the hangup.
            raise HTTPException(status_code=404, detail=f"no live session {session_id}")
        logger.info("admin hangup of session %s", session_id)
        return {"status": "hanging up", "session_id": session_id}

    @api.post(
        "/sessions/{session_id}/transfer",
        status_code=202,
        responses={501: {"description": "This server cannot transfer calls."}},
    )
    async def transfer_session(session_id: str, body: TransferRequest) -> dict[str, str]:
        if not isinstance(controller, TransferController):
            raise HTTPException(status_code=501, detail="this server cannot transfer calls")
        find_live(session_id)
        try:
            started = await controller.transfer(session_id, body.target)
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        if not started:
            raise HTTPException(status_code=404, detail=f"no live session {session_id}")
        logger.info("admin transfer of session %s to %s", session_id, body.target)
        return {"status": "transferring", "session_id": session_id, "target": body.target}

    @api.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus metrics."}},
    )
    async def get_metrics(request: Request) -> Response:
        if metrics is None:
            raise HTTPException(status_code=503, detail="metrics are not enabled")
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(content=encoder(metrics.registry), media_type=content_type)

    @api.get("/registrations")
    async def get_registrations() -> dict[str, object]:
        found = (
            controller.registrations() if isinstance(controller, RegistrationController) else []
        )
        return {"count": len(found), "registrations": found}

    @api.get("/history")
    async def get_history(
        limit: Annotated[int, Query(ge=1, le=MAX_HISTORY_PAGE)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, object]:
        if history is None:
            raise HTTPException(status_code=503, detail="no call history store is configured")
        page = dict(await history.list(limit, offset))
        calls = page.get("calls")
        if isinstance(calls, list):
            page["calls"] = [_with_recording_url(row) for row in calls]
        return page

    add_dashboard(app, api, events)
    app.include_router(api)
    return app
