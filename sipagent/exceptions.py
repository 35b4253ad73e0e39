"""Errors of the SIP core, and whose fault they are.

The hierarchy::

    SipError                      base of everything raised by ``sipagent``
    ├── RemoteProtocolError       the peer sent something we cannot accept; carries the SIP
    │   │                         status (and reason) to answer a request with
    │   └── MessageParseError     the bytes are not a SIP message at all: drop and count them
    └── LocalProtocolError        our own code asked for something the protocol forbids
                                  (a bug on our side, never answered on the wire)

Like h11, an error raised while handling input is the peer's fault and becomes a
response; an error raised while producing output is ours and is raised to the caller.
"""

from __future__ import annotations

__all__ = [
    "LocalProtocolError",
    "MessageParseError",
    "RemoteProtocolError",
    "SipError",
]


class SipError(Exception):
    """Base class of every error raised by the SIP core."""


class RemoteProtocolError(SipError):
    """The peer violated the protocol; answer a request with ``status`` and ``reason``."""

    def __init__(self, reason: str, status: int = 400, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.headers = headers


class MessageParseError(RemoteProtocolError):
    """The data is not a SIP message we can even frame; it is dropped and counted."""


class LocalProtocolError(SipError):
    """Our own side asked for something illegal (wrong state, missing field)."""
