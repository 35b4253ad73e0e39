"""SIP dialogs as seen by a UAS (RFC 3261 §12): identity, CSeq spaces, route set, target.

A :class:`Dialog` is created when an INVITE arrives (with our tag already chosen, so
provisional responses carry it) and is confirmed by the ACK of our 2xx. It builds the
requests we send inside it (BYE, re-INVITE …) with the right Request-URI, Route set and
CSeq, and keeps the 2xx retransmission schedule that RFC 6026 gives the UAS core.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from .exceptions import LocalProtocolError, RemoteProtocolError
from .headers import NameAddress, SipUri
from .message import Headers, Request, Response
from .transaction import T1, T2, Destination

__all__ = ["Dialog", "DialogKey", "DialogState"]

logger = logging.getLogger(__name__)


class DialogState(enum.Enum):
    EARLY = "early"
    """INVITE received, no 2xx sent yet."""
    ANSWERED = "answered"
    """2xx sent, waiting for the ACK (retransmitting the 2xx)."""
    CONFIRMED = "confirmed"
    """ACK received: the call is up."""
    TERMINATED = "terminated"
    """BYE, CANCEL, rejection or ACK timeout."""


_TRANSITIONS = {
    DialogState.EARLY: {DialogState.ANSWERED, DialogState.TERMINATED},
    DialogState.ANSWERED: {DialogState.CONFIRMED, DialogState.TERMINATED},
    DialogState.CONFIRMED: {DialogState.TERMINATED},
    DialogState.TERMINATED: set(),
}


@dataclass(frozen=True, slots=True)
class DialogKey:
    """Dialog identity: Call-ID and both tags."""

    call_id: str
    """Call-ID of the dialog."""
    local_tag: str
    """Our tag (the To tag of requests we receive)."""
    remote_tag: str
    """The peer's tag (the From tag of requests we receive; empty for RFC 2543 peers)."""


class Dialog:
    """One UAS dialog. Mutable; owned by :class:`sipagent.useragent.UserAgent`."""

    def __init__(
        self,
        invite: Request,
        *,
        local_tag: str,
        transport: str,
        source: Destination,
        contact: str,
    ) -> None:
        from_ = invite.from_
        to = invite.to
        contacts = invite.headers.get_all("Contact")
        if not contacts:
            raise RemoteProtocolError("INVITE without Contact")
        target = NameAddress.parse(contacts[0]).uri
        if not target.is_sip:
            raise RemoteProtocolError("Contact is not a SIP URI", 416)
        self.key = DialogKey(
            call_id=invite.call_id, local_tag=local_tag, remote_tag=from_.tag or ""
        )
        self.state = DialogState.EARLY
        self.invite = invite
        to.params["tag"] = local_tag
        self.local_address = str(to)
        self.remote_address = str(from_)
        self.remote_target = target
        # UAS: the route set is the Record-Route list in order (§12.1.1).
        self.route_set = invite.headers.get_all("Record-Route")
        for route in self.route_set:  # checked now, so that a bad one is the peer's 400
            if not NameAddress.parse(route).uri.is_sip:
                raise RemoteProtocolError("Record-Route is not a SIP URI")
        self.remote_seq = invite.cseq.seq
        self.local_seq = 0
        self.transport = transport
        self.source = source
        self.contact = contact
        self.secure = invite.uri.lower().startswith("sips:")
        self.end_reason: str | None = None
        # 2xx retransmission until ACK (RFC 3261 §13.3.1.4 / RFC 6026).
        self._ok: Response | None = None
        self._ok_destination: Destination | None = None
        self._ok_next: float | None = None
        self._ok_interval = T1
        self._ok_give_up: float | None = None

    @property
    def call_id(self) -> str:
        return self.key.call_id

    def set_state(self, state: DialogState) -> None:
        if state not in _TRANSITIONS[self.state]:
            raise LocalProtocolError(f"dialog {self.state.value} -> {state.value}")
        logger.debug("dialog %s: %s -> %s", self.call_id, self.state.value, state.value)
        self.state = state
        if state is not DialogState.ANSWERED:
            self._ok_next = self._ok_give_up = None

    # -- 2xx retransmission -------------------------------------------------------------
    def start_ok_retransmission(self, ok: Response, destination: Destination, now: float) -> None:
        self._ok = ok
        self._ok_destination = destination
        self._ok_interval = T1
        self._ok_next = None if destination.reliable else now + T1
        self._ok_give_up = now + 64 * T1

    def stop_ok_retransmission(self) -> None:
        self._ok_next = self._ok_give_up = None

    def get_timer(self) -> float | None:
        deadlines = [t for t in (self._ok_next, self._ok_give_up) if t is not None]
        return min(deadlines) if deadlines else None

    def ok_timer(self, now: float) -> tuple[Response, Destination] | bool | None:
        """Run the 2xx timers: the 2xx to resend, True when the ACK never came, else None."""
        if self._ok_give_up is not None and now >= self._ok_give_up:
            self._ok_next = self._ok_give_up = None
            return True
        if self._ok_next is not None and now >= self._ok_next and self._ok is not None:
            self._ok_interval = min(2 * self._ok_interval, T2)
            self._ok_next = now + self._ok_interval
            assert self._ok_destination is not None
            return self._ok, self._ok_destination
        return None

    def last_ok(self) -> tuple[Response, Destination] | None:
        if self._ok is None or self._ok_destination is None:
            return None
        return self._ok, self._ok_destination

    # -- requests inside the dialog -----------------------------------------------------
    def check_remote_seq(self, request: Request) -> None:
        """Reject out-of-order requests (§12.2.2), remember the new CSeq."""
        seq = request.cseq.seq
        if request.method in ("ACK", "CANCEL"):
            return
        if seq <= self.remote_seq:
            raise RemoteProtocolError("CSeq out of order", 500)
        self.remote_seq = seq

    def create_request(self, method: str, via: str, *, max_forwards: int = 70) -> tuple[
        Request, Destination
    ]:
        """A new request in this dialog and where to send it (loose or strict routing)."""
        self.local_seq += 1
        headers = Headers()
        headers.add("Via", via)
        headers.add("Max-Forwards", str(max_forwards))
        headers.add("From", self.local_address)
        headers.add("To", self.remote_address)
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self.local_seq} {method}")
        routes = list(self.route_set)
        uri = self.remote_target
        next_hop = uri
        if routes:
            first = NameAddress.parse(routes[0]).uri
            if "lr" in first.params:
                next_hop = first
            else:
                # Strict router: it becomes the Request-URI, the target the last Route.
                routes = [*routes[1:], f"<{self.remote_target}>"]
                uri = first
                next_hop = first
        for route in routes:
            headers.add("Route", route)
        headers.add("Contact", self.contact)
        return Request(method, str(uri), headers), self._destination_for(next_hop)

    def _destination_for(self, uri: SipUri) -> Destination:
        transport = uri.params.get("transport")
        name = (transport or self.transport).lower()
        if uri.scheme == "sips" and name == "udp":
            name = "tls"
        port = uri.port or (5061 if name == "tls" else 5060)
        if name != "udp" and self.source.transport == name:
            # Reuse the connection the INVITE came on: the peer may be behind NAT, and
            # its Contact port is often not listening (RFC 5923 spirit).
            return self.source
        return Destination(name, uri.host, port)
