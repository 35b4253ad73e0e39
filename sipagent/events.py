"""Events the user agent core hands to the call layer (``UserAgent.next_event()``).

Each is a frozen, slotted, keyword-only dataclass naming the :class:`~sipagent.dialog.Dialog`
it concerns; :data:`UaEvent` is their union. The call layer answers them with the
:class:`~sipagent.useragent.UserAgent` methods each docstring names.
"""

from __future__ import annotations

from dataclasses import dataclass

from .dialog import Dialog
from .message import Request

__all__ = [
    "CallConfirmed",
    "CallEnded",
    "IncomingCall",
    "InfoReceived",
    "OfferReceived",
    "TransferAccepted",
    "TransferProgress",
    "TransferRejected",
    "UaEvent",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class IncomingCall:
    """A new INVITE: answer with ring/answer/reject on its dialog."""

    dialog: Dialog
    """The early dialog (our tag chosen)."""
    request: Request
    """The INVITE."""
    offer: bytes | None
    """SDP offer, or None for a late offer (we must offer in the 200)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallConfirmed:
    """The ACK of our 2xx arrived: media may flow (again, after a re-INVITE's 2xx)."""

    dialog: Dialog
    """The confirmed dialog."""
    answer: bytes | None
    """SDP answer carried by the ACK (late offer, also in a re-INVITE), else None."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OfferReceived:
    """A re-INVITE or UPDATE inside a dialog: answer with answer_offer / reject_offer."""

    dialog: Dialog
    """The dialog it belongs to."""
    method: str
    """``INVITE`` or ``UPDATE``."""
    offer: bytes | None
    """The new SDP offer; None for a re-INVITE without SDP (we offer in the 200)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InfoReceived:
    """An INFO inside a dialog (already answered 200)."""

    dialog: Dialog
    """The dialog it belongs to."""
    content_type: str
    """Its Content-Type, lower-case, without parameters."""
    body: bytes
    """Its body."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEnded:
    """A dialog ended; no more events for it."""

    dialog: Dialog
    """The ended dialog."""
    reason: str
    """``remote-bye``, ``local-bye``, ``cancelled``, ``rejected``, ``ack-timeout``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferAccepted:
    """The peer accepted our REFER (2xx): it will now call the transfer target."""

    dialog: Dialog
    """The dialog the REFER was sent in."""
    status: int
    """The 2xx status (202 Accepted, usually)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferRejected:
    """The peer refused our REFER, or never answered it (408): the call stays with us."""

    dialog: Dialog
    """The dialog the REFER was sent in."""
    status: int
    """Final status of the REFER (408 when it timed out)."""
    reason: str
    """Reason phrase."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferProgress:
    """A NOTIFY of the REFER subscription: how the call to the target is going (RFC 3515)."""

    dialog: Dialog
    """The dialog the REFER was sent in."""
    status: int
    """Status line of the message/sipfrag body (100, 180, 200, 486 …); 0 if unreadable."""
    final: bool
    """True when the subscription is terminated: this is the outcome of the transfer."""


UaEvent = (
    IncomingCall
    | CallConfirmed
    | OfferReceived
    | InfoReceived
    | CallEnded
    | TransferAccepted
    | TransferRejected
    | TransferProgress
)
