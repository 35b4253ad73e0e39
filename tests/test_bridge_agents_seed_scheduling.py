"""Desert Auto Care seed tools: caller recognition, services, free times, slot-filled bookings."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bridge.agents.seed.scheduling import (
    SLOTS_KEY,
    available_slots,
    book_appointment,
    identify_customer,
    list_services,
)
from bridge.agents.seed.store import SeedStore
from tests.seed_context import Clock, make_ctx
from tests.seed_context import clock_fixture as clock_fixture
from tests.seed_context import store_fixture as store_fixture

DANA = "+14805550123"  # 2019 Honda CR-V
NEW = "+16025550111"
TOMORROW = "2025-06-04"  # Wednesday: 08:00 A/C service in bay 1, 08:00 oil change in bay 2


async def test_identify_an_existing_customer(store: SeedStore) -> None:
    ctx = make_ctx(f"sip:{DANA}@carrier")
    result = await identify_customer(ctx)
    assert result == {
        "status": "existing_customer",
        "name": "Dana Whitfield",
        "first_name": "Dana",
        "vehicle": "2019 Honda CR-V",
        "last_visit": "2025-02-03",
        "upcoming_appointments": [],
        "greeting_hint": "Welcome back, Dana! Is this about your 2019 Honda CR-V?",
    }
    assert ctx.memory[SLOTS_KEY] == {"name": "Dana Whitfield"}
    assert ctx.memory["scheduling.customer"]["known"] is True


async def test_identify_lists_upcoming_appointments(store: SeedStore) -> None:
    result = await identify_customer(make_ctx("+16025550187"))
    assert result["first_name"] == "Marcus"
    assert result["upcoming_appointments"] == [
        {"reference": "APT-4KX7", "service": "A/C service", "date": TOMORROW, "time": "08:00"}
    ]


async def test_identify_a_new_or_anonymous_caller(store: SeedStore) -> None:
    for number in (NEW, ""):
        ctx = make_ctx(number)
        result = await identify_customer(ctx)
        assert result["status"] == "new_customer"
        assert "name" in result["greeting_hint"]
        assert ctx.memory["scheduling.customer"] == {"known": False}
        assert SLOTS_KEY not in ctx.memory


async def test_list_services(store: SeedStore) -> None:
    result = await list_services(make_ctx(DANA))
    services = {s["service_type"]: s for s in result["services"]}
    assert set(services) == {
        "oil_change",
        "tire_rotation",
        "brake_inspection",
        "ac_service",
        "diagnostic",
    }
    assert services["oil_change"]["price"] == "$79.00"
    assert services["brake_inspection"]["price"] == "free"
    assert services["ac_service"]["duration_minutes"] == 90


async def test_available_slots_around_existing_bookings(store: SeedStore) -> None:
    ctx = make_ctx(DANA)
    oil = await available_slots(ctx, "oil change", "tomorrow")
    assert oil["status"] == "ok"
    assert (oil["service_type"], oil["date"], oil["weekday"]) == (
        "oil_change",
        TOMORROW,
        "Wednesday",
    )
    assert oil["times"][:4] == ["07:30", "08:30", "09:00", "09:30"]
    assert oil["times"][-1] == "17:00"
    assert len(oil["times"]) == 19
    assert oil["times_spoken"][0] == "7:30 AM"
    assert ctx.memory[SLOTS_KEY] == {"service_type": "oil_change", "date": TOMORROW}
    ac = await available_slots(ctx, "A/C", TOMORROW)
    assert ac["times"][:2] == ["08:30", "09:00"]
    assert ac["times"][-1] == "16:00"  # 90 minutes must end by 17:30


async def test_available_slots_today_and_saturday(store: SeedStore, clock: Clock) -> None:
    today = await available_slots(make_ctx(DANA), "oil_change", "today")
    assert today["times"][0] == "11:00"  # an hour's notice
    saturday = await available_slots(make_ctx(DANA), "diagnostic", "saturday")
    assert (saturday["times"][0], saturday["times"][-1]) == ("08:00", "12:00")
    clock.now += timedelta(hours=8)  # 18:00: nothing left today
    late = await available_slots(make_ctx(DANA), "oil_change", "today")
    assert late["times"] == [] and late["message"]


@pytest.mark.parametrize(
    ("service", "date", "code"),
    [
        ("oil_change", "2025-06-08", "closed"),
        ("oil_change", "2025-06-02", "date_in_past"),
        ("oil_change", "2025-07-31", "too_far_ahead"),
        ("oil_change", "someday", "invalid_date"),
        ("transmission rebuild", TOMORROW, "unknown_service"),
        ("", TOMORROW, "unknown_service"),
    ],
)
async def test_available_slots_validation(
    store: SeedStore, service: str, date: str, code: str
) -> None:
    ctx = make_ctx(DANA)
    result = await available_slots(ctx, service, date)
    assert (result["status"], result["code"]) == ("error", code)
    assert SLOTS_KEY not in ctx.memory or not ctx.memory[SLOTS_KEY]


async def test_book_appointment_collects_slots_across_turns(store: SeedStore) -> None:
    ctx = make_ctx(NEW)
    first = await book_appointment(ctx, service_type="tire rotation")
    assert first == {
        "status": "need_more_info",
        "missing": ["date", "time", "name"],
        "collected": {"service_type": "tire_rotation"},
    }
    second = await book_appointment(ctx, date=TOMORROW)
    assert second["missing"] == ["time", "name"]
    third = await book_appointment(ctx, time="9:30 am")
    assert third["missing"] == ["name"]
    booked = await book_appointment(ctx, name="Jordan  Blake")
    assert booked["status"] == "booked"
    assert booked["reference"].startswith("APT-")
    assert booked["reference_spoken"] == "-".join(booked["reference"].replace("-", ""))
    assert {k: booked[k] for k in ("service", "date", "weekday", "time", "name")} == {
        "service": "Tire rotation",
        "date": TOMORROW,
        "weekday": "Wednesday",
        "time": "09:30",
        "name": "Jordan Blake",
    }
    assert (booked["time_spoken"], booked["price"]) == ("9:30 AM", "$49.00")
    assert ctx.memory["scheduling.booked"] == booked["reference"]
    assert "time" not in ctx.memory[SLOTS_KEY]
    # The caller is now known by their number.
    again = await identify_customer(make_ctx(NEW))
    assert again["status"] == "existing_customer"
    assert again["greeting_hint"] == "Welcome back, Jordan! How can we help today?"
    assert again["upcoming_appointments"][0]["reference"] == booked["reference"]


async def test_identify_then_available_slots_then_book(store: SeedStore) -> None:
    ctx = make_ctx(DANA)
    await identify_customer(ctx)
    await available_slots(ctx, "oil_change", TOMORROW)
    booked = await book_appointment(ctx, time="07:30")
    assert (booked["status"], booked["name"], booked["time"]) == (
        "booked",
        "Dana Whitfield",
        "07:30",
    )


async def test_a_taken_slot_offers_the_free_times(store: SeedStore) -> None:
    ctx = make_ctx(DANA)
    result = await book_appointment(ctx, "oil_change", TOMORROW, "08:00", "Dana")
    assert result["code"] == "slot_taken"
    assert result["available_times"][:2] == ["07:30", "08:30"]
    assert "time" not in ctx.memory[SLOTS_KEY]
    # Two bays: the second booking of a slot fits, the third does not.
    for expected in ("booked", "booked"):
        ok = await book_appointment(make_ctx(DANA), "oil_change", TOMORROW, "10:00", "Dana")
        assert ok["status"] == expected
    third = await book_appointment(make_ctx(DANA), "tire_rotation", TOMORROW, "10:00", "Dana")
    assert third["code"] == "slot_taken"
    # A 90-minute service cannot start where it would overlap the 10:00 bookings.
    ac = await book_appointment(make_ctx(DANA), "ac_service", TOMORROW, "09:00", "Dana")
    assert ac["code"] == "slot_taken"


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        ({"time": "7:45"}, "invalid_time"),
        ({"time": "later"}, "invalid_time"),
        ({"date": "2025-06-08"}, "closed"),
        ({"service_type": "wash"}, "unknown_service"),
        ({"name": "x" * 81}, "invalid_name"),
    ],
)
async def test_book_appointment_validation(
    store: SeedStore, arguments: dict[str, str], code: str
) -> None:
    ctx = make_ctx(DANA)
    result = await book_appointment(ctx, **arguments)
    assert (result["status"], result["code"]) == ("error", code)
    assert ctx.memory[SLOTS_KEY] == {}


async def test_book_appointment_rechecks_a_remembered_date(store: SeedStore, clock: Clock) -> None:
    ctx = make_ctx(DANA)
    await book_appointment(ctx, "oil_change", TOMORROW, "", "Dana")
    clock.now += timedelta(days=2)  # the remembered date has passed
    result = await book_appointment(ctx, time="09:00")
    assert result["code"] == "date_in_past"
