"""Call history: every ended call persisted with its transcript, tool calls and metrics.

:func:`open_history` picks the backend from ``SIPAGENT_DATABASE_URL``:

- ``sqlite:///relative/path``, ``sqlite:////absolute/path`` or ``sqlite:///:memory:`` — the
  stdlib :mod:`sqlite3` in WAL mode, driven from one dedicated worker thread so the event loop
  never waits on the disk (:mod:`sipagent.history_sqlite`);
- ``postgresql://user:password@host:port/dbname`` (or ``postgres://``) — psycopg's async
  connection, re-opened when it breaks (:mod:`sipagent.history_postgres`).

This module is the interface both implement — :class:`HistoryStore`, :class:`HistoryPage`,
:class:`HistoryError` — with the schema and the SQL and row helpers they share.

Both apply the ordered :data:`MIGRATIONS` at open, recorded in a ``schema_version`` table, under
a lock (``BEGIN IMMEDIATE`` on SQLite, a transaction-scoped advisory lock on PostgreSQL) so two
processes starting at once migrate once.

:class:`HistoryRecorder` subscribes to the :class:`~sipagent.registry.CallRegistry` and saves each
call when it is removed, in a background task with retries: the SIP/RTP path never waits on, nor
hears about, the database.

Rows come back as the JSON-ready shape of :meth:`CallRecord.to_detail` plus ``duration_s``
(seconds from answer to end, 0 if never answered). Timestamps are stored
as unix seconds (REAL / DOUBLE PRECISION), JSON fields as TEXT on SQLite and JSONB on PostgreSQL.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

from .registry import CallRecord, CallRegistry, ChangeKind, handoffs, iso_utc
from .settings import ConfigError, env_name

__all__ = [
    "MIGRATIONS",
    "HistoryError",
    "HistoryPage",
    "HistoryRecorder",
    "HistoryStore",
    "Migration",
    "open_history",
]

logger = logging.getLogger(__name__)

_SETTING = env_name("database_url")
Row = dict[str, object]
"""One call as returned by the store (JSON-ready)."""

MAX_LIST_LIMIT = 1000
_DEFAULT_RETRY_DELAYS = (0.5, 2.0, 8.0)


class HistoryError(RuntimeError):
    """The history database failed (or the store is closed) while saving or reading."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Migration:
    """One step of the schema; statements use ``{real}`` and ``{json}`` for dialect types."""

    version: int
    "Applied in increasing order; recorded in ``schema_version``."
    description: str
    "What the step does, stored next to its version."
    statements: tuple[str, ...]
    "DDL run in one transaction with the version bump."


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        description="calls table",
        statements=(
            """CREATE TABLE calls (
                session_id TEXT PRIMARY KEY,
                call_id TEXT NOT NULL,
                from_uri TEXT NOT NULL,
                to_uri TEXT NOT NULL,
                caller_number TEXT,
                remote_addr TEXT,
                state TEXT NOT NULL,
                codec TEXT,
                created_at {real} NOT NULL,
                answered_at {real},
                ended_at {real},
                end_reason TEXT,
                model TEXT NOT NULL,
                duration_s {real},
                rtp {json} NOT NULL,
                dtmf {json} NOT NULL,
                transcript {json} NOT NULL,
                tool_calls {json} NOT NULL,
                turns {json} NOT NULL,
                recording_path TEXT
            )""",
            "CREATE INDEX calls_ended_at ON calls (ended_at)",
            "CREATE INDEX calls_caller_number ON calls (caller_number)",
        ),
    ),
    Migration(
        version=2,
        description="facts column",
        statements=("ALTER TABLE calls ADD COLUMN facts {json} NOT NULL DEFAULT '{{}}'",),
    ),
    Migration(
        version=3,
        description="recording_truncated column",
        statements=(
            "ALTER TABLE calls ADD COLUMN recording_truncated BOOLEAN NOT NULL DEFAULT FALSE",
        ),
    ),
)
"""The schema, oldest step first. Append; never edit a released step."""

_SCHEMA_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at {real} NOT NULL
)"""

_SCALAR_COLUMNS = (
    "session_id",
    "call_id",
    "from_uri",
    "to_uri",
    "caller_number",
    "remote_addr",
    "state",
    "codec",
    "created_at",
    "answered_at",
    "ended_at",
    "end_reason",
    "model",
    "duration_s",
    "recording_path",
    "recording_truncated",
)
_JSON_COLUMNS = ("rtp", "dtmf", "transcript", "tool_calls", "turns", "facts")
_COLUMNS = _SCALAR_COLUMNS + _JSON_COLUMNS
# The list view leaves the bulky per-turn columns out.
_SUMMARY_COLUMNS = (*_SCALAR_COLUMNS, "rtp", "dtmf", "facts")
_ORDER = "ORDER BY ended_at DESC NULLS LAST, created_at DESC, session_id DESC"


class HistoryPage(list[Row]):
    """One page of :meth:`HistoryStore.list`: the rows, newest first, and the paging numbers."""

    def __init__(self, rows: Iterable[Row], *, total: int, limit: int, offset: int) -> None:
        super().__init__(rows)
        self.total = total
        """Rows matching the filters, over all pages."""
        self.limit = limit
        """The page size asked for."""
        self.offset = offset
        """How many matching rows come before this page."""

    def to_dict(self) -> dict[str, object]:
        """JSON-ready ``{"total", "limit", "offset", "items"}``."""
        return {"total": self.total, "limit": self.limit, "offset": self.offset, "items": [*self]}


class HistoryStore(abc.ABC):
    """Where ended calls are kept. Open one with :func:`open_history`."""

    async def save(self, record: CallRecord) -> None:
        """Insert the call, or replace the row with the same ``session_id``.

        The record is read before the first suspension point, so later mutations of it do not
        leak into the saved row. A recording already stored (``recording_path``,
        ``recording_truncated``) is kept when the record has none. Raises :class:`HistoryError`.
        """
        await self._save_row(_record_row(record))

    async def list(
        self,
        limit: int = 50,
        offset: int = 0,
        since: float | datetime | None = None,
        caller: str | None = None,
    ) -> HistoryPage:
        """Calls newest first (by end time), without transcript, tool calls and turns.

        ``since`` (unix seconds or an aware datetime; naive means UTC) keeps calls that ended
        at or after it; ``caller`` keeps those whose ``caller_number`` is exactly it.
        Raises :class:`ValueError` for a bad ``limit``/``offset``, :class:`HistoryError`.
        """
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIST_LIMIT} (got {limit})")
        if offset < 0:
            raise ValueError(f"offset must not be negative (got {offset})")
        if isinstance(since, datetime):
            since = (since if since.tzinfo else since.replace(tzinfo=UTC)).timestamp()
        filters: dict[str, object] = {}
        if since is not None:
            filters["since"] = float(since)
        if caller is not None:
            filters["caller"] = caller
        total, rows = await self._select_page(filters, limit, offset)
        return HistoryPage(
            (_row_dict(row, detail=False) for row in rows),
            total=total,
            limit=limit,
            offset=offset,
        )

    async def get(self, session_id: str) -> Row | None:
        """The full row of one call, or None. Raises :class:`HistoryError`."""
        row = await self._select_one(session_id)
        return None if row is None else _row_dict(row, detail=True)

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the database; later calls raise :class:`HistoryError`. Idempotent."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def _save_row(self, row: Mapping[str, object]) -> None: ...

    @abc.abstractmethod
    async def _select_page(
        self, filters: Mapping[str, object], limit: int, offset: int
    ) -> tuple[int, Sequence[Mapping[str, object]]]: ...

    @abc.abstractmethod
    async def _select_one(self, session_id: str) -> Mapping[str, object] | None: ...


async def open_history(database_url: str) -> HistoryStore:
    """Open (creating and migrating as needed) the store named by ``database_url``.

    Raises :class:`~sipagent.settings.ConfigError` naming ``SIPAGENT_DATABASE_URL`` with the
    reason in one line: unknown scheme, bad path, unreachable server, schema too new...
    """
    # The backends import this module, so they are imported here, when first needed.
    scheme = database_url.partition("://")[0].lower()
    if scheme == "sqlite":
        from .history_sqlite import SqliteHistoryStore, _sqlite_path

        return await SqliteHistoryStore.open(_sqlite_path(database_url))
    if scheme.partition("+")[0] in ("postgresql", "postgres"):
        from .history_postgres import PostgresHistoryStore

        # Tolerate SQLAlchemy-style "postgresql+psycopg://".
        return await PostgresHistoryStore.open("postgresql" + database_url[len(scheme) :])
    raise _config_error(
        f"unsupported database {_redact(database_url)!r}: use sqlite:///path/to/file.sqlite3 "
        "or postgresql://user:password@host:port/dbname"
    )


def _known_version() -> int:
    """The newest schema version this code knows (read at call time: tests patch MIGRATIONS)."""
    return MIGRATIONS[-1].version if MIGRATIONS else 0


def _pending_migrations(current: int) -> list[Migration]:
    known = _known_version()
    if current > known:
        raise _config_error(
            f"the database schema is version {current}, newer than this sipagent knows "
            f"({known}): upgrade sipagent or use another database"
        )
    return [migration for migration in MIGRATIONS if migration.version > current]


def _upsert(
    row: Mapping[str, object], param: Callable[[str], str], encode_json: Callable[[Any], object]
) -> tuple[str, dict[str, object]]:
    """The statement that saves ``row`` and its parameters, the JSON columns encoded."""
    params = {name: row[name] for name in _SCALAR_COLUMNS}
    params.update((name, encode_json(row[name])) for name in _JSON_COLUMNS)
    return _upsert_sql(param), params


def _upsert_sql(param: Callable[[str], str]) -> str:
    # A re-save without a recording must not forget the one already stored.
    kept = {
        "recording_path": "coalesce(excluded.recording_path, calls.recording_path)",
        "recording_truncated": "CASE WHEN excluded.recording_path IS NULL "
        "THEN calls.recording_truncated ELSE excluded.recording_truncated END",
    }
    updates = [
        f"{name} = {kept.get(name, f'excluded.{name}')}"
        for name in _COLUMNS
        if name != "session_id"
    ]
    return (
        f"INSERT INTO calls ({', '.join(_COLUMNS)}) "
        f"VALUES ({', '.join(param(name) for name in _COLUMNS)}) "
        f"ON CONFLICT (session_id) DO UPDATE SET {', '.join(updates)}"
    )


def _page_sql(filters: Mapping[str, object], param: Callable[[str], str]) -> tuple[str, str]:
    """The count of the rows matching ``filters`` and the page of them (``limit``, ``offset``)."""
    where = _where_sql(filters, param)
    return (
        f"SELECT count(*) AS total FROM calls {where}",
        f"SELECT {', '.join(_SUMMARY_COLUMNS)} FROM calls {where} {_ORDER} "
        f"LIMIT {param('limit')} OFFSET {param('offset')}",
    )


def _where_sql(filters: Mapping[str, object], param: Callable[[str], str]) -> str:
    clauses = []
    if "since" in filters:
        clauses.append(f"ended_at >= {param('since')}")
    if "caller" in filters:
        clauses.append(f"caller_number = {param('caller')}")
    return f"WHERE {' AND '.join(clauses)}" if clauses else ""


def _record_row(record: CallRecord) -> Row:
    """The column values of ``record``, sanitised for both databases."""
    duration: float | None = None
    if record.ended_at is not None:
        start = record.answered_at
        duration = max(0.0, record.ended_at - start) if start is not None else 0.0
    remote = None
    if record.remote_addr is not None:
        host, port = record.remote_addr
        remote = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return {
        "session_id": _text(record.session_id),
        "call_id": _text(record.call_id),
        "from_uri": _text(record.from_uri),
        "to_uri": _text(record.to_uri),
        "caller_number": _text(record.caller_number),
        "remote_addr": _text(remote),
        "state": _text(str(record.state)),
        "codec": _text(record.codec),
        "created_at": record.created_at,
        "answered_at": record.answered_at,
        "ended_at": record.ended_at,
        "end_reason": _text(record.end_reason),
        "model": _text(record.model),
        "duration_s": duration,
        "recording_path": _text(record.recording_path),
        "recording_truncated": bool(record.recording_truncated),
        "rtp": _jsonable(record.rtp.to_dict()),
        "dtmf": _jsonable(record.dtmf),
        "transcript": _jsonable(record.transcript),
        "tool_calls": _jsonable(record.tool_calls),
        "turns": _jsonable(record.turns),
        "facts": _jsonable(record.facts),
    }


def _row_dict(row: Mapping[str, object], *, detail: bool) -> Row:
    """A stored row in the shape of :meth:`CallRecord.to_detail` (or its list subset)."""
    result: Row = {
        "session_id": row["session_id"],
        "call_id": row["call_id"],
        "from": row["from_uri"],
        "to": row["to_uri"],
        "state": row["state"],
        "codec": row["codec"],
        "created_at": _iso(row["created_at"]),
        "answered_at": _iso(row["answered_at"]),
        "model": row["model"],
        "rtp": row["rtp"],
        "ended_at": _iso(row["ended_at"]),
        "end_reason": row["end_reason"],
        "remote_addr": row["remote_addr"],
        "caller_number": row["caller_number"],
        "dtmf": row["dtmf"],
        "duration_s": row["duration_s"],
        "recording_path": row["recording_path"],
        "recording_truncated": bool(row["recording_truncated"]),
        "facts": row["facts"],
    }
    if detail:
        for name in ("transcript", "tool_calls", "turns"):
            result[name] = row[name]
        tool_calls = row["tool_calls"]
        result["handoffs"] = handoffs(tool_calls) if isinstance(tool_calls, list) else []
    return result


def _iso(value: object) -> str | None:
    return iso_utc(float(value)) if isinstance(value, int | float) else None


def _text(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL.
    return None if value is None else str.replace(value, "\x00", "\ufffd")


def _jsonable(value: object, depth: int = 0) -> Any:
    """``value`` as plain JSON that both SQLite and JSONB store and return unchanged."""
    if depth > 50:
        return repr(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, Mapping):
        return {_text(str(key)): _jsonable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item, depth + 1) for item in value]
    return _text(str(value))


def _now() -> float:
    return datetime.now(UTC).timestamp()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _redact(url: str) -> str:
    """``url`` without its password."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rpartition("@")
        user = netloc[0].partition(":")[0]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))
    except ValueError:
        return url.partition("://")[0] + "://..."


def _config_error(reason: str) -> ConfigError:
    return ConfigError(f"{_SETTING}: {_one_line(reason)}", _SETTING)


class HistoryRecorder:
    """Saves every call the registry removes, in the background, retrying a few times.

    Never raises into the registry; a save that still fails after the retries is logged and
    counted in :attr:`failed`. Call :meth:`close` (or :meth:`flush`) before closing the store.
    """

    def __init__(
        self,
        store: HistoryStore,
        registry: CallRegistry,
        *,
        retry_delays: Sequence[float] = _DEFAULT_RETRY_DELAYS,
    ) -> None:
        self._store = store
        self._registry = registry
        self._retry_delays = tuple(retry_delays)
        self._pending: set[asyncio.Task[None]] = set()
        self.saved = 0
        """Calls saved since start."""
        self.failed = 0
        """Calls given up on after every retry."""
        registry.subscribe(self._on_change)

    @property
    def pending(self) -> int:
        """Saves not finished yet (including those waiting to retry)."""
        return len(self._pending)

    async def flush(self) -> None:
        """Wait until every save started so far has finished (or given up)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def close(self) -> None:
        """Stop listening to the registry, then :meth:`flush`."""
        self._registry.unsubscribe(self._on_change)
        await self.flush()

    def _on_change(self, kind: ChangeKind, record: CallRecord) -> None:
        if kind is not ChangeKind.REMOVED:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            logger.error("call %s not saved to history: no running event loop", record.call_id)
            self.failed += 1
            return
        task = loop.create_task(self._save(_snapshot(record)), name=f"history-{record.session_id}")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _save(self, record: CallRecord) -> None:
        for attempt, delay in enumerate((*self._retry_delays, None), start=1):
            try:
                await self._store.save(record)
            except Exception as exc:
                if delay is None:
                    self.failed += 1
                    logger.error(
                        "call %s (session %s) not saved to history after %d attempts: %s",
                        record.call_id, record.session_id, attempt, exc,
                    )  # fmt: skip
                    return
                logger.warning(
                    "saving call %s to history failed (%s); retrying in %.1f s",
                    record.call_id, exc, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)
            else:
                self.saved += 1
                logger.debug("call %s saved to history", record.call_id)
                return


def _snapshot(record: CallRecord) -> CallRecord:
    """A copy the call can no longer mutate while the save waits for its turn."""
    return dataclasses.replace(
        record,
        rtp=dataclasses.replace(record.rtp),
        dtmf=list(record.dtmf),
        transcript=[dict(line) for line in record.transcript],
        tool_calls=[dict(call) for call in record.tool_calls],
        turns=[dict(turn) for turn in record.turns],
        facts=dict(record.facts),
    )
