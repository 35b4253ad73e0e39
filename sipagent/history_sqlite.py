"""SQLite backend of the call history: :class:`SqliteHistoryStore`.

The stdlib :mod:`sqlite3` in WAL mode, every call made from one dedicated worker thread so the
event loop never waits on the disk. Migrations run under ``BEGIN IMMEDIATE`` so two processes
opening one file at once migrate once. Open it through :func:`sipagent.history.open_history`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote

from .history import (
    _COLUMNS,
    _JSON_COLUMNS,
    _SCHEMA_VERSION_TABLE,
    HistoryError,
    HistoryStore,
    Row,
    _config_error,
    _known_version,
    _now,
    _page_sql,
    _pending_migrations,
    _upsert,
)

__all__ = ["SqliteHistoryStore"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class SqliteHistoryStore(HistoryStore):
    """The stdlib sqlite3 in WAL mode, every call made from one worker thread."""

    def __init__(self, executor: ThreadPoolExecutor, connection: sqlite3.Connection) -> None:
        self._executor = executor
        self._connection: sqlite3.Connection | None = connection

    @classmethod
    async def open(cls, path: str) -> SqliteHistoryStore:
        """Open ``path`` (``:memory:`` for a private in-memory database) and migrate it."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sipagent-history")
        loop = asyncio.get_running_loop()
        try:
            connection, version = await loop.run_in_executor(executor, _sqlite_open, path)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        logger.info("call history: SQLite %s (schema version %d)", path, version)
        return cls(executor, connection)

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, connection.close)
        finally:
            self._executor.shutdown(wait=False)

    async def _run(self, function: Callable[[sqlite3.Connection], _T]) -> _T:
        connection = self._connection
        if connection is None:
            raise HistoryError("the call history store is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, function, connection)
        except sqlite3.Error as exc:
            raise HistoryError(f"SQLite: {exc}") from exc

    async def _save_row(self, row: Mapping[str, object]) -> None:
        sql, params = _upsert(row, _sqlite_param, _sqlite_json)

        def save(connection: sqlite3.Connection) -> None:
            connection.execute(sql, params)

        await self._run(save)

    async def _select_page(
        self, filters: Mapping[str, object], limit: int, offset: int
    ) -> tuple[int, Sequence[Mapping[str, object]]]:
        count_sql, page_sql = _page_sql(filters, _sqlite_param)
        params = {**filters, "limit": limit, "offset": offset}

        def select(connection: sqlite3.Connection) -> tuple[int, list[Row]]:
            connection.execute("BEGIN")  # one snapshot for the count and the page
            try:
                (total,) = connection.execute(count_sql, params).fetchone()
                rows = [_sqlite_decode(row) for row in connection.execute(page_sql, params)]
            finally:
                connection.execute("COMMIT")
            return int(total), rows

        return await self._run(select)

    async def _select_one(self, session_id: str) -> Mapping[str, object] | None:
        sql = f"SELECT {', '.join(_COLUMNS)} FROM calls WHERE session_id = ?"

        def select(connection: sqlite3.Connection) -> Row | None:
            row = connection.execute(sql, (session_id,)).fetchone()
            return None if row is None else _sqlite_decode(row)

        return await self._run(select)


def _sqlite_path(database_url: str) -> str:
    rest = database_url.partition("://")[2]
    if "?" in rest or "#" in rest:
        raise _config_error(f"query parameters are not supported in {database_url!r}")
    if not rest.startswith("/") or rest == "/":
        raise _config_error(
            "an SQLite URL needs three slashes and a path, e.g. sqlite:///data/sipagent.sqlite3 "
            f"or sqlite:////var/lib/sipagent.sqlite3 (got {database_url!r})"
        )
    return unquote(rest[1:])


def _sqlite_open(path: str) -> tuple[sqlite3.Connection, int]:
    """Connect, configure and migrate (in the worker thread)."""
    try:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: transactions are explicit. The timeout is SQLite's busy wait.
        connection = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        raise _config_error(f"cannot open SQLite database {path!r} ({exc})") from None
    try:
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA busy_timeout = 10000")
        _retry_locked(lambda: connection.execute("PRAGMA journal_mode = WAL"))
        connection.execute("PRAGMA synchronous = NORMAL")
        version = _sqlite_migrate(connection)
    except sqlite3.Error as exc:
        connection.close()
        raise _config_error(f"cannot use SQLite database {path!r} ({exc})") from None
    except BaseException:
        connection.close()
        raise
    return connection, version


def _retry_locked(statement: Callable[[], object], attempts: int = 100) -> None:
    """Run ``statement``, retrying while another connection holds the database.

    Switching the journal mode does not go through SQLite's busy handler when several
    processes open a fresh database at once, so its "database is locked" is retried here.
    """
    for attempt in range(attempts):
        try:
            statement()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)  # in the store's worker thread, never on the event loop


def _sqlite_migrate(connection: sqlite3.Connection) -> int:
    dialect = {"real": "REAL", "json": "TEXT"}
    # IMMEDIATE takes the write lock up front: a second process waits, then sees our version.
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute(_SCHEMA_VERSION_TABLE.format_map(dialect))
        (current,) = connection.execute(
            "SELECT coalesce(max(version), 0) FROM schema_version"
        ).fetchone()
        for migration in _pending_migrations(int(current)):
            for statement in migration.statements:
                connection.execute(statement.format_map(dialect))
            connection.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.description, _now()),
            )
            logger.info(
                "call history: applied migration %d (%s)", migration.version, migration.description
            )
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return max(int(current), _known_version())


def _sqlite_decode(row: sqlite3.Row) -> Row:
    decoded: Row = dict(zip(row.keys(), row, strict=True))
    for name in _JSON_COLUMNS:
        value = decoded.get(name)
        if isinstance(value, str):
            decoded[name] = json.loads(value)
    return decoded


def _sqlite_param(name: str) -> str:
    return f":{name}"


def _sqlite_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)
