from __future__ import annotations

import pytest

from sipagent.dialog import Dialog, DialogKey, DialogState
from sipagent.exceptions import LocalProtocolError, RemoteProtocolError
from sipagent.message import Headers, Request, Response
from sipagent.transaction import T1, T2, Destination

SOURCE = Destination("udp", "192.0.2.10", 5062)
CONTACT = "<sip:sipagent@198.51.100.1:5060>"
VIA = "SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKours"


def make_invite(
    *,
    uri: str = "sip:agent@198.51.100.1",
    contact: str | None = "<sip:alice@192.0.2.10:5062>",
    record_route: tuple[str, ...] = (),
    from_: str = '"Alice" <sip:alice@example.com>;tag=alice-tag',
    cseq: int = 5,
) -> Request:
    headers = Headers()
    headers.add("Via", "SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKinv")
    for route in record_route:
        headers.add("Record-Route", route)
    headers.add("From", from_)
    headers.add("To", "Agent <sip:agent@198.51.100.1>")
    headers.add("Call-ID", "dialog-call@192.0.2.10")
    headers.add("CSeq", f"{cseq} INVITE")
    if contact is not None:
        headers.add("Contact", contact)
    return Request("INVITE", uri, headers)


def make_dialog(invite: Request | None = None, source: Destination = SOURCE) -> Dialog:
    return Dialog(
        invite or make_invite(),
        local_tag="our-tag",
        transport=source.transport,
        source=source,
        contact=CONTACT,
    )


def in_dialog(method: str, seq: int) -> Request:
    headers = Headers([("CSeq", f"{seq} {method}")])
    return Request(method, "sip:agent@198.51.100.1", headers)


def test_dialog_identity_from_the_invite() -> None:
    dialog = make_dialog(make_invite(record_route=("<sip:p1.example.com;lr>, <sip:p2;lr>",)))
    assert dialog.key == DialogKey("dialog-call@192.0.2.10", "our-tag", "alice-tag")
    assert dialog.call_id == "dialog-call@192.0.2.10"
    assert dialog.state is DialogState.EARLY
    assert dialog.local_address == '"Agent" <sip:agent@198.51.100.1>;tag=our-tag'
    assert dialog.remote_address == '"Alice" <sip:alice@example.com>;tag=alice-tag'
    assert str(dialog.remote_target) == "sip:alice@192.0.2.10:5062"
    assert dialog.route_set == ["<sip:p1.example.com;lr>", "<sip:p2;lr>"]
    assert dialog.remote_seq == 5
    assert dialog.local_seq == 0
    assert not dialog.secure
    assert dialog.end_reason is None
    assert dialog.get_timer() is None
    assert dialog.last_ok() is None


def test_rfc2543_peer_without_from_tag() -> None:
    dialog = make_dialog(make_invite(from_="<sip:old@example.com>", uri="sips:agent@x"))
    assert dialog.key.remote_tag == ""
    assert dialog.secure


@pytest.mark.parametrize(
    ("invite", "status"),
    [
        (make_invite(contact=None), 400),
        (make_invite(contact="<tel:+15551234>"), 416),
        (make_invite(record_route=("<sip:p1;lr",)), 400),
        (make_invite(record_route=("<tel:+1555>",)), 400),
    ],
)
def test_unusable_invite(invite: Request, status: int) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        make_dialog(invite)
    assert info.value.status == status


def test_state_machine() -> None:
    dialog = make_dialog()
    dialog.set_state(DialogState.ANSWERED)
    dialog.set_state(DialogState.CONFIRMED)
    with pytest.raises(LocalProtocolError):
        dialog.set_state(DialogState.ANSWERED)
    dialog.set_state(DialogState.TERMINATED)
    with pytest.raises(LocalProtocolError):
        dialog.set_state(DialogState.TERMINATED)
    with pytest.raises(LocalProtocolError):
        make_dialog().set_state(DialogState.CONFIRMED)


def test_ok_retransmission_schedule_until_give_up() -> None:
    dialog = make_dialog()
    ok = Response(200, "OK")
    dialog.set_state(DialogState.ANSWERED)
    dialog.start_ok_retransmission(ok, SOURCE, 100.0)
    assert dialog.last_ok() == (ok, SOURCE)
    assert dialog.ok_timer(100.1) is None
    sent: list[float] = []
    while (deadline := dialog.get_timer()) is not None:
        result = dialog.ok_timer(deadline)
        if result is True:
            break
        assert result == (ok, SOURCE)
        sent.append(deadline - 100.0)
    assert deadline == 100.0 + 64 * T1
    intervals = [round(b - a, 6) for a, b in zip([0.0, *sent], sent, strict=False)]
    assert intervals[:5] == [T1, 2 * T1, 4 * T1, T2, T2]
    assert dialog.get_timer() is None


def test_ok_retransmission_reliable_only_gives_up() -> None:
    dialog = make_dialog()
    tcp = Destination("tcp", "192.0.2.10", 40000)
    dialog.start_ok_retransmission(Response(200, "OK"), tcp, 0.0)
    assert dialog.get_timer() == 64 * T1
    assert dialog.ok_timer(10.0) is None
    assert dialog.ok_timer(64 * T1) is True


def test_ack_or_stop_ends_retransmission() -> None:
    dialog = make_dialog()
    dialog.set_state(DialogState.ANSWERED)
    dialog.start_ok_retransmission(Response(200, "OK"), SOURCE, 0.0)
    dialog.set_state(DialogState.CONFIRMED)
    assert dialog.get_timer() is None
    dialog.start_ok_retransmission(Response(200, "OK"), SOURCE, 5.0)  # a re-INVITE's 2xx
    assert dialog.get_timer() == 5.0 + T1
    dialog.stop_ok_retransmission()
    assert dialog.get_timer() is None
    assert dialog.ok_timer(50.0) is None


def test_remote_cseq_order() -> None:
    dialog = make_dialog()
    dialog.check_remote_seq(in_dialog("BYE", 6))
    assert dialog.remote_seq == 6
    for seq in (6, 2):
        with pytest.raises(RemoteProtocolError) as info:
            dialog.check_remote_seq(in_dialog("INFO", seq))
        assert info.value.status == 500
    dialog.check_remote_seq(in_dialog("ACK", 5))  # ACK and CANCEL reuse the INVITE's
    dialog.check_remote_seq(in_dialog("CANCEL", 1))
    assert dialog.remote_seq == 6


def test_create_request_without_route_set() -> None:
    dialog = make_dialog()
    bye, destination = dialog.create_request("BYE", VIA)
    assert bye.method == "BYE"
    assert bye.uri == "sip:alice@192.0.2.10:5062"
    assert destination == Destination("udp", "192.0.2.10", 5062)
    assert bye.headers.get("From") == dialog.local_address
    assert bye.headers.get("To") == dialog.remote_address
    assert bye.headers.get("Call-ID") == dialog.call_id
    assert bye.headers.get("CSeq") == "1 BYE"
    assert bye.headers.get("Max-Forwards") == "70"
    assert bye.headers.get("Contact") == CONTACT
    assert bye.headers.get("Via") == VIA
    assert "Route" not in bye.headers
    info, _ = dialog.create_request("INFO", VIA, max_forwards=10)
    assert info.headers.get("CSeq") == "2 INFO"
    assert info.headers.get("Max-Forwards") == "10"
    assert dialog.local_seq == 2


def test_create_request_loose_routing() -> None:
    invite = make_invite(
        record_route=("<sip:p1.example.com:5070;lr>", "<sip:p2.example.com;lr>")
    )
    bye, destination = make_dialog(invite).create_request("BYE", VIA)
    assert bye.uri == "sip:alice@192.0.2.10:5062"
    assert bye.headers.lines("Route") == ["<sip:p1.example.com:5070;lr>", "<sip:p2.example.com;lr>"]
    assert destination == Destination("udp", "p1.example.com", 5070)


def test_create_request_strict_routing() -> None:
    invite = make_invite(record_route=("<sip:strict.example.com>", "<sip:p2.example.com;lr>"))
    bye, destination = make_dialog(invite).create_request("BYE", VIA)
    assert bye.uri == "sip:strict.example.com"
    assert bye.headers.lines("Route") == [
        "<sip:p2.example.com;lr>",
        "<sip:alice@192.0.2.10:5062>",
    ]
    assert destination == Destination("udp", "strict.example.com", 5060)


def test_stream_requests_reuse_the_incoming_connection() -> None:
    tcp = Destination("tcp", "192.0.2.10", 40123)
    dialog = make_dialog(make_invite(contact="<sip:alice@192.0.2.10:5062;transport=tcp>"), tcp)
    _, destination = dialog.create_request("BYE", VIA)
    assert destination == tcp


@pytest.mark.parametrize(
    ("contact", "expected"),
    [
        ("<sip:alice@192.0.2.10;transport=TCP>", Destination("tcp", "192.0.2.10", 5060)),
        ("<sips:alice@192.0.2.10>", Destination("tls", "192.0.2.10", 5061)),
        ("<sip:alice@[2001:db8::5]:5080>", Destination("udp", "2001:db8::5", 5080)),
    ],
)
def test_destination_from_the_target(contact: str, expected: Destination) -> None:
    _, destination = make_dialog(make_invite(contact=contact)).create_request("BYE", VIA)
    assert destination == expected
