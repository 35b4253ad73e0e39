"""The admin HTTP API: health, readiness, and the calls in the registry.

The app only reads the :class:`~sipagent.registry.CallRegistry` and asks a
:class:`CallController` to act (hang up); it never reaches into SIP or RTP.
"""

from __future__ import annotations

import logging
from typing import Protocol

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse

from sipagent.registry import CallRecord, CallRegistry, CallState

__all__ = ["CallController", "create_app"]

logger = logging.getLogger(__name__)


class CallController(Protocol):
    """What the admin may ask of the running server."""

    async def hangup(self, session_id: str) -> bool:
        """Start ending a live call; False when there is no such live call."""
        ...

    def ready(self) -> dict[str, object]:
        """Readiness report; must contain ``"ready": bool`` (plus any JSON-ready details)."""
        ...


def create_app(registry: CallRegistry, controller: CallController) -> FastAPI:
    """Build the admin app over ``registry``, acting through ``controller``."""
    app = FastAPI(title="sipagent admin", docs_url="/docs", redoc_url=None)

    def find_live(session_id: str) -> CallRecord:
        record = registry.get(session_id)
        if record is None or record.ended:
            raise HTTPException(status_code=404, detail=f"no live session {session_id}")
        return record

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        report = controller.ready()
        status_code = 200 if report.get("ready") is True else 503
        return JSONResponse(status_code=status_code, content=report)

    @app.get("/sessions")
    async def list_sessions(state: CallState | None = None) -> dict[str, object]:
        if state is None:
            records = registry.active()
        elif state == CallState.ENDED:
            records = registry.ended()
        else:
            records = [record for record in registry.active() if record.state == state]
        sessions = [record.to_summary() for record in records]
        return {"count": len(sessions), "sessions": sessions}

    @app.get("/sessions/{session_id}")
    async def get_session(session_id: str) -> dict[str, object]:
        record = registry.get(session_id)
        if record is None:
            raise HTTPException(status_code=404, detail=f"unknown session {session_id}")
        return record.to_detail()

    @app.delete("/sessions/{session_id}", status_code=202)
    async def hangup_session(session_id: str) -> dict[str, str]:
        find_live(session_id)
        if not await controller.hangup(session_id):
            # The call ended between the lookup and the hangup.
            raise HTTPException(status_code=404, detail=f"no live session {session_id}")
        logger.info("admin hangup of session %s", session_id)
        return {"status": "hanging up", "session_id": session_id}

    return app
