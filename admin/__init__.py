"""The admin HTTP API (FastAPI) and its embedded uvicorn server.

Reads :mod:`sipagent.registry`; the SIP/RTP core never imports this package.
"""

from __future__ import annotations

from .app import CallController, create_app
from .server import AdminServer, AdminStartupError, start_admin

__all__ = ["AdminServer", "AdminStartupError", "CallController", "create_app", "start_admin"]
