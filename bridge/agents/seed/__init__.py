"""The seed agents: four small businesses that show what the multi-agent adapter can do.

Each module holds the tools of one agent declared in ``config/agents/<name>.yaml``:

- :mod:`.banking` (``banking``): Banco Sinal, a Brazilian bank: balances, transfers and Pix,
  authorised by the calling number and a keypad PIN, idempotent, with limits.
- :mod:`.concierge` (``concierge``, the default agent): Saguaro & Salt restaurant
  reservations with phone-friendly confirmation numbers, and
  :func:`~.concierge.extract_confirmation_number` for the call record.
- :mod:`.store_info` (``store_info``): Skyhop Trampoline Parks: hours, locations, prices,
  shop, birthday parties and order status.
- :mod:`.scheduling` (``scheduling``): Desert Auto Care: recognises the caller, collects the
  booking's slots in the call memory, books service appointments.

The three Arizona businesses share their local time and the ``current_date`` tool
(:mod:`.common`). Their data is one SQLite file (:mod:`.store`), ``$SIPAGENT_SEED_DB`` or
``data/seed.sqlite3``, created with demo rows on first use. The modules are imported by the
agent registry when an agent file names one of their tools; importing this package imports
none of them.
"""

from __future__ import annotations

from typing import Final

__all__ = ["SEED_AGENTS"]

SEED_AGENTS: Final = {
    "banking": "bridge.agents.seed.banking",
    "concierge": "bridge.agents.seed.concierge",
    "store_info": "bridge.agents.seed.store_info",
    "scheduling": "bridge.agents.seed.scheduling",
}
"""Seed agent name → the module with its tools."""
