"""Skyhop Trampoline Parks front desk (the sip_integration seed): hours, shop, prices, parties.

Three parks around Phoenix (fixed UTC-7). A call to a park's own number is about that park:
tools that take a location fall back to the one whose phone number was dialled
(``ctx.dialled_number``). Everything is read-only except :func:`book_party`; order status is
only told to the number the order was placed from, and a missing order is reported exactly
like someone else's.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from datetime import date as Date
from datetime import time as Time
from datetime import timedelta
from typing import Annotated, Any, Final

from pydantic import Field

from bridge.agents.context import AgentCallContext

from .common import DAY_NAMES, PHOENIX, current_date, spoken_time
from .store import (
    ToolResult,
    call_log,
    error,
    format_usd,
    get_store,
    normalize_number,
    parse_date,
    parse_time,
    random_code,
    spell,
)

__all__ = [
    "BRAND",
    "PARTY_ROOMS",
    "PARTY_TIMES",
    "PHOENIX",
    "admission_prices",
    "book_party",
    "current_date",
    "get_hours",
    "list_locations",
    "order_status",
    "party_packages",
    "search_catalogue",
]

logger = logging.getLogger(__name__)

BRAND: Final = "Skyhop Trampoline Parks"
PARTY_ROOMS: Final = 2
"""Parties a park can host at the same start time."""
PARTY_TIMES: Final = {
    "weekday": ("16:00", "18:00"),
    "weekend": ("10:00", "12:30", "15:00", "17:30"),
}
"""Party start times, Monday-Friday and Saturday-Sunday."""
PARTY_NOTICE: Final = timedelta(days=2)
PARTY_HORIZON: Final = timedelta(days=120)
AGE_GROUPS: Final = ("toddler", "child", "teen", "spectator")
_STOPWORDS: Final = frozenset(
    ("a", "an", "and", "any", "do", "for", "have", "i", "in", "is", "of", "on", "the", "to")
)

Location = Annotated[
    str,
    Field(
        description="The park: Tempe, Mesa or Glendale. Empty: the park whose number the caller"
        " dialled."
    ),
]


def _hours_text(opens: str, closes: str) -> str:
    return f"{spoken_time(Time.fromisoformat(opens))} to {spoken_time(Time.fromisoformat(closes))}"


async def _resolve_location(ctx: AgentCallContext, named: str) -> sqlite3.Row | ToolResult:
    """The park ``named``, else the one whose number was dialled, else an error listing them."""
    wanted = " ".join(named.lower().split())
    dialled = normalize_number(ctx.dialled_number, "1")

    def query(connection: sqlite3.Connection) -> sqlite3.Row | ToolResult:
        rows = connection.execute("SELECT * FROM locations ORDER BY slug").fetchall()
        names = ", ".join(row["city"] for row in rows)
        if wanted:
            matches = [
                row
                for row in rows
                if wanted in (row["slug"], row["city"].lower(), row["name"].lower())
                or row["slug"] in wanted.split()
            ]
            if len(matches) == 1:
                found: sqlite3.Row = matches[0]
                return found
            return error("unknown_location", f"Skyhop has parks in {names}; ask which one.")
        for row in rows:
            if dialled and row["phone"] == dialled:
                dialled_park: sqlite3.Row = row
                return dialled_park
        return error("location_required", f"Skyhop has parks in {names}; ask which one.")

    result: sqlite3.Row | ToolResult = await get_store().read(query)
    return result


def _week(connection: sqlite3.Connection, slug: str) -> dict[int, tuple[str, str]]:
    rows = connection.execute(
        "SELECT weekday, opens, closes FROM location_hours WHERE location = ?", (slug,)
    ).fetchall()
    return {row["weekday"]: (row["opens"], row["closes"]) for row in rows}


# -- tools --------------------------------------------------------------------------------------
async def list_locations(ctx: AgentCallContext) -> ToolResult:
    """List the Skyhop parks with address, phone number and today's opening hours."""
    store = get_store()
    today = store.now(PHOENIX).weekday()

    def query(connection: sqlite3.Connection) -> list[dict[str, Any]]:
        parks = []
        for row in connection.execute("SELECT * FROM locations ORDER BY slug").fetchall():
            hours = _week(connection, row["slug"]).get(today)
            parks.append(
                {
                    "location": row["city"],
                    "name": row["name"],
                    "address": row["address"],
                    "phone": row["phone"],
                    "today": _hours_text(*hours) if hours else "closed",
                }
            )
        return parks

    return {"status": "ok", "locations": await store.read(query)}


async def get_hours(ctx: AgentCallContext, location: Location = "") -> ToolResult:
    """Get a park's opening hours for each day of the week, today's hours and whether it is
    open right now.
    """
    park = await _resolve_location(ctx, location)
    if isinstance(park, dict):
        return park
    store = get_store()
    now = store.now(PHOENIX)
    week = await store.read(lambda connection: _week(connection, park["slug"]))
    today = week.get(now.weekday())
    clock = now.strftime("%H:%M")
    return {
        "status": "ok",
        "location": park["city"],
        "name": park["name"],
        "address": park["address"],
        "today": _hours_text(*today) if today else "closed",
        "open_now": today is not None and today[0] <= clock < today[1],
        "weekly": [
            {"day": name, "hours": _hours_text(*week[day]) if day in week else "closed"}
            for day, name in enumerate(DAY_NAMES)
        ],
    }


async def search_catalogue(
    ctx: AgentCallContext,
    query: Annotated[
        str, Field(description="What the caller is looking for, e.g. 'grip socks' or 'gift card'.")
    ],
) -> ToolResult:
    """Search the Skyhop shop (socks, gift cards, passes, apparel, party favors) for prices and
    whether an item is in stock. Returns the best five matches.
    """
    words = [
        word.removesuffix("s") if len(word) > 3 else word
        for word in re.findall(r"[a-z0-9]+", query.lower())
        if word not in _STOPWORDS
    ]
    if not words or len(query) > 100:
        return error("invalid_query", "Say in a few words what the caller is looking for.")
    rows = await get_store().read(
        lambda connection: connection.execute("SELECT * FROM catalogue").fetchall()
    )
    scored = []
    for row in rows:
        haystack = f"{row['name']} {row['category']} {row['description']}".lower()
        score = sum(3 if word in row["name"].lower() else 1 for word in words if word in haystack)
        if score:
            scored.append((score, row))
    scored.sort(key=lambda pair: (-pair[0], pair[1]["sku"]))
    items = [
        {
            "sku": row["sku"],
            "name": row["name"],
            "description": row["description"],
            "price": format_usd(row["price_cents"]),
            "in_stock": bool(row["in_stock"]),
        }
        for _, row in scored[:5]
    ]
    result: ToolResult = {"status": "ok", "query": query, "items": items}
    if not items:
        result["message"] = "Nothing in the shop matches; suggest gift cards or grip socks."
    return result


async def admission_prices(
    ctx: AgentCallContext,
    age_group: Annotated[
        str,
        Field(
            description="toddler (under 5), child (5-12), teen (13+, adults too), spectator, an"
            " age in years, or empty for all."
        ),
    ] = "",
) -> ToolResult:
    """Get jump-time admission prices per age group and session length (grip socks are
    required and sold separately).
    """
    group = age_group.strip().lower().removesuffix("s")
    if group.isdigit():
        age = int(group)
        group = "toddler" if age < 5 else "child" if age <= 12 else "teen"
    group = {"adult": "teen", "kid": "child", "children": "child", "all": ""}.get(group, group)
    if group and group not in AGE_GROUPS:
        return error(
            "invalid_age_group", "Age groups are toddler, child, teen (and adults), spectator."
        )

    def query(connection: sqlite3.Connection) -> list[sqlite3.Row]:
        sql = "SELECT * FROM admission_prices"
        rows = connection.execute(
            sql + (" WHERE age_group = ?" if group else "") + " ORDER BY price_cents",
            (group,) if group else (),
        ).fetchall()
        return list(rows)

    rows = await get_store().read(query)
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = groups.setdefault(
            row["age_group"],
            {"age_group": row["age_group"], "label": row["label"], "ages": row["ages"]},
        )
        session = f"{row['duration_minutes']} minutes" if row["duration_minutes"] else "entry"
        price = format_usd(row["price_cents"]) if row["price_cents"] else "free"
        entry.setdefault("prices", []).append({"session": session, "price": price})
    return {
        "status": "ok",
        "groups": list(groups.values()),
        "note": "Skyhop grip socks are required to jump: $3.50 kids, $4.00 adults.",
    }


async def party_packages(ctx: AgentCallContext) -> ToolResult:
    """List the birthday party packages: what each includes, price, kids included and the price
    per extra kid.
    """
    rows = await get_store().read(
        lambda connection: connection.execute(
            "SELECT * FROM party_packages ORDER BY price_cents"
        ).fetchall()
    )
    return {
        "status": "ok",
        "packages": [
            {
                "package": row["code"],
                "name": row["name"],
                "includes": row["description"],
                "price": format_usd(row["price_cents"]),
                "kids_included": row["kids_included"],
                "extra_kid": format_usd(row["extra_kid_cents"]),
                "max_kids": row["max_kids"],
                "duration_minutes": row["duration_minutes"],
            }
            for row in rows
        ],
        "party_times": {
            "Monday to Friday": PARTY_TIMES["weekday"],
            "weekends": PARTY_TIMES["weekend"],
        },
    }


def _party_times(day: Date) -> tuple[str, ...]:
    return PARTY_TIMES["weekend" if day.weekday() >= 5 else "weekday"]


def _free_party_times(connection: sqlite3.Connection, slug: str, day: Date) -> list[str]:
    booked = dict(
        connection.execute(
            "SELECT time, COUNT(*) FROM parties WHERE location = ? AND date = ? GROUP BY time",
            (slug, day.isoformat()),
        ).fetchall()
    )
    return [slot for slot in _party_times(day) if booked.get(slot, 0) < PARTY_ROOMS]


async def book_party(
    ctx: AgentCallContext,
    package: Annotated[str, Field(description="basic, mega or ultimate (see party_packages).")],
    date: Annotated[str, Field(description="Party date, YYYY-MM-DD.")],
    kids: Annotated[int, Field(description="Number of jumping kids, birthday child included.")],
    contact_name: Annotated[str, Field(description="The parent or guardian booking the party.")],
    location: Location = "",
    time: Annotated[
        str, Field(description="Start time HH:MM from the party times. Empty: list free times.")
    ] = "",
) -> ToolResult:
    """Book a birthday party. Without a time it returns the free start times that day
    (status choose_time): offer them, then call again with the chosen time. Read the party
    reference and the estimated price back to the caller.
    """
    contact = " ".join(contact_name.split())
    if not 1 <= len(contact) <= 80:
        return error("invalid_contact_name", "Give the name of the parent booking the party.")
    store = get_store()
    now = store.now(PHOENIX)
    day = parse_date(date, now.date())
    if day is None:
        return error("invalid_date", f"Give the date as YYYY-MM-DD; today is {now.date()}.")
    if day < now.date() + PARTY_NOTICE:
        return error("too_soon", "Parties are booked at least 2 days ahead.")
    if day > now.date() + PARTY_HORIZON:
        return error("too_far_ahead", "Parties can be booked up to 120 days ahead.")
    start = parse_time(time) if time.strip() else None
    if time.strip() and start is None:
        return error("invalid_time", "Give the time as HH:MM.", party_times=_party_times(day))
    park = await _resolve_location(ctx, location)
    if isinstance(park, dict):
        return park
    wanted = package.strip().lower()
    phone = normalize_number(ctx.caller_number, "1")

    def book(connection: sqlite3.Connection) -> ToolResult:
        packages = connection.execute("SELECT * FROM party_packages").fetchall()
        chosen = [
            row
            for row in packages
            if wanted in (row["code"], row["name"].lower()) or row["code"] in wanted.split()
        ]
        if len(chosen) != 1:
            codes = ", ".join(row["code"] for row in packages)
            return error("unknown_package", f"The party packages are {codes}.")
        plan = chosen[0]
        if not 1 <= kids <= plan["max_kids"]:
            return error(
                "invalid_kids", f"The {plan['name']} package takes 1 to {plan['max_kids']} kids."
            )
        if day.weekday() not in _week(connection, park["slug"]):
            return error("closed", f"{park['name']} is closed on {DAY_NAMES[day.weekday()]}s.")
        free = _free_party_times(connection, park["slug"], day)
        if start is None:
            return {
                "status": "choose_time",
                "location": park["city"],
                "date": day.isoformat(),
                "weekday": DAY_NAMES[day.weekday()],
                "available_times": free,
            }
        slot = start.strftime("%H:%M")
        if slot not in _party_times(day):
            return error(
                "invalid_time", "Parties start only at the party times.", available_times=free
            )
        if slot not in free:
            return error(
                "slot_full", f"{slot} is taken that day at {park['name']}.", available_times=free
            )
        reference = "PTY-" + random_code(4)
        while connection.execute(
            "SELECT 1 FROM parties WHERE reference = ?", (reference,)
        ).fetchone():
            reference = "PTY-" + random_code(4)
        connection.execute(
            "INSERT INTO parties (reference, package, location, date, time, kids, contact_name,"
            " phone, call_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                reference,
                plan["code"],
                park["slug"],
                day.isoformat(),
                slot,
                kids,
                contact,
                phone,
                ctx.call.call_id,
                now.isoformat(timespec="seconds"),
            ),
        )
        extra = max(0, kids - plan["kids_included"])
        return {
            "status": "booked",
            "reference": reference,
            "reference_spoken": spell(reference),
            "package": plan["name"],
            "location": park["name"],
            "address": park["address"],
            "date": day.isoformat(),
            "weekday": DAY_NAMES[day.weekday()],
            "time": slot,
            "kids": kids,
            "contact_name": contact,
            "estimated_price": format_usd(plan["price_cents"] + extra * plan["extra_kid_cents"]),
            "note": "Arrive 15 minutes early; every jumper needs a signed waiver.",
        }

    result = await store.write(book)
    if result["status"] == "booked":
        ctx.memory["store_info.party_reference"] = result["reference"]
        call_log(logger, ctx).info("booked party %s", result["reference"])
    return result


async def order_status(
    ctx: AgentCallContext,
    order_id: Annotated[str, Field(description="The online order number, e.g. SKY-10482.")],
) -> ToolResult:
    """Get the status, items, carrier, tracking number and delivery estimate of an online shop
    order. Only orders placed from the number the caller is calling from can be looked up.
    """
    digits = re.sub(r"(?i)^\s*sky[\s\-]*", "", order_id).strip()
    if not re.fullmatch(r"\d{5}", digits):
        return error("invalid_order_id", "Order numbers look like SKY-10482 (five digits).")
    number = f"SKY-{digits}"
    phone = normalize_number(ctx.caller_number, "1")
    if not phone:
        return error(
            "caller_unidentified",
            "The caller's number is withheld; orders can only be looked up from the phone"
            " number they were placed with.",
        )
    row = await get_store().read(
        lambda connection: connection.execute(
            "SELECT * FROM orders WHERE order_id = ? AND phone = ?", (number, phone)
        ).fetchone()
    )
    if row is None:
        call_log(logger, ctx).info("order %s: not the caller's or unknown", number)
        return error(
            "not_authorized",
            f"No order {number} was placed from the number the caller is calling from. Orders"
            " can only be looked up from the phone number used for the order.",
        )
    eta = row["estimated_delivery"]
    return {
        "status": "ok",
        "order_id": number,
        "order_status": row["status"],
        "placed_on": row["placed_on"],
        "items": json.loads(row["items"]),
        "total": format_usd(row["total_cents"]),
        "carrier": row["carrier"],
        "tracking": row["tracking"],
        "estimated_delivery": eta,
        "delivery_weekday": DAY_NAMES[Date.fromisoformat(eta).weekday()] if eta else None,
    }
