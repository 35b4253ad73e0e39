"""SIP transactions (RFC 3261 §17, with the RFC 6026 Accepted states).

Four sans-I/O state machines. Each takes ``now`` and queues what it sends on the
shared ``outbox`` list it was given, as ``(message, destination)`` pairs; each has one
deadline (:meth:`get_timer`) and :meth:`handle_timer`. Timers A to K (and L, M of RFC
6026) are deadlines in a dict keyed by their letter, so several can run at once.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from .exceptions import LocalProtocolError
from .message import Headers, Request, Response

__all__ = [
    "T1",
    "T2",
    "T4",
    "ClientInviteTransaction",
    "ClientNonInviteTransaction",
    "Destination",
    "Outbox",
    "ServerInviteTransaction",
    "ServerNonInviteTransaction",
    "TxState",
]

logger = logging.getLogger(__name__)

T1 = 0.5
"""RTT estimate (s)."""
T2 = 4.0
"""Longest retransmit interval for non-INVITE requests and INVITE responses (s)."""
T4 = 5.0
"""Longest time a message stays in the network (s)."""


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a message goes: transport and address (host may still need resolving)."""

    transport: str
    """``udp``, ``tcp`` or ``tls``, lower-case."""
    host: str
    """IP address or host name."""
    port: int
    """UDP/TCP port."""

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"


Outbox = list[tuple[Request | Response, Destination]]


class TxState(enum.Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    ACCEPTED = "accepted"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


S = TxState

_SERVER_INVITE = {
    S.PROCEEDING: {S.PROCEEDING, S.COMPLETED, S.ACCEPTED, S.TERMINATED},
    S.COMPLETED: {S.CONFIRMED, S.TERMINATED},
    S.ACCEPTED: {S.TERMINATED},
    S.CONFIRMED: {S.TERMINATED},
    S.TERMINATED: set(),
}
_SERVER_NON_INVITE = {
    S.TRYING: {S.PROCEEDING, S.COMPLETED, S.TERMINATED},
    S.PROCEEDING: {S.PROCEEDING, S.COMPLETED, S.TERMINATED},
    S.COMPLETED: {S.TERMINATED},
    S.TERMINATED: set(),
}
_CLIENT_INVITE = {
    S.CALLING: {S.PROCEEDING, S.COMPLETED, S.ACCEPTED, S.TERMINATED},
    S.PROCEEDING: {S.PROCEEDING, S.COMPLETED, S.ACCEPTED, S.TERMINATED},
    S.COMPLETED: {S.TERMINATED},
    S.ACCEPTED: {S.TERMINATED},
    S.TERMINATED: set(),
}
_CLIENT_NON_INVITE = {
    S.TRYING: {S.PROCEEDING, S.COMPLETED, S.TERMINATED},
    S.PROCEEDING: {S.PROCEEDING, S.COMPLETED, S.TERMINATED},
    S.COMPLETED: {S.TERMINATED},
    S.TERMINATED: set(),
}


class _Transaction:
    _table: dict[TxState, set[TxState]]

    def __init__(
        self, request: Request, destination: Destination, outbox: Outbox, state: TxState
    ) -> None:
        self.request = request
        self.destination = destination
        self.state = state
        self.timed_out = False
        self._outbox = outbox
        self._timers: dict[str, float] = {}

    @property
    def reliable(self) -> bool:
        return self.destination.reliable

    @property
    def terminated(self) -> bool:
        return self.state is S.TERMINATED

    def get_timer(self) -> float | None:
        return min(self._timers.values()) if self._timers else None

    def _set_state(self, state: TxState) -> None:
        if state not in self._table[self.state]:
            raise LocalProtocolError(f"{type(self).__name__}: {self.state.value} -> {state.value}")
        logger.debug("%s %s: %s -> %s", type(self).__name__, self.request.call_id,
                     self.state.value, state.value)
        self.state = state
        if state is S.TERMINATED:
            self._timers.clear()

    def _send(self, message: Request | Response) -> None:
        self._outbox.append((message, self.destination))

    def _due(self, now: float) -> list[str]:
        return sorted((name for name, at in self._timers.items() if at <= now),
                      key=lambda name: self._timers[name])


class ServerInviteTransaction(_Transaction):
    """INVITE server transaction: Proceeding → Completed/Accepted → Confirmed → Terminated."""

    _table = _SERVER_INVITE

    def __init__(self, request: Request, destination: Destination, outbox: Outbox) -> None:
        super().__init__(request, destination, outbox, S.PROCEEDING)
        self.last_response: Response | None = None
        self._interval = T1

    def respond(self, response: Response, now: float) -> None:
        if self.state is not S.PROCEEDING:
            raise LocalProtocolError(f"cannot respond to INVITE in state {self.state.value}")
        self.last_response = response
        self._send(response)
        if response.status < 200:
            return
        if response.status < 300:
            self._set_state(S.ACCEPTED)
            self._timers = {"L": now + 64 * T1}
        else:
            self._set_state(S.COMPLETED)
            self._timers = {"H": now + 64 * T1}
            if not self.reliable:
                self._timers["G"] = now + self._interval

    def receive_request(self, request: Request, now: float) -> bool:
        """Absorb a retransmitted INVITE or the ACK of a non-2xx; True if it was an ACK."""
        if request.method == "ACK":
            if self.state is S.COMPLETED:
                self._set_state(S.CONFIRMED)
                self._timers = {"I": now + (0.0 if self.reliable else T4)}
            return True
        if self.state in (S.PROCEEDING, S.COMPLETED) and self.last_response is not None:
            self._send(self.last_response)
        return False

    def handle_timer(self, now: float) -> None:
        for name in self._due(now):
            if self.state is S.TERMINATED:
                break  # H, I or L fired first and cleared the other timers
            del self._timers[name]
            if name == "G" and self.state is S.COMPLETED and self.last_response is not None:
                self._send(self.last_response)
                self._interval = min(2 * self._interval, T2)
                self._timers["G"] = now + self._interval
            elif name == "H":
                self.timed_out = True
                self._set_state(S.TERMINATED)
            elif name in ("I", "L"):
                self._set_state(S.TERMINATED)


class ServerNonInviteTransaction(_Transaction):
    """Non-INVITE server transaction: Trying → Proceeding → Completed → Terminated."""

    _table = _SERVER_NON_INVITE

    def __init__(self, request: Request, destination: Destination, outbox: Outbox) -> None:
        super().__init__(request, destination, outbox, S.TRYING)
        self.last_response: Response | None = None

    def respond(self, response: Response, now: float) -> None:
        if self.state not in (S.TRYING, S.PROCEEDING):
            raise LocalProtocolError(f"cannot respond in state {self.state.value}")
        self.last_response = response
        self._send(response)
        if response.status < 200:
            self._set_state(S.PROCEEDING)
        else:
            self._set_state(S.COMPLETED)
            self._timers = {"J": now + (0.0 if self.reliable else 64 * T1)}

    def receive_request(self, request: Request, now: float) -> None:
        """A retransmission: resend the last response, if any."""
        if self.state in (S.PROCEEDING, S.COMPLETED) and self.last_response is not None:
            self._send(self.last_response)

    def handle_timer(self, now: float) -> None:
        if "J" in self._due(now):
            self._set_state(S.TERMINATED)


class ClientNonInviteTransaction(_Transaction):
    """Non-INVITE client transaction (BYE, INFO, REFER …) with timers E, F, K."""

    _table = _CLIENT_NON_INVITE

    def __init__(
        self, request: Request, destination: Destination, outbox: Outbox, now: float
    ) -> None:
        super().__init__(request, destination, outbox, S.TRYING)
        self.final_response: Response | None = None
        self._interval = T1
        self._send(request)
        self._timers = {"F": now + 64 * T1}
        if not self.reliable:
            self._timers["E"] = now + T1

    def receive_response(self, response: Response, now: float) -> Response | None:
        """Return the response for the transaction user, or None when absorbed."""
        if self.state in (S.COMPLETED, S.TERMINATED):
            return None
        if response.status < 200:
            self._set_state(S.PROCEEDING)
            return response
        self.final_response = response
        self._set_state(S.COMPLETED)
        self._timers = {"K": now + (0.0 if self.reliable else T4)}
        return response

    def handle_timer(self, now: float) -> None:
        for name in self._due(now):
            self._timers.pop(name, None)
            if name == "E" and self.state in (S.TRYING, S.PROCEEDING):
                self._send(self.request)
                self._interval = T2 if self.state is S.PROCEEDING else min(2 * self._interval, T2)
                self._timers["E"] = now + self._interval
            elif name == "F" and self.state in (S.TRYING, S.PROCEEDING):
                self.timed_out = True
                self._set_state(S.TERMINATED)
            elif name == "K":
                self._set_state(S.TERMINATED)


class ClientInviteTransaction(_Transaction):
    """INVITE client transaction with timers A, B, D and RFC 6026's M."""

    _table = _CLIENT_INVITE

    def __init__(
        self, request: Request, destination: Destination, outbox: Outbox, now: float
    ) -> None:
        super().__init__(request, destination, outbox, S.CALLING)
        self.final_response: Response | None = None
        self._interval = T1
        self._ack: Request | None = None
        self._send(request)
        self._timers = {"B": now + 64 * T1}
        if not self.reliable:
            self._timers["A"] = now + T1

    def receive_response(self, response: Response, now: float) -> Response | None:
        """Return the response for the transaction user, or None when absorbed."""
        if self.state is S.COMPLETED:
            if self._ack is not None and response.status >= 300:
                self._send(self._ack)
            return None
        if self.state is S.ACCEPTED:
            # RFC 6026: 2xx retransmissions go to the TU (it resends the ACK).
            return response if 200 <= response.status < 300 else None
        if self.state is S.TERMINATED:
            return None
        if response.status < 200:
            self._set_state(S.PROCEEDING)
            self._timers.pop("A", None)
            self._timers.pop("B", None)
            return response
        self.final_response = response
        if response.status < 300:
            self._set_state(S.ACCEPTED)
            self._timers = {"M": now + 64 * T1}
            return response
        self._ack = self._build_ack(response)
        self._send(self._ack)
        self._set_state(S.COMPLETED)
        self._timers = {"D": now + (0.0 if self.reliable else 32.0)}
        return response

    def _build_ack(self, response: Response) -> Request:
        """ACK for a non-2xx final response: same branch, To from the response (§17.1.1.3)."""
        headers = Headers()
        headers.add("Via", self.request.headers.get_all("Via")[0])
        for name in ("Route",):
            for value in self.request.headers.lines(name):
                headers.add(name, value)
        headers.add("Max-Forwards", "70")
        headers.add("From", self.request.headers.get("From") or "")
        headers.add("To", response.headers.get("To") or "")
        headers.add("Call-ID", self.request.call_id)
        headers.add("CSeq", f"{self.request.cseq.seq} ACK")
        return Request("ACK", self.request.uri, headers)

    def handle_timer(self, now: float) -> None:
        for name in self._due(now):
            self._timers.pop(name, None)
            if name == "A" and self.state is S.CALLING:
                self._send(self.request)
                self._interval *= 2
                self._timers["A"] = now + self._interval
            elif name == "B" and self.state is S.CALLING:
                self.timed_out = True
                self._set_state(S.TERMINATED)
            elif name in ("D", "M"):
                self._set_state(S.TERMINATED)
