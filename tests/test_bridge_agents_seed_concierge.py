"""Saguaro & Salt seed tools: bookings, confirmation numbers, lookups and cancellations."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from bridge.agents.seed.concierge import (
    CONFIRMATION_ALPHABET,
    book_table,
    cancel_reservation,
    extract_confirmation_number,
    lookup_reservation,
    new_confirmation,
)
from bridge.agents.seed.store import SeedStore
from tests.seed_context import Clock, make_ctx
from tests.seed_context import clock_fixture as clock_fixture
from tests.seed_context import store_fixture as store_fixture

OLIVIA = "+14805550142"  # booked H7KM3X: 4 guests, Thursday 2025-06-05 19:00
CALLER = "+16025550111"
THURSDAY = "2025-06-05"


async def test_book_a_table(store: SeedStore) -> None:
    ctx = make_ctx(CALLER)
    result = await book_table(ctx, " Maya  Lopez ", 4, THURSDAY, "7:30 pm", "birthday")
    assert result["status"] == "confirmed"
    code = result["confirmation"]
    assert re.fullmatch(f"[{CONFIRMATION_ALPHABET}]{{6}}", code)
    assert result["confirmation_spoken"] == "-".join(code)
    assert {k: result[k] for k in ("name", "party_size", "date", "weekday", "time")} == {
        "name": "Maya Lopez",
        "party_size": 4,
        "date": THURSDAY,
        "weekday": "Thursday",
        "time": "19:30",
    }
    assert result["time_spoken"] == "7:30 PM"
    assert result["notes"] == "birthday"
    assert ctx.memory["concierge.confirmation"] == code
    looked_up = await lookup_reservation(make_ctx(OLIVIA), spell_loosely(code))
    assert looked_up["status"] == "ok"
    assert looked_up["reservation_status"] == "booked"
    assert looked_up["name"] == "Maya Lopez"
    row = await store.read(
        lambda c: c.execute("SELECT * FROM reservations WHERE confirmation = ?", (code,)).fetchone()
    )
    assert (row["phone"], row["call_id"]) == (CALLER, ctx.call.call_id)


def spell_loosely(code: str) -> str:
    return " - ".join(code.lower())


@pytest.mark.parametrize(
    ("party_size", "date", "time", "code"),
    [
        (0, THURSDAY, "19:00", "invalid_party_size"),
        (11, THURSDAY, "19:00", "party_too_large"),
        (2, "June 5th", "19:00", "invalid_date"),
        (2, "2025-06-02", "19:00", "too_soon"),
        (2, "2025-09-01", "19:00", "too_far_ahead"),
        (2, THURSDAY, "19:10", "invalid_time"),
        (2, THURSDAY, "dinner", "invalid_time"),
        (2, THURSDAY, "21:15", "closed"),
        (2, THURSDAY, "16:45", "closed"),
        (2, "2025-06-09", "19:00", "closed"),
        (2, "2025-06-08", "15:00", "closed"),
    ],
)
async def test_book_table_validation(
    store: SeedStore, party_size: int, date: str, time: str, code: str
) -> None:
    result = await book_table(make_ctx(CALLER), "Maya", party_size, date, time)
    assert result["status"] == "error"
    assert result["code"] == code
    assert result["message"]


async def test_large_parties_go_to_a_human(store: SeedStore) -> None:
    result = await book_table(make_ctx(CALLER), "Maya", 12, THURSDAY, "19:00")
    assert "transfer_to_human" in result["message"]


async def test_book_table_needs_a_name_and_short_notes(store: SeedStore) -> None:
    assert (await book_table(make_ctx(CALLER), "  ", 2, THURSDAY, "19:00"))[
        "code"
    ] == "invalid_name"
    notes = "x" * 301
    assert (await book_table(make_ctx(CALLER), "Maya", 2, THURSDAY, "19:00", notes))[
        "code"
    ] == "invalid_notes"


async def test_sunday_brunch_and_today(store: SeedStore, clock: Clock) -> None:
    brunch = await book_table(make_ctx(CALLER), "Maya", 2, "2025-06-08", "11:30")
    assert brunch["status"] == "confirmed"
    clock.now += timedelta(hours=6, minutes=50)  # 16:50 in Phoenix
    assert (await book_table(make_ctx(CALLER), "Maya", 2, "today", "17:00"))["code"] == "too_soon"
    assert (await book_table(make_ctx(CALLER), "Maya", 2, "today", "17:30"))[
        "status"
    ] == "confirmed"


async def test_a_full_slot_offers_alternatives(store: SeedStore) -> None:
    # Olivia's 4 are already at 19:00; 16 more fill it.
    for _ in range(2):
        assert (await book_table(make_ctx(CALLER), "Group", 8, THURSDAY, "19:00"))[
            "status"
        ] == "confirmed"
    result = await book_table(make_ctx(CALLER), "Late", 1, THURSDAY, "19:00")
    assert result["code"] == "fully_booked"
    assert result["alternatives"] == ["18:45", "19:15", "18:30", "19:30"]


async def test_alternatives_stay_within_the_seating_hours(store: SeedStore) -> None:
    for _ in range(2):
        await book_table(make_ctx(CALLER), "Group", 10, THURSDAY, "21:00")
    result = await book_table(make_ctx(CALLER), "Late", 2, THURSDAY, "21:00")
    assert result["alternatives"] == ["20:45", "20:30", "20:15", "20:00"]


async def test_lookup_reservation(store: SeedStore) -> None:
    result = await lookup_reservation(make_ctx(CALLER), "H-7-K-M-3-X")
    assert result == {
        "status": "ok",
        "restaurant": "Saguaro & Salt",
        "confirmation": "H7KM3X",
        "confirmation_spoken": "H-7-K-M-3-X",
        "name": "Olivia Chen",
        "party_size": 4,
        "date": THURSDAY,
        "weekday": "Thursday",
        "time": "19:00",
        "time_spoken": "7:00 PM",
        "notes": "anniversary",
        "reservation_status": "booked",
    }
    cancelled = await lookup_reservation(make_ctx(CALLER), "y6fu7m")
    assert cancelled["reservation_status"] == "cancelled"
    assert (await lookup_reservation(make_ctx(CALLER), "H7KM3A"))["code"] == "not_found"
    assert (await lookup_reservation(make_ctx(CALLER), "H7KM30"))["code"] == "invalid_confirmation"
    assert (await lookup_reservation(make_ctx(CALLER), "H7KM"))["code"] == "invalid_confirmation"


async def test_cancel_from_the_booking_number(store: SeedStore) -> None:
    result = await cancel_reservation(make_ctx(OLIVIA), "H7KM3X")
    assert result["status"] == "cancelled"
    assert result["reservation_status"] == "cancelled"
    again = await cancel_reservation(make_ctx(OLIVIA), "H7KM3X")
    assert again["code"] == "already_cancelled"


async def test_cancel_from_another_number_needs_the_name(store: SeedStore) -> None:
    refused = await cancel_reservation(make_ctx(CALLER), "H7KM3X")
    assert refused["code"] == "not_authorized"
    assert (await cancel_reservation(make_ctx(CALLER), "H7KM3X", "Maya"))[
        "code"
    ] == "not_authorized"
    assert (await cancel_reservation(make_ctx(""), "H7KM3X"))["code"] == "not_authorized"
    done = await cancel_reservation(make_ctx(CALLER), "H7KM3X", "  chen ")
    assert done["status"] == "cancelled"


async def test_cancel_errors(store: SeedStore, clock: Clock) -> None:
    assert (await cancel_reservation(make_ctx(OLIVIA), "nope"))["code"] == "invalid_confirmation"
    assert (await cancel_reservation(make_ctx(OLIVIA), "AAAA33"))["code"] == "not_found"
    clock.now += timedelta(days=3)
    assert (await cancel_reservation(make_ctx(OLIVIA), "H7KM3X"))["code"] == "in_the_past"


def test_new_confirmation_numbers_are_phone_friendly() -> None:
    codes = {new_confirmation() for _ in range(300)}
    assert len(codes) > 290
    for code in codes:
        assert re.fullmatch(f"[{CONFIRMATION_ALPHABET}]{{6}}", code)
        assert any(ch.isdigit() for ch in code) and any(ch.isalpha() for ch in code)


@pytest.mark.parametrize(
    ("transcript", "expected"),
    [
        ("You're all set! Your confirmation number is H-7-K-M-3-X.", "H7KM3X"),
        ("Your confirmation number is H7KM3X. See you Thursday!", "H7KM3X"),
        ("confirmation: h 7 k m 3 x, that's for four people", "H7KM3X"),
        ("It's H, 7, K, M, 3, X.", "H7KM3X"),
        ("that is H7K M3X", "H7KM3X"),
        ("hotel seven kilo mike three x-ray", "H7KM3X"),
        ("H as in hotel, 7, K as in kilo, M as in Mike, 3, X as in X-ray.", "H7KM3X"),
        (
            "Agent: booked, confirmation R-4-W-J-9-A. Caller: sorry? "
            "Agent: the confirmation number is R 4 W J 9 A.",
            "R4WJ9A",
        ),
        ("First A7KM3X, no wait, the new one is Y6FU7M.", "Y6FU7M"),
        ("A table for four at seven on Friday, a party of 6.", None),
        ("Hurray, we have a table for you!", None),
        ("Your number is B-1-2-5-8-0.", None),
        ("Your code is HHKMXX", None),
        ("", None),
    ],
)
def test_extract_confirmation_number(transcript: str, expected: str | None) -> None:
    assert extract_confirmation_number(transcript) == expected


async def test_the_booked_number_is_found_in_the_read_back(store: SeedStore) -> None:
    result = await book_table(make_ctx(CALLER), "Maya", 2, THURSDAY, "18:00")
    said = f"Perfect, you're booked! Your confirmation number is {result['confirmation_spoken']}."
    assert extract_confirmation_number(said) == result["confirmation"]
