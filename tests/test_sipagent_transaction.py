from __future__ import annotations

import pytest

from sipagent.exceptions import LocalProtocolError
from sipagent.message import Headers, Request, Response, make_response
from sipagent.transaction import (
    T1,
    T2,
    T4,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    Destination,
    Outbox,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    TxState,
)

UDP = Destination("udp", "192.0.2.10", 5062)
TCP = Destination("tcp", "192.0.2.10", 40123)


def make_request(method: str, *, cseq: int = 1) -> Request:
    headers = Headers()
    headers.add("Via", "SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKtx1")
    headers.add("Route", "<sip:proxy.example.com;lr>")
    headers.add("Max-Forwards", "70")
    headers.add("From", "<sip:alice@example.com>;tag=from1")
    headers.add("To", "<sip:bob@example.com>")
    headers.add("Call-ID", "tx-call@192.0.2.10")
    headers.add("CSeq", f"{cseq} {method}")
    return Request(method, "sip:bob@example.com", headers)


def response_to(request: Request, status: int) -> Response:
    return make_response(request, status, to_tag="to1")


def sent_statuses(outbox: Outbox) -> list[int | str]:
    return [m.status if isinstance(m, Response) else m.method for m, _ in outbox]


def run_timers(tx: object, until: float) -> list[float]:
    """Fire every deadline up to ``until``; return the times they fired at."""
    fired: list[float] = []
    while (deadline := tx.get_timer()) is not None and deadline <= until:  # type: ignore[attr-defined]
        tx.handle_timer(deadline)  # type: ignore[attr-defined]
        fired.append(deadline)
    return fired


def test_destination_reliability() -> None:
    assert not UDP.reliable
    assert TCP.reliable
    assert Destination("tls", "h", 5061).reliable


# -- INVITE server ---------------------------------------------------------------------------


def test_server_invite_provisional_and_retransmission() -> None:
    outbox: Outbox = []
    invite = make_request("INVITE")
    tx = ServerInviteTransaction(invite, UDP, outbox)
    assert tx.state is TxState.PROCEEDING
    assert tx.receive_request(invite, 0.0) is False
    assert outbox == []  # nothing to resend yet
    tx.respond(response_to(invite, 100), 0.0)
    tx.respond(response_to(invite, 180), 0.1)
    assert tx.state is TxState.PROCEEDING
    assert tx.get_timer() is None
    assert tx.receive_request(invite, 0.2) is False
    assert sent_statuses(outbox) == [100, 180, 180]
    assert all(destination == UDP for _, destination in outbox)


def test_server_invite_error_retransmits_with_timer_g_until_h() -> None:
    outbox: Outbox = []
    invite = make_request("INVITE")
    tx = ServerInviteTransaction(invite, UDP, outbox)
    tx.respond(response_to(invite, 486), 10.0)
    assert tx.state is TxState.COMPLETED
    fired = run_timers(tx, 100.0)
    # G: T1, 2T1, 4T1 … capped at T2; H at 64*T1.
    intervals = [round(b - a, 6) for a, b in zip([10.0, *fired], fired, strict=False)]
    assert intervals[:5] == [T1, 2 * T1, 4 * T1, T2, T2]
    assert fired[-1] == 10.0 + 64 * T1
    assert tx.timed_out
    assert tx.terminated
    assert tx.get_timer() is None
    assert sent_statuses(outbox) == [486] * len(fired)  # one per G firing, none for H


def test_server_invite_error_resent_on_retransmitted_invite() -> None:
    outbox: Outbox = []
    invite = make_request("INVITE")
    tx = ServerInviteTransaction(invite, UDP, outbox)
    tx.respond(response_to(invite, 603), 0.0)
    tx.receive_request(invite, 0.1)
    assert sent_statuses(outbox) == [603, 603]


def test_server_invite_ack_confirms_then_timer_i_terminates() -> None:
    outbox: Outbox = []
    invite = make_request("INVITE")
    tx = ServerInviteTransaction(invite, UDP, outbox)
    tx.respond(response_to(invite, 487), 0.0)
    ack = make_request("ACK")
    assert tx.receive_request(ack, 1.0) is True
    assert tx.state is TxState.CONFIRMED
    assert tx.get_timer() == 1.0 + T4
    tx.handle_timer(1.0 + T4 - 0.01)
    assert tx.state is TxState.CONFIRMED
    assert tx.receive_request(ack, 2.0) is True  # absorbed
    tx.receive_request(invite, 2.0)  # absorbed too
    tx.handle_timer(1.0 + T4)
    assert tx.terminated
    assert not tx.timed_out
    assert sent_statuses(outbox) == [487]  # G never fired before the ACK


def test_server_invite_reliable_has_no_timer_g_and_zero_timer_i() -> None:
    outbox: Outbox = []
    invite = make_request("INVITE")
    tx = ServerInviteTransaction(invite, TCP, outbox)
    tx.respond(response_to(invite, 404), 0.0)
    assert tx.get_timer() == 64 * T1  # H only
    tx.receive_request(make_request("ACK"), 3.0)
    assert tx.get_timer() == 3.0
    tx.handle_timer(3.0)
    assert tx.terminated
    assert sent_statuses(outbox) == [404]


def test_server_invite_2xx_accepted_then_timer_l() -> None:
    outbox: Outbox = []
    invite = make_request("INVITE")
    tx = ServerInviteTransaction(invite, UDP, outbox)
    tx.respond(response_to(invite, 200), 0.0)
    assert tx.state is TxState.ACCEPTED
    assert tx.get_timer() == 64 * T1
    tx.receive_request(invite, 1.0)  # the TU resends 2xx itself (RFC 6026)
    assert tx.receive_request(make_request("ACK"), 1.0) is True
    assert tx.state is TxState.ACCEPTED
    tx.handle_timer(64 * T1)
    assert tx.terminated
    assert not tx.timed_out
    assert sent_statuses(outbox) == [200]


@pytest.mark.parametrize("final", [200, 486])
def test_server_invite_cannot_respond_after_final(final: int) -> None:
    invite = make_request("INVITE")
    tx = ServerInviteTransaction(invite, UDP, [])
    tx.respond(response_to(invite, final), 0.0)
    with pytest.raises(LocalProtocolError):
        tx.respond(response_to(invite, 200), 0.1)


def test_server_invite_late_timer_call_fires_h_without_crashing() -> None:
    # A shell that wakes up late may find H due before a re-armed G.
    outbox: Outbox = []
    invite = make_request("INVITE")
    tx = ServerInviteTransaction(invite, UDP, outbox)
    tx.respond(response_to(invite, 500), 0.0)
    run_timers(tx, 31.9)  # G re-armed past H (at 32.0)
    before = len(outbox)
    tx.handle_timer(100.0)
    assert tx.terminated and tx.timed_out
    assert len(outbox) == before


# -- non-INVITE server -----------------------------------------------------------------------


def test_server_non_invite_over_udp() -> None:
    outbox: Outbox = []
    bye = make_request("BYE")
    tx = ServerNonInviteTransaction(bye, UDP, outbox)
    assert tx.state is TxState.TRYING
    tx.receive_request(bye, 0.0)
    assert outbox == []
    tx.respond(response_to(bye, 100), 0.0)
    assert tx.state is TxState.PROCEEDING  # type: ignore[comparison-overlap]
    tx.receive_request(bye, 0.1)
    tx.respond(response_to(bye, 200), 0.2)
    assert tx.state is TxState.COMPLETED
    tx.receive_request(bye, 0.3)
    assert sent_statuses(outbox) == [100, 100, 200, 200]
    assert tx.get_timer() == 0.2 + 64 * T1
    tx.handle_timer(1.0)
    assert tx.state is TxState.COMPLETED
    tx.handle_timer(0.2 + 64 * T1)
    assert tx.terminated
    with pytest.raises(LocalProtocolError):
        tx.respond(response_to(bye, 200), 40.0)


def test_server_non_invite_reliable_terminates_at_once() -> None:
    options = make_request("OPTIONS")
    tx = ServerNonInviteTransaction(options, TCP, [])
    tx.respond(response_to(options, 200), 5.0)
    assert tx.get_timer() == 5.0
    tx.handle_timer(5.0)
    assert tx.terminated


# -- non-INVITE client -----------------------------------------------------------------------


def test_client_non_invite_retransmits_timer_e_capped_then_f() -> None:
    outbox: Outbox = []
    bye = make_request("BYE")
    tx = ClientNonInviteTransaction(bye, UDP, outbox, 0.0)
    assert sent_statuses(outbox) == ["BYE"]
    assert tx.get_timer() == T1
    fired = run_timers(tx, 100.0)
    intervals = [round(b - a, 6) for a, b in zip([0.0, *fired], fired, strict=False)]
    assert intervals[:5] == [T1, 2 * T1, 4 * T1, T2, T2]
    assert tx.timed_out and tx.terminated
    assert fired[-1] == 64 * T1
    assert len(outbox) == 1 + len(fired) - 1  # every firing but F resent the BYE


def test_client_non_invite_provisional_moves_e_to_t2() -> None:
    outbox: Outbox = []
    bye = make_request("BYE")
    tx = ClientNonInviteTransaction(bye, UDP, outbox, 0.0)
    assert tx.receive_response(response_to(bye, 100), 0.1) is not None
    assert tx.state is TxState.PROCEEDING
    tx.handle_timer(T1)
    assert tx.get_timer() == T1 + T2
    assert sent_statuses(outbox) == ["BYE", "BYE"]


def test_client_non_invite_final_then_timer_k() -> None:
    outbox: Outbox = []
    bye = make_request("BYE")
    tx = ClientNonInviteTransaction(bye, UDP, outbox, 0.0)
    ok = response_to(bye, 200)
    assert tx.receive_response(ok, 0.2) is ok
    assert tx.final_response is ok
    assert tx.state is TxState.COMPLETED
    assert tx.receive_response(ok, 0.3) is None  # retransmission absorbed
    assert tx.get_timer() == 0.2 + T4
    tx.handle_timer(0.2 + T4)
    assert tx.terminated and not tx.timed_out
    assert tx.receive_response(ok, 9.0) is None
    assert sent_statuses(outbox) == ["BYE"]


def test_client_non_invite_reliable() -> None:
    outbox: Outbox = []
    bye = make_request("BYE")
    tx = ClientNonInviteTransaction(bye, TCP, outbox, 0.0)
    assert tx.get_timer() == 64 * T1  # F only, no E
    tx.receive_response(response_to(bye, 481), 1.0)
    assert tx.get_timer() == 1.0  # K is zero
    tx.handle_timer(1.0)
    assert tx.terminated
    assert sent_statuses(outbox) == ["BYE"]


# -- INVITE client ---------------------------------------------------------------------------


def test_client_invite_timer_a_doubles_without_cap_until_b() -> None:
    outbox: Outbox = []
    invite = make_request("INVITE")
    tx = ClientInviteTransaction(invite, UDP, outbox, 0.0)
    assert tx.state is TxState.CALLING
    fired = run_timers(tx, 100.0)
    intervals = [round(b - a, 6) for a, b in zip([0.0, *fired], fired, strict=False)]
    assert intervals[:6] == [T1, 2 * T1, 4 * T1, 8 * T1, 16 * T1, 32 * T1]
    assert fired[-1] == 64 * T1
    assert tx.timed_out and tx.terminated
    assert sent_statuses(outbox) == ["INVITE"] * 7  # initial + 6 retransmissions


def test_client_invite_provisional_stops_a_and_b() -> None:
    outbox: Outbox = []
    invite = make_request("INVITE")
    tx = ClientInviteTransaction(invite, UDP, outbox, 0.0)
    ringing = response_to(invite, 180)
    assert tx.receive_response(ringing, 0.1) is ringing
    assert tx.receive_response(ringing, 0.2) is ringing
    assert tx.state is TxState.PROCEEDING
    assert tx.get_timer() is None


def test_client_invite_2xx_accepted_then_timer_m() -> None:
    outbox: Outbox = []
    invite = make_request("INVITE")
    tx = ClientInviteTransaction(invite, UDP, outbox, 0.0)
    ok = response_to(invite, 200)
    assert tx.receive_response(ok, 0.3) is ok
    assert tx.state is TxState.ACCEPTED
    assert tx.final_response is ok
    assert tx.receive_response(ok, 0.8) is ok  # 2xx retransmissions go to the TU
    assert tx.receive_response(response_to(invite, 500), 0.9) is None
    assert tx.get_timer() == 0.3 + 64 * T1
    tx.handle_timer(0.3 + 64 * T1)
    assert tx.terminated
    assert tx.receive_response(ok, 99.0) is None
    assert sent_statuses(outbox) == ["INVITE"]  # the TU sends the 2xx ACK


def test_client_invite_error_is_acked_by_the_transaction() -> None:
    outbox: Outbox = []
    invite = make_request("INVITE", cseq=7)
    tx = ClientInviteTransaction(invite, UDP, outbox, 0.0)
    busy = response_to(invite, 486)
    assert tx.receive_response(busy, 0.2) is busy
    assert tx.state is TxState.COMPLETED
    ack = outbox[-1][0]
    assert isinstance(ack, Request)
    assert ack.method == "ACK"
    assert ack.uri == invite.uri
    assert ack.top_via.branch == invite.top_via.branch
    assert ack.headers.get("To") == busy.headers.get("To")
    assert ack.headers.get("From") == invite.headers.get("From")
    assert ack.headers.lines("Route") == ["<sip:proxy.example.com;lr>"]
    assert ack.headers.get("CSeq") == "7 ACK"
    assert tx.receive_response(busy, 0.5) is None  # retransmission: ACK again
    assert tx.receive_response(response_to(invite, 200), 0.6) is None  # too late, no ACK
    assert sent_statuses(outbox) == ["INVITE", "ACK", "ACK"]
    assert tx.get_timer() == 0.2 + 32.0  # timer D
    tx.handle_timer(32.2)
    assert tx.terminated


def test_client_invite_reliable() -> None:
    outbox: Outbox = []
    invite = make_request("INVITE")
    tx = ClientInviteTransaction(invite, TCP, outbox, 0.0)
    assert tx.get_timer() == 64 * T1  # B only
    tx.receive_response(response_to(invite, 404), 1.0)
    assert tx.get_timer() == 1.0  # D is zero
    tx.handle_timer(1.0)
    assert tx.terminated


# -- the transition tables -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "path", "illegal"),
    [
        (lambda o: ServerInviteTransaction(make_request("INVITE"), UDP, o),
         [TxState.ACCEPTED], TxState.COMPLETED),
        (lambda o: ServerInviteTransaction(make_request("INVITE"), UDP, o),
         [TxState.COMPLETED, TxState.CONFIRMED], TxState.PROCEEDING),
        (lambda o: ServerNonInviteTransaction(make_request("BYE"), UDP, o),
         [TxState.COMPLETED], TxState.PROCEEDING),
        (lambda o: ClientNonInviteTransaction(make_request("BYE"), UDP, o, 0.0),
         [TxState.TERMINATED], TxState.TRYING),
        (lambda o: ClientInviteTransaction(make_request("INVITE"), UDP, o, 0.0),
         [TxState.COMPLETED], TxState.ACCEPTED),
        (lambda o: ClientInviteTransaction(make_request("INVITE"), UDP, o, 0.0),
         [], TxState.CONFIRMED),
    ],
)
def test_illegal_transitions_raise(make, path, illegal) -> None:  # type: ignore[no-untyped-def]
    tx = make([])
    for state in path:
        tx._set_state(state)
    with pytest.raises(LocalProtocolError):
        tx._set_state(illegal)
