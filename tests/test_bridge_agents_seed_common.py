"""What the Arizona seed agents share: Phoenix time, the current_date tool, spoken times."""

from __future__ import annotations

import importlib
from datetime import time

import pytest

from bridge.agents.seed import common
from bridge.agents.seed.common import DAY_NAMES, current_date, spoken_time
from bridge.agents.seed.store import SeedStore
from tests.seed_context import clock_fixture as clock_fixture
from tests.seed_context import make_ctx
from tests.seed_context import store_fixture as store_fixture


async def test_current_date_is_phoenix_time(store: SeedStore) -> None:
    assert await current_date(make_ctx("+16025550111")) == {
        "status": "ok",
        "today": "2025-06-03",
        "weekday": "Tuesday",
        "time": "10:00",
        "tomorrow": "2025-06-04",
    }


@pytest.mark.parametrize("module_name", ["concierge", "scheduling", "store_info"])
def test_each_arizona_agent_offers_current_date(module_name: str) -> None:
    module = importlib.import_module(f"bridge.agents.seed.{module_name}")
    assert module.current_date is current_date
    assert module.PHOENIX is common.PHOENIX
    assert {"current_date", "PHOENIX"} <= set(module.__all__)


@pytest.mark.parametrize(
    ("moment", "spoken"),
    [(time(7, 30), "7:30 AM"), (time(12, 0), "12:00 PM"), (time(17, 15), "5:15 PM")],
)
def test_spoken_time(moment: time, spoken: str) -> None:
    assert spoken_time(moment) == spoken


def test_day_names_start_on_monday() -> None:
    assert DAY_NAMES[0] == "Monday" and DAY_NAMES[6] == "Sunday" and len(DAY_NAMES) == 7
