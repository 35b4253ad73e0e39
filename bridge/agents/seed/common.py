"""What the three Arizona seed businesses share: local time, ``current_date``, spoken times.

The restaurant (:mod:`.concierge`), the trampoline parks (:mod:`.store_info`) and the car
service shop (:mod:`.scheduling`) are all around Phoenix, which keeps no daylight saving time,
so one fixed UTC-7 offset serves them. Each of those modules re-exports :func:`current_date`,
so that its agent file names all of its tools from the one module.
"""

from __future__ import annotations

from datetime import time as Time
from datetime import timedelta, timezone
from typing import Final

from bridge.agents.context import AgentCallContext

from .store import ToolResult, date_info, get_store

__all__ = ["DAY_NAMES", "PHOENIX", "current_date", "spoken_time"]

PHOENIX: Final = timezone(timedelta(hours=-7), "MST")
"""Arizona time: UTC-7 all year."""
DAY_NAMES: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
"""Weekday names by :meth:`~datetime.date.weekday` (0 = Monday), whatever the locale."""


def spoken_time(moment: Time) -> str:
    """``moment`` on the 12-hour clock, as it is said: ``5:30 PM``."""
    return moment.strftime("%I:%M %p").lstrip("0")


async def current_date(ctx: AgentCallContext) -> ToolResult:
    """Get today's date, weekday and local time, to turn "tomorrow" or "Friday" into a date."""
    return date_info(get_store().now(PHOENIX))
