"""UserAgent driven as one of two in-memory peers (the other: a small UAC built on the
core's own client transactions), with a fake clock."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import pytest

from sipagent.dialog import Dialog, DialogState
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
from sipagent.exceptions import LocalProtocolError
from sipagent.headers import NameAddress
from sipagent.message import (
    Headers,
    Request,
    Response,
    make_response,
    parse_message,
)
from sipagent.transaction import (
    T1,
    T2,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    Destination,
    Outbox,
)
from sipagent.useragent import ALLOWED_METHODS, UserAgent

SERVER = Destination("udp", "127.0.0.1", 5060)
OFFER = b"v=0\r\no=alice 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\n" \
        b"t=0 0\r\nm=audio 40000 RTP/AVP 0 101\r\n"
ANSWER = b"v=0\r\no=agent 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n" \
         b"t=0 0\r\nm=audio 10000 RTP/AVP 0 101\r\n"
SENDONLY = OFFER + b"a=sendonly\r\n"


def make_ua(public_host: str = "127.0.0.1") -> UserAgent:
    counter = itertools.count(1)
    return UserAgent(
        host="127.0.0.1",
        port=5060,
        public_host=public_host,
        new_token=lambda: f"tok{next(counter)}",
    )


class Phone:
    """The calling peer: builds requests, runs them through client transactions."""

    def __init__(
        self, *, transport: str = "udp", host: str = "192.0.2.10", port: int = 5062,
        call_id: str = "call-1@192.0.2.10",
    ) -> None:
        self.address = Destination(transport, host, port)
        self.server = Destination(transport, "127.0.0.1", 5060)
        self.outbox: Outbox = []
        self.transactions: dict[
            tuple[str, str], ClientInviteTransaction | ClientNonInviteTransaction
        ] = {}
        self.responses: list[Response] = []
        self.delivered: list[Response] = []  # what the transactions passed up
        self.requests: list[Request] = []
        self.call_id = call_id
        self.tag = "phone-tag"
        self.cseq = 0
        self.to_tag: str | None = None
        self.target = "sip:agent@127.0.0.1:5060"
        self.routes: list[str] = []
        self.invite: Request | None = None
        self._branch = itertools.count(1)

    def build(
        self,
        method: str,
        *,
        to_tag: str | None = None,
        cseq: int | None = None,
        branch: str | None = None,
        body: bytes = b"",
        content_type: str = "application/sdp",
        headers: Iterable[tuple[str, str]] = (),
        via_params: str = "",
        contact: bool = True,
    ) -> Request:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        branch = branch or f"z9hG4bKph{next(self._branch)}"
        h = Headers()
        h.add("Via", f"SIP/2.0/{self.address.transport.upper()} "
                     f"{self.address.host}:{self.address.port};branch={branch}{via_params}")
        for route in self.routes:
            h.add("Route", route)
        h.add("Max-Forwards", "70")
        h.add("From", f'"Alice" <sip:alice@example.com>;tag={self.tag}')
        h.add("To", "<sip:agent@127.0.0.1>" + (f";tag={to_tag}" if to_tag else ""))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{cseq} {method}")
        if contact:
            transport = self.address.transport
            suffix = "" if transport == "udp" else f";transport={transport}"
            h.add("Contact", f"<sip:alice@{self.address.host}:{self.address.port}{suffix}>")
        for name, value in headers:
            h.add(name, value)
        if body:
            h.add("Content-Type", content_type)
        return Request(method, self.target if to_tag else "sip:agent@127.0.0.1:5060", h, body)

    def start(self, request: Request, now: float) -> Request:
        """Send through a new client transaction."""
        tx: ClientInviteTransaction | ClientNonInviteTransaction
        if request.method == "INVITE":
            tx = ClientInviteTransaction(request, self.server, self.outbox, now)
        else:
            tx = ClientNonInviteTransaction(request, self.server, self.outbox, now)
        self.transactions[(request.top_via.branch or "", request.method)] = tx
        return request

    def send_raw(self, message: Request | Response) -> None:
        self.outbox.append((message, self.server))

    def call(self, now: float, body: bytes = OFFER, **kw: Any) -> Request:
        self.invite = self.start(self.build("INVITE", body=body, **kw), now)
        return self.invite

    def ack(self, body: bytes = b"", cseq: int | None = None) -> Request:
        assert self.invite is not None
        ack = self.build(
            "ACK", to_tag=self.to_tag, cseq=cseq or self.invite.cseq.seq, body=body
        )
        self.send_raw(ack)
        return ack

    def in_dialog(self, method: str, now: float, **kw: Any) -> Request:
        return self.start(self.build(method, to_tag=self.to_tag, **kw), now)

    def cancel(self, now: float) -> Request:
        assert self.invite is not None
        cancel = self.build(
            "CANCEL", cseq=self.invite.cseq.seq, branch=self.invite.top_via.branch
        )
        return self.start(cancel, now)

    def receive(self, data: bytes, now: float) -> None:
        message = parse_message(data, stream=self.address.reliable)
        if isinstance(message, Request):
            self.requests.append(message)
            return
        self.responses.append(message)
        if message.cseq.method == "INVITE" and 200 <= message.status < 300 and not self.to_tag:
            self.to_tag = message.to.tag
            self.target = str(NameAddress.parse(message.headers.get_all("Contact")[0]).uri)
            self.routes = list(reversed(message.headers.get_all("Record-Route")))
        tx = self.transactions.get((message.top_via.branch or "", message.cseq.method))
        if tx is not None:
            passed = tx.receive_response(message, now)
            if passed is not None:
                self.delivered.append(passed)

    def statuses(self, method: str | None = None) -> list[int]:
        return [r.status for r in self.responses if method in (None, r.cseq.method)]

    def last(self, status: int) -> Response:
        return [r for r in self.responses if r.status == status][-1]


def transfer(ua: UserAgent, phone: Phone, now: float) -> None:
    """Deliver everything in flight both ways until both peers are quiet."""
    while True:
        for message, destination in phone.outbox:
            assert destination == phone.server
            ua.receive(message.serialize(), phone.address, now)
        phone.outbox.clear()
        out = ua.messages_to_send()
        if not out:
            return
        for data, destination in out:
            assert destination == phone.address
            phone.receive(data, now)


def run_timers(ua: UserAgent, phone: Phone, until: float) -> list[float]:
    """Fire both peers' timers in deadline order up to ``until``; transfer after each."""
    fired: list[float] = []
    while True:
        deadlines = [t for t in (ua.get_timer(), *(tx.get_timer() for tx in
                                                   phone.transactions.values())) if t is not None]
        if not deadlines or min(deadlines) > until:
            return fired
        now = min(deadlines)
        ua.handle_timer(now)
        for tx in phone.transactions.values():
            if (deadline := tx.get_timer()) is not None and deadline <= now:
                tx.handle_timer(now)
        transfer(ua, phone, now)
        fired.append(now)


def events(ua: UserAgent) -> list[UaEvent]:
    out: list[UaEvent] = []
    while (event := ua.next_event()) is not None:
        out.append(event)
    return out


def incoming(ua: UserAgent, phone: Phone, now: float = 0.0, **kw: Any) -> Dialog:
    phone.call(now, **kw)
    transfer(ua, phone, now)
    (event,) = events(ua)
    assert isinstance(event, IncomingCall)
    return event.dialog


def established(ua: UserAgent, phone: Phone, now: float = 0.0) -> Dialog:
    dialog = incoming(ua, phone, now)
    ua.answer(dialog, ANSWER, now)
    transfer(ua, phone, now)
    phone.ack()
    transfer(ua, phone, now)
    assert [type(e) for e in events(ua)] == [CallConfirmed]
    return dialog


# -- a basic call ----------------------------------------------------------------------------


def test_basic_call() -> None:
    ua, phone = make_ua(), Phone()
    record_routes = ("<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>")
    invite = phone.call(0.0, headers=[("Record-Route", r) for r in record_routes])
    transfer(ua, phone, 0.0)
    assert phone.statuses() == [100]
    assert phone.last(100).to.tag is None
    (event,) = events(ua)
    assert isinstance(event, IncomingCall)
    assert event.offer == OFFER
    assert event.request.call_id == invite.call_id
    dialog = event.dialog
    assert dialog.state is DialogState.EARLY
    assert ua.dialogs == [dialog]

    ua.answer(dialog, ANSWER, 0.5)
    transfer(ua, phone, 0.5)
    ok = phone.last(200)
    assert ok.body == ANSWER
    assert ok.content_type == "application/sdp"
    assert ok.to.tag == dialog.key.local_tag
    assert ok.headers.get_all("Contact") == ["<sip:sipagent@127.0.0.1:5060>"]
    assert ok.headers.get_all("Record-Route") == list(record_routes)
    assert ok.headers.get_all("Allow") == list(ALLOWED_METHODS)
    assert ok.headers.get("Server") == "sipagent"
    assert ok.headers.get("CSeq") == invite.headers.get("CSeq")
    assert dialog.state is DialogState.ANSWERED  # type: ignore[comparison-overlap]
    assert phone.delivered[-1] is ok  # the phone's INVITE transaction accepted it

    phone.ack()
    transfer(ua, phone, 0.6)
    (event,) = events(ua)
    assert event == CallConfirmed(dialog=dialog, answer=None)
    assert dialog.state is DialogState.CONFIRMED

    phone.in_dialog("BYE", 10.0)
    transfer(ua, phone, 10.0)
    assert phone.statuses("BYE") == [200]
    (event,) = events(ua)
    assert event == CallEnded(dialog=dialog, reason="remote-bye")
    assert dialog.state is DialogState.TERMINATED
    assert dialog.end_reason == "remote-bye"

    run_timers(ua, phone, 1000.0)
    assert ua.dialogs == []
    assert ua.get_timer() is None
    assert ua.counters["rx_INVITE"] == 1
    assert ua.counters["tx_200"] == 2


def test_2xx_retransmitted_until_ack() -> None:
    ua, phone = make_ua(), Phone()
    dialog = incoming(ua, phone)
    ua.answer(dialog, ANSWER, 0.0)
    transfer(ua, phone, 0.0)
    fired = run_timers(ua, phone, 8.0)
    assert fired == [T1, 3 * T1, 7 * T1, 7 * T1 + T2]  # T1, 2T1, 4T1, then T2
    assert phone.statuses() == [100, 200, 200, 200, 200, 200]
    phone.ack()
    transfer(ua, phone, 8.0)
    assert [type(e) for e in events(ua)] == [CallConfirmed]
    run_timers(ua, phone, 60.0)
    assert phone.statuses().count(200) == 5  # no more after the ACK
    assert ua.dialogs == [dialog]  # still up


def test_no_ack_within_64_t1_hangs_up() -> None:
    ua, phone = make_ua(), Phone()
    dialog = incoming(ua, phone)
    ua.answer(dialog, ANSWER, 0.0)
    transfer(ua, phone, 0.0)
    run_timers(ua, phone, 64 * T1 - 0.01)
    assert phone.requests == []
    assert events(ua) == []
    run_timers(ua, phone, 64 * T1)
    (bye,) = phone.requests
    assert bye.method == "BYE"
    assert events(ua) == [CallEnded(dialog=dialog, reason="ack-timeout")]
    assert dialog.end_reason == "ack-timeout"
    retransmissions = phone.statuses().count(200) - 1
    assert retransmissions == 10  # at 0.5, 1.5, 3.5, 7.5, 11.5 … 31.5
    # The phone answers the BYE; the UA's client transaction completes.
    phone.send_raw(make_response(bye, 200, to_tag=phone.tag))
    transfer(ua, phone, 33.0)
    run_timers(ua, phone, 1000.0)
    assert ua.get_timer() is None
    assert ua.dialogs == []


def test_ring_then_answer_keep_the_tag() -> None:
    ua, phone = make_ua(), Phone()
    dialog = incoming(ua, phone)
    ua.ring(dialog, 0.1)
    transfer(ua, phone, 0.1)
    ringing = phone.last(180)
    assert ringing.to.tag == dialog.key.local_tag
    assert ringing.headers.get("Contact") == "<sip:sipagent@127.0.0.1:5060>"
    assert ringing.body == b""
    ua.answer(dialog, ANSWER, 0.2)
    transfer(ua, phone, 0.2)
    assert phone.last(200).to.tag == dialog.key.local_tag


# -- CANCEL ------------------------------------------------------------------------------


def test_cancel_before_answer() -> None:
    ua, phone = make_ua(), Phone()
    dialog = incoming(ua, phone)
    ua.ring(dialog, 0.0)
    transfer(ua, phone, 0.0)
    phone.cancel(1.0)
    transfer(ua, phone, 1.0)
    assert phone.statuses("CANCEL") == [200]
    assert phone.statuses("INVITE") == [100, 180, 487]
    assert phone.last(487).to.tag == dialog.key.local_tag
    assert phone.statuses("CANCEL") == [200]
    assert [r.to.tag for r in phone.responses if r.cseq.method == "CANCEL"] == [
        dialog.key.local_tag
    ]
    assert events(ua) == [CallEnded(dialog=dialog, reason="cancelled")]
    # The phone's transaction ACKed the 487 (same branch); the UA absorbed it.
    assert ua.counters["rx_ACK"] == 1
    assert ua.messages_to_send() == []
    assert events(ua) == []
    with pytest.raises(LocalProtocolError):
        ua.answer(dialog, ANSWER, 1.1)
    with pytest.raises(LocalProtocolError):
        ua.ring(dialog, 1.1)
    ua.hangup(dialog, 1.1)  # no-op once ended
    assert ua.messages_to_send() == []
    run_timers(ua, phone, 1000.0)
    assert ua.dialogs == []


def test_cancel_after_answer_changes_nothing() -> None:
    ua, phone = make_ua(), Phone()
    dialog = incoming(ua, phone)
    ua.answer(dialog, ANSWER, 0.0)
    transfer(ua, phone, 0.0)
    phone.cancel(0.1)
    transfer(ua, phone, 0.1)
    assert phone.statuses("CANCEL") == [200]
    assert phone.statuses("INVITE") == [100, 200]
    assert dialog.state is DialogState.ANSWERED
    assert events(ua) == []


def test_admission_refusal_is_stateless() -> None:
    ua, phone = make_ua(), Phone()
    asked: list[tuple[str, str]] = []

    def admission(request: Request, source: Destination, now: float) -> Any:
        asked.append((request.call_id, source.host))
        return 486, (("Retry-After", "5"),)

    ua.admission = admission
    invite = phone.call(0.0)
    transfer(ua, phone, 0.0)
    # No 100 Trying, no dialog, no event, no transaction, no timer: nothing to shed later.
    assert phone.statuses("INVITE") == [486]
    refusal = phone.last(486)
    assert refusal.headers.get("Retry-After") == "5" and refusal.to.tag
    assert asked == [(invite.call_id, phone.address.host)]
    assert events(ua) == [] and ua.dialogs == [] and ua.get_timer() is None
    assert ua.counters["stateless_refusals"] == 1
    # The refusal is not retransmitted: the caller's INVITE retransmission (here the same
    # request again, as if our 486 was lost) meets the same answer and the same To tag.
    phone.send_raw(invite)
    transfer(ua, phone, 0.6)
    again = [r for r in phone.responses if r.status == 486]
    assert len(again) == 2 and again[1].to.tag == refusal.to.tag
    # Its ACK (the caller's transaction builds it with that To tag) and a late CANCEL find
    # no state: the ACK is absorbed, the CANCEL gets 481 (its INVITE has its final answer).
    phone.to_tag = refusal.to.tag
    phone.ack()
    phone.cancel(0.7)
    transfer(ua, phone, 0.7)
    assert phone.statuses("CANCEL") == [481]  # (that 481 has its own short-lived transaction)
    assert events(ua) == [] and ua.dialogs == []


def test_admitted_invite_goes_on_as_usual() -> None:
    ua, phone = make_ua(), Phone()
    ua.admission = lambda request, source, now: None
    dialog = incoming(ua, phone)
    ua.answer(dialog, ANSWER, 0.0)
    transfer(ua, phone, 0.0)
    assert phone.statuses("INVITE") == [100, 200]
    # In-dialog requests (a re-INVITE) are not asked about.
    ua.admission = lambda request, source, now: (503, ())
    phone.to_tag = dialog.key.local_tag
    phone.ack()
    phone.in_dialog("INVITE", 1.0, body=OFFER)
    transfer(ua, phone, 1.0)
    assert 503 not in phone.statuses("INVITE")


def test_many_finished_calls_linger_then_go_and_the_timer_stays_the_earliest() -> None:
    # Finished calls keep their transactions 32 s (Timers J, L) to absorb retransmissions;
    # the timer must still be the earliest deadline of all, and everything must go in the end.
    ua = make_ua()
    phones = [Phone(port=20000 + i, call_id=f"call-{i}@192.0.2.10") for i in range(200)]
    for i, phone in enumerate(phones):
        now = i * 0.01  # 100 calls per second
        dialog = established(ua, phone, now)
        phone.to_tag = dialog.key.local_tag
        phone.in_dialog("BYE", now)
        transfer(ua, phone, now)
        assert phone.statuses("BYE") == [200]
        assert [type(e) for e in events(ua)] == [CallEnded]
    assert len(ua.dialogs) == 200  # kept while their BYE transactions absorb retransmissions
    # The earliest: the first call's Timer L (64*T1 after its 200 OK).
    assert ua.get_timer() == pytest.approx(64 * T1)
    ua.handle_timer(64 * T1 + 0.5)  # the first ~50 calls' transactions end
    assert 0 < len(ua.dialogs) < 200
    assert ua.get_timer() == pytest.approx(64 * T1 + 0.51)
    ua.handle_timer(64 * T1 + 2.0)
    assert ua.dialogs == [] and ua.get_timer() is None
    assert ua.messages_to_send() == []  # nothing was retransmitted: every call was ACKed


def test_cancel_unknown_transaction() -> None:
    ua, phone = make_ua(), Phone()
    phone.call(0.0)
    phone.outbox.clear()  # the INVITE is lost
    phone.cancel(0.1)
    transfer(ua, phone, 0.1)
    assert phone.statuses() == [481]
    assert events(ua) == []


# -- retransmissions and merged requests --------------------------------------------------


def test_retransmitted_invite_is_absorbed() -> None:
    ua, phone = make_ua(), Phone()
    invite = phone.call(0.0)
    transfer(ua, phone, 0.0)
    assert len(events(ua)) == 1
    phone.send_raw(invite)
    transfer(ua, phone, 0.2)
    assert events(ua) == []
    assert phone.statuses() == [100, 100]
    (dialog,) = ua.dialogs
    ua.ring(dialog, 0.3)
    phone.send_raw(invite)
    transfer(ua, phone, 0.4)
    assert phone.statuses() == [100, 100, 180, 180]
    assert events(ua) == []


def test_merged_invite_gets_482() -> None:
    ua, phone = make_ua(), Phone()
    invite = phone.call(0.0)
    transfer(ua, phone, 0.0)
    events(ua)
    # The same request forked back to us along another path: new branch.
    merged = phone.build("INVITE", cseq=invite.cseq.seq, body=OFFER)
    phone.send_raw(merged)
    transfer(ua, phone, 0.1)
    assert phone.statuses() == [100, 482]
    assert events(ua) == []
    assert len(ua.dialogs) == 1


# -- requests outside any dialog -------------------------------------------------------------


@pytest.mark.parametrize("method", ["BYE", "INFO", "UPDATE"])
def test_unknown_dialog_gets_481(method: str) -> None:
    ua, phone = make_ua(), Phone()
    phone.start(phone.build(method, to_tag="nope"), 0.0)
    transfer(ua, phone, 0.0)
    assert phone.statuses() == [481]


@pytest.mark.parametrize("method", ["BYE", "INFO", "UPDATE"])
def test_dialog_methods_without_to_tag_get_481(method: str) -> None:
    ua, phone = make_ua(), Phone()
    phone.start(phone.build(method), 0.0)
    transfer(ua, phone, 0.0)
    assert phone.statuses() == [481]
    assert phone.responses[0].to.tag == "tok1"


def test_options() -> None:
    ua, phone = make_ua(), Phone()
    phone.start(phone.build("OPTIONS", contact=False), 0.0)
    transfer(ua, phone, 0.0)
    (ok,) = phone.responses
    assert ok.status == 200
    assert ok.headers.get_all("Allow") == list(ALLOWED_METHODS)
    assert ok.headers.get_all("Accept") == ["application/sdp"]
    assert ok.headers.get("Supported") == ""
    assert ok.to.tag


def test_register_is_405_with_allow() -> None:
    ua, phone = make_ua(), Phone()
    phone.start(phone.build("REGISTER"), 0.0)
    transfer(ua, phone, 0.0)
    (response,) = phone.responses
    assert response.status == 405
    assert response.headers.get_all("Allow") == list(ALLOWED_METHODS)


def test_unknown_method_is_501() -> None:
    ua, phone = make_ua(), Phone()
    phone.start(phone.build("FROBNICATE"), 0.0)
    transfer(ua, phone, 0.0)
    (response,) = phone.responses
    assert response.status == 501
    assert response.headers.get_all("Allow") == list(ALLOWED_METHODS)
    assert ua.counters["rx_other"] == 1  # arbitrary method names do not grow the counters


def test_unknown_method_with_bad_headers_is_still_501() -> None:
    # §8.2.1 inspects the method before the headers (RFC 4475 mismatch02).
    ua, phone = make_ua(), Phone()
    headers = phone.build("INVITE").headers  # CSeq says INVITE
    phone.send_raw(Request("FROBNICATE", "sip:agent@127.0.0.1", headers))
    transfer(ua, phone, 0.0)
    assert phone.statuses() == [501]


# -- INVITE refused by the core -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "status", "header"),
    [
        ({"content_type": "text/plain"}, 415, ("Accept", "application/sdp")),
        ({"headers": [("Content-Encoding", "gzip")]}, 415, ("Accept-Encoding", "identity")),
        ({"headers": [("Content-Encoding", "identity")]}, 100, None),
        ({"headers": [("Accept", "text/nobodyKnowsThis")]}, 406, ("Accept", "application/sdp")),
        ({"headers": [("Accept", "application/*;q=0.5, text/html")]}, 100, None),
        ({"headers": [("Require", "100rel, timer")]}, 420, ("Unsupported", "100rel, timer")),
        ({"headers": [("Require", "Timer")]}, 420, ("Unsupported", "Timer")),
        ({"contact": False}, 400, None),
        ({"headers": [("Record-Route", "<sip:broken")]}, 400, None),
    ],
)
def test_invite_refused(
    kwargs: dict[str, Any], status: int, header: tuple[str, str] | None
) -> None:
    ua, phone = make_ua(), Phone()
    phone.call(0.0, **kwargs)
    transfer(ua, phone, 0.0)
    assert phone.statuses() == [status]
    if header is not None:
        assert phone.responses[0].headers.get(header[0]) == header[1]
    if status >= 300:
        assert events(ua) == []
        assert phone.responses[0].to.tag  # final responses carry a tag
        # The phone's transaction ACKed the error; the UA absorbed the ACK.
        assert ua.counters["rx_ACK"] == 1
        assert ua.messages_to_send() == []
        run_timers(ua, phone, 1000.0)
        assert ua.get_timer() is None


def test_invite_with_non_sip_contact_is_416() -> None:
    ua, phone = make_ua(), Phone()
    phone.call(0.0, contact=False, headers=[("Contact", "<tel:+15551234>")])
    transfer(ua, phone, 0.0)
    assert phone.statuses() == [416]


def test_reject() -> None:
    ua, phone = make_ua(), Phone()
    dialog = incoming(ua, phone)
    with pytest.raises(LocalProtocolError):
        ua.reject(dialog, 200, 0.0)
    ua.reject(dialog, 486, 0.1, reason="Busy Now", headers=(("Retry-After", "30"),))
    transfer(ua, phone, 0.1)
    busy = phone.last(486)
    assert busy.reason == "Busy Now"
    assert busy.headers.get("Retry-After") == "30"
    assert busy.to.tag == dialog.key.local_tag
    assert events(ua) == [CallEnded(dialog=dialog, reason="rejected")]
    assert ua.messages_to_send() == []  # ACK absorbed


def test_reject_retransmitted_until_acked() -> None:
    ua, phone = make_ua(), Phone()
    dialog = incoming(ua, phone)
    ua.reject(dialog, 603, 0.0)
    ua.messages_to_send()  # the 603 is lost
    fired = run_timers(ua, phone, 1.0)
    assert fired == [T1]
    assert phone.statuses() == [100, 603]  # resent by timer G, then ACKed by the phone
    run_timers(ua, phone, 1000.0)
    assert phone.statuses().count(603) == 1


# -- mid-call requests ------------------------------------------------------------------


def test_reinvite_hold() -> None:
    ua, phone = make_ua(), Phone()
    dialog = established(ua, phone)
    phone.in_dialog("INVITE", 5.0, body=SENDONLY)
    transfer(ua, phone, 5.0)
    assert phone.statuses("INVITE")[-1] == 100
    (event,) = events(ua)
    assert event == OfferReceived(dialog=dialog, method="INVITE", offer=SENDONLY)
    ua.answer_offer(dialog, ANSWER + b"a=recvonly\r\n", 5.1)
    transfer(ua, phone, 5.1)
    ok = phone.last(200)
    assert ok.cseq.seq == 2 and ok.body.endswith(b"a=recvonly\r\n")
    assert ok.to.tag == dialog.key.local_tag
    run_timers(ua, phone, 5.1 + T1)
    assert phone.statuses("INVITE").count(200) == 3  # initial 2xx, re-INVITE 2xx + resend
    phone.ack(cseq=1)  # a late duplicate of the first ACK does not stop it
    transfer(ua, phone, 5.2)
    assert events(ua) == []
    phone.ack(cseq=2)
    transfer(ua, phone, 6.0)
    assert events(ua) == [CallConfirmed(dialog=dialog, answer=None)]
    phone.ack(cseq=2)  # retransmitted ACK: no second event
    transfer(ua, phone, 6.1)
    run_timers(ua, phone, 20.0)
    assert phone.statuses("INVITE").count(200) == 3
    assert events(ua) == []
    assert dialog.state is DialogState.CONFIRMED
    with pytest.raises(LocalProtocolError):
        ua.answer_offer(dialog, ANSWER, 21.0)


def test_reinvite_ack_timeout_hangs_up() -> None:
    ua, phone = make_ua(), Phone()
    dialog = established(ua, phone)
    phone.in_dialog("INVITE", 5.0, body=SENDONLY)
    transfer(ua, phone, 5.0)
    events(ua)
    ua.answer_offer(dialog, ANSWER, 5.0)
    transfer(ua, phone, 5.0)
    run_timers(ua, phone, 5.0 + 64 * T1)
    assert [r.method for r in phone.requests] == ["BYE"]
    assert events(ua) == [CallEnded(dialog=dialog, reason="ack-timeout")]


def test_reinvite_while_one_is_pending_gets_491() -> None:
    ua, phone = make_ua(), Phone()
    dialog = established(ua, phone)
    phone.in_dialog("INVITE", 5.0, body=SENDONLY)
    phone.in_dialog("UPDATE", 5.0, body=OFFER)
    transfer(ua, phone, 5.0)
    assert phone.statuses("UPDATE") == [491]
    assert [type(e) for e in events(ua)] == [OfferReceived]
    ua.reject_offer(dialog, 488, 5.5)
    transfer(ua, phone, 5.5)
    assert phone.statuses("INVITE")[-1] == 488
    with pytest.raises(LocalProtocolError):
        ua.reject_offer(dialog, 488, 6.0)


def test_update() -> None:
    ua, phone = make_ua(), Phone()
    dialog = established(ua, phone)
    phone.in_dialog("UPDATE", 5.0, body=SENDONLY)
    transfer(ua, phone, 5.0)
    assert phone.statuses("UPDATE") == []  # no 100 for non-INVITE
    assert events(ua) == [OfferReceived(dialog=dialog, method="UPDATE", offer=SENDONLY)]
    ua.answer_offer(dialog, ANSWER, 5.1)
    transfer(ua, phone, 5.1)
    ok = phone.last(200)
    assert ok.cseq.method == "UPDATE" and ok.body == ANSWER
    run_timers(ua, phone, 100.0)
    assert phone.statuses("UPDATE") == [200]  # no 2xx retransmission for UPDATE


def test_reinvite_with_bad_body_is_415() -> None:
    ua, phone = make_ua(), Phone()
    established(ua, phone)
    phone.in_dialog("INVITE", 5.0, body=b"hello", content_type="text/plain")
    transfer(ua, phone, 5.0)
    assert phone.statuses("INVITE")[-1] == 415
    assert events(ua) == []


def test_reinvite_without_offer() -> None:
    # We offer in the 2xx; the answer comes in the ACK, as a second CallConfirmed.
    ua, phone = make_ua(), Phone()
    dialog = established(ua, phone)
    phone.in_dialog("INVITE", 5.0)
    transfer(ua, phone, 5.0)
    assert events(ua) == [OfferReceived(dialog=dialog, method="INVITE", offer=None)]
    ua.answer_offer(dialog, OFFER, 5.1)
    transfer(ua, phone, 5.1)
    assert phone.last(200).body == OFFER
    phone.ack(cseq=2, body=ANSWER)
    transfer(ua, phone, 5.2)
    assert events(ua) == [CallConfirmed(dialog=dialog, answer=ANSWER)]


def test_info() -> None:
    ua, phone = make_ua(), Phone()
    dialog = established(ua, phone)
    body = b"Signal=5\r\nDuration=160\r\n"
    phone.in_dialog("INFO", 3.0, body=body, content_type="application/dtmf-relay; x=y")
    transfer(ua, phone, 3.0)
    assert phone.statuses("INFO") == [200]
    assert events(ua) == [
        InfoReceived(dialog=dialog, content_type="application/dtmf-relay", body=body)
    ]


def test_in_dialog_options_and_unsupported_methods() -> None:
    ua, phone = make_ua(), Phone()
    established(ua, phone)
    phone.in_dialog("OPTIONS", 3.0)
    phone.in_dialog("REFER", 3.0, headers=[("Refer-To", "<sip:x@y>")])
    phone.in_dialog("FOO", 3.0)
    transfer(ua, phone, 3.0)
    assert phone.statuses("OPTIONS") == [200]
    assert phone.statuses("REFER") == [405]
    assert phone.statuses("FOO") == [501]
    assert events(ua) == []


def test_cseq_out_of_order_is_500() -> None:
    ua, phone = make_ua(), Phone()
    dialog = established(ua, phone)
    phone.in_dialog("INFO", 3.0, cseq=1)  # the INVITE had 1
    transfer(ua, phone, 3.0)
    assert phone.statuses("INFO") == [500]
    assert dialog.state is DialogState.CONFIRMED


def test_late_offer() -> None:
    ua, phone = make_ua(), Phone()
    phone.call(0.0, body=b"")
    transfer(ua, phone, 0.0)
    (event,) = events(ua)
    assert isinstance(event, IncomingCall)
    assert event.offer is None
    ua.answer(event.dialog, OFFER, 0.1)  # our offer goes in the 200
    transfer(ua, phone, 0.1)
    assert phone.last(200).body == OFFER
    phone.ack(body=ANSWER)
    transfer(ua, phone, 0.2)
    assert events(ua) == [CallConfirmed(dialog=event.dialog, answer=ANSWER)]


# -- hanging up from our side -----------------------------------------------------------------


def test_hangup_sends_bye_along_the_route_set() -> None:
    ua, phone = make_ua(), Phone()
    routes = "<sip:192.0.2.10:5062;lr>, <sip:edge.example.com;lr>"
    phone.call(0.0, headers=[("Record-Route", routes)])
    transfer(ua, phone, 0.0)
    (event,) = events(ua)
    assert isinstance(event, IncomingCall)
    dialog = event.dialog
    ua.answer(dialog, ANSWER, 0.0)
    transfer(ua, phone, 0.0)
    phone.ack()
    transfer(ua, phone, 0.0)
    events(ua)
    ua.hangup(dialog, 9.0)
    assert events(ua) == [CallEnded(dialog=dialog, reason="local-bye")]
    transfer(ua, phone, 9.0)
    (bye,) = phone.requests
    assert bye.method == "BYE"
    assert bye.uri == "sip:alice@192.0.2.10:5062"  # the remote Contact
    assert bye.headers.get_all("Route") == ["<sip:192.0.2.10:5062;lr>", "<sip:edge.example.com;lr>"]
    assert bye.headers.get("CSeq") == "1 BYE"  # our own CSeq space
    assert bye.call_id == phone.call_id
    assert bye.from_.tag == dialog.key.local_tag
    assert bye.to.tag == phone.tag
    assert bye.top_via.branch and bye.top_via.branch.startswith("z9hG4bK")
    assert "rport" in bye.top_via.params
    assert bye.headers.get("User-Agent") == "sipagent"
    # Unanswered, the BYE is retransmitted; the 200 stops it.
    run_timers(ua, phone, 9.0 + T1)
    assert [r.method for r in phone.requests] == ["BYE", "BYE"]
    phone.send_raw(make_response(bye, 200))
    transfer(ua, phone, 9.6)
    run_timers(ua, phone, 100.0)
    assert [r.method for r in phone.requests] == ["BYE", "BYE"]
    assert ua.counters["rx_200"] == 1
    # A second 200 is a stray.
    phone.send_raw(make_response(bye, 200))
    transfer(ua, phone, 101.0)
    assert ua.counters["rx_stray_response"] == 1


def test_hangup_strict_route() -> None:
    ua, phone = make_ua(), Phone()
    phone.call(0.0, headers=[("Record-Route", "<sip:192.0.2.10:5062>")])
    transfer(ua, phone, 0.0)
    (event,) = events(ua)
    assert isinstance(event, IncomingCall)
    ua.answer(event.dialog, ANSWER, 0.0)
    transfer(ua, phone, 0.0)
    phone.ack()
    transfer(ua, phone, 0.0)
    ua.hangup(event.dialog, 1.0)
    transfer(ua, phone, 1.0)
    (bye,) = phone.requests
    assert bye.uri == "sip:192.0.2.10:5062"
    assert bye.headers.get_all("Route") == ["<sip:alice@192.0.2.10:5062>"]


def test_hangup_before_answer_is_480() -> None:
    ua, phone = make_ua(), Phone()
    dialog = incoming(ua, phone)
    ua.hangup(dialog, 1.0)
    transfer(ua, phone, 1.0)
    assert phone.statuses() == [100, 480]
    assert events(ua) == [CallEnded(dialog=dialog, reason="rejected")]
    assert phone.requests == []


def test_hangup_before_ack_waits_for_it() -> None:
    # §15: no BYE before the ACK of our 2xx; the 2xx keeps being resent meanwhile.
    ua, phone = make_ua(), Phone()
    dialog = incoming(ua, phone)
    ua.answer(dialog, ANSWER, 0.0)
    ua.hangup(dialog, 0.1, reason="admin")
    ua.hangup(dialog, 0.1)
    transfer(ua, phone, 0.1)
    assert phone.requests == []
    assert events(ua) == []
    run_timers(ua, phone, T1)
    assert phone.statuses().count(200) == 2
    phone.ack()
    transfer(ua, phone, 1.0)
    assert [r.method for r in phone.requests] == ["BYE"]
    assert events(ua) == [CallEnded(dialog=dialog, reason="admin")]


def test_hangup_before_ack_that_never_comes() -> None:
    ua, phone = make_ua(), Phone()
    dialog = incoming(ua, phone)
    ua.answer(dialog, ANSWER, 0.0)
    ua.hangup(dialog, 0.1)
    run_timers(ua, phone, 64 * T1)
    assert [r.method for r in phone.requests] == ["BYE"]
    assert events(ua) == [CallEnded(dialog=dialog, reason="local-bye")]


def test_reinvite_before_ack_confirms_the_call() -> None:
    ua, phone = make_ua(), Phone()
    dialog = incoming(ua, phone)
    ua.answer(dialog, ANSWER, 0.0)
    transfer(ua, phone, 0.0)  # the phone's ACK is lost; it sends a re-INVITE
    phone.in_dialog("INVITE", 2.0, body=SENDONLY)
    transfer(ua, phone, 2.0)
    assert events(ua) == [
        CallConfirmed(dialog=dialog, answer=None),
        OfferReceived(dialog=dialog, method="INVITE", offer=SENDONLY),
    ]
    run_timers(ua, phone, 40.0)
    assert phone.statuses("INVITE").count(200) == 1  # the first 2xx is no longer resent
    assert phone.requests == []


def test_reinvite_before_ack_with_hangup_pending() -> None:
    ua, phone = make_ua(), Phone()
    dialog = incoming(ua, phone)
    ua.answer(dialog, ANSWER, 0.0)
    transfer(ua, phone, 0.0)
    ua.hangup(dialog, 1.0)
    phone.in_dialog("INVITE", 2.0, body=SENDONLY)
    transfer(ua, phone, 2.0)
    assert phone.statuses("INVITE")[-1] == 481
    assert [r.method for r in phone.requests] == ["BYE"]
    assert events(ua) == [CallEnded(dialog=dialog, reason="local-bye")]


def test_bye_in_early_dialog_ends_the_invite_with_487() -> None:
    ua, phone = make_ua(), Phone()
    dialog = incoming(ua, phone)
    ua.ring(dialog, 0.0)
    transfer(ua, phone, 0.0)
    ringing = phone.last(180)
    phone.start(phone.build("BYE", to_tag=ringing.to.tag), 1.0)
    transfer(ua, phone, 1.0)
    assert phone.statuses("BYE") == [200]
    assert phone.statuses("INVITE") == [100, 180, 487]
    assert events(ua) == [CallEnded(dialog=dialog, reason="remote-bye")]
    run_timers(ua, phone, 1000.0)
    assert ua.dialogs == []
    assert ua.get_timer() is None


def test_bye_while_reinvite_pending_answers_it_487() -> None:
    ua, phone = make_ua(), Phone()
    dialog = established(ua, phone)
    phone.in_dialog("INVITE", 2.0, body=SENDONLY)
    phone.in_dialog("BYE", 2.0)
    transfer(ua, phone, 2.0)
    assert phone.statuses("INVITE")[-1] == 487
    assert phone.statuses("BYE") == [200]
    assert [type(e) for e in events(ua)] == [OfferReceived, CallEnded]
    with pytest.raises(LocalProtocolError):
        ua.answer_offer(dialog, ANSWER, 2.1)
    run_timers(ua, phone, 1000.0)
    assert ua.dialogs == [] and ua.get_timer() is None


def test_requests_in_an_ended_dialog_get_481() -> None:
    ua, phone = make_ua(), Phone()
    dialog = established(ua, phone)
    ua.hangup(dialog, 1.0)
    transfer(ua, phone, 1.0)
    events(ua)
    # A re-INVITE crossing our BYE must not recreate the call.
    phone.in_dialog("INVITE", 1.1, body=SENDONLY)
    ua.handle_timer(1.1)
    transfer(ua, phone, 1.1)
    assert phone.statuses("INVITE")[-1] == 481
    assert events(ua) == []


# -- the INVITE of an unknown dialog (RFC 4475 wsinv) ----------------------------------------


def test_invite_with_to_tag_of_unknown_dialog_recreates_it() -> None:
    ua, phone = make_ua(), Phone()
    invite = phone.start(phone.build("INVITE", to_tag="lost-tag", body=OFFER), 0.0)
    transfer(ua, phone, 0.0)
    (event,) = events(ua)
    assert isinstance(event, IncomingCall)
    assert event.request is not invite and event.request.call_id == invite.call_id
    assert event.dialog.key.local_tag == "lost-tag"
    ua.answer(event.dialog, ANSWER, 0.1)
    transfer(ua, phone, 0.1)
    assert phone.last(200).to.tag == "lost-tag"


# -- RFC 2543 peers ------------------------------------------------------------------------


def test_rfc2543_invite_and_ack_share_the_transaction_key() -> None:
    ua, phone = make_ua(), Phone()
    invite = phone.build("INVITE", branch="old-2543", body=OFFER)
    phone.send_raw(invite)
    transfer(ua, phone, 0.0)
    (event,) = events(ua)
    assert isinstance(event, IncomingCall)
    phone.send_raw(invite)  # retransmission matched without a magic cookie
    transfer(ua, phone, 0.1)
    assert phone.statuses() == [100, 100]
    ua.answer(event.dialog, ANSWER, 0.2)
    transfer(ua, phone, 0.2)
    phone.to_tag = phone.last(200).to.tag
    phone.send_raw(phone.build("ACK", to_tag=phone.to_tag, cseq=invite.cseq.seq,
                               branch="old-2543"))
    transfer(ua, phone, 0.3)
    assert events(ua) == [CallConfirmed(dialog=event.dialog, answer=None)]
    run_timers(ua, phone, 10.0)
    assert phone.statuses().count(200) == 1


# -- ACKs and responses that match nothing ---------------------------------------------------


def test_stray_acks_are_ignored() -> None:
    ua, phone = make_ua(), Phone()
    phone.send_raw(phone.build("ACK", cseq=1))
    phone.send_raw(phone.build("ACK", cseq=1, to_tag="unknown"))
    transfer(ua, phone, 0.0)
    assert phone.responses == []
    assert ua.counters["rx_stray_ack"] == 1
    assert events(ua) == []


def test_ack_after_the_call_ended_is_ignored() -> None:
    ua, phone = make_ua(), Phone()
    dialog = established(ua, phone)
    phone.in_dialog("BYE", 1.0)
    transfer(ua, phone, 1.0)
    events(ua)
    phone.ack()  # late retransmission of the ACK
    transfer(ua, phone, 1.1)
    assert events(ua) == []
    assert dialog.state is DialogState.TERMINATED
    assert phone.statuses()[-1] == 200  # the BYE's; nothing answered the ACK


def test_duplicate_ack_is_harmless() -> None:
    ua, phone = make_ua(), Phone()
    established(ua, phone)
    phone.ack()
    transfer(ua, phone, 1.0)
    assert events(ua) == []
    assert phone.responses[-1].status == 200


@pytest.mark.parametrize(
    "data",
    [
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnone\r\n"
        b"CSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        b"SIP/2.0 200 OK\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\nCSeq: x\r\n\r\n",
    ],
)
def test_responses_that_match_nothing(data: bytes) -> None:
    ua = make_ua()
    ua.receive(data, Destination("udp", "192.0.2.10", 5062), 0.0)
    assert ua.messages_to_send() == []
    assert ua.counters["rx_stray_response"] + ua.counters["rx_invalid"] == 1


# -- malformed input -----------------------------------------------------------------------


def test_malformed_request_gets_a_stateless_400() -> None:
    ua, phone = make_ua(), Phone()
    invite = phone.build("INVITE", body=OFFER)
    invite.headers.set("CSeq", "1 BYE")
    ua.receive(invite.serialize(), phone.address, 0.0)
    ((data, destination),) = ua.messages_to_send()
    assert destination == phone.address
    response = parse_message(data)
    assert isinstance(response, Response)
    assert response.status == 400
    assert response.reason.startswith("Bad Request (CSeq method")
    assert response.headers.get("Warning") == (
        '399 127.0.0.1 "CSeq method does not match the request method"'
    )
    assert ua.counters["rx_invalid"] == 1
    assert ua.get_timer() is None  # stateless


def test_warning_text_is_quoted_safely() -> None:
    ua, phone = make_ua(), Phone()
    invite = phone.build("OPTIONS")
    invite.headers.set("Contact", "<sip:a@b>;it's bad")
    ua.receive(invite.serialize(), phone.address, 0.0)
    ((data, _),) = ua.messages_to_send()
    warning = parse_message(data).headers.get("Warning") or ""
    assert warning.startswith('399 127.0.0.1 "') and warning.endswith('"')
    assert '\\"' in warning


def test_bad_content_length_gets_400() -> None:
    ua, phone = make_ua(), Phone()
    data = phone.build("INVITE", body=OFFER).serialize().replace(
        b"Content-Length: ", b"Content-Length: 9"
    )
    ua.receive(data, phone.address, 0.0)
    ((data, _),) = ua.messages_to_send()
    assert parse_message(data).status == 400  # type: ignore[union-attr]
    assert ua.counters["rx_invalid"] == 1


def test_malformed_ack_is_never_answered() -> None:
    ua, phone = make_ua(), Phone()
    ack = phone.build("ACK", cseq=1)
    ack.headers.set("CSeq", "1 INVITE")
    ua.receive(ack.serialize(), phone.address, 0.0)
    data = phone.build("ACK", cseq=1).serialize().replace(b"Content-Length: 0", b"l: 99")
    ua.receive(data, phone.address, 0.0)
    assert ua.messages_to_send() == []
    assert ua.counters["rx_invalid"] == 2


def test_version_505_even_with_an_unreadable_via() -> None:
    ua = make_ua()
    data = (
        b"OPTIONS sip:agent@127.0.0.1 SIP/7.0\r\nVia: SIP/7.0/UDP c.example.com;branch=z9hG4bKv\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:agent@127.0.0.1>\r\nCall-ID: v@x\r\n"
        b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    source = Destination("udp", "192.0.2.30", 5070)
    ua.receive(data, source, 0.0)
    ((out, destination),) = ua.messages_to_send()
    assert destination == source
    assert parse_message(out).status == 505  # type: ignore[union-attr]


def test_no_via_no_response() -> None:
    ua = make_ua()
    data = b"OPTIONS sip:agent@127.0.0.1 SIP/2.0\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n"
    ua.receive(data, Destination("udp", "192.0.2.30", 5070), 0.0)
    assert ua.messages_to_send() == []
    ua.receive(b"\x00\xffjunk", Destination("udp", "192.0.2.30", 5070), 0.0)
    assert ua.counters["rx_unparseable"] == 1


def test_missing_headers_still_answered_400() -> None:
    ua = make_ua()
    data = (
        b"INVITE sip:agent@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.30;branch=z9hG4bKi\r\n"
        b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    ua.receive(data, Destination("udp", "192.0.2.30", 5060), 0.0)
    ((out, _),) = ua.messages_to_send()
    assert parse_message(out).status == 400  # type: ignore[union-attr]


# -- where responses go ------------------------------------------------------------------


def test_rport_response_goes_to_the_source_port() -> None:
    ua, phone = make_ua(), Phone()
    invite = phone.build("INVITE", body=OFFER, via_params=";rport")
    nat = Destination("udp", "203.0.113.7", 61000)
    ua.receive(invite.serialize(), nat, 0.0)
    ((data, destination),) = ua.messages_to_send()
    assert destination == nat
    response = parse_message(data)
    via = response.top_via
    assert via.params["received"] == "203.0.113.7"
    assert via.params["rport"] == "61000"
    assert via.branch == invite.top_via.branch
    (event,) = events(ua)
    assert isinstance(event, IncomingCall)
    ua.answer(event.dialog, ANSWER, 0.1)
    ((_, destination),) = ua.messages_to_send()
    assert destination == nat  # the 2xx too


def test_without_rport_responses_go_to_the_via_port_at_the_source_address() -> None:
    ua, phone = make_ua(), Phone()
    options = phone.build("OPTIONS")
    ua.receive(options.serialize(), Destination("udp", "203.0.113.7", 61000), 0.0)
    ((data, destination),) = ua.messages_to_send()
    assert destination == Destination("udp", "203.0.113.7", 5062)
    assert parse_message(data).top_via.params == {
        "branch": options.top_via.branch, "received": "203.0.113.7"
    }


def test_same_host_without_rport_leaves_the_via_alone() -> None:
    ua, phone = make_ua(), Phone()
    options = phone.build("OPTIONS")
    ua.receive(options.serialize(), phone.address, 0.0)
    ((data, _),) = ua.messages_to_send()
    assert parse_message(data).headers.get("Via") == options.headers.get("Via")


def test_tcp_call_uses_the_connection() -> None:
    ua, phone = make_ua(), Phone(transport="tcp", port=40123)
    dialog = incoming(ua, phone)
    assert dialog.transport == "tcp"
    ua.answer(dialog, ANSWER, 0.0)
    transfer(ua, phone, 0.0)
    ok = phone.last(200)
    assert ok.headers.get("Contact") == "<sip:sipagent@127.0.0.1:5060;transport=tcp>"
    assert ua.get_timer() == 64 * T1  # no 2xx retransmission on a stream, only give-up
    phone.ack()
    transfer(ua, phone, 0.1)
    events(ua)
    ua.hangup(dialog, 1.0)
    transfer(ua, phone, 1.0)  # asserts the BYE goes to the connection
    (bye,) = phone.requests
    assert bye.top_via.transport == "TCP"
    run_timers(ua, phone, 100.0)
    assert len(phone.requests) == 1  # no retransmission on a stream


def test_stream_without_content_length_gets_400() -> None:
    ua, phone = make_ua(), Phone(transport="tcp")
    data = phone.build("OPTIONS").serialize().replace(b"Content-Length: 0\r\n", b"")
    ua.receive(data, phone.address, 0.0)
    ((out, destination),) = ua.messages_to_send()
    assert destination == phone.address
    assert parse_message(out).status == 400  # type: ignore[union-attr]


def test_ipv6_public_host_in_the_bye_via() -> None:
    ua, phone = make_ua(public_host="2001:db8::1"), Phone()
    dialog = established(ua, phone)
    ua.hangup(dialog, 1.0)
    transfer(ua, phone, 1.0)
    (bye,) = phone.requests
    assert (bye.top_via.host, bye.top_via.port) == ("2001:db8::1", 5060)
    assert "[2001:db8::1]:5060" in (bye.headers.get("Via") or "")


def test_get_timer_idle() -> None:
    ua = make_ua()
    assert ua.get_timer() is None
    ua.handle_timer(10.0)
    assert ua.messages_to_send() == []
    assert ua.next_event() is None


# -- blind transfer (REFER, RFC 3515) -------------------------------------------------------


def answer_request(phone: Phone, method: str, status: int) -> Request:
    """The phone answers the last ``method`` request it received with ``status``."""
    request = [r for r in phone.requests if r.method == method][-1]
    phone.send_raw(make_response(request, status))
    return request


def notify(phone: Phone, sipfrag: bytes, state: str) -> Request:
    return phone.in_dialog(
        "NOTIFY", 1.0, body=sipfrag, content_type="message/sipfrag;version=2.0",
        headers=[("Event", "refer"), ("Subscription-State", state)],
    )


def test_refer_accepted_then_notified() -> None:
    ua, phone = make_ua(), Phone()
    dialog = established(ua, phone)
    ua.refer(dialog, "sip:human@example.com", 1.0)
    transfer(ua, phone, 1.0)
    refer = answer_request(phone, "REFER", 202)
    assert refer.headers.get("Refer-To") == "<sip:human@example.com>"
    assert refer.uri == "sip:alice@192.0.2.10:5062"
    assert refer.headers.get("Referred-By") == "<sip:agent@127.0.0.1>"
    transfer(ua, phone, 1.0)
    assert events(ua) == [TransferAccepted(dialog=dialog, status=202)]
    notify(phone, b"SIP/2.0 100 Trying\r\n", "active;expires=60")
    notify(phone, b"SIP/2.0 200 OK\r\n", "terminated;reason=noresource")
    transfer(ua, phone, 1.0)
    assert phone.statuses("NOTIFY") == [200, 200]
    assert events(ua) == [
        TransferProgress(dialog=dialog, status=100, final=False),
        TransferProgress(dialog=dialog, status=200, final=True),
    ]
    assert dialog.state is DialogState.CONFIRMED  # the BYE is the call layer's decision


def test_refer_rejected() -> None:
    ua, phone = make_ua(), Phone()
    dialog = established(ua, phone)
    ua.refer(dialog, "tel:+15551234567", 1.0)
    transfer(ua, phone, 1.0)
    answer_request(phone, "REFER", 603)
    transfer(ua, phone, 1.0)
    assert events(ua) == [TransferRejected(dialog=dialog, status=603, reason="Decline")]
    assert dialog.state is DialogState.CONFIRMED


def test_refer_never_answered_is_408() -> None:
    ua, phone = make_ua(), Phone()
    dialog = established(ua, phone)
    ua.refer(dialog, "sip:human@example.com", 1.0)
    transfer(ua, phone, 1.0)
    phone.outbox.clear()
    ua.messages_to_send()
    ua.handle_timer(1.0 + 64 * 0.5)
    assert events(ua) == [TransferRejected(dialog=dialog, status=408, reason="Request Timeout")]


def test_refer_needs_a_confirmed_dialog() -> None:
    ua, phone = make_ua(), Phone()
    dialog = incoming(ua, phone)
    with pytest.raises(LocalProtocolError):
        ua.refer(dialog, "sip:human@example.com", 0.0)


def test_notify_of_another_package_is_489_and_unreadable_sipfrag_is_0() -> None:
    ua, phone = make_ua(), Phone()
    dialog = established(ua, phone)
    phone.in_dialog("NOTIFY", 1.0, headers=[("Event", "presence")])
    notify(phone, b"garbage", "active")
    transfer(ua, phone, 1.0)
    assert phone.statuses("NOTIFY") == [489, 200]
    assert events(ua) == [TransferProgress(dialog=dialog, status=0, final=False)]


# -- TLS --------------------------------------------------------------------------------------


def tls_ua() -> UserAgent:
    ua = make_ua()
    ua.tls_port = 5061
    return ua


def test_tls_call_contact_and_bye_via_name_the_tls_port() -> None:
    ua, phone = tls_ua(), Phone(transport="tls", port=40124)
    dialog = incoming(ua, phone)
    assert dialog.transport == "tls" and not dialog.secure
    ua.answer(dialog, ANSWER, 0.0)
    transfer(ua, phone, 0.0)
    assert phone.last(200).headers.get("Contact") == "<sip:sipagent@127.0.0.1:5061;transport=tls>"
    phone.ack()
    transfer(ua, phone, 0.1)
    events(ua)
    ua.hangup(dialog, 1.0)
    transfer(ua, phone, 1.0)  # asserts the BYE goes to the connection the INVITE came on
    (bye,) = phone.requests
    assert bye.headers.get("Via", "").startswith("SIP/2.0/TLS 127.0.0.1:5061;")


@pytest.mark.parametrize("where", ["request-uri", "contact", "record-route"])
def test_tls_sips_request_gets_a_sips_contact(where: str) -> None:
    ua, phone = tls_ua(), Phone(transport="tls", port=40125)
    headers = [("Record-Route", "<sips:proxy.example.com;lr>")] if where == "record-route" else []
    invite = phone.build("INVITE", body=OFFER, headers=headers, contact=where != "contact")
    if where == "request-uri":
        invite.uri = "sips:agent@127.0.0.1"
    if where == "contact":
        invite.headers.add("Contact", "<sips:alice@192.0.2.10:40125>")
    phone.invite = phone.start(invite, 0.0)
    transfer(ua, phone, 0.0)
    (event,) = events(ua)
    assert isinstance(event, IncomingCall)
    assert event.dialog.secure is (where == "request-uri")
    ua.answer(event.dialog, ANSWER, 0.0)
    transfer(ua, phone, 0.0)
    assert phone.last(200).headers.get("Contact") == "<sips:sipagent@127.0.0.1:5061>"


def test_tls_record_route_decides_before_a_sips_contact() -> None:
    ua, phone = tls_ua(), Phone(transport="tls", port=40126)
    dialog = incoming(ua, phone, headers=[("Record-Route", "<sip:proxy.example.com;lr>")])
    ua.answer(dialog, ANSWER, 0.0)
    transfer(ua, phone, 0.0)
    assert phone.last(200).headers.get("Contact") == "<sip:sipagent@127.0.0.1:5061;transport=tls>"


def test_tls_without_a_tls_port_keeps_the_main_port() -> None:
    ua, phone = make_ua(), Phone(transport="tls", port=40127)
    dialog = incoming(ua, phone)
    ua.answer(dialog, ANSWER, 0.0)
    transfer(ua, phone, 0.0)
    assert phone.last(200).headers.get("Contact") == "<sip:sipagent@127.0.0.1:5060;transport=tls>"


def test_sips_request_uri_over_udp_gets_no_sips_contact() -> None:
    ua, phone = tls_ua(), Phone()
    invite = phone.build("INVITE", body=OFFER)
    invite.uri = "sips:agent@127.0.0.1"
    phone.invite = phone.start(invite, 0.0)
    transfer(ua, phone, 0.0)
    (event,) = events(ua)
    assert isinstance(event, IncomingCall)
    ua.answer(event.dialog, ANSWER, 0.0)
    transfer(ua, phone, 0.0)
    assert phone.last(200).headers.get("Contact") == "<sip:sipagent@127.0.0.1:5060>"
