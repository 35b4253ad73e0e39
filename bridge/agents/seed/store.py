"""The seed agents' data: one SQLite file, created with demo rows on first use.

The file is ``$SIPAGENT_SEED_DB`` (default ``data/seed.sqlite3``, relative to the working
directory). Every query runs on one worker thread that owns the connection, so the event loop
never waits on the disk and writes never contend inside the process: :meth:`SeedStore.read`
runs a function on the connection, :meth:`SeedStore.write` runs it inside one ``BEGIN
IMMEDIATE`` transaction that commits when the function returns and rolls back when it raises.

The schema and the demo rows (a Brazilian bank, a restaurant, a trampoline park, a car service
shop) are created on the first query when the file has none; ``python -m
bridge.agents.seed.store [--reset] [PATH]`` does it ahead of time. Also here: what the four
seed modules share (structured errors, phone numbers, dates and times, PIN hashing).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import logging
import os
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Any, Final, TypeVar

from bridge.agents.context import AgentCallContext, number_of

__all__ = [
    "DEFAULT_SEED_DB",
    "PHONE_ALPHABET",
    "PIN_ITERATIONS",
    "SEED_DB_ENV",
    "SEED_PINS",
    "SeedStore",
    "ToolResult",
    "call_log",
    "date_info",
    "error",
    "format_usd",
    "get_store",
    "hash_pin",
    "normalize_number",
    "parse_date",
    "parse_time",
    "random_code",
    "seed_db_path",
    "set_store",
    "spell",
    "verify_pin",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

ToolResult = dict[str, Any]
"""What a seed tool returns: a JSON-able mapping with a ``status``."""

SEED_DB_ENV: Final = "SIPAGENT_SEED_DB"
"""The environment variable naming the SQLite file."""
DEFAULT_SEED_DB: Final = Path("data/seed.sqlite3")
"""The SQLite file when :data:`SEED_DB_ENV` is unset."""
PIN_ITERATIONS: Final = 100_000
"""PBKDF2-SHA256 rounds for a stored PIN (the count is stored with each hash)."""
SEED_VERSION: Final = "1"

SEED_PINS: Final = {"482137": "2468", "482138": "2468", "551902": "1357", "608774": "9024"}
"""The demo accounts' keypad PINs (only their salted hashes are stored)."""


# -- results and logging ------------------------------------------------------------------------
def error(code: str, message: str, **details: Any) -> ToolResult:
    """A structured failure the model can act on: ``{"status": "error", "code", "message"}``."""
    return {"status": "error", "code": code, "message": message, **details}


class _CallLog(logging.LoggerAdapter[logging.Logger]):
    """Every line carries the Call-ID (``extra``), like the call's own log."""

    def process(self, msg: str, kwargs: Any) -> tuple[str, Any]:
        # sipagent.logs prints the Call-ID from the record, not from the text.
        return msg, {**kwargs, "extra": {**(self.extra or {}), **kwargs.get("extra", {})}}


def call_log(log: logging.Logger, ctx: AgentCallContext) -> logging.LoggerAdapter[logging.Logger]:
    """``log`` with the call's Call-ID on every line."""
    return _CallLog(log, {"call_id": ctx.call.call_id})


def format_usd(cents: int) -> str:
    """A price in dollars: ``$1,234.50``."""
    return f"${cents // 100:,}.{cents % 100:02d}"


# -- codes read over the phone ------------------------------------------------------------------
PHONE_ALPHABET: Final = "AFHJKMRUWXY34679"
"""Characters of confirmation numbers and references: no 0/O, 1/I/L, 2/Z, 5/S, 8/B, and none
of the letters that sound alike on a phone line (B C D E G P T V, M/N keeps only M)."""


def random_code(length: int) -> str:
    """A random code of :data:`PHONE_ALPHABET` with at least one letter and one digit."""
    while True:
        code = "".join(secrets.choice(PHONE_ALPHABET) for _ in range(length))
        if any(ch.isdigit() for ch in code) and any(ch.isalpha() for ch in code):
            return code


def spell(code: str) -> str:
    """``code`` as it is read on the phone, one character at a time: ``H-7-K-M-3-X``."""
    return "-".join(ch for ch in code if ch.isalnum())


# -- phone numbers, dates, times -------------------------------------------------------------
_NATIONAL_LENGTHS: Final = {"1": (10,), "55": (10, 11)}


def normalize_number(raw: str, country_code: str) -> str:
    """``raw`` (a number or SIP/tel URI) in E.164 (``+5511987654321``); "" when it is none.

    National numbers get ``country_code``; a trunk ``0`` is dropped (``011 98765-4321``).
    """
    text = number_of(raw or "")
    if text.startswith("+"):
        digits = text[1:]
        return "+" + digits if digits.isdigit() and len(digits) >= 7 else ""
    if not text.isdigit():
        return ""
    if text.startswith("00"):
        return "+" + text[2:]
    national = text[1:] if text.startswith("0") else text
    if len(national) in _NATIONAL_LENGTHS.get(country_code, ()):
        return f"+{country_code}{national}"
    return "+" + text if len(text) >= 7 else ""


def date_info(now: datetime) -> ToolResult:
    """Today's date, weekday and time at ``now`` (an aware local time), for the model."""
    return {
        "status": "ok",
        "today": now.date().isoformat(),
        "weekday": now.strftime("%A"),
        "time": now.strftime("%H:%M"),
        "tomorrow": (now.date() + timedelta(days=1)).isoformat(),
    }


_WEEKDAYS: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def parse_date(value: str, today: date) -> date | None:
    """``YYYY-MM-DD``, ``today``, ``tomorrow`` or a weekday name (its next occurrence)."""
    text = value.strip().lower()
    if text == "today":
        return today
    if text == "tomorrow":
        return today + timedelta(days=1)
    if text in _WEEKDAYS:
        ahead = (_WEEKDAYS.index(text) - today.weekday()) % 7
        return today + timedelta(days=ahead)
    try:
        return date.fromisoformat(text) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) else None
    except ValueError:
        return None


_TIME: Final = re.compile(r"(\d{1,2})(?:[:h.]?(\d{2}))?\s*(?:([ap])\.?\s*m?\.?)?")


def parse_time(value: str) -> time | None:
    """``19:30``, ``7:30 pm``, ``7pm``, ``19h30`` or ``noon``; None when it is none of them."""
    text = value.strip().lower()
    if text == "noon":
        return time(12, 0)
    match = _TIME.fullmatch(text)
    if match is None:
        return None
    hour, minute = int(match[1]), int(match[2] or 0)
    if match[3]:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if match[3] == "p" else 0)
    if hour > 23 or minute > 59:
        return None
    return time(hour, minute)


# -- PINs ---------------------------------------------------------------------------------------
def hash_pin(pin: str, *, iterations: int = PIN_ITERATIONS, salt: bytes | None = None) -> str:
    """``pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>`` for ``pin`` (a random salt)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def verify_pin(pin: str, encoded: str) -> bool:
    """Whether ``pin`` is the one :func:`hash_pin` encoded (constant-time comparison)."""
    try:
        scheme, rounds, salt_hex, digest_hex = encoded.split("$")
        iterations, salt, expected = int(rounds), bytes.fromhex(salt_hex), bytes.fromhex(digest_hex)
    except ValueError:
        return False
    if scheme != "pbkdf2_sha256":
        return False
    actual = hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, iterations)
    return hmac.compare_digest(actual, expected)


# -- the store ----------------------------------------------------------------------------------
def _utc_now() -> datetime:
    return datetime.now(UTC)


class SeedStore:
    """The seed SQLite file, used from one worker thread; created and seeded on first use."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], datetime] = _utc_now,
        pin_iterations: int = PIN_ITERATIONS,
    ) -> None:
        self.path = Path(path)
        "The SQLite file."
        self._clock = clock
        self._pin_iterations = pin_iterations
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seed-sqlite")
        self._connection: sqlite3.Connection | None = None

    def now(self, tz: tzinfo = UTC) -> datetime:
        """The current time in ``tz`` (from the store's clock, so tests can fix it)."""
        return self._clock().astimezone(tz)

    async def read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """``query(connection)`` on the worker thread, outside any transaction."""
        return await self._run(lambda: query(self._connect()))

    async def write(self, change: Callable[[sqlite3.Connection], T]) -> T:
        """``change(connection)`` inside one transaction: committed, or rolled back if it raises."""
        return await self._run(lambda: self._transaction(change))

    async def ensure_ready(self) -> None:
        """Create and seed the file now rather than on the first query."""
        await self._run(self._connect)

    def close(self) -> None:
        """Close the connection and stop the worker thread (waits for queued queries)."""
        self._executor.submit(self._disconnect)
        self._executor.shutdown(wait=True)

    async def _run(self, job: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, job)

    def _transaction(self, change: Callable[[sqlite3.Connection], T]) -> T:
        connection = self._connect()
        connection.execute("BEGIN IMMEDIATE")
        try:
            result = change(connection)
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return result

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("PRAGMA journal_mode = WAL")
            try:
                self._seed(connection)
            except BaseException:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _seed(self, connection: sqlite3.Connection) -> None:
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA_STATEMENTS:
                connection.execute(statement)
            row = connection.execute("SELECT value FROM meta WHERE key = 'seed_version'").fetchone()
            if row is None:
                _insert_seed_rows(connection, self._clock(), self._pin_iterations)
                connection.execute(
                    "INSERT INTO meta (key, value) VALUES ('seed_version', ?)", (SEED_VERSION,)
                )
                logger.info("created the seed agents' data in %s", self.path)
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")


_store: SeedStore | None = None
_store_lock = threading.Lock()


def seed_db_path() -> Path:
    """The configured SQLite file: ``$SIPAGENT_SEED_DB`` or ``data/seed.sqlite3``."""
    return Path(os.environ.get(SEED_DB_ENV) or DEFAULT_SEED_DB)


def get_store() -> SeedStore:
    """The process's store (made on first use from :func:`seed_db_path`; no I/O here)."""
    global _store
    with _store_lock:
        if _store is None:
            _store = SeedStore(seed_db_path())
        return _store


def set_store(store: SeedStore | None) -> None:
    """Use ``store`` from now on (tests); None: make a new one from the setting next time."""
    global _store
    with _store_lock:
        _store = store


# -- schema and demo rows -----------------------------------------------------------------------
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS bank_customers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    phone TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS bank_accounts (
    number TEXT PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES bank_customers (id),
    kind TEXT NOT NULL CHECK (kind IN ('checking', 'savings')),
    balance_cents INTEGER NOT NULL CHECK (balance_cents >= 0),
    pin_hash TEXT NOT NULL,
    transfer_limit_cents INTEGER NOT NULL CHECK (transfer_limit_cents > 0),
    daily_limit_cents INTEGER NOT NULL CHECK (daily_limit_cents > 0)
);
CREATE TABLE IF NOT EXISTS pix_keys (
    key TEXT PRIMARY KEY,
    key_type TEXT NOT NULL CHECK (key_type IN ('cpf', 'cnpj', 'phone', 'email', 'random')),
    holder_name TEXT NOT NULL,
    bank_name TEXT NOT NULL,
    account_number TEXT REFERENCES bank_accounts (number)
);
CREATE TABLE IF NOT EXISTS bank_transfers (
    id INTEGER PRIMARY KEY,
    call_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('internal', 'pix')),
    from_account TEXT NOT NULL REFERENCES bank_accounts (number),
    to_account TEXT REFERENCES bank_accounts (number),
    pix_key TEXT,
    amount_cents INTEGER NOT NULL CHECK (amount_cents > 0),
    local_day TEXT NOT NULL,
    created_at TEXT NOT NULL,
    result TEXT NOT NULL,
    UNIQUE (call_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS bank_transfers_daily ON bank_transfers (from_account, local_day);

CREATE TABLE IF NOT EXISTS reservations (
    confirmation TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    party_size INTEGER NOT NULL CHECK (party_size > 0),
    date TEXT NOT NULL,
    time TEXT NOT NULL,
    notes TEXT NOT NULL DEFAULT '',
    phone TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL CHECK (status IN ('booked', 'cancelled')),
    call_id TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    cancelled_at TEXT
);
CREATE INDEX IF NOT EXISTS reservations_by_day ON reservations (date, status);

CREATE TABLE IF NOT EXISTS locations (
    slug TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    city TEXT NOT NULL,
    address TEXT NOT NULL,
    phone TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS location_hours (
    location TEXT NOT NULL REFERENCES locations (slug),
    weekday INTEGER NOT NULL CHECK (weekday BETWEEN 0 AND 6),
    opens TEXT NOT NULL,
    closes TEXT NOT NULL,
    PRIMARY KEY (location, weekday)
);
CREATE TABLE IF NOT EXISTS catalogue (
    sku TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    category TEXT NOT NULL,
    description TEXT NOT NULL,
    price_cents INTEGER NOT NULL,
    in_stock INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS admission_prices (
    age_group TEXT NOT NULL,
    label TEXT NOT NULL,
    ages TEXT NOT NULL,
    duration_minutes INTEGER NOT NULL,
    price_cents INTEGER NOT NULL,
    PRIMARY KEY (age_group, duration_minutes)
);
CREATE TABLE IF NOT EXISTS party_packages (
    code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    price_cents INTEGER NOT NULL,
    kids_included INTEGER NOT NULL,
    extra_kid_cents INTEGER NOT NULL,
    max_kids INTEGER NOT NULL,
    duration_minutes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS parties (
    reference TEXT PRIMARY KEY,
    package TEXT NOT NULL REFERENCES party_packages (code),
    location TEXT NOT NULL REFERENCES locations (slug),
    date TEXT NOT NULL,
    time TEXT NOT NULL,
    kids INTEGER NOT NULL CHECK (kids > 0),
    contact_name TEXT NOT NULL,
    phone TEXT NOT NULL DEFAULT '',
    call_id TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS parties_by_slot ON parties (location, date, time);
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    phone TEXT NOT NULL,
    status TEXT NOT NULL,
    placed_on TEXT NOT NULL,
    items TEXT NOT NULL,
    total_cents INTEGER NOT NULL,
    carrier TEXT,
    tracking TEXT,
    estimated_delivery TEXT
);

CREATE TABLE IF NOT EXISTS service_customers (
    phone TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    vehicle TEXT NOT NULL,
    last_visit TEXT
);
CREATE TABLE IF NOT EXISTS services (
    code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    duration_minutes INTEGER NOT NULL CHECK (duration_minutes % 30 = 0),
    price_cents INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS appointments (
    reference TEXT PRIMARY KEY,
    service TEXT NOT NULL REFERENCES services (code),
    date TEXT NOT NULL,
    time TEXT NOT NULL,
    bay INTEGER NOT NULL,
    name TEXT NOT NULL,
    phone TEXT NOT NULL DEFAULT '',
    call_id TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS appointments_by_day ON appointments (date);
"""

_SCHEMA_STATEMENTS: Final = tuple(
    statement.strip() for statement in _SCHEMA.split(";") if statement.strip()
)


@dataclass(frozen=True, slots=True)
class _Day:
    """A date relative to the day the file is seeded, so demo bookings stay in the future."""

    offset: int


@dataclass(frozen=True, slots=True)
class _Pin:
    """The salted hash of the demo account's PIN (:data:`SEED_PINS`)."""

    account: str


_SEEDED: Final = object()
"""Stands for the time the file is seeded (``created_at`` columns)."""

_WEEKLY_HOURS: Final[dict[str, tuple[tuple[str, str] | None, ...]]] = {
    "tempe": (("10:00", "20:00"),) * 4 + (("10:00", "22:00"),) * 2 + (("10:00", "19:00"),),
    "mesa": (("12:00", "20:00"),) * 4 + (("10:00", "22:00"),) * 2 + (("10:00", "19:00"),),
    "glendale": (None,)
    + (("14:00", "20:00"),) * 3
    + (("10:00", "21:00"),) * 2
    + (("10:00", "18:00"),),
}
"""Skyhop opening hours, Monday first (None: closed)."""

# Rows read better as rows: one per line, or two when it is wide.
# fmt: off
_DEMO_ROWS: Final[tuple[tuple[str, str, tuple[tuple[Any, ...], ...]], ...]] = (
    # Banco Sinal (Signal SP): customers known by caller number; account numbers without the dash.
    ("bank_customers", "id, name, phone", (
        (1, "Ana Beatriz Souza", "+5511987654321"),
        (2, "Carlos Eduardo Lima", "+5521998765432"),
        (3, "Mariana Oliveira Santos", "+5531991234567"),
    )),
    ("bank_accounts",
     "number, customer_id, kind, balance_cents, pin_hash, transfer_limit_cents,"
     " daily_limit_cents", (
        ("482137", 1, "checking", 845075, _Pin("482137"), 500000, 1000000),
        ("482138", 1, "savings", 3210000, _Pin("482138"), 500000, 1000000),
        ("551902", 2, "checking", 125000, _Pin("551902"), 100000, 200000),
        ("608774", 3, "checking", 2390010, _Pin("608774"), 2000000, 5000000),
    )),
    ("pix_keys", "key, key_type, holder_name, bank_name, account_number", (
        ("52998224725", "cpf", "Ana Beatriz Souza", "Banco Sinal", "482137"),
        ("carlos.lima@example.com.br", "email", "Carlos Eduardo Lima", "Banco Sinal", "551902"),
        ("+5531991234567", "phone", "Mariana Oliveira Santos", "Banco Sinal", "608774"),
        ("+5511912345678", "phone", "João Pereira da Silva", "Banco Exemplo", None),
        ("11222333000181", "cnpj", "Padaria Pão Quente Ltda", "Banco Exemplo", None),
        ("7d9f2c1e-4b3a-4e8f-9a6d-2c5b8e1f0a37", "random",
         "Luiza Fernandes Costa", "Cooperativa Horizonte", None),
    )),
    # Saguaro & Salt, Phoenix: a few bookings so that lookups work in a demo.
    ("reservations",
     "confirmation, name, party_size, date, time, notes, phone, status, created_at", (
        ("H7KM3X", "Olivia Chen", 4, _Day(2), "19:00", "anniversary",
         "+14805550142", "booked", _SEEDED),
        ("R4WJ9A", "Sam Patel", 2, _Day(3), "18:30", "",
         "+16025550199", "booked", _SEEDED),
        ("Y6FU7M", "Grace Kim", 6, _Day(1), "20:00", "high chair",
         "+14805550142", "cancelled", _SEEDED),
    )),
    # Skyhop Trampoline Parks: parks, shop, admission, parties, online orders.
    ("locations", "slug, name, city, address, phone", (
        ("tempe", "Skyhop Tempe", "Tempe",
         "1420 W University Dr, Tempe, AZ 85281", "+14805550110"),
        ("mesa", "Skyhop Mesa", "Mesa",
         "2250 E Baseline Rd, Mesa, AZ 85204", "+14805550120"),
        ("glendale", "Skyhop Glendale", "Glendale",
         "7700 W Bell Rd, Glendale, AZ 85308", "+16235550130"),
    )),
    ("location_hours", "location, weekday, opens, closes", tuple(
        (slug, weekday, *hours)
        for slug, week in _WEEKLY_HOURS.items()
        for weekday, hours in enumerate(week)
        if hours is not None
    )),
    ("catalogue", "sku, name, category, description, price_cents, in_stock", (
        ("SOCK-S", "Skyhop grip socks, small", "socks",
         "Non-slip jump socks, kids' sizes 9-13; required on the trampolines", 350, 1),
        ("SOCK-L", "Skyhop grip socks, large", "socks",
         "Non-slip jump socks, adult sizes; required on the trampolines", 400, 1),
        ("GIFT-25", "Gift card $25", "gift cards",
         "Good for jump time, parties and the snack bar", 2500, 1),
        ("GIFT-50", "Gift card $50", "gift cards",
         "Good for jump time, parties and the snack bar", 5000, 1),
        ("TEE-KID", "Skyhop kids T-shirt", "apparel",
         "Blue cotton tee with the Skyhop logo", 1500, 1),
        ("BOTTLE", "Skyhop water bottle", "accessories",
         "24 oz insulated bottle", 1200, 0),
        ("PASS-10", "10-visit jump pass", "passes",
         "Ten 60-minute jump sessions, any location, valid 12 months", 16000, 1),
        ("FAVOR", "Party favor bag", "party",
         "Bouncy ball, stickers, glow bracelet and a free-jump coupon", 600, 1),
    )),
    ("admission_prices", "age_group, label, ages, duration_minutes, price_cents", (
        ("toddler", "Little jumpers", "under 5", 60, 1200),
        ("child", "Kids", "5 to 12", 60, 1900),
        ("child", "Kids", "5 to 12", 90, 2400),
        ("child", "Kids", "5 to 12", 120, 2900),
        ("teen", "Teens and adults", "13 and over", 60, 2100),
        ("teen", "Teens and adults", "13 and over", 90, 2600),
        ("teen", "Teens and adults", "13 and over", 120, 3100),
        ("spectator", "Spectators (not jumping)", "any age", 0, 0),
    )),
    ("party_packages",
     "code, name, description, price_cents, kids_included, extra_kid_cents, max_kids,"
     " duration_minutes", (
        ("basic", "Bounce Basic", "60 minutes of jumping plus 45 minutes in a party room,"
         " grip socks, paper goods", 29900, 10, 2200, 20, 105),
        ("mega", "Mega Bounce", "90 minutes of jumping, 60 minutes in a party room, two large"
         " pizzas, drinks, grip socks and a party host", 44900, 12, 2800, 25, 150),
        ("ultimate", "Ultimate Sky", "120 minutes of jumping, private room for 75 minutes, three"
         " pizzas, drinks, cake, favor bags and a party host", 64900, 15, 3200, 30, 195),
    )),
    ("parties",
     "reference, package, location, date, time, kids, contact_name, phone, created_at", (
        ("PTY-3F7K", "mega", "tempe", _Day(5), "12:30", 14,
         "Rosa Alvarez", "+14805550166", _SEEDED),
    )),
    ("orders",
     "order_id, phone, status, placed_on, items, total_cents, carrier, tracking,"
     " estimated_delivery", (
        ("SKY-10482", "+14805550166", "shipped", _Day(-3),
         '["Gift card $50", "Skyhop kids T-shirt"]', 6500,
         "UPS", "1Z999AA10123456784", _Day(1)),
        ("SKY-10517", "+14805550166", "processing", _Day(-1),
         '["10-visit jump pass"]', 16000,
         None, None, _Day(4)),
        ("SKY-10533", "+16025550199", "delivered", _Day(-9),
         '["Skyhop grip socks, small", "Skyhop grip socks, small"]', 700,
         "USPS", "9400111899223197428490", _Day(-5)),
    )),
    # Desert Auto Care, Scottsdale: customers known by caller number, services, bookings.
    ("service_customers", "phone, name, vehicle, last_visit", (
        ("+14805550123", "Dana Whitfield", "2019 Honda CR-V", _Day(-120)),
        ("+16025550187", "Marcus Reyes", "2016 Ford F-150", _Day(-40)),
    )),
    ("services", "code, name, description, duration_minutes, price_cents", (
        ("oil_change", "Oil change",
         "Synthetic oil and filter, fluid top-up, 21-point check", 30, 7900),
        ("tire_rotation", "Tire rotation",
         "Rotate and balance four tires, pressure check", 30, 4900),
        ("brake_inspection", "Brake inspection",
         "Pads, rotors and fluid inspected; quote for any work", 60, 0),
        ("ac_service", "A/C service",
         "Refrigerant recharge and leak test", 90, 14900),
        ("diagnostic", "Check-engine diagnostic",
         "Scan, road test and written findings", 60, 11900),
    )),
    ("appointments", "reference, service, date, time, bay, name, phone, created_at", (
        ("APT-4KX7", "ac_service", _Day(1), "08:00", 1,
         "Marcus Reyes", "+16025550187", _SEEDED),
        ("APT-9MHW", "oil_change", _Day(1), "08:00", 2,
         "Lena Ortiz", "+14805550177", _SEEDED),
    )),
)
# fmt: on


def _insert_seed_rows(connection: sqlite3.Connection, now: datetime, pin_iterations: int) -> None:
    def value(item: Any) -> Any:
        if isinstance(item, _Day):
            return (now.date() + timedelta(days=item.offset)).isoformat()
        if isinstance(item, _Pin):
            return hash_pin(SEED_PINS[item.account], iterations=pin_iterations)
        if item is _SEEDED:
            return now.isoformat(timespec="seconds")
        return item

    for table, columns, rows in _DEMO_ROWS:
        marks = ", ".join("?" * len(columns.split(",")))
        connection.executemany(
            f"INSERT INTO {table} ({columns}) VALUES ({marks})",
            [tuple(value(item) for item in row) for row in rows],
        )


def main(argv: Sequence[str] | None = None) -> None:
    """Create the seed file (``--reset``: delete it first)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("path", nargs="?", type=Path, default=None, help=f"default: ${SEED_DB_ENV}")
    parser.add_argument("--reset", action="store_true", help="delete the file first")
    args = parser.parse_args(argv)
    path: Path = args.path or seed_db_path()
    if args.reset:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = SeedStore(path)
    try:
        asyncio.run(store.ensure_ready())
    finally:
        store.close()
    print(path)


if __name__ == "__main__":
    main()
