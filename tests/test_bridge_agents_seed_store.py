"""The seed agents' SQLite store and shared helpers."""

from __future__ import annotations

import re
import sqlite3
import threading
from datetime import date, time, timedelta, timezone
from pathlib import Path

import pytest

from bridge.agents.seed import store as seed
from bridge.agents.seed.store import (
    PHONE_ALPHABET,
    PIN_ITERATIONS,
    SEED_PINS,
    SeedStore,
    date_info,
    error,
    format_usd,
    get_store,
    hash_pin,
    normalize_number,
    parse_date,
    parse_time,
    random_code,
    seed_db_path,
    set_store,
    spell,
    verify_pin,
)
from tests.seed_context import NOW, Clock
from tests.seed_context import clock_fixture as clock_fixture
from tests.seed_context import store_fixture as store_fixture


def count(connection: sqlite3.Connection, table: str) -> int:
    return int(connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


async def test_the_file_is_created_and_seeded_on_first_use(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "seed.sqlite3"
    store = SeedStore(path, pin_iterations=1000)
    try:
        assert not path.exists()  # constructing does no I/O
        tables = await store.read(
            lambda c: {
                t: count(c, t)
                for t in ("bank_accounts", "pix_keys", "reservations", "locations", "services")
            }
        )
    finally:
        store.close()
    assert path.exists()
    assert tables == {
        "bank_accounts": 4,
        "pix_keys": 6,
        "reservations": 3,
        "locations": 3,
        "services": 5,
    }


async def test_an_existing_file_is_not_seeded_again(tmp_path: Path) -> None:
    path = tmp_path / "seed.sqlite3"
    first = SeedStore(path, pin_iterations=1000)
    await first.write(lambda c: c.execute("DELETE FROM reservations WHERE confirmation = 'H7KM3X'"))
    first.close()
    second = SeedStore(path, pin_iterations=1000)
    try:
        assert await second.read(lambda c: count(c, "reservations")) == 2
        assert await second.read(lambda c: count(c, "bank_customers")) == 3
    finally:
        second.close()


async def test_queries_run_on_the_worker_thread(store: SeedStore) -> None:
    loop_thread = threading.get_ident()
    assert await store.read(lambda c: threading.get_ident()) != loop_thread
    assert await store.write(lambda c: threading.get_ident()) != loop_thread


async def test_write_commits_or_rolls_back(store: SeedStore) -> None:
    def change_then_fail(connection: sqlite3.Connection) -> None:
        connection.execute("UPDATE bank_accounts SET balance_cents = 0")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await store.write(change_then_fail)
    balances = await store.read(
        lambda c: [r[0] for r in c.execute("SELECT balance_cents FROM bank_accounts")]
    )
    assert 0 not in balances
    await store.write(lambda c: c.execute("UPDATE bank_accounts SET balance_cents = 7"))
    assert await store.read(lambda c: c.execute("SELECT MIN(balance_cents) FROM bank_accounts"))


async def test_pins_are_stored_as_salted_hashes(store: SeedStore) -> None:
    rows = await store.read(
        lambda c: c.execute("SELECT number, pin_hash FROM bank_accounts").fetchall()
    )
    hashes = {row["number"]: row["pin_hash"] for row in rows}
    assert set(hashes) == set(SEED_PINS)
    for number, encoded in hashes.items():
        assert SEED_PINS[number] not in encoded.split("$")
        assert verify_pin(SEED_PINS[number], encoded)
    # The same PIN (two accounts of one customer) has two different salts.
    assert hashes["482137"] != hashes["482138"]


def test_hash_pin_format_and_verification() -> None:
    encoded = hash_pin("2468")
    scheme, rounds, salt, digest = encoded.split("$")
    assert (scheme, int(rounds)) == ("pbkdf2_sha256", PIN_ITERATIONS)
    assert len(bytes.fromhex(salt)) == 16 and len(bytes.fromhex(digest)) == 32
    assert verify_pin("2468", encoded)
    assert not verify_pin("2469", encoded)
    assert hash_pin("2468", iterations=10, salt=b"s") == hash_pin("2468", iterations=10, salt=b"s")
    for broken in ("", "plain", "md5$1$00$00", "pbkdf2_sha256$x$00$00"):
        assert not verify_pin("2468", broken)


def test_seed_db_path_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIPAGENT_SEED_DB", raising=False)
    assert seed_db_path() == Path("data/seed.sqlite3")
    monkeypatch.setenv("SIPAGENT_SEED_DB", "/tmp/elsewhere.sqlite3")
    assert seed_db_path() == Path("/tmp/elsewhere.sqlite3")
    set_store(None)
    try:
        made = get_store()
        assert made.path == Path("/tmp/elsewhere.sqlite3")
        assert get_store() is made
    finally:
        set_store(None)
        made.close()


def test_store_now_uses_the_clock(store: SeedStore, clock: Clock) -> None:
    assert store.now() == NOW
    clock.now = NOW + timedelta(hours=1)
    assert store.now(timezone(timedelta(hours=-3))).hour == 15


def test_main_creates_and_resets_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cli.sqlite3"
    seed.main([str(path)])
    assert path.exists()
    with sqlite3.connect(path) as connection:
        connection.execute("DELETE FROM orders")
    seed.main(["--reset", str(path)])
    with sqlite3.connect(path) as connection:
        assert count(connection, "orders") == 3
    assert str(path) in capsys.readouterr().out


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [
        ("+5511987654321", "55", "+5511987654321"),
        ("sip:+55 11 98765-4321@carrier;user=phone", "55", "+5511987654321"),
        ("11987654321", "55", "+5511987654321"),
        ("011987654321", "55", "+5511987654321"),
        ("1133334444", "55", "+551133334444"),
        ("005511987654321", "55", "+5511987654321"),
        ("4805550123", "1", "+14805550123"),
        ("14805550123", "1", "+14805550123"),
        ("+1 (480) 555-0123", "1", "+14805550123"),
        ("", "1", ""),
        ("anonymous", "1", ""),
        ("123", "1", ""),
    ],
)
def test_normalize_number(raw: str, country: str, expected: str) -> None:
    assert normalize_number(raw, country) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-06-10", date(2025, 6, 10)),
        (" Today ", date(2025, 6, 3)),
        ("tomorrow", date(2025, 6, 4)),
        ("friday", date(2025, 6, 6)),
        ("tuesday", date(2025, 6, 3)),
        ("monday", date(2025, 6, 9)),
        ("2025-02-30", None),
        ("10/06/2025", None),
        ("next week", None),
    ],
)
def test_parse_date(text: str, expected: date | None) -> None:
    assert parse_date(text, date(2025, 6, 3)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("19:30", time(19, 30)),
        ("7:30 pm", time(19, 30)),
        ("7 PM", time(19, 0)),
        ("7p.m.", time(19, 0)),
        ("12am", time(0, 0)),
        ("12 pm", time(12, 0)),
        ("noon", time(12, 0)),
        ("19h30", time(19, 30)),
        ("0830", time(8, 30)),
        ("24:00", None),
        ("13pm", None),
        ("7:75", None),
        ("evening", None),
    ],
)
def test_parse_time(text: str, expected: time | None) -> None:
    assert parse_time(text) == expected


def test_small_helpers() -> None:
    assert error("bad", "Bad.", hint=1) == {
        "status": "error",
        "code": "bad",
        "message": "Bad.",
        "hint": 1,
    }
    assert format_usd(0) == "$0.00"
    assert format_usd(350) == "$3.50"
    assert format_usd(123456) == "$1,234.56"
    assert spell("H7KM3X") == "H-7-K-M-3-X"
    assert spell("PTY-3F7K") == "P-T-Y-3-F-7-K"
    assert date_info(NOW.astimezone(timezone(timedelta(hours=-7)))) == {
        "status": "ok",
        "today": "2025-06-03",
        "weekday": "Tuesday",
        "time": "10:00",
        "tomorrow": "2025-06-04",
    }


def test_random_codes_mix_letters_and_digits() -> None:
    for _ in range(200):
        code = random_code(6)
        assert re.fullmatch(f"[{PHONE_ALPHABET}]{{6}}", code)
        assert any(ch.isdigit() for ch in code) and any(ch.isalpha() for ch in code)
    assert not set(PHONE_ALPHABET) & set("0O1IL2Z5S8BCDEGPTVN")
