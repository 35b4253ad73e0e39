"""Helpers for the seed agents' tests: a call context and a fresh seed store at a fixed time.

A test module gets the ``clock`` and ``store`` fixtures by importing :func:`clock_fixture` and
:func:`store_fixture`, each ``as`` itself so that linters count the import as used.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.agents.context import AgentCallContext
from bridge.agents.seed.store import SeedStore, set_store
from bridge.base import CallContext

NOW = datetime(2025, 6, 3, 17, 0, tzinfo=UTC)
"""Tuesday 3 June 2025: 14:00 in São Paulo, 10:00 in Phoenix."""

TEST_PIN_ITERATIONS = 1_000
"""Cheap PIN hashing, so that every test can seed a fresh file."""

_calls = itertools.count(1)


class Clock:
    """A settable clock for :class:`SeedStore`."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_ctx(
    caller_number: str = "",
    dialled_number: str = "",
    *,
    digits: str = "",
    call_id: str | None = None,
) -> AgentCallContext:
    """A context for one call from ``caller_number``; ``digits`` already pressed."""
    call = CallContext(
        call_id=call_id or f"seed-call-{next(_calls)}@test",
        session_id="0123456789ab",
        caller=f"sip:{caller_number or 'anonymous'}@pbx.test",
        callee=f"sip:{dialled_number or 'sipagent'}@sipagent.test",
        codec="PCMU",
    )
    ctx = AgentCallContext(call=call, caller_number=caller_number, dialled_number=dialled_number)
    ctx.add_dtmf(digits)
    return ctx


@pytest.fixture(name="clock")
def clock_fixture() -> Clock:
    """The seed store's clock, at :data:`NOW` until the test moves it."""
    return Clock()


@pytest.fixture(name="store")
def store_fixture(tmp_path: Path, clock: Clock) -> Iterator[SeedStore]:
    """A new seed file in ``tmp_path`` used by the tools for the test."""
    seed_store = SeedStore(
        tmp_path / "seed.sqlite3", clock=clock, pin_iterations=TEST_PIN_ITERATIONS
    )
    set_store(seed_store)
    try:
        yield seed_store
    finally:
        set_store(None)
        seed_store.close()
