"""Desert Auto Care service desk (the ConversationManager seed): who is calling, what the shop
does, free times and bookings.

Slot filling: what the caller said so far (service, date, time, name) is kept in
``ctx.memory["scheduling.slots"]``, validated, by every tool that receives it, so
:func:`book_appointment` may be called with only the missing pieces and answers
``need_more_info`` with the ones still missing. The memory survives handoffs, like any
context memory.

The shop (Scottsdale, fixed UTC-7) has :data:`BAYS` service bays and books on a 30-minute
grid; an appointment takes a bay for its service's whole duration and must end by closing.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import date as Date
from datetime import datetime, timedelta
from datetime import time as Time
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
    "BAYS",
    "PHOENIX",
    "SHOP",
    "SHOP_HOURS",
    "SLOTS_KEY",
    "available_slots",
    "book_appointment",
    "current_date",
    "identify_customer",
    "list_services",
]

logger = logging.getLogger(__name__)

SHOP: Final = "Desert Auto Care"
BAYS: Final = 2
GRID_MINUTES: Final = 30
SHOP_HOURS: Final = {
    0: ("07:30", "17:30"),
    1: ("07:30", "17:30"),
    2: ("07:30", "17:30"),
    3: ("07:30", "17:30"),
    4: ("07:30", "17:30"),
    5: ("08:00", "13:00"),
}
"""Opening hours per weekday (0 = Monday; closed on Sunday)."""
MIN_NOTICE: Final = timedelta(hours=1)
HORIZON: Final = timedelta(days=30)
SLOTS_KEY: Final = "scheduling.slots"
"""The ``ctx.memory`` key of the collected slots (service_type, date, time, name)."""
_CUSTOMER_KEY: Final = "scheduling.customer"
_SLOT_ORDER: Final = ("service_type", "date", "time", "name")

ServiceType = Annotated[
    str, Field(description="Service code or name from list_services, e.g. oil_change.")
]
DateText = Annotated[str, Field(description="YYYY-MM-DD; 'today', 'tomorrow' also work.")]


def _slots(ctx: AgentCallContext) -> dict[str, Any]:
    slots: dict[str, Any] = ctx.memory.setdefault(SLOTS_KEY, {})
    return slots


def _minutes(value: str) -> int:
    moment = Time.fromisoformat(value)
    return moment.hour * 60 + moment.minute


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _spoken(minutes: int) -> str:
    return spoken_time(Time(minutes // 60, minutes % 60))


def _find_service(connection: sqlite3.Connection, wanted: str) -> sqlite3.Row | ToolResult:
    def words(value: str) -> str:
        return " ".join(value.lower().replace("_", " ").replace("-", " ").split())

    text = words(wanted)
    rows = connection.execute("SELECT * FROM services ORDER BY code").fetchall()
    exact = [row for row in rows if text in (words(row["code"]), words(row["name"]))]
    matches = exact or [
        row for row in rows if text and (text in words(row["code"]) or text in words(row["name"]))
    ]
    if len(matches) == 1:
        found: sqlite3.Row = matches[0]
        return found
    names = ", ".join(f"{row['name']} ({row['code']})" for row in rows)
    return error("unknown_service", f"The services are: {names}.")


def _check_day(day: Date | None, now: datetime) -> Date | ToolResult:
    """``day`` if appointments can be booked on it, else why not."""
    if day is None:
        return error("invalid_date", f"Give the date as YYYY-MM-DD; today is {now.date()}.")
    if day < now.date():
        return error("date_in_past", f"That date has passed; today is {now.date()}.")
    if day > now.date() + HORIZON:
        return error("too_far_ahead", "Appointments can be booked up to 30 days ahead.")
    if day.weekday() not in SHOP_HOURS:
        return error("closed", f"{SHOP} is closed on {DAY_NAMES[day.weekday()]}s.")
    return day


def _free_starts(
    connection: sqlite3.Connection, day: Date, duration: int, now: datetime
) -> dict[int, int]:
    """Free start times (minutes after midnight) of ``day`` for ``duration``, each with a bay."""
    opens, closes = (_minutes(value) for value in SHOP_HOURS[day.weekday()])
    busy: dict[int, set[int]] = {bay: set() for bay in range(1, BAYS + 1)}
    rows = connection.execute(
        "SELECT a.time, a.bay, s.duration_minutes FROM appointments AS a"
        " JOIN services AS s ON s.code = a.service WHERE a.date = ?",
        (day.isoformat(),),
    ).fetchall()
    for row in rows:
        start = _minutes(row["time"])
        busy[row["bay"]].update(range(start, start + row["duration_minutes"], GRID_MINUTES))
    earliest = 0
    if day == now.date():
        soonest = now + MIN_NOTICE
        earliest = soonest.hour * 60 + soonest.minute if soonest.date() == day else 24 * 60
    free: dict[int, int] = {}
    for start in range(max(opens, earliest), closes - duration + 1, GRID_MINUTES):
        if start % GRID_MINUTES:
            continue
        cells = set(range(start, start + duration, GRID_MINUTES))
        for bay, taken in busy.items():
            if not cells & taken:
                free[start] = bay
                break
    return free


# -- tools --------------------------------------------------------------------------------------
async def identify_customer(ctx: AgentCallContext) -> ToolResult:
    """Look the caller up by their phone number: an existing customer (name, vehicle, last
    visit, upcoming appointments) or a new one. Call it first; follow "greeting_hint".
    """
    phone = normalize_number(ctx.caller_number, "1")
    store = get_store()
    today = store.now(PHOENIX).date().isoformat()

    def query(connection: sqlite3.Connection) -> tuple[sqlite3.Row | None, list[sqlite3.Row]]:
        if not phone:
            return None, []
        customer = connection.execute(
            "SELECT * FROM service_customers WHERE phone = ?", (phone,)
        ).fetchone()
        upcoming = connection.execute(
            "SELECT a.reference, a.date, a.time, s.name FROM appointments AS a"
            " JOIN services AS s ON s.code = a.service"
            " WHERE a.phone = ? AND a.date >= ? ORDER BY a.date, a.time",
            (phone, today),
        ).fetchall()
        return customer, list(upcoming)

    customer, upcoming = await store.read(query)
    if customer is None:
        ctx.memory[_CUSTOMER_KEY] = {"known": False}
        return {
            "status": "new_customer",
            "greeting_hint": f"Welcome the caller to {SHOP}, then ask for their name and what"
            " vehicle it is about.",
        }
    first_name = customer["name"].split()[0]
    ctx.memory[_CUSTOMER_KEY] = {
        "known": True,
        "name": customer["name"],
        "vehicle": customer["vehicle"],
    }
    _slots(ctx).setdefault("name", customer["name"])
    vehicle = customer["vehicle"]
    hint = f"Welcome back, {first_name}!" + (
        f" Is this about your {vehicle}?" if vehicle else " How can we help today?"
    )
    return {
        "status": "existing_customer",
        "name": customer["name"],
        "first_name": first_name,
        "vehicle": vehicle or None,
        "last_visit": customer["last_visit"],
        "upcoming_appointments": [
            {
                "reference": row["reference"],
                "service": row["name"],
                "date": row["date"],
                "time": row["time"],
            }
            for row in upcoming
        ],
        "greeting_hint": hint,
    }


async def list_services(ctx: AgentCallContext) -> ToolResult:
    """List the services the shop books: code, name, what it includes, duration and price."""
    rows = await get_store().read(
        lambda connection: connection.execute("SELECT * FROM services ORDER BY code").fetchall()
    )
    return {
        "status": "ok",
        "services": [
            {
                "service_type": row["code"],
                "name": row["name"],
                "includes": row["description"],
                "duration_minutes": row["duration_minutes"],
                "price": format_usd(row["price_cents"]) if row["price_cents"] else "free",
            }
            for row in rows
        ],
        "hours": "Monday to Friday 7:30 AM to 5:30 PM, Saturday 8 AM to 1 PM, closed Sunday",
    }


async def available_slots(
    ctx: AgentCallContext, service_type: ServiceType, date: DateText
) -> ToolResult:
    """Get the free start times for a service on a date. Offer two or three of them, not the
    whole list.
    """
    store = get_store()
    now = store.now(PHOENIX)
    day = _check_day(parse_date(date, now.date()), now)
    if isinstance(day, dict):
        return day

    def query(connection: sqlite3.Connection) -> ToolResult:
        service = _find_service(connection, service_type)
        if isinstance(service, dict):
            return service
        free = _free_starts(connection, day, service["duration_minutes"], now)
        return {
            "status": "ok",
            "service_type": service["code"],
            "service": service["name"],
            "date": day.isoformat(),
            "weekday": DAY_NAMES[day.weekday()],
            "times": [_hhmm(start) for start in free],
            "times_spoken": [_spoken(start) for start in free],
        }

    result = await store.read(query)
    if result["status"] == "ok":
        slots = _slots(ctx)
        slots["service_type"] = result["service_type"]
        slots["date"] = result["date"]
        if not result["times"]:
            result["message"] = "Nothing is free that day; offer to check another day."
    return result


async def book_appointment(
    ctx: AgentCallContext,
    service_type: ServiceType = "",
    date: DateText = "",
    time: Annotated[str, Field(description="Start time HH:MM from available_slots.")] = "",
    name: Annotated[str, Field(description="The customer's name.")] = "",
) -> ToolResult:
    """Book a service appointment. Pass what the caller has given; anything left empty is
    taken from earlier in the call. On status need_more_info ask for the "missing" items.
    Confirm the details with the caller before booking, then read the reference back.
    """
    store = get_store()
    now = store.now(PHOENIX)
    slots = _slots(ctx)
    problems: list[ToolResult] = []
    if name.strip():
        clean = " ".join(name.split())
        if len(clean) > 80:
            problems.append(error("invalid_name", "The name is too long."))
        else:
            slots["name"] = clean
    if date.strip():
        checked = _check_day(parse_date(date, now.date()), now)
        if isinstance(checked, dict):
            problems.append(checked)
        else:
            slots["date"] = checked.isoformat()
    if time.strip():
        moment = parse_time(time)
        if moment is None or moment.minute % GRID_MINUTES:
            problems.append(
                error("invalid_time", "Give the time as HH:MM on the hour or half hour.")
            )
        else:
            slots["time"] = moment.strftime("%H:%M")
    if service_type.strip():
        service = await store.read(lambda connection: _find_service(connection, service_type))
        if isinstance(service, dict):
            problems.append(service)
        else:
            slots["service_type"] = service["code"]
    if problems:
        return problems[0]
    missing = [slot for slot in _SLOT_ORDER if not slots.get(slot)]
    if missing:
        return {"status": "need_more_info", "missing": missing, "collected": dict(slots)}

    day = Date.fromisoformat(slots["date"])
    start = _minutes(slots["time"])
    phone = normalize_number(ctx.caller_number, "1")

    def book(connection: sqlite3.Connection) -> ToolResult:
        service = _find_service(connection, slots["service_type"])
        if isinstance(service, dict):
            return service
        checked = _check_day(day, now)
        if isinstance(checked, dict):
            return checked
        free = _free_starts(connection, day, service["duration_minutes"], now)
        if start not in free:
            return error(
                "slot_taken",
                f"{slots['time']} is not free for {service['name']} on {day}.",
                available_times=[_hhmm(minutes) for minutes in free],
            )
        reference = "APT-" + random_code(4)
        while connection.execute(
            "SELECT 1 FROM appointments WHERE reference = ?", (reference,)
        ).fetchone():
            reference = "APT-" + random_code(4)
        connection.execute(
            "INSERT INTO appointments (reference, service, date, time, bay, name, phone,"
            " call_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                reference,
                service["code"],
                day.isoformat(),
                slots["time"],
                free[start],
                slots["name"],
                phone,
                ctx.call.call_id,
                now.isoformat(timespec="seconds"),
            ),
        )
        if phone:
            connection.execute(
                "INSERT OR IGNORE INTO service_customers (phone, name, vehicle) VALUES (?, ?, '')",
                (phone, slots["name"]),
            )
        return {
            "status": "booked",
            "reference": reference,
            "reference_spoken": spell(reference),
            "service": service["name"],
            "date": day.isoformat(),
            "weekday": DAY_NAMES[day.weekday()],
            "time": slots["time"],
            "time_spoken": _spoken(start),
            "name": slots["name"],
            "duration_minutes": service["duration_minutes"],
            "price": format_usd(service["price_cents"]) if service["price_cents"] else "free",
        }

    result = await store.write(book)
    if result["status"] == "booked":
        ctx.memory["scheduling.booked"] = result["reference"]
        slots.pop("time", None)
        call_log(logger, ctx).info(
            "booked %s: %s on %s at %s",
            result["reference"],
            result["service"],
            day,
            result["time"],
        )
    elif result.get("code") == "slot_taken":
        slots.pop("time", None)
    return result
