"""The call history store on SQLite and on a real throwaway PostgreSQL, and its recorder."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from sipagent import history
from sipagent.history import (
    HistoryError,
    HistoryRecorder,
    HistoryStore,
    Migration,
    open_history,
)
from sipagent.history_postgres import PostgresHistoryStore
from sipagent.history_sqlite import SqliteHistoryStore
from sipagent.registry import CallRecord, CallRegistry, CallState, RtpSnapshot
from sipagent.settings import ConfigError

T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z
SETTING = "SIPAGENT_DATABASE_URL"
KNOWN_VERSIONS = [migration.version for migration in history.MIGRATIONS]


# --- a throwaway PostgreSQL server -------------------------------------------------------------


def _postgres_bindir() -> Path | None:
    """The newest Debian PostgreSQL server binaries, or any initdb on PATH."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb and (Path(initdb).resolve().parent / "postgres").exists():
        return Path(initdb).resolve().parent
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The conninfo of a superuser on a private PostgreSQL cluster, stopped by PID at the end."""
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server not installed (Debian package 'postgresql')")
    user: str | None = None
    if os.geteuid() == 0:  # postgres refuses to run as root
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
        user = "postgres"
    # Not under pytest's tmp dir: its 0700 parents would lock the postgres user out.
    workdir = Path(tempfile.mkdtemp(prefix="sipagent-pg-"))
    if user is not None:
        os.chown(workdir, account.pw_uid, account.pw_gid)
    datadir = workdir / "data"
    process: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            [
                *(bindir / "initdb", "-D", datadir, "-U", "sipagent"),
                *("-A", "trust", "-E", "UTF8", "--no-sync"),
            ],
            user=user,
            check=True,
            capture_output=True,
        )
        port = _free_port()
        log = (workdir / "postgres.log").open("wb")
        process = subprocess.Popen(
            [
                *(bindir / "postgres", "-D", datadir, "-p", str(port), "-k", workdir),
                *("-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"),
                *("-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
            ],
            user=user,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        conninfo = f"host=127.0.0.1 port={port} user=sipagent dbname=postgres connect_timeout=2"
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(conninfo).close()
                break
            except psycopg.OperationalError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = (workdir / "postgres.log").read_text(errors="replace")
                    pytest.fail(f"PostgreSQL did not start:\n{output}")
                time.sleep(0.1)
        yield conninfo
    finally:
        if process is not None:
            process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def _postgres_database(server: str) -> Iterator[str]:
    """A fresh database on the throwaway server, as a postgresql:// URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    params = psycopg.conninfo.conninfo_to_dict(server)
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://sipagent@{params['host']}:{params['port']}/{name}"
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/history.sqlite3"
    else:
        with _postgres_database(request.getfixturevalue("postgres_server")) as url:
            yield url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[HistoryStore]:
    store = await open_history(database_url)
    yield store
    await store.close()


def schema_versions(database_url: str) -> list[int]:
    """The versions recorded in schema_version, read behind the store's back."""
    if database_url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as db:
            return [row[0] for row in db.execute("SELECT version FROM schema_version ORDER BY 1")]
    with psycopg.connect(database_url) as db:
        return [row[0] for row in db.execute("SELECT version FROM schema_version ORDER BY 1")]


def make_record(n: int = 1, **changes: object) -> CallRecord:
    record = CallRecord(
        session_id=f"s{n:011d}",
        call_id=f"call-{n}@pbx.example",
        from_uri=f"sip:+1555000{n:04d}@pbx.example",
        to_uri="sip:agent@sipagent.example",
        created_at=T0 + 60 * n,
        model="echo",
        caller_number=f"+1555000{n:04d}",
        remote_addr=("192.0.2.10", 5060),
        state=CallState.ENDED,
        codec="PCMU",
        answered_at=T0 + 60 * n + 1.5,
        ended_at=T0 + 60 * n + 31.5,
        end_reason="bye",
        rtp=RtpSnapshot(packets_in=1500, packets_out=1490, lost=3, jitter_ms=2.125),
        dtmf=["1", "#"],
        transcript=[
            {"role": "assistant", "text": "Bonjour, comment puis-je aider ? ☎", "at": T0 + 2},
            {"role": "caller", "text": "Mon colis n'est pas arrivé.", "at": T0 + 5.25},
        ],
        tool_calls=[
            {
                "name": "track_parcel",
                "arguments": {"parcel": "FR123", "options": [1, 2.5, None, True]},
                "result": {"status": "in transit", "eta": None},
                "duration_ms": 41.0,
            }
        ],
        turns=[{"latency_ms": 412.5, "interrupted": False}],
    )
    for name, value in changes.items():
        setattr(record, name, value)
    return record


def expected_detail(record: CallRecord, **extra: object) -> dict[str, object]:
    duration = 0.0
    if record.answered_at is not None and record.ended_at is not None:
        duration = record.ended_at - record.answered_at
    return record.to_detail() | {"duration_s": duration} | extra


# --- the store, on both databases --------------------------------------------------------------


async def test_save_then_get_round_trips_every_field(store: HistoryStore) -> None:
    record = make_record()
    await store.save(record)
    assert await store.get(record.session_id) == expected_detail(record)


async def test_get_unknown_session_is_none(store: HistoryStore) -> None:
    assert await store.get("nope") is None


async def test_save_is_an_upsert_per_session(store: HistoryStore) -> None:
    record = make_record(end_reason="media-timeout")
    await store.save(record)
    record.end_reason = "bye"
    record.transcript.append({"role": "caller", "text": "merci", "at": T0 + 30})
    record.rtp = RtpSnapshot(packets_in=1600)
    await store.save(record)
    page = await store.list()
    assert (page.total, len(page)) == (1, 1)
    assert await store.get(record.session_id) == expected_detail(record)


async def test_list_is_newest_first_and_paginates(store: HistoryStore) -> None:
    for n in (3, 1, 5, 2, 4):
        await store.save(make_record(n))
    first = await store.list(limit=2)
    assert [row["session_id"] for row in first] == ["s00000000005", "s00000000004"]
    assert (first.total, first.limit, first.offset) == (5, 2, 0)
    second = await store.list(limit=2, offset=2)
    assert [row["session_id"] for row in second] == ["s00000000003", "s00000000002"]
    last = await store.list(limit=2, offset=4)
    assert [row["session_id"] for row in last] == ["s00000000001"]
    beyond = await store.list(limit=2, offset=10)
    assert (list(beyond), beyond.total) == ([], 5)
    assert beyond.to_dict() == {"total": 5, "limit": 2, "offset": 10, "items": []}


async def test_list_rows_are_the_detail_without_the_bulky_fields(store: HistoryStore) -> None:
    record = make_record()
    await store.save(record)
    (row,) = await store.list()
    detail = expected_detail(record)
    for name in ("transcript", "tool_calls", "handoffs", "turns"):
        del detail[name]
    assert row == detail


async def test_list_filters_by_end_time_and_caller(store: HistoryStore) -> None:
    for n in range(1, 6):
        await store.save(make_record(n))
    await store.save(make_record(6, caller_number="+15550000002"))
    since = T0 + 60 * 4 + 31.5  # call 4 ended exactly then
    page = await store.list(since=since)
    assert [row["session_id"] for row in page] == ["s00000000006", "s00000000005", "s00000000004"]
    assert page.total == 3
    as_datetime = await store.list(since=datetime.fromtimestamp(since, tz=UTC))
    assert list(as_datetime) == list(page)
    naive_utc = await store.list(since=datetime.fromtimestamp(since, tz=UTC).replace(tzinfo=None))
    assert list(naive_utc) == list(page)
    by_caller = await store.list(caller="+15550000002")
    assert [row["session_id"] for row in by_caller] == ["s00000000006", "s00000000002"]
    both = await store.list(caller="+15550000002", since=since, limit=1)
    assert ([row["session_id"] for row in both], both.total) == (["s00000000006"], 1)
    assert (await store.list(caller="+33100000000")).total == 0


async def test_list_rejects_bad_paging(store: HistoryStore) -> None:
    for bad in ({"limit": 0}, {"limit": history.MAX_LIST_LIMIT + 1}, {"offset": -1}):
        with pytest.raises(ValueError):
            await store.list(**bad)  # type: ignore[arg-type]


async def test_values_json_cannot_hold_are_stored_sanely(store: HistoryStore) -> None:
    record = make_record(
        caller_number="+1555\x00",
        dtmf=("1", "2"),
        transcript=[{"role": "caller", "text": "nul\x00byte", "at": float("nan"), 7: ("a", b"b")}],
        tool_calls=[{"name": "f", "result": {"value": float("inf"), "obj": CallState.HELD}}],
    )
    await store.save(record)
    row = await store.get(record.session_id)
    assert row is not None
    assert row["caller_number"] == "+1555\ufffd"
    assert row["dtmf"] == ["1", "2"]
    assert row["transcript"] == [
        {"role": "caller", "text": "nul\ufffdbyte", "at": None, "7": ["a", "b'b'"]}
    ]
    assert row["tool_calls"] == [{"name": "f", "result": {"value": None, "obj": "held"}}]


async def test_duration_is_talk_time(store: HistoryStore) -> None:
    unanswered = make_record(1, answered_at=None, codec=None, end_reason="cancel")
    live = make_record(2, ended_at=None, state=CallState.ANSWERED, end_reason=None)
    await store.save(unanswered)
    await store.save(live)
    assert (await store.get(unanswered.session_id) or {})["duration_s"] == 0.0
    live_row = await store.get(live.session_id)
    assert live_row is not None
    assert (live_row["duration_s"], live_row["ended_at"]) == (None, None)
    # Calls that never ended sort after the ended ones.
    assert [row["session_id"] for row in await store.list()] == [
        unanswered.session_id,
        live.session_id,
    ]


async def test_recording_path_and_truncated_flag_round_trip(store: HistoryStore) -> None:
    recorded = make_record(recording_path="/rec/20240501/s1.wav", recording_truncated=True)
    await store.save(recorded)
    assert await store.get(recorded.session_id) == expected_detail(recorded)
    (row,) = await store.list()
    assert (row["recording_path"], row["recording_truncated"]) == ("/rec/20240501/s1.wav", True)


async def test_resave_without_recording_keeps_the_stored_path(store: HistoryStore) -> None:
    recorded = make_record(recording_path="recordings/s1.wav", recording_truncated=True)
    await store.save(recorded)
    await store.save(make_record(end_reason="admin"))
    row = await store.get(recorded.session_id)
    assert row is not None
    assert (row["recording_path"], row["recording_truncated"], row["end_reason"]) == (
        "recordings/s1.wav", True, "admin",
    )
    # A new recording replaces both.
    await store.save(make_record(recording_path="recordings/s2.wav"))
    row = await store.get(recorded.session_id)
    assert row is not None
    assert (row["recording_path"], row["recording_truncated"]) == ("recordings/s2.wav", False)


async def test_closed_store_raises_history_error(database_url: str) -> None:
    store = await open_history(database_url)
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(HistoryError, match="closed"):
        await store.save(make_record())
    with pytest.raises(HistoryError, match="closed"):
        await store.get("s1")


async def test_reopening_keeps_the_calls_and_migrates_once(database_url: str) -> None:
    async with await open_history(database_url) as store:
        await store.save(make_record())
    async with await open_history(database_url) as store:
        assert (await store.list()).total == 1
    assert schema_versions(database_url) == KNOWN_VERSIONS


async def test_a_new_migration_is_applied_once_in_order(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with await open_history(database_url) as store:
        await store.save(make_record())
    added = Migration(
        version=KNOWN_VERSIONS[-1] + 1,
        description="call rating",
        statements=("ALTER TABLE calls ADD COLUMN rating {real}",),
    )
    monkeypatch.setattr(history, "MIGRATIONS", (*history.MIGRATIONS, added))
    for _ in range(2):  # the second open must not add the column again
        async with await open_history(database_url) as store:
            assert (await store.list()).total == 1
    assert schema_versions(database_url) == [*KNOWN_VERSIONS, added.version]


async def test_a_schema_newer_than_the_code_is_refused(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await (await open_history(database_url)).close()
    monkeypatch.setattr(history, "MIGRATIONS", ())
    refused = rf"^{SETTING}: .*schema is version {KNOWN_VERSIONS[-1]}, newer"
    with pytest.raises(ConfigError, match=refused) as caught:
        await open_history(database_url)
    assert caught.value.setting == SETTING


async def test_concurrent_opens_migrate_once(database_url: str) -> None:
    stores = await asyncio.gather(*(open_history(database_url) for _ in range(4)))
    await asyncio.gather(*(store.save(make_record(n)) for n, store in enumerate(stores)))
    for store in stores:
        await store.close()
    assert schema_versions(database_url) == KNOWN_VERSIONS


# --- SQLite specifics --------------------------------------------------------------------------


async def test_sqlite_runs_in_one_worker_thread_in_wal_mode(tmp_path: Path) -> None:
    store = await open_history(f"sqlite:///{tmp_path}/h.sqlite3")
    assert isinstance(store, SqliteHistoryStore)
    threads: set[str] = set()

    def trace(connection: sqlite3.Connection) -> str:
        connection.set_trace_callback(lambda _: threads.add(threading.current_thread().name))
        mode: str = connection.execute("PRAGMA journal_mode").fetchone()[0]
        return mode

    try:
        assert await store._run(trace) == "wal"
        await store.save(make_record())
        await store.list()
        await store.get("s00000000001")
    finally:
        await store.close()
    assert threads
    assert all(name.startswith("sipagent-history") for name in threads), threads
    assert threading.current_thread().name not in threads


async def test_sqlite_default_url_is_relative_and_creates_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with await open_history("sqlite:///data/sipagent.sqlite3") as store:
        await store.save(make_record())
    assert (tmp_path / "data" / "sipagent.sqlite3").is_file()


async def test_sqlite_in_memory() -> None:
    async with await open_history("sqlite:///:memory:") as store:
        await store.save(make_record())
        assert (await store.list()).total == 1


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("mysql://db/sipagent", "unsupported database 'mysql://db/sipagent'"),
        ("sqlite://relative.db", "needs three slashes"),
        ("sqlite:///", "needs three slashes"),
        ("sqlite:///h.db?mode=ro", "query parameters are not supported"),
    ],
)
async def test_bad_urls_are_one_line_config_errors(url: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        await open_history(url)
    message = str(caught.value)
    assert message.startswith(f"{SETTING}: ") and reason in message and "\n" not in message
    assert caught.value.setting == SETTING


async def test_unopenable_sqlite_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=rf"^{SETTING}: cannot open SQLite database"):
        await open_history(f"sqlite:///{tmp_path}/file/h.sqlite3")
    (tmp_path / "garbage.sqlite3").write_bytes(b"not a database at all" * 100)
    with pytest.raises(ConfigError, match=rf"^{SETTING}: cannot use SQLite database"):
        await open_history(f"sqlite:///{tmp_path}/garbage.sqlite3")


# --- PostgreSQL specifics ----------------------------------------------------------------------


async def test_unreachable_postgres_is_a_config_error_without_the_password() -> None:
    url = f"postgresql://sipagent:s3cret@127.0.0.1:{_free_port()}/sipagent?connect_timeout=2"
    with pytest.raises(ConfigError) as caught:
        await open_history(url)
    message = str(caught.value)
    assert message.startswith(f"{SETTING}: cannot connect to postgresql://sipagent:***@127.0.0.1")
    assert "s3cret" not in message and "\n" not in message


async def test_invalid_postgres_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=rf"^{SETTING}: invalid PostgreSQL URL"):
        await open_history("postgresql://h/db?nonsense_option=1")


async def test_postgres_reconnects_after_the_server_drops_the_session(
    postgres_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    with _postgres_database(postgres_server) as url:
        async with await open_history(url) as store:
            assert isinstance(store, PostgresHistoryStore)
            await store.save(make_record(1))
            with psycopg.connect(postgres_server, autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'sipagent' AND datname = %s",
                    (url.rpartition("/")[2],),
                ).fetchall()
            assert killed == [(True,)]
            with caplog.at_level(logging.INFO, logger="sipagent.history_postgres"):
                await store.save(make_record(2))
            assert "connecting to PostgreSQL again" in caplog.text
            assert (await store.list()).total == 2


async def test_postgres_accepts_sqlalchemy_style_scheme(postgres_server: str) -> None:
    with _postgres_database(postgres_server) as url:
        async with await open_history(url.replace("postgresql://", "postgresql+psycopg://")):
            pass


# --- the recorder ------------------------------------------------------------------------------


class FlakyStore(HistoryStore):
    """Delegates to a real store, failing the first ``failures`` saves (or blocking them)."""

    def __init__(self, inner: HistoryStore, failures: int = 0) -> None:
        self.inner = inner
        self.failures = failures
        self.attempts = 0
        self.gate: asyncio.Event | None = None

    async def save(self, record: CallRecord) -> None:
        self.attempts += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.attempts <= self.failures:
            raise HistoryError("database is down")
        await self.inner.save(record)

    async def close(self) -> None:
        await self.inner.close()

    async def _save_row(self, row: Mapping[str, object]) -> None:
        raise AssertionError("not used")

    async def _select_page(
        self, filters: Mapping[str, object], limit: int, offset: int
    ) -> tuple[int, Sequence[Mapping[str, object]]]:
        return await self.inner._select_page(filters, limit, offset)

    async def _select_one(self, session_id: str) -> Mapping[str, object] | None:
        return await self.inner._select_one(session_id)


def end_call(registry: CallRegistry, record: CallRecord) -> None:
    record.ended_at = record.ended_at or T0 + 99
    registry.remove(record.session_id)


async def test_recorder_saves_only_ended_calls(store: HistoryStore) -> None:
    registry = CallRegistry()
    recorder = HistoryRecorder(store, registry)
    live, ended = make_record(1, state=CallState.RINGING), make_record(2, state=CallState.ANSWERED)
    registry.add(live)
    registry.add(ended)
    registry.touch(live)
    end_call(registry, ended)
    await recorder.flush()
    assert [row["session_id"] for row in await store.list()] == [ended.session_id]
    assert (await store.get(ended.session_id) or {})["state"] == "ended"
    assert (recorder.saved, recorder.failed, recorder.pending) == (1, 0, 0)
    await recorder.close()


async def test_recorder_saves_the_call_as_it_ended(store: HistoryStore) -> None:
    registry = CallRegistry()
    recorder = HistoryRecorder(store, registry)
    record = make_record(state=CallState.ANSWERED)
    registry.add(record)
    end_call(registry, record)
    expected = expected_detail(record)
    record.transcript.append({"role": "caller", "text": "too late"})  # after the removal
    record.end_reason = "mutated"
    await recorder.close()
    assert await store.get(record.session_id) == expected


async def test_recorder_never_makes_the_registry_wait(store: HistoryStore) -> None:
    registry = CallRegistry()
    flaky = FlakyStore(store)
    flaky.gate = asyncio.Event()
    recorder = HistoryRecorder(flaky, registry)
    record = make_record(state=CallState.ANSWERED)
    registry.add(record)
    end_call(registry, record)  # returns although the database is stuck
    await asyncio.sleep(0)
    assert recorder.pending == 1
    flaky.gate.set()
    await recorder.flush()
    assert recorder.pending == 0
    assert await store.get(record.session_id) is not None


async def test_recorder_retries_a_failing_save(
    store: HistoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CallRegistry()
    flaky = FlakyStore(store, failures=1)
    recorder = HistoryRecorder(flaky, registry, retry_delays=(0.01, 0.01))
    record = make_record(state=CallState.ANSWERED)
    registry.add(record)
    with caplog.at_level(logging.WARNING, logger="sipagent.history"):
        end_call(registry, record)
        await recorder.flush()
    assert flaky.attempts == 2
    assert (recorder.saved, recorder.failed) == (1, 0)
    assert await store.get(record.session_id) is not None
    assert "retrying" in caplog.text


async def test_recorder_gives_up_quietly_after_its_retries(
    store: HistoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CallRegistry()
    flaky = FlakyStore(store, failures=100)
    recorder = HistoryRecorder(flaky, registry, retry_delays=(0.01, 0.01))
    record = make_record(state=CallState.ANSWERED)
    registry.add(record)
    with caplog.at_level(logging.WARNING, logger="sipagent.history"):
        assert registry.remove(record.session_id) is record  # nothing raised into the registry
        await recorder.flush()
    assert flaky.attempts == 3
    assert (recorder.saved, recorder.failed) == (0, 1)
    assert "not saved to history after 3 attempts: database is down" in caplog.text
    assert await store.get(record.session_id) is None


async def test_closed_recorder_stops_listening(store: HistoryStore) -> None:
    registry = CallRegistry()
    recorder = HistoryRecorder(store, registry)
    await recorder.close()
    record = make_record(state=CallState.ANSWERED)
    registry.add(record)
    end_call(registry, record)
    await asyncio.sleep(0)
    assert recorder.pending == 0
    assert await store.get(record.session_id) is None


def test_recorder_without_a_running_loop_logs_and_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CallRegistry()
    recorder = HistoryRecorder(FlakyStore(None), registry)  # type: ignore[arg-type]
    record = make_record(state=CallState.ANSWERED)
    registry.add(record)
    with caplog.at_level(logging.ERROR, logger="sipagent.history"):
        registry.remove(record.session_id)
    assert recorder.failed == 1
    assert "no running event loop" in caplog.text
