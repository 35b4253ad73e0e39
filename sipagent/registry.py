"""The call registry: one :class:`CallRecord` per call, the single source of call state.

The call owns its record and mutates it in place, then calls
:meth:`CallRegistry.touch` so subscribers (live dashboard, metrics) hear about it.
Ended calls are kept in a small bounded history so ``/sessions/{id}`` still
answers right after hangup.

No I/O here: timestamps are unix seconds supplied by the caller.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Final, Protocol

__all__ = [
    "CallRecord",
    "CallRegistry",
    "CallState",
    "ChangeKind",
    "RegistryListener",
    "RtpSnapshot",
    "RtpStatsLike",
    "iso_utc",
]

logger = logging.getLogger(__name__)

#: How bridge.agents names its handoff tools and the human transfer (kept equal by a test).
HANDOFF_PREFIX: Final = "transfer_to_"
HUMAN_TRANSFER_TOOL: Final = "transfer_to_human"

DEFAULT_KEEP_ENDED = 100


class CallState(enum.StrEnum):
    """Values of :attr:`CallRecord.state` (plain strings compare equal to them)."""

    RINGING = "ringing"
    ANSWERED = "answered"
    HELD = "held"
    ENDED = "ended"


class ChangeKind(enum.StrEnum):
    """What happened to a record, as told to subscribers."""

    ADDED = "added"
    UPDATED = "updated"
    REMOVED = "removed"


class RtpStatsLike(Protocol):
    """Anything with the RTP session's counters (``rtp.session.RtpStats``)."""

    @property
    def packets_in(self) -> int: ...
    @property
    def packets_out(self) -> int: ...
    @property
    def bytes_in(self) -> int: ...
    @property
    def bytes_out(self) -> int: ...
    @property
    def lost(self) -> int: ...
    @property
    def late(self) -> int: ...
    @property
    def reordered(self) -> int: ...
    @property
    def jitter_ms(self) -> float: ...
    @property
    def dropped_foreign(self) -> int: ...
    @property
    def dropped_malformed(self) -> int: ...
    @property
    def dropped_payload_type(self) -> int: ...
    @property
    def dtmf_digits(self) -> int: ...


@dataclass(slots=True, kw_only=True)
class RtpSnapshot:
    """The latest RTP counters of a call, copied from the RTP session by the call."""

    packets_in: int = 0
    "RTP packets received from the accepted source."
    packets_out: int = 0
    "RTP packets sent."
    bytes_in: int = 0
    "Payload bytes received."
    bytes_out: int = 0
    "Payload bytes sent."
    lost: int = 0
    "Packets lost (RFC 3550 A.3 cumulative)."
    late: int = 0
    "Packets that arrived after their playout time."
    reordered: int = 0
    "Packets that arrived out of order."
    jitter_ms: float = 0.0
    "Interarrival jitter in milliseconds (RFC 3550 A.8)."
    dropped_foreign: int = 0
    "Packets from a source other than the latched remote, ignored."
    dropped_malformed: int = 0
    "Datagrams that were not valid RTP/RTCP."
    dropped_payload_type: int = 0
    "Packets with a payload type that was not negotiated."
    dtmf_digits: int = 0
    "RFC 4733 digits received."

    @classmethod
    def from_stats(cls, stats: RtpStatsLike) -> RtpSnapshot:
        """Copy the counters of an RTP session's stats object."""
        return cls(
            packets_in=stats.packets_in,
            packets_out=stats.packets_out,
            bytes_in=stats.bytes_in,
            bytes_out=stats.bytes_out,
            lost=stats.lost,
            late=stats.late,
            reordered=stats.reordered,
            jitter_ms=stats.jitter_ms,
            dropped_foreign=stats.dropped_foreign,
            dropped_malformed=stats.dropped_malformed,
            dropped_payload_type=stats.dropped_payload_type,
            dtmf_digits=stats.dtmf_digits,
        )

    def to_summary(self) -> dict[str, object]:
        """The few counters shown in the session list."""
        return {
            "packets_in": self.packets_in,
            "packets_out": self.packets_out,
            "lost": self.lost,
            "jitter_ms": round(self.jitter_ms, 3),
            "dropped_foreign": self.dropped_foreign,
        }

    def to_dict(self) -> dict[str, object]:
        """Every counter."""
        return asdict(self)


def iso_utc(timestamp: float | None) -> str | None:
    """Unix seconds as ISO-8601 UTC with milliseconds (``2024-05-01T12:00:00.000Z``)."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _format_addr(addr: tuple[str, int] | None) -> str | None:
    if addr is None:
        return None
    host, port = addr
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


@dataclass(slots=True, kw_only=True, eq=False)
class CallRecord:
    """Everything known about one call; mutated by its call, read by everyone else."""

    session_id: str
    "Short unique id (uuid4 hex[:12]) used by the admin API."
    call_id: str
    "The SIP Call-ID."
    from_uri: str
    "The From URI (``from`` in JSON)."
    to_uri: str
    "The To URI (``to`` in JSON)."
    created_at: float
    "When the INVITE arrived, unix seconds."
    model: str
    "The model backend serving the call."
    caller_number: str | None = None
    "The caller's number or user part, when known."
    remote_addr: tuple[str, int] | None = None
    "The signalling source address of the caller."
    state: str = CallState.RINGING
    "One of :class:`CallState`."
    codec: str | None = None
    "Negotiated codec name (``PCMU``/``PCMA``), once known."
    answered_at: float | None = None
    "When the call was answered (200 OK), unix seconds."
    ended_at: float | None = None
    "When the call ended, unix seconds."
    end_reason: str | None = None
    "Why the call ended (``bye``, ``cancel``, ``media-timeout``, ``admin``...)."
    rtp: RtpSnapshot = field(default_factory=RtpSnapshot)
    "Latest RTP counters."
    dtmf: list[str] = field(default_factory=list)
    "Digits pressed, in order."
    transcript: list[dict[str, object]] = field(default_factory=list)
    "Final transcript lines, e.g. ``{'role': 'caller', 'text': ..., 'at': ...}``."
    tool_calls: list[dict[str, object]] = field(default_factory=list)
    "Tool invocations with arguments, result/error and duration."
    turns: list[dict[str, object]] = field(default_factory=list)
    "Per-turn measurements, e.g. response latency."
    facts: dict[str, str] = field(default_factory=dict)
    "What the call established, e.g. a reservation's confirmation_number."
    recording_path: str | None = None
    "The call's stereo WAV (caller left, agent right), written as the call runs; None: none."
    recording_truncated: bool = False
    "The recording stopped before the call ended (size cap reached, or the disk failed)."

    @property
    def ended(self) -> bool:
        """True once the call reached the ``ended`` state."""
        return self.state == CallState.ENDED

    def to_summary(self) -> dict[str, object]:
        """JSON-ready summary for the session list."""
        return {
            "session_id": self.session_id,
            "call_id": self.call_id,
            "from": self.from_uri,
            "to": self.to_uri,
            "state": str(self.state),
            "codec": self.codec,
            "created_at": iso_utc(self.created_at),
            "answered_at": iso_utc(self.answered_at),
            "model": self.model,
            "rtp": self.rtp.to_summary(),
        }

    def to_detail(self) -> dict[str, object]:
        """JSON-ready detail view: the summary plus history and every RTP counter."""
        detail = self.to_summary()
        detail.update(
            {
                "ended_at": iso_utc(self.ended_at),
                "end_reason": self.end_reason,
                "remote_addr": _format_addr(self.remote_addr),
                "caller_number": self.caller_number,
                "dtmf": list(self.dtmf),
                "transcript": [dict(line) for line in self.transcript],
                "tool_calls": [dict(call) for call in self.tool_calls],
                "handoffs": handoffs(self.tool_calls),
                "turns": [dict(turn) for turn in self.turns],
                "facts": dict(self.facts),
                "recording_path": self.recording_path,
                "recording_truncated": self.recording_truncated,
                "rtp": self.rtp.to_dict(),
            }
        )
        return detail


def handoffs(tool_calls: Iterable[Mapping[str, object]]) -> list[dict[str, object]]:
    """The agent handoffs among a call's tool calls: ``{"to", "reason", "at"}`` each, in order.

    A handoff is a successful ``transfer_to_<agent>`` call (bridge.agents names them so);
    ``transfer_to_human`` is a transfer of the call, not a handoff.
    """
    found: list[dict[str, object]] = []
    for call in tool_calls:
        name = str(call.get("name", ""))
        if not name.startswith(HANDOFF_PREFIX) or name == HUMAN_TRANSFER_TOOL:
            continue
        if call.get("error") is not None:
            continue
        arguments = call.get("arguments")
        reason = arguments.get("reason") if isinstance(arguments, dict) else None
        found.append(
            {"to": name.removeprefix(HANDOFF_PREFIX), "reason": reason, "at": call.get("at")}
        )
    return found


RegistryListener = Callable[[ChangeKind, CallRecord], None]
"""Called synchronously on every change; must not block or raise."""


class CallRegistry:
    """Live calls by session id, plus the last ``keep_ended`` ended calls."""

    def __init__(self, *, keep_ended: int = DEFAULT_KEEP_ENDED) -> None:
        if keep_ended < 0:
            raise ValueError("keep_ended must not be negative")
        self._keep_ended = keep_ended
        self._active: dict[str, CallRecord] = {}
        self._ended: OrderedDict[str, CallRecord] = OrderedDict()
        self._listeners: list[RegistryListener] = []

    def __len__(self) -> int:
        """The number of live (not ended) calls."""
        return sum(1 for record in self._active.values() if not record.ended)

    def add(self, record: CallRecord) -> None:
        """Register a new call. Raises :class:`ValueError` if the session id is taken."""
        if record.session_id in self._active or record.session_id in self._ended:
            raise ValueError(f"session {record.session_id} is already registered")
        self._active[record.session_id] = record
        logger.debug("call %s registered as session %s", record.call_id, record.session_id)
        self._notify(ChangeKind.ADDED, record)

    def get(self, session_id: str) -> CallRecord | None:
        """The record of a live or recently ended call."""
        record = self._active.get(session_id)
        if record is None:
            record = self._ended.get(session_id)
        return record

    def by_call_id(self, call_id: str) -> CallRecord | None:
        """The record with this SIP Call-ID: a live one first, else the latest ended one."""
        for record in self._active.values():
            if record.call_id == call_id:
                return record
        for record in reversed(self._ended.values()):
            if record.call_id == call_id:
                return record
        return None

    def active(self) -> list[CallRecord]:
        """Live calls (state other than ``ended``), oldest first."""
        return [record for record in self._active.values() if not record.ended]

    def ended(self) -> list[CallRecord]:
        """Recently ended calls still remembered, oldest first."""
        ended_live = [record for record in self._active.values() if record.ended]
        return ended_live + list(self._ended.values())

    def touch(self, record: CallRecord) -> None:
        """Tell subscribers ``record`` changed; call after every mutation."""
        if self.get(record.session_id) is not record:
            logger.debug("touch of unregistered session %s ignored", record.session_id)
            return
        self._notify(ChangeKind.UPDATED, record)

    def remove(self, session_id: str) -> CallRecord | None:
        """Move a call to the ended history (marking it ended) and return it.

        Returns ``None`` when the session is not live.
        """
        record = self._active.pop(session_id, None)
        if record is None:
            return None
        if not record.ended:
            record.state = CallState.ENDED
        if self._keep_ended:
            self._ended[session_id] = record
            while len(self._ended) > self._keep_ended:
                self._ended.popitem(last=False)
        logger.debug("session %s removed (%s)", session_id, record.end_reason)
        self._notify(ChangeKind.REMOVED, record)
        return record

    def subscribe(self, listener: RegistryListener) -> None:
        """Call ``listener(kind, record)`` on every add, update and remove."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: RegistryListener) -> None:
        """Stop notifying ``listener``; unknown listeners are ignored."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def _notify(self, kind: ChangeKind, record: CallRecord) -> None:
        # Copy: a listener may unsubscribe itself while being notified.
        for listener in list(self._listeners):
            try:
                listener(kind, record)
            except Exception:
                # A broken dashboard must never take a call down.
                logger.exception("registry listener %r failed on %s", listener, kind)
