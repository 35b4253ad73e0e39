"""What an agent's tools know about, and may change in, the call they run in.

One :class:`AgentCallContext` lives for the whole call and is shared by every tool call and
every agent of that call: a handoff changes :attr:`~AgentCallContext.current_agent`, not the
context, so what one agent learnt (``memory``, ``verified``) the next one still knows.

Keypad digits: the call layer may :meth:`~AgentCallContext.add_dtmf` each digit as it arrives;
the adapter also brings :attr:`~AgentCallContext.dtmf` up to date from the model session's
record before every tool call, so a tool always sees every digit pressed so far. A tool reads
them with :meth:`~AgentCallContext.take_digits`, which consumes what it returns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import to_jsonable_python

from bridge.base import CallContext

__all__ = ["AgentCallContext", "number_of"]


def number_of(address: str) -> str:
    """The number (user part) of a SIP/tel URI or name-address; plain numbers pass through.

    ``"Alice" <sip:+15550100@pbx;user=phone>`` → ``+15550100``, ``tel:+4930123;ext=1`` →
    ``+4930123``, ``+1 (555) 0100`` → ``+15550100``. Visual separators (space, ``-``, ``.``,
    ``(``, ``)``) are dropped from telephone numbers; names (``sip:support@pbx``) are kept.
    """
    text = address.strip()
    if "<" in text and ">" in text:
        text = text[text.index("<") + 1 : text.rindex(">")]
    scheme, colon, rest = text.partition(":")
    if colon and scheme.lower() in ("sip", "sips", "tel"):
        text = rest
        if scheme.lower() != "tel":
            user, at, _host = text.partition("@")
            text = user if at else ""
        text = text.split(";", 1)[0]
    digits = "".join(ch for ch in text if ch not in " -.()")
    return digits if digits.lstrip("+").isdigit() else text


@dataclass(slots=True, kw_only=True, eq=False)
class AgentCallContext:
    """The per-call state the agents' tools share; created by the call layer, one per call."""

    call: CallContext
    "The phone call (Call-ID, session id, caller and callee URIs, codec)."

    caller_number: str = ""
    "Who calls: the P-Asserted-Identity user if the network asserted one, else the From user."

    dialled_number: str = ""
    "What was dialled: the To/Request-URI user (the DID); picks the first agent."

    current_agent: str = ""
    "The name of the agent talking now; handoffs change it."

    dtmf: list[str] = field(default_factory=list)
    "Keypad digits pressed and not yet taken by a tool, oldest first, one per item."

    memory: dict[str, Any] = field(default_factory=dict)
    "Free key-value storage for tools, kept across handoffs for the whole call."

    verified: dict[str, bool] = field(default_factory=dict)
    "What the caller proved, set by tools (``verified['pin'] = True``)."

    history: list[dict[str, Any]] = field(default_factory=list)
    "Handoffs, transfers and tool calls of this call, oldest first (``event`` names the kind)."

    transfer_requested: str | None = None
    "The target ``transfer_to_human`` is handing the caller to, None when no transfer is on."

    dtmf_received: int = 0
    "How many digits the call has received in all (taken ones included)."

    @classmethod
    def for_call(
        cls,
        call: CallContext,
        *,
        caller_number: str | None = None,
        dialled_number: str | None = None,
    ) -> AgentCallContext:
        """A fresh context; numbers default to the user parts of ``call.caller``/``callee``."""
        return cls(
            call=call,
            caller_number=caller_number if caller_number is not None else number_of(call.caller),
            dialled_number=(
                dialled_number if dialled_number is not None else number_of(call.callee)
            ),
        )

    # -- keypad ------------------------------------------------------------------------------
    def add_dtmf(self, digits: str) -> None:
        """The caller pressed ``digits`` (one or more of ``0-9*#A-D``), in this order."""
        self.dtmf.extend(digits)
        self.dtmf_received += len(digits)

    def sync_dtmf(self, pressed: str) -> None:
        """Catch up with ``pressed``, every digit of the call so far (the session's record).

        Digits beyond :attr:`dtmf_received` are added; nothing is added twice, so the call
        layer may also :meth:`add_dtmf` as digits arrive.
        """
        if len(pressed) > self.dtmf_received:
            self.add_dtmf(pressed[self.dtmf_received :])

    def take_digits(self, terminator: str | None = "#") -> str | None:
        """Consume the digits collected so far up to ``terminator`` and return them.

        With a terminator: None (and nothing consumed) until it was pressed; then the digits
        before it, with the terminator itself consumed but not returned. With
        ``terminator=None``: every collected digit, or None when there is none.
        """
        if terminator is None:
            if not self.dtmf:
                return None
            digits = "".join(self.dtmf)
            self.dtmf.clear()
            return digits
        try:
            end = self.dtmf.index(terminator)
        except ValueError:
            return None
        digits = "".join(self.dtmf[:end])
        del self.dtmf[: end + 1]
        return digits

    # -- records -----------------------------------------------------------------------------
    def record(self, event: str, **details: Any) -> dict[str, Any]:
        """Append ``{"event": event, "agent": current_agent, "at": unix time, **details}``."""
        entry: dict[str, Any] = {
            "event": event,
            "agent": self.current_agent,
            "at": time.time(),
            **details,
        }
        self.history.append(entry)
        return entry

    def snapshot(self) -> dict[str, Any]:
        """The context as JSON-able data (what an HTTP webhook is told about the call).

        ``memory`` values that JSON cannot carry are given as their ``repr``.
        """
        return {
            "call_id": self.call.call_id,
            "session_id": self.call.session_id,
            "caller": self.call.caller,
            "callee": self.call.callee,
            "codec": self.call.codec,
            "caller_number": self.caller_number,
            "dialled_number": self.dialled_number,
            "current_agent": self.current_agent,
            "dtmf": "".join(self.dtmf),
            "verified": dict(self.verified),
            "memory": to_jsonable_python(self.memory, fallback=repr),
        }
