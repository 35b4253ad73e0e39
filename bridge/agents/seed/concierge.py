"""Saguaro & Salt reservations (the AI Concierge seed): book, look up and cancel tables.

A booking gets a 6-character confirmation number from an alphabet chosen for the phone
(:data:`~bridge.agents.seed.store.PHONE_ALPHABET`). It always mixes letters and digits, which
is what lets :func:`extract_confirmation_number` find it again in a call's transcript
("H-7-K-M-3-X", "h 7 k m 3 x", "hotel seven kilo mike three x-ray") for the call record.

The restaurant is in Phoenix (no daylight saving time, so a fixed UTC-7 offset). A booking
must start on a quarter hour, at least 30 minutes from now and at most 60 days ahead, within
the day's seating hours; each start time takes at most :data:`COVERS_PER_SLOT` guests.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from datetime import date as Date
from datetime import datetime, timedelta
from datetime import time as Time
from typing import Annotated, Final

from pydantic import Field

from bridge.agents.context import AgentCallContext

from .common import PHOENIX, current_date, spoken_time
from .store import (
    PHONE_ALPHABET,
    ToolResult,
    call_log,
    error,
    get_store,
    normalize_number,
    parse_date,
    parse_time,
    random_code,
    spell,
)

__all__ = [
    "CONFIRMATION_ALPHABET",
    "COVERS_PER_SLOT",
    "MAX_PARTY",
    "PHOENIX",
    "RESTAURANT",
    "SEATINGS",
    "book_table",
    "cancel_reservation",
    "current_date",
    "extract_confirmation_number",
    "lookup_reservation",
    "new_confirmation",
]

logger = logging.getLogger(__name__)

RESTAURANT: Final = "Saguaro & Salt"
CONFIRMATION_ALPHABET: Final = PHONE_ALPHABET
CONFIRMATION_LENGTH: Final = 6
COVERS_PER_SLOT: Final = 20
"""Guests that may be booked for the same start time."""
MAX_PARTY: Final = 10
"""Larger parties go to the events team (a human)."""
BOOKING_HORIZON: Final = timedelta(days=60)
MIN_NOTICE: Final = timedelta(minutes=30)

SEATINGS: Final[dict[int, tuple[tuple[str, str], ...]]] = {
    1: (("17:00", "21:00"),),
    2: (("17:00", "21:00"),),
    3: (("17:00", "21:00"),),
    4: (("17:00", "22:00"),),
    5: (("17:00", "22:00"),),
    6: (("11:00", "14:00"), ("17:00", "20:00")),
}
"""First and last seating per weekday (0 = Monday, closed); the kitchen closes an hour later."""

_DIGIT_WORDS: Final = {"three": "3", "four": "4", "six": "6", "seven": "7", "nine": "9"}
_NATO: Final = {
    "alpha": "A",
    "alfa": "A",
    "foxtrot": "F",
    "hotel": "H",
    "juliet": "J",
    "juliett": "J",
    "kilo": "K",
    "mike": "M",
    "romeo": "R",
    "uniform": "U",
    "whiskey": "W",
    "whisky": "W",
    "xray": "X",
    "yankee": "Y",
}
_SPOKEN: Final = {**_DIGIT_WORDS, **_NATO}

Confirmation = Annotated[
    str, Field(description="The 6-character confirmation number, e.g. H7KM3X.")
]


def new_confirmation() -> str:
    """A random confirmation number (letters and digits of :data:`CONFIRMATION_ALPHABET`)."""
    return random_code(CONFIRMATION_LENGTH)


def _mixed(code: str) -> bool:
    return any(ch.isdigit() for ch in code) and any(ch.isalpha() for ch in code)


def _normalize_confirmation(value: str) -> str | None:
    code = re.sub(r"[\s\-.,_/]", "", value).upper()
    ok = len(code) == CONFIRMATION_LENGTH and all(ch in CONFIRMATION_ALPHABET for ch in code)
    return code if ok else None


def _invalid_confirmation() -> ToolResult:
    return error(
        "invalid_confirmation",
        "A confirmation number has 6 letters and digits; ask the caller to spell it.",
    )


def extract_confirmation_number(transcript_text: str) -> str | None:
    """The last confirmation number spoken in ``transcript_text``, or None.

    Finds it written together (``H7KM3X``), spelt out with any separators (``H-7-K-M-3-X``,
    ``h, 7, k, m, 3, x``), in groups (``H7K M3X``), with digit and NATO words (``hotel seven
    kilo``) and with "as in" (``H as in hotel``). Ordinary words do not count: a candidate
    needs both letters and digits from the confirmation alphabet.
    """
    text = re.sub(r"(?i)\bx-ray\b", "xray", transcript_text)
    pieces: list[tuple[str, bool]] = []  # (characters, is a code piece) per token
    tokens = [match[0] for match in re.finditer(r"[A-Za-z0-9]+", text)]
    index = 0
    while index < len(tokens):
        token = tokens[index]
        lowered = token.lower()
        chars = _SPOKEN.get(lowered) or token.upper()
        looks_spelt = (
            lowered in _SPOKEN
            or len(token) == 1
            or any(ch.isdigit() for ch in token)
            or token.isupper()
        )
        codeish = (
            looks_spelt
            and len(chars) <= CONFIRMATION_LENGTH
            and all(ch in CONFIRMATION_ALPHABET for ch in chars)
        )
        pieces.append((chars, codeish))
        index += 1
        # "H as in hotel": the spelling aid repeats the character just read.
        if (
            codeish
            and len(chars) == 1
            and [t.lower() for t in tokens[index : index + 2]] == ["as", "in"]
            and index + 2 < len(tokens)
            and _SPOKEN.get(tokens[index + 2].lower()) == chars
        ):
            index += 3
    found: str | None = None
    for start in range(len(pieces)):
        joined = ""
        for chars, codeish in pieces[start:]:
            if not codeish:
                break
            joined += chars
            if len(joined) >= CONFIRMATION_LENGTH:
                break
        if len(joined) == CONFIRMATION_LENGTH and _mixed(joined):
            found = joined
    return found


# -- hours --------------------------------------------------------------------------------------
def _seatings(day: Date) -> tuple[tuple[Time, Time], ...]:
    return tuple(
        (Time.fromisoformat(first), Time.fromisoformat(last))
        for first, last in SEATINGS.get(day.weekday(), ())
    )


def _seating_text(day: Date) -> str:
    seatings = _seatings(day)
    if not seatings:
        return f"{RESTAURANT} is closed on {day.strftime('%A')}s"
    spans = " and ".join(f"{spoken_time(a)} to {spoken_time(b)}" for a, b in seatings)
    return f"on {day.strftime('%A')}s the first and last seatings are {spans}"


def _reservation(row: sqlite3.Row) -> ToolResult:
    day = Date.fromisoformat(row["date"])
    return {
        "confirmation": row["confirmation"],
        "confirmation_spoken": spell(row["confirmation"]),
        "name": row["name"],
        "party_size": row["party_size"],
        "date": row["date"],
        "weekday": day.strftime("%A"),
        "time": row["time"],
        "time_spoken": spoken_time(Time.fromisoformat(row["time"])),
        "notes": row["notes"],
        "reservation_status": row["status"],
    }


def _find_reservation(connection: sqlite3.Connection, code: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = connection.execute(
        "SELECT * FROM reservations WHERE confirmation = ?", (code,)
    ).fetchone()
    return row


def _written(connection: sqlite3.Connection, code: str, status: str) -> ToolResult:
    """The answer to a booking or cancellation: the reservation as its transaction left it."""
    row = _find_reservation(connection, code)
    assert row is not None  # inserted or updated earlier in the same transaction
    return {"status": status, "restaurant": RESTAURANT, **_reservation(row)}


# -- tools --------------------------------------------------------------------------------------
async def book_table(
    ctx: AgentCallContext,
    name: Annotated[str, Field(description="The name the table is booked under.")],
    party_size: Annotated[int, Field(description="Number of guests, children included.")],
    date: Annotated[str, Field(description="YYYY-MM-DD; 'today', 'tomorrow' also work.")],
    time: Annotated[str, Field(description="Start time, 24-hour HH:MM on a quarter hour.")],
    notes: Annotated[
        str, Field(description="Occasion, allergies, high chair, seating wishes; may be empty.")
    ] = "",
) -> ToolResult:
    """Book a table at Saguaro & Salt. Confirm name, party size, date and time with the caller
    first. On success read the confirmation number back spelled out, character by character
    ("confirmation_spoken"). When the slot is full, offer the "alternatives".
    """
    name = " ".join(name.split())
    if not 1 <= len(name) <= 80:
        return error("invalid_name", "Give the name the table is booked under.")
    if party_size < 1:
        return error("invalid_party_size", "The party needs at least one guest.")
    if party_size > MAX_PARTY:
        return error(
            "party_too_large",
            f"Parties over {MAX_PARTY} are handled by the events team: offer to transfer the"
            " caller to a human (transfer_to_human).",
        )
    if len(notes) > 300:
        return error("invalid_notes", "Keep the notes under 300 characters.")
    store = get_store()
    now = store.now(PHOENIX)
    day = parse_date(date, now.date())
    if day is None:
        return error("invalid_date", f"Give the date as YYYY-MM-DD; today is {now.date()}.")
    start = parse_time(time)
    if start is None or start.minute % 15:
        return error("invalid_time", "Give the time as HH:MM (24-hour) on a quarter hour.")
    when = datetime.combine(day, start, PHOENIX)
    if when < now + MIN_NOTICE:
        return error(
            "too_soon",
            f"That time has passed or is less than 30 minutes away; it is now"
            f" {now:%Y-%m-%d %H:%M}.",
        )
    if day > now.date() + BOOKING_HORIZON:
        return error("too_far_ahead", "Bookings open 60 days ahead.")
    if not any(first <= start <= last for first, last in _seatings(day)):
        return error("closed", f"No seating at that time: {_seating_text(day)}.")
    slot = start.strftime("%H:%M")
    phone = normalize_number(ctx.caller_number, "1")

    def book(connection: sqlite3.Connection) -> ToolResult:
        if _covers(connection, day, slot) + party_size > COVERS_PER_SLOT:
            return error(
                "fully_booked",
                f"{slot} on {day} is fully booked for {party_size}.",
                alternatives=_alternatives(connection, day, start, party_size, now),
            )
        code = new_confirmation()
        while connection.execute(
            "SELECT 1 FROM reservations WHERE confirmation = ?", (code,)
        ).fetchone():
            code = new_confirmation()
        connection.execute(
            "INSERT INTO reservations (confirmation, name, party_size, date, time, notes, phone,"
            " status, call_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'booked', ?, ?)",
            (
                code,
                name,
                party_size,
                day.isoformat(),
                slot,
                notes.strip(),
                phone,
                ctx.call.call_id,
                now.isoformat(timespec="seconds"),
            ),
        )
        return _written(connection, code, "confirmed")

    result = await store.write(book)
    if result["status"] == "confirmed":
        ctx.memory["concierge.confirmation"] = result["confirmation"]
        call_log(logger, ctx).info(
            "booked %s: %d on %s at %s", result["confirmation"], party_size, day, slot
        )
    return result


def _covers(connection: sqlite3.Connection, day: Date, slot: str) -> int:
    row = connection.execute(
        "SELECT COALESCE(SUM(party_size), 0) FROM reservations"
        " WHERE date = ? AND time = ? AND status = 'booked'",
        (day.isoformat(), slot),
    ).fetchone()
    return int(row[0])


def _alternatives(
    connection: sqlite3.Connection, day: Date, start: Time, party_size: int, now: datetime
) -> list[str]:
    """Up to four free start times within 90 minutes of ``start``, nearest first."""
    anchor = datetime.combine(day, start, PHOENIX)
    offsets = sorted(range(-90, 91, 15), key=lambda minutes: (abs(minutes), minutes))
    free: list[str] = []
    for minutes in offsets:
        when = anchor + timedelta(minutes=minutes)
        if minutes == 0 or when.date() != day or when < now + MIN_NOTICE:
            continue
        moment = when.time()
        if not any(first <= moment <= last for first, last in _seatings(day)):
            continue
        slot = moment.strftime("%H:%M")
        if _covers(connection, day, slot) + party_size <= COVERS_PER_SLOT:
            free.append(slot)
        if len(free) == 4:
            break
    return free


async def lookup_reservation(
    ctx: AgentCallContext,
    confirmation: Confirmation,
) -> ToolResult:
    """Find a reservation by its confirmation number and tell its name, party size, date,
    time, notes and whether it is still booked or cancelled.
    """
    code = _normalize_confirmation(confirmation)
    if code is None:
        return _invalid_confirmation()
    row = await get_store().read(lambda connection: _find_reservation(connection, code))
    if row is None:
        return error(
            "not_found",
            f"No reservation has the confirmation number {spell(code)}; check it with the caller.",
        )
    return {"status": "ok", "restaurant": RESTAURANT, **_reservation(row)}


async def cancel_reservation(
    ctx: AgentCallContext,
    confirmation: Confirmation,
    name: Annotated[
        str,
        Field(
            description="The name on the reservation; needed when the caller is not calling"
            " from the number it was booked from."
        ),
    ] = "",
) -> ToolResult:
    """Cancel a reservation. Confirm with the caller before calling. Callers who are not
    calling from the number the table was booked from must also give the name on it.
    """
    code = _normalize_confirmation(confirmation)
    if code is None:
        return _invalid_confirmation()
    store = get_store()
    now = store.now(PHOENIX)
    phone = normalize_number(ctx.caller_number, "1")
    given_name = " ".join(name.split()).casefold()

    def cancel(connection: sqlite3.Connection) -> ToolResult:
        row = _find_reservation(connection, code)
        if row is None:
            return error("not_found", f"No reservation has the confirmation number {spell(code)}.")
        if row["status"] == "cancelled":
            return error("already_cancelled", "That reservation was already cancelled.")
        when = datetime.combine(
            Date.fromisoformat(row["date"]), Time.fromisoformat(row["time"]), PHOENIX
        )
        if when < now:
            return error("in_the_past", "That reservation's time has already passed.")
        booked_name = str(row["name"]).casefold()
        same_phone = bool(phone) and phone == row["phone"]
        same_name = bool(given_name) and (
            given_name == booked_name or given_name in booked_name.split()
        )
        if not (same_phone or same_name):
            return error(
                "not_authorized",
                "This phone number did not make the booking: ask for the name on the"
                " reservation and call again with it.",
            )
        connection.execute(
            "UPDATE reservations SET status = 'cancelled', cancelled_at = ? WHERE confirmation = ?",
            (now.isoformat(timespec="seconds"), code),
        )
        return _written(connection, code, "cancelled")

    result = await store.write(cancel)
    if result["status"] == "cancelled":
        call_log(logger, ctx).info("cancelled reservation %s", code)
    return result
