"""PostgreSQL backend of the call history: :class:`PostgresHistoryStore`.

One psycopg async connection, re-opened when it breaks; JSON columns are JSONB. Migrations run
under a transaction-scoped advisory lock so two processes starting at once migrate once. Open
it through :func:`sipagent.history.open_history`; psycopg is imported only when it is used.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .history import (
    _COLUMNS,
    _SCHEMA_VERSION_TABLE,
    HistoryError,
    HistoryStore,
    _config_error,
    _known_version,
    _now,
    _one_line,
    _page_sql,
    _pending_migrations,
    _redact,
    _upsert,
)

if TYPE_CHECKING:
    from psycopg import AsyncConnection

__all__ = ["PostgresHistoryStore"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_ADVISORY_LOCK_KEY = 0x5349504147454E54  # "SIPAGENT": serialises migrations across processes


class PostgresHistoryStore(HistoryStore):
    """PostgreSQL through one psycopg async connection, re-opened when it breaks."""

    def __init__(self, conninfo: str, connection: AsyncConnection[dict[str, Any]]) -> None:
        self._conninfo = conninfo
        self._connection: AsyncConnection[dict[str, Any]] | None = connection
        self._lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def open(cls, url: str) -> PostgresHistoryStore:
        """Connect to ``url`` (a libpq URL) and migrate; ConfigError if that fails."""
        import psycopg
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise _config_error(f"invalid PostgreSQL URL ({_one_line(str(exc))})") from None
        defaults = {"connect_timeout": "10", "application_name": "sipagent"}
        conninfo = make_conninfo(url, **{k: v for k, v in defaults.items() if k not in params})
        where = _redact(url)
        try:
            connection = await _pg_connect(conninfo)
        except psycopg.Error as exc:
            raise _config_error(f"cannot connect to {where} ({_one_line(str(exc))})") from None
        try:
            version = await _pg_migrate(connection)
        except psycopg.Error as exc:
            await connection.close()
            raise _config_error(f"cannot migrate {where} ({_one_line(str(exc))})") from None
        except BaseException:
            await connection.close()
            raise
        logger.info("call history: PostgreSQL %s (schema version %d)", where, version)
        return cls(conninfo, connection)

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            connection, self._connection = self._connection, None
            if connection is not None:
                await connection.close()

    async def _run(
        self, function: Callable[[AsyncConnection[dict[str, Any]]], Awaitable[_T]]
    ) -> _T:
        import psycopg

        async with self._lock:
            if self._closed:
                raise HistoryError("the call history store is closed")
            try:
                connection = self._connection
                if connection is not None and not (connection.closed or connection.broken):
                    try:
                        return await function(connection)
                    except psycopg.OperationalError:
                        # A server restart kills the session; every statement here is safe
                        # to run again (upsert or read), so reconnect once and retry.
                        if not connection.broken:
                            raise
                self._connection = None
                if connection is not None:
                    await connection.close()
                logger.info("call history: connecting to PostgreSQL again")
                connection = self._connection = await _pg_connect(self._conninfo)
                return await function(connection)
            except psycopg.Error as exc:
                raise HistoryError(f"PostgreSQL: {_one_line(str(exc))}") from exc

    async def _save_row(self, row: Mapping[str, object]) -> None:
        from psycopg.types.json import Jsonb

        sql, params = _upsert(row, _pg_param, Jsonb)

        async def save(connection: AsyncConnection[dict[str, Any]]) -> None:
            await connection.execute(sql, params)

        await self._run(save)

    async def _select_page(
        self, filters: Mapping[str, object], limit: int, offset: int
    ) -> tuple[int, Sequence[Mapping[str, object]]]:
        count_sql, page_sql = _page_sql(filters, _pg_param)
        params = {**filters, "limit": limit, "offset": offset}

        async def select(
            connection: AsyncConnection[dict[str, Any]],
        ) -> tuple[int, list[dict[str, Any]]]:
            async with connection.transaction():  # one snapshot for the count and the page
                count = await (await connection.execute(count_sql, params)).fetchone()
                rows = await (await connection.execute(page_sql, params)).fetchall()
            return int(count["total"]) if count else 0, rows

        return await self._run(select)

    async def _select_one(self, session_id: str) -> Mapping[str, object] | None:
        sql = f"SELECT {', '.join(_COLUMNS)} FROM calls WHERE session_id = %s"

        async def select(connection: AsyncConnection[dict[str, Any]]) -> dict[str, Any] | None:
            return await (await connection.execute(sql, (session_id,))).fetchone()

        return await self._run(select)


async def _pg_connect(conninfo: str) -> AsyncConnection[dict[str, Any]]:
    from psycopg import AsyncConnection
    from psycopg.rows import dict_row

    return await AsyncConnection.connect(conninfo, autocommit=True, row_factory=dict_row)


async def _pg_migrate(connection: AsyncConnection[dict[str, Any]]) -> int:
    dialect = {"real": "DOUBLE PRECISION", "json": "JSONB"}
    async with connection.transaction():
        # Held until commit: a second process blocks here, then finds the schema current.
        await connection.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK_KEY,))
        await connection.execute(_SCHEMA_VERSION_TABLE.format_map(dialect))
        cursor = await connection.execute(
            "SELECT coalesce(max(version), 0) AS version FROM schema_version"
        )
        row = await cursor.fetchone()
        current = int(row["version"]) if row else 0
        for migration in _pending_migrations(current):
            for statement in migration.statements:
                await connection.execute(statement.format_map(dialect))
            await connection.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES (%s, %s, %s)",
                (migration.version, migration.description, _now()),
            )
            logger.info(
                "call history: applied migration %d (%s)", migration.version, migration.description
            )
    return max(current, _known_version())


def _pg_param(name: str) -> str:
    return f"%({name})s"
