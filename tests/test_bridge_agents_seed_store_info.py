"""Skyhop seed tools: hours, locations, shop, prices, parties and order ownership."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bridge.agents.seed.store import SeedStore
from bridge.agents.seed.store_info import (
    admission_prices,
    book_party,
    get_hours,
    list_locations,
    order_status,
    party_packages,
    search_catalogue,
)
from tests.seed_context import Clock, make_ctx
from tests.seed_context import clock_fixture as clock_fixture
from tests.seed_context import store_fixture as store_fixture

ROSA = "+14805550166"  # orders SKY-10482 (shipped) and SKY-10517
SAM = "+16025550199"  # order SKY-10533
TEMPE, MESA, GLENDALE = "+14805550110", "+14805550120", "+16235550130"
SATURDAY = "2025-06-07"


async def test_list_locations(store: SeedStore) -> None:
    result = await list_locations(make_ctx(ROSA))
    assert result["status"] == "ok"
    parks = {park["location"]: park for park in result["locations"]}
    assert set(parks) == {"Tempe", "Mesa", "Glendale"}
    assert parks["Tempe"]["today"] == "10:00 AM to 8:00 PM"
    assert parks["Glendale"]["today"] == "2:00 PM to 8:00 PM"
    assert parks["Mesa"]["phone"] == MESA
    assert parks["Mesa"]["address"].startswith("2250 E Baseline Rd")


async def test_get_hours_of_a_named_park(store: SeedStore) -> None:
    result = await get_hours(make_ctx(ROSA), "Skyhop Tempe")
    assert result["location"] == "Tempe"
    assert result["today"] == "10:00 AM to 8:00 PM"
    assert result["open_now"] is True
    assert result["weekly"][5] == {"day": "Saturday", "hours": "10:00 AM to 10:00 PM"}
    mesa = await get_hours(make_ctx(ROSA), "the mesa one")
    assert mesa["location"] == "Mesa"
    assert mesa["open_now"] is False  # opens at noon on weekdays


async def test_get_hours_defaults_to_the_dialled_park(store: SeedStore, clock: Clock) -> None:
    result = await get_hours(make_ctx(ROSA, f"sip:1{GLENDALE[2:]}@carrier"))
    assert result["location"] == "Glendale"
    assert result["weekly"][0] == {"day": "Monday", "hours": "closed"}
    assert result["open_now"] is False
    clock.now += timedelta(hours=5)  # 15:00
    assert (await get_hours(make_ctx(ROSA, GLENDALE)))["open_now"] is True


async def test_get_hours_needs_a_known_park(store: SeedStore) -> None:
    missing = await get_hours(make_ctx(ROSA, "+14805550100"))
    assert missing["code"] == "location_required"
    assert "Tempe" in missing["message"]
    unknown = await get_hours(make_ctx(ROSA, TEMPE), "Phoenix")
    assert unknown["code"] == "unknown_location"


async def test_search_catalogue(store: SeedStore) -> None:
    socks = await search_catalogue(make_ctx(ROSA), "Do you have grip socks?")
    assert [item["sku"] for item in socks["items"]] == ["SOCK-L", "SOCK-S"]
    assert socks["items"][1]["price"] == "$3.50"
    bottle = await search_catalogue(make_ctx(ROSA), "water bottles")
    assert bottle["items"][0] == {
        "sku": "BOTTLE",
        "name": "Skyhop water bottle",
        "description": "24 oz insulated bottle",
        "price": "$12.00",
        "in_stock": False,
    }
    gift = await search_catalogue(make_ctx(ROSA), "gift card")
    assert {item["sku"] for item in gift["items"]} >= {"GIFT-25", "GIFT-50"}
    none = await search_catalogue(make_ctx(ROSA), "unicorn")
    assert none["items"] == [] and none["message"]
    assert (await search_catalogue(make_ctx(ROSA), "the"))["code"] == "invalid_query"
    assert (await search_catalogue(make_ctx(ROSA), "x" * 101))["code"] == "invalid_query"


async def test_admission_prices(store: SeedStore) -> None:
    child = await admission_prices(make_ctx(ROSA), "child")
    assert child["groups"] == [
        {
            "age_group": "child",
            "label": "Kids",
            "ages": "5 to 12",
            "prices": [
                {"session": "60 minutes", "price": "$19.00"},
                {"session": "90 minutes", "price": "$24.00"},
                {"session": "120 minutes", "price": "$29.00"},
            ],
        }
    ]
    assert "grip socks" in child["note"]
    assert (await admission_prices(make_ctx(ROSA), "7"))["groups"] == child["groups"]
    assert (await admission_prices(make_ctx(ROSA), "Kids"))["groups"] == child["groups"]
    adults = await admission_prices(make_ctx(ROSA), "adults")
    assert adults["groups"][0]["age_group"] == "teen"
    toddler = await admission_prices(make_ctx(ROSA), "3")
    assert toddler["groups"][0]["prices"] == [{"session": "60 minutes", "price": "$12.00"}]
    spectators = await admission_prices(make_ctx(ROSA), "spectator")
    assert spectators["groups"][0]["prices"] == [{"session": "entry", "price": "free"}]
    everyone = await admission_prices(make_ctx(ROSA))
    assert [group["age_group"] for group in everyone["groups"]] == [
        "spectator",
        "toddler",
        "child",
        "teen",
    ]
    assert (await admission_prices(make_ctx(ROSA), "seniors"))["code"] == "invalid_age_group"


async def test_party_packages(store: SeedStore) -> None:
    result = await party_packages(make_ctx(ROSA))
    assert [p["package"] for p in result["packages"]] == ["basic", "mega", "ultimate"]
    assert result["packages"][1]["price"] == "$449.00"
    assert result["packages"][1]["extra_kid"] == "$28.00"
    assert result["party_times"]["weekends"] == ("10:00", "12:30", "15:00", "17:30")


async def test_book_party_offers_times_then_books(store: SeedStore) -> None:
    ctx = make_ctx(ROSA, TEMPE)
    offer = await book_party(ctx, "mega", SATURDAY, 14, "Rosa Alvarez")
    assert offer == {
        "status": "choose_time",
        "location": "Tempe",
        "date": SATURDAY,
        "weekday": "Saturday",
        "available_times": ["10:00", "12:30", "15:00", "17:30"],
    }
    booked = await book_party(ctx, "Mega Bounce", SATURDAY, 14, "Rosa Alvarez", time="3 pm")
    assert booked["status"] == "booked"
    assert booked["reference"].startswith("PTY-")
    assert booked["reference_spoken"] == "-".join(booked["reference"].replace("-", ""))
    assert (booked["time"], booked["location"], booked["kids"]) == ("15:00", "Skyhop Tempe", 14)
    assert booked["estimated_price"] == "$505.00"  # $449 + 2 extra kids at $28
    assert ctx.memory["store_info.party_reference"] == booked["reference"]
    row = await store.read(
        lambda c: c.execute(
            "SELECT * FROM parties WHERE reference = ?", (booked["reference"],)
        ).fetchone()
    )
    assert (row["location"], row["phone"], row["package"]) == ("tempe", ROSA, "mega")


async def test_book_party_slot_fills_up(store: SeedStore) -> None:
    ctx = make_ctx(ROSA)
    for _ in range(2):
        result = await book_party(ctx, "basic", SATURDAY, 8, "Rosa", "Mesa", "10:00")
        assert result["status"] == "booked"
    full = await book_party(ctx, "basic", SATURDAY, 8, "Rosa", "Mesa", "10:00")
    assert full["code"] == "slot_full"
    assert full["available_times"] == ["12:30", "15:00", "17:30"]
    other_park = await book_party(ctx, "basic", SATURDAY, 8, "Rosa", "Tempe", "10:00")
    assert other_park["status"] == "booked"


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        (("gold", SATURDAY, 8, "Rosa", "Tempe"), "unknown_package"),
        (("basic", SATURDAY, 21, "Rosa", "Tempe"), "invalid_kids"),
        (("basic", SATURDAY, 0, "Rosa", "Tempe"), "invalid_kids"),
        (("basic", SATURDAY, 8, " ", "Tempe"), "invalid_contact_name"),
        (("basic", "2025-06-04", 8, "Rosa", "Tempe"), "too_soon"),
        (("basic", "2025-12-01", 8, "Rosa", "Tempe"), "too_far_ahead"),
        (("basic", "soon", 8, "Rosa", "Tempe"), "invalid_date"),
        (("basic", "2025-06-09", 8, "Rosa", "Glendale"), "closed"),
        (("basic", SATURDAY, 8, "Rosa", ""), "location_required"),
        (("basic", SATURDAY, 8, "Rosa", "Tempe", "11:00"), "invalid_time"),
        (("basic", SATURDAY, 8, "Rosa", "Tempe", "teatime"), "invalid_time"),
    ],
)
async def test_book_party_validation(
    store: SeedStore, arguments: tuple[str, ...], code: str
) -> None:
    package, date, kids, contact, *rest = arguments
    result = await book_party(make_ctx(ROSA), package, date, int(kids), contact, *rest)
    assert result["status"] == "error"
    assert result["code"] == code


async def test_order_status_for_the_owner(store: SeedStore) -> None:
    result = await order_status(make_ctx(ROSA), "sky 10482")
    assert result == {
        "status": "ok",
        "order_id": "SKY-10482",
        "order_status": "shipped",
        "placed_on": "2025-05-31",
        "items": ["Gift card $50", "Skyhop kids T-shirt"],
        "total": "$65.00",
        "carrier": "UPS",
        "tracking": "1Z999AA10123456784",
        "estimated_delivery": "2025-06-04",
        "delivery_weekday": "Wednesday",
    }
    processing = await order_status(make_ctx("4805550166"), "10517")
    assert (processing["order_status"], processing["tracking"]) == ("processing", None)


async def test_order_status_of_someone_elses_order_is_refused(store: SeedStore) -> None:
    refused = await order_status(make_ctx(SAM), "SKY-10482")
    assert refused["status"] == "error"
    assert refused["code"] == "not_authorized"
    assert "UPS" not in str(refused)
    # An order that does not exist looks the same.
    missing = await order_status(make_ctx(SAM), "SKY-99999")
    assert missing["code"] == "not_authorized"
    assert (await order_status(make_ctx(SAM), "SKY-10533"))["order_status"] == "delivered"


async def test_order_status_validation(store: SeedStore) -> None:
    assert (await order_status(make_ctx(ROSA), "ABC-1"))["code"] == "invalid_order_id"
    assert (await order_status(make_ctx(""), "SKY-10482"))["code"] == "caller_unidentified"
