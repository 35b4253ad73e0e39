"""Log lines that say which call they are about, as JSON objects or as text for people.

The call being handled lives in a :class:`contextvars.ContextVar`: the server sets it
(:func:`call_context`) while it handles a SIP message or an event of a dialog, and every task
created meanwhile copies it (``asyncio.create_task`` copies the current context), so the
call's set-up, media, model session, tools and history save all run with it. A
:class:`CallContextFilter` on the one handler :func:`configure_logging` installs copies it into
every record, whatever logger the record comes from (ours, uvicorn's, a library's)::

    with call_context("a84b4c76e66710@pc33", "3f9a0c2e1b7d"):
        logger.info("answered")   # {"ts": ..., "msg": "answered", "call_id": "a84b...", ...}

A record that names its call itself (``extra={"call_id": ...}``, :class:`CallLogAdapter`) keeps
that call: a line about call B logged while handling call A is about B.

No secret reaches the output: :func:`redact` (the formatters' last step) masks digest
``response=`` values, passwords, bearer and basic credentials, OpenAI keys, credentials in URLs,
webhook signatures, long base64 runs (audio) and every literal secret registered with
:func:`add_secret` (the settings' admin token, passwords and API key). Log calls must not print
those in the first place; this is the safety net.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import logging
import re
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import IO, Any, Final, Literal

__all__ = [
    "CallContextFilter",
    "CallLogAdapter",
    "JsonFormatter",
    "LogContext",
    "LogFormat",
    "TextFormatter",
    "add_secret",
    "bind_session",
    "call_context",
    "configure_logging",
    "context_for_call",
    "current_context",
    "detached_context",
    "redact",
    "sniff_call_id",
]

LogFormat = Literal["auto", "json", "text"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LogContext:
    """The call a piece of work is about."""

    call_id: str
    """SIP Call-ID of the dialog."""
    session_id: str | None = None
    """The call's session id in the registry and admin (None before the call is created)."""


_CURRENT: Final[contextvars.ContextVar[LogContext | None]] = contextvars.ContextVar(
    "sipagent_log_context", default=None
)
_UNKNOWN: Final = (None, "", "?")
"""Values of a record's ``call_id`` that do not name a call (adapters used before a call)."""


def current_context() -> LogContext | None:
    """The call the current code runs for, if any."""
    return _CURRENT.get()


@contextlib.contextmanager
def call_context(call_id: str | None, session_id: str | None = None) -> Iterator[None]:
    """Run the block (and the tasks it creates) for this call; no call_id: leave as is."""
    if call_id is None:
        yield
        return
    token = _CURRENT.set(LogContext(call_id=call_id, session_id=session_id))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def bind_session(session_id: str) -> None:
    """Add the session id to the current call (known once the call is created).

    Undone with the enclosing :func:`call_context`; a no-op outside one.
    """
    current = _CURRENT.get()
    if current is not None:
        _CURRENT.set(replace(current, session_id=session_id))


def context_for_call(call_id: str, session_id: str | None = None) -> contextvars.Context:
    """A copy of the current context running for this call (``create_task(..., context=)``)."""
    context = contextvars.copy_context()
    context.run(_CURRENT.set, LogContext(call_id=call_id, session_id=session_id))
    return context


def detached_context() -> contextvars.Context:
    """A copy of the current context about no call: for callbacks that serve every call
    (the SIP core's one timer), which must not keep the call that happened to arm them."""
    context = contextvars.copy_context()
    context.run(_CURRENT.set, None)
    return context


# -- the Call-ID of a raw message ---------------------------------------------------------------

_HEADER_END: Final = re.compile(rb"\r?\n\r?\n")
_CALL_ID_HEADER: Final = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*([^\s]{1,256})", re.I | re.M)


def sniff_call_id(data: bytes) -> str | None:
    """The Call-ID of a SIP message, read without parsing it (for the log context only).

    The user agent parses and validates the message afterwards; a message this cannot read
    is simply logged without a call.
    """
    end = _HEADER_END.search(data)
    match = _CALL_ID_HEADER.search(data, 0, end.start() if end else len(data))
    return match.group(1).decode("utf-8", "replace") if match else None


# -- redaction ----------------------------------------------------------------------------------

_MASK: Final = "<redacted>"
_KEYWORDS: Final = ("password", "passwd", "pwd", "secret", "api_key", "apikey", "token")


@dataclass(frozen=True, slots=True)
class _Rule:
    """A pattern to mask, tried only on text containing one of ``needles`` (lower case): the
    cheap test keeps redaction from costing more than the formatting of an ordinary line."""

    needles: tuple[str, ...]
    pattern: re.Pattern[str]
    replacement: str


_RULES: Final = (
    # Digest answers (Authorization, Proxy-Authorization) and key=value secrets.
    _Rule(
        ("response", *_KEYWORDS),
        re.compile(
            r"""(?i)\b(response|password|passwd|pwd|secret|api_key|apikey|auth_token|token)"""
            r"""(\s*=\s*)(?:"[^"]*"|'[^']*'|[^\s,;&"']+)"""
        ),
        rf'\1\2"{_MASK}"',
    ),
    # The same in JSON or repr() of a mapping: "password": "x", 'api_key': 'x'.
    _Rule(
        ("authorization", "auth_users", *_KEYWORDS),
        re.compile(
            r"""(?i)(["']?(?:password|passwd|secret|api_key|apikey|auth_token|token|"""
            r"""authorization|registrar_password|admin_token|auth_users|openai_api_key)["']?"""
            r"""\s*:\s*)(["'])(?:\\.|(?!\2).)*\2"""
        ),
        rf"\1\2{_MASK}\2",
    ),
    _Rule(
        ("bearer", "basic"),
        re.compile(r"(?i)\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{4,}"),
        rf"\1 {_MASK}",
    ),
    _Rule(("sk-",), re.compile(r"\bsk-[A-Za-z0-9_-]{6,}"), f"sk-{_MASK}"),
    # user:password@ in URLs (postgresql://agent:pw@db/...).
    _Rule(
        ("://",),
        re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@]+):[^\s/@]+@"),
        rf"\1:{_MASK}@",
    ),
    # Webhook signatures (HMAC-SHA256 of a body with the shared secret).
    _Rule(("sha256=",), re.compile(r"(?i)\bsha256=[0-9a-f]{16,}"), f"sha256={_MASK}"),
    # Audio: base64 (Realtime events) or escaped bytes (repr of a payload).
    _Rule(("",), re.compile(r"[A-Za-z0-9+/]{120,}={0,2}"), "<base64>"),
    _Rule(("\\x",), re.compile(r"(?:\\x[0-9a-fA-F]{2}){32,}"), "<bytes>"),
)
_MIN_LITERAL: Final = 6
"""Shorter literal secrets are not masked one by one (it would garble unrelated text)."""
_secrets: set[str] = set()


def add_secret(value: str | None) -> None:
    """Mask this exact text wherever it appears in a log line (from the settings)."""
    if value and len(value) >= _MIN_LITERAL:
        _secrets.add(value)


def redact(text: str) -> str:
    """``text`` with credentials, keys and audio masked."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, _MASK)
    lowered = text.lower()
    for rule in _RULES:
        if any(needle in lowered for needle in rule.needles):
            text = rule.pattern.sub(rule.replacement, text)
    return text


# -- records ------------------------------------------------------------------------------------


class CallContextFilter(logging.Filter):
    """Puts the current call's ``call_id`` and ``session_id`` on every record.

    Attached to a handler, so it sees the records of every logger. A record that already
    names a call (``extra``) keeps it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        current = _CURRENT.get()
        named = getattr(record, "call_id", None)
        if named in _UNKNOWN:
            record.call_id = current.call_id if current is not None else None
            if getattr(record, "session_id", None) is None:
                record.session_id = current.session_id if current is not None else None
        elif not hasattr(record, "session_id"):
            same = current is not None and current.call_id == named
            record.session_id = current.session_id if same and current is not None else None
        return True


class CallLogAdapter(logging.LoggerAdapter[logging.Logger]):
    """A logger for one call: its Call-ID and session id go into every record's ``extra``."""

    def process(self, msg: str, kwargs: Any) -> tuple[str, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


_RECORD_FIELDS: Final = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__
) | {"message", "asctime", "call_id", "session_id", "taskName", "color_message"}
"""Attributes every record has (``color_message`` is uvicorn's ANSI copy of ``msg``)."""


def _extras(record: logging.LogRecord) -> dict[str, object]:
    """The structured fields a log call passed with ``extra=``."""
    return {
        name: value
        for name, value in record.__dict__.items()
        if name not in _RECORD_FIELDS and not name.startswith("_")
    }


def _json_value(value: object) -> object:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(key): _json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_value(item) for item in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"  # never payloads
    return redact(repr(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, ms), ``level``, ``logger``, ``msg``, ``call_id``
    and ``session_id`` when known, the ``extra=`` fields, ``exc`` for a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        line: dict[str, object] = {
            "ts": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for name in ("call_id", "session_id"):
            value = getattr(record, name, None)
            if value not in _UNKNOWN:
                line[name] = value
        for name, value in _extras(record).items():
            line.setdefault(name, _json_value(value))
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exc"] = redact(record.exc_text)
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``2026-01-02 10:11:12.345 INFO sipagent.call [call-id] message`` (local time)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        call_id = getattr(record, "call_id", None)
        call = f" [{call_id}]" if call_id not in _UNKNOWN else ""
        text = (
            f"{stamp}.{int(record.msecs):03d} {record.levelname} {record.name}{call} "
            f"{record.getMessage()}"
        )
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return redact(text)


# -- set-up -------------------------------------------------------------------------------------

_WIRE_LOGGERS: Final = ("websockets", "httpcore", "hpack", "aiosqlite", "openai")
"""Libraries whose DEBUG lines carry wire content: request headers (the API key), Realtime
frames (audio), SQL parameters (DTMF digits). Kept at INFO even when we log at DEBUG."""


class _OurHandler(logging.StreamHandler[IO[str]]):
    """The handler :func:`configure_logging` installs (so a second call replaces it)."""


def configure_logging(
    level: str | int = "INFO", fmt: LogFormat = "auto", stream: IO[str] | None = None
) -> logging.Handler:
    """Send every log record (ours, uvicorn's, libraries') to ``stream`` (default stderr).

    ``fmt`` "auto" is text when the stream is a terminal, JSON otherwise. The root logger gets
    one handler; calling this again replaces it. Returns the handler.
    """
    stream = sys.stderr if stream is None else stream
    if fmt == "auto":
        isatty = getattr(stream, "isatty", None)
        fmt = "text" if isatty is not None and isatty() else "json"
    handler = _OurHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(CallContextFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OurHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    if root.getEffectiveLevel() < logging.INFO:
        for name in _WIRE_LOGGERS:
            wire = logging.getLogger(name)
            if wire.level == logging.NOTSET or wire.level < logging.INFO:
                wire.setLevel(logging.INFO)
    return handler
