"""Tests for sipagent.events: the user agent's events are frozen, slotted, keyword-only."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import pytest

from sipagent.dialog import Dialog
from sipagent.events import (
    CallConfirmed,
    CallEnded,
    IncomingCall,
    InfoReceived,
    OfferReceived,
    TransferAccepted,
    TransferProgress,
    TransferRejected,
    UaEvent,
)
from sipagent.message import Headers, Request
from sipagent.transaction import Destination


def make_invite() -> Request:
    headers = Headers()
    headers.add("Via", "SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKinv")
    headers.add("From", "<sip:alice@example.com>;tag=alice-tag")
    headers.add("To", "<sip:agent@198.51.100.1>")
    headers.add("Call-ID", "events@192.0.2.10")
    headers.add("CSeq", "1 INVITE")
    headers.add("Contact", "<sip:alice@192.0.2.10:5062>")
    return Request("INVITE", "sip:agent@198.51.100.1", headers)


INVITE = make_invite()
DIALOG = Dialog(
    INVITE,
    local_tag="our-tag",
    transport="udp",
    source=Destination("udp", "192.0.2.10", 5062),
    contact="<sip:sipagent@198.51.100.1:5060>",
)
EVENTS: list[UaEvent] = [
    IncomingCall(dialog=DIALOG, request=INVITE, offer=None),
    CallConfirmed(dialog=DIALOG, answer=b"v=0\r\n"),
    OfferReceived(dialog=DIALOG, method="UPDATE", offer=b"v=0\r\n"),
    InfoReceived(dialog=DIALOG, content_type="application/dtmf-relay", body=b"Signal=5"),
    CallEnded(dialog=DIALOG, reason="remote-bye"),
    TransferAccepted(dialog=DIALOG, status=202),
    TransferRejected(dialog=DIALOG, status=603, reason="Decline"),
    TransferProgress(dialog=DIALOG, status=200, final=True),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda event: type(event).__name__)
def test_event_is_frozen_slotted_and_keyword_only(event: UaEvent) -> None:
    assert event.dialog is DIALOG
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.dialog = DIALOG  # type: ignore[misc]
    assert not hasattr(event, "__dict__")
    values = {field.name: getattr(event, field.name) for field in dataclasses.fields(event)}
    event_type: Any = type(event)
    assert event_type(**values) == event
    with pytest.raises(TypeError):
        event_type(*values.values())


def test_ua_event_is_the_union_of_every_event() -> None:
    assert set(typing.get_args(UaEvent)) == {type(event) for event in EVENTS}
