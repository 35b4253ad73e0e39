from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import pytest

from sipagent.auth import DigestVerifier
from sipagent.digest import Credentials
from sipagent.exceptions import LocalProtocolError
from sipagent.message import Request, Response, make_response, parse_message
from sipagent.registration import (
    BACKOFF_BASE,
    Registration,
    RegState,
    refresh_delay,
)
from sipagent.transaction import T1, Destination

REGISTRAR = "sip:sip.example.com"
AOR = "sip:agent@sip.example.com"
CONTACT = "<sip:agent@203.0.113.5:5070>"
SECRET = b"registrar-test-secret-0123456789"


class Registrar:
    """A registrar in memory: challenges with the real DigestVerifier, answers as told."""

    def __init__(self, password: str = "s3cret", *, algorithms: Sequence[str] = ("SHA-256", "MD5"),
                 proxy: bool = False) -> None:
        tokens = (f"r{i}" for i in itertools.count())
        self.verifier = DigestVerifier("sip.example.com", {"agent": password}, secret=SECRET,
                                       algorithms=algorithms, new_token=lambda: next(tokens))
        self.proxy = proxy

    def handle(self, request: Request, now: float, *, granted: int | None = None) -> Response:
        result = self.verifier.verify_request(request, now, proxy=self.proxy)
        if not result.accepted:
            return make_response(request, result.status, to_tag="reg", headers=result.headers)
        expires = int(request.headers.get("Expires") or "3600")
        if granted is not None:
            expires = granted
        if expires == 0:
            return make_response(request, 200, to_tag="reg")
        contact = request.headers.get("Contact")
        return make_response(request, 200, to_tag="reg",
                             headers=[("Contact", f"{contact};expires={expires}")])


class Harness:
    """A Registration, a fake clock and the wire between them."""

    def __init__(self, *, jitter: Iterator[float] | None = None, **options: object) -> None:
        counter = itertools.count(1)
        self.jitter = jitter or itertools.repeat(0.5)
        defaults: dict[str, object] = {
            "contact": CONTACT,
            "expires": 600,
            "transport": "udp",
            "local_sent_by": "203.0.113.5:5070",
            "new_token": lambda: f"t{next(counter)}",
            "now": 0.0,
            "random": lambda: next(self.jitter),
        }
        defaults.update(options)
        self.reg = Registration(REGISTRAR, AOR, "agent", "s3cret", **defaults)  # type: ignore[arg-type]
        self.now = 0.0

    def advance(self, to: float) -> None:
        """Fire every deadline up to ``to``."""
        while (deadline := self.reg.get_timer()) is not None and deadline <= to:
            self.now = max(self.now, deadline)
            self.reg.handle_timer(self.now)
        self.now = to

    def sent(self) -> list[Request]:
        requests: list[Request] = []
        for data, destination in self.reg.messages_to_send():
            assert destination == self.reg.destination
            message = parse_message(data)
            assert isinstance(message, Request)
            requests.append(message)
        return requests

    def one(self) -> Request:
        requests = self.sent()
        assert len(requests) == 1, requests
        return requests[0]

    def deliver(self, response: Response) -> bool:
        wire = parse_message(response.serialize())
        assert isinstance(wire, Response)
        return self.reg.receive_response(wire, self.now)

    def register_through(self, registrar: Registrar, *, granted: int | None = None) -> Request:
        """Answer requests with ``registrar`` until none is left; return the last one."""
        last: Request | None = None
        while requests := self.sent():
            for request in requests:
                last = request
                self.deliver(registrar.handle(request, self.now, granted=granted))
        assert last is not None
        return last


def credentials(request: Request, name: str = "Authorization") -> Credentials:
    value = request.headers.get(name)
    assert value is not None, f"no {name}"
    return Credentials.parse(value)


# -- the challenge flow -------------------------------------------------------------------------
def test_first_register_is_due_at_creation() -> None:
    h = Harness(now=5.0)
    assert h.reg.state is RegState.UNREGISTERED
    assert h.reg.get_timer() == 5.0
    h.advance(5.0)
    request = h.one()
    assert h.reg.state is RegState.REGISTERING
    assert request.method == "REGISTER" and request.uri == REGISTRAR
    assert request.headers.get("To") == f"<{AOR}>"
    assert request.from_.tag == h.reg.from_tag
    assert request.headers.get("Contact") == CONTACT
    assert request.headers.get("Expires") == "600"
    assert request.headers.get("Max-Forwards") == "70"
    assert "Authorization" not in request.headers
    via = request.top_via
    assert via.transport == "UDP" and via.host == "203.0.113.5" and via.port == 5070
    assert via.branch is not None and via.branch.startswith("z9hG4bK")
    assert "rport" in via.params


def test_full_challenge_flow() -> None:
    h = Harness()
    registrar = Registrar()
    h.advance(0.0)
    first = h.one()
    challenge = registrar.handle(first, 0.0)
    assert challenge.status == 401
    assert h.deliver(challenge)
    second = h.one()
    assert h.reg.state is RegState.REGISTERING
    assert second.call_id == first.call_id
    assert second.from_.tag == first.from_.tag
    assert second.cseq.seq == first.cseq.seq + 1
    assert second.top_via.branch != first.top_via.branch
    answer = credentials(second)
    assert answer.algorithm == "SHA-256"  # preferred over the MD5 challenge also offered
    assert answer.uri == REGISTRAR and answer.username == "agent"
    assert answer.qop == "auth" and answer.nc == 1
    ok = registrar.handle(second, 0.1)
    assert ok.status == 200
    h.now = 0.1
    assert h.deliver(ok)
    assert h.reg.state is RegState.REGISTERED
    assert h.reg.expires_at == pytest.approx(600.1)
    assert h.reg.granted == 600
    assert h.reg.last_status == 200 and h.reg.last_error is None
    # The refresh is the next deadline (the transaction's Timer K of 5 s comes first).
    h.advance(10.0)
    assert h.reg.get_timer() == pytest.approx(0.1 + refresh_delay(600))


def test_md5_only_registrar() -> None:
    h = Harness()
    registrar = Registrar(algorithms=("MD5",))
    h.advance(0.0)
    last = h.register_through(registrar)
    assert credentials(last).algorithm == "MD5"
    assert h.reg.state is RegState.REGISTERED


@pytest.mark.parametrize(
    ("granted", "delay"),
    [(3600, 3240.0), (600, 540.0), (300, 240.0), (120, 60.0), (60, 30.0), (10, 5.0)],
)
def test_refresh_delay(granted: int, delay: float) -> None:
    assert refresh_delay(granted) == pytest.approx(delay)
    assert 0 < refresh_delay(granted) < granted


def test_refresh_reuses_credentials_and_keeps_the_dialog_identifiers() -> None:
    h = Harness(expires=3600)
    registrar = Registrar()
    h.advance(0.0)
    registered = h.register_through(registrar)
    assert h.reg.state is RegState.REGISTERED
    refresh_at = refresh_delay(3600)
    h.advance(refresh_at - 0.001)
    assert h.sent() == []
    h.advance(refresh_at)
    refresh = h.one()
    assert h.reg.state is RegState.REGISTERING
    assert h.reg.status()["expires_at"] == pytest.approx(3600.0)  # still bound meanwhile
    assert refresh.call_id == registered.call_id
    assert refresh.cseq.seq == registered.cseq.seq + 1
    old, new = credentials(registered), credentials(refresh)
    assert new.nonce == old.nonce and new.nc == 2 and new.cnonce != old.cnonce
    # The registrar's nonce is long expired (300 s): it answers stale=true, we answer again.
    stale = registrar.handle(refresh, h.now)
    assert stale.status == 401 and "stale=true" in (stale.headers.get("WWW-Authenticate") or "")
    h.deliver(stale)
    again = h.one()
    assert credentials(again).nonce != old.nonce and credentials(again).nc == 1
    h.deliver(registrar.handle(again, h.now))
    assert h.reg.state is RegState.REGISTERED
    assert h.reg.expires_at == pytest.approx(refresh_at + 3600)


def test_preemptive_credentials_accepted_without_challenge() -> None:
    h = Harness(expires=120)
    registrar = Registrar()
    h.advance(0.0)
    h.register_through(registrar)
    h.advance(refresh_delay(120))
    refresh = h.one()
    assert credentials(refresh).nc == 2
    h.deliver(registrar.handle(refresh, h.now))  # nonce still fresh: accepted at once
    assert h.reg.state is RegState.REGISTERED


def test_new_nonce_without_stale_after_preemptive_is_answered() -> None:
    h = Harness(expires=120)
    registrar = Registrar()
    h.advance(0.0)
    h.register_through(registrar)
    h.advance(refresh_delay(120))
    refresh = h.one()
    # Another registrar instance forgot our nonce and challenges plainly (no stale).
    fresh = Registrar().verifier.challenge_headers(h.now)
    h.deliver(make_response(refresh, 401, to_tag="x", headers=fresh))
    retry = h.one()
    assert credentials(retry).nc == 1
    assert h.reg.state is RegState.REGISTERING


def test_second_401_with_the_same_nonce_fails() -> None:
    h = Harness()
    registrar = Registrar()
    h.advance(0.0)
    first = h.one()
    challenge = registrar.handle(first, 0.0)
    h.deliver(challenge)
    second = h.one()
    h.deliver(make_response(second, 401, to_tag="reg",
                            headers=[("WWW-Authenticate", v) for v in
                                     challenge.headers.lines("WWW-Authenticate")]))
    assert h.reg.state is RegState.FAILED
    assert h.reg.last_error == "bad credentials"
    assert h.reg.last_status == 401
    assert h.reg.get_timer() is not None  # only the transaction's Timer K
    h.advance(100.0)
    assert h.reg.get_timer() is None and h.sent() == []


def test_wrong_password_fails_once() -> None:
    h = Harness()
    registrar = Registrar(password="other")
    h.advance(0.0)
    h.register_through(registrar)
    assert h.reg.state is RegState.FAILED
    assert h.reg.last_error == "bad credentials"
    assert h.reg.cseq == 2  # one unauthenticated, one authenticated: no brute force


def test_register_again_after_failure() -> None:
    h = Harness()
    h.advance(0.0)
    h.register_through(Registrar(password="other"))
    assert h.reg.state is RegState.FAILED
    h.reg._password = "other"  # the operator fixed the password
    h.reg.register(h.now)
    h.register_through(Registrar(password="other"))
    assert h.reg.state is RegState.REGISTERED


def test_stale_challenge_after_fresh_answer_is_retried() -> None:
    h = Harness()
    registrar = Registrar()
    h.advance(0.0)
    h.deliver(registrar.handle(h.one(), 0.0))
    answered = h.one()
    h.now = 400.0  # the answer arrives after the nonce expired
    stale = registrar.handle(answered, h.now)
    assert "stale=true" in (stale.headers.get("WWW-Authenticate") or "")
    h.deliver(stale)
    h.register_through(registrar)
    assert h.reg.state is RegState.REGISTERED


def test_challenge_loop_is_bounded() -> None:
    h = Harness()
    h.advance(0.0)
    for round_ in range(4):
        request = h.one()
        h.deliver(make_response(request, 401, to_tag="r", headers=[(
            "WWW-Authenticate", f'Digest realm="r", nonce="n{round_}", qop="auth", stale=true'
        )]))
    assert h.reg.state is RegState.FAILED
    assert h.reg.last_error == "too many challenges"


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (None, "401 without a Digest challenge we can answer"),
        ('Basic realm="r"', "401 without a Digest challenge we can answer"),
        ('Digest realm="r", nonce="n", algorithm=AKAv1-MD5', "401 without a Digest challenge"),
        ('Digest realm="r', "unreadable challenge"),
    ],
)
def test_unanswerable_challenges_fail(header: str | None, error: str) -> None:
    h = Harness()
    h.advance(0.0)
    request = h.one()
    headers = [("WWW-Authenticate", header)] if header else []
    h.deliver(make_response(request, 401, to_tag="r", headers=headers))
    assert h.reg.state is RegState.FAILED
    assert h.reg.last_error is not None and h.reg.last_error.startswith(error)


def test_proxy_authentication_407() -> None:
    h = Harness()
    registrar = Registrar(proxy=True)
    h.advance(0.0)
    last = h.register_through(registrar)
    assert h.reg.state is RegState.REGISTERED
    assert "Authorization" not in last.headers
    assert credentials(last, "Proxy-Authorization").realm == "sip.example.com"


def test_two_realms_answered_together() -> None:
    h = Harness()
    h.advance(0.0)
    request = h.one()
    h.deliver(make_response(request, 407, to_tag="r", headers=[
        ("Proxy-Authenticate", 'Digest realm="proxy", nonce="p1", qop="auth"'),
    ]))
    request = h.one()
    h.deliver(make_response(request, 401, to_tag="r", headers=[
        ("WWW-Authenticate", 'Digest realm="registrar", nonce="r1", qop="auth"'),
    ]))
    request = h.one()
    assert credentials(request, "Proxy-Authorization").realm == "proxy"
    assert credentials(request).realm == "registrar"
    h.deliver(make_response(request, 200, to_tag="r",
                            headers=[("Contact", f"{CONTACT};expires=60")]))
    assert h.reg.state is RegState.REGISTERED and h.reg.granted == 60


# -- granted intervals --------------------------------------------------------------------------
def test_423_interval_too_brief() -> None:
    h = Harness(expires=60)
    h.advance(0.0)
    request = h.one()
    h.deliver(make_response(request, 423, to_tag="r", headers=[("Min-Expires", "300")]))
    retry = h.one()
    assert retry.headers.get("Expires") == "300"
    assert retry.cseq.seq == request.cseq.seq + 1
    h.deliver(make_response(retry, 200, to_tag="r",
                            headers=[("Contact", f"{CONTACT};expires=300")]))
    assert h.reg.state is RegState.REGISTERED and h.reg.granted == 300
    assert h.reg.status()["expires"] == 300


@pytest.mark.parametrize("min_expires", [None, "30", "abc"])
def test_423_without_usable_min_expires_fails(min_expires: str | None) -> None:
    h = Harness(expires=60)
    h.advance(0.0)
    headers = [("Min-Expires", min_expires)] if min_expires else []
    h.deliver(make_response(h.one(), 423, to_tag="r", headers=headers))
    assert h.reg.state is RegState.FAILED


def test_423_loop_is_bounded() -> None:
    h = Harness(expires=60)
    h.advance(0.0)
    for value in (100, 200, 300, 400):
        h.deliver(make_response(h.one(), 423, to_tag="r", headers=[("Min-Expires", str(value))]))
    assert h.reg.state is RegState.FAILED


def test_granted_expires_sources() -> None:
    h = Harness(expires=600)
    h.advance(0.0)
    # Several bindings of the AoR: ours is recognised by its URI.
    h.deliver(make_response(h.one(), 200, to_tag="r", headers=[
        ("Contact", "<sip:phone@192.0.2.1>;expires=3000"),
        ("Contact", "<sip:agent@203.0.113.5:5070;transport=udp>;expires=450, <sip:x@y>"),
        ("Expires", "999"),
    ]))
    assert h.reg.granted == 450
    h.reg.register(h.now)
    # A single rewritten Contact is ours; without a parameter the Expires header counts.
    h.deliver(make_response(h.one(), 200, to_tag="r", headers=[
        ("Contact", "<sip:agent@198.51.100.9:40000>"), ("Expires", "900"),
    ]))
    assert h.reg.granted == 900
    h.reg.register(h.now)
    h.deliver(make_response(h.one(), 200, to_tag="r", headers=[("Contact", "<garbage")]))
    assert h.reg.granted == 600  # nothing readable: what we asked for


def test_zero_granted_backs_off() -> None:
    h = Harness()
    h.advance(0.0)
    h.deliver(make_response(h.one(), 200, to_tag="r", headers=[("Expires", "0")]))
    assert h.reg.state is RegState.BACKOFF
    assert h.reg.last_error == "registrar granted no binding"


# -- failures and backoff -----------------------------------------------------------------------
def test_timeout_backs_off_then_reregisters() -> None:
    h = Harness(jitter=iter([0.0, 0.999]))
    registrar = Registrar()
    h.advance(0.0)
    h.one()
    h.advance(0.5)
    retransmission = h.one()  # Timer E over UDP
    assert retransmission.cseq.seq == 1
    h.advance(64 * T1)  # Timer F
    h.sent()
    assert h.reg.state is RegState.BACKOFF
    assert h.reg.last_error == "timeout"
    assert h.reg.failures == 1
    retry_at = h.reg.get_timer()
    assert retry_at == pytest.approx(64 * T1 + BACKOFF_BASE * 0.5)  # jitter 0: half the ceiling
    h.advance(retry_at or 0.0)
    assert h.reg.state is RegState.REGISTERING
    h.register_through(registrar)
    assert h.reg.state is RegState.REGISTERED
    assert h.reg.failures == 0 and h.reg.last_error is None


def test_backoff_grows_with_jitter_bounds() -> None:
    jitter = [0.0, 0.999999, 0.5, 0.0, 0.999999, 0.25, 0.0, 0.999999, 0.5, 0.0]
    h = Harness(jitter=iter(jitter), backoff_base=10.0, backoff_max=300.0)
    delays: list[float] = []
    h.advance(0.0)
    for attempt in range(len(jitter)):
        h.sent()
        failed_at = h.now
        h.deliver(make_response(h.reg._transactions[h.reg._current or ""].request, 503,
                                to_tag="r"))
        assert h.reg.state is RegState.BACKOFF
        retry_at = h.reg.status()["next_attempt_at"]
        assert retry_at is not None
        h.advance(retry_at)
        delays.append(retry_at - failed_at)
        ceiling = min(300.0, 10.0 * 2**attempt)
        assert ceiling / 2 <= delays[-1] <= ceiling
        assert delays[-1] == pytest.approx(ceiling * (0.5 + 0.5 * jitter[attempt]))
    assert max(delays) <= 300.0
    assert delays[-1] >= 150.0  # capped, at least half of the cap
    assert h.reg.status()["failures"] == len(jitter)


def test_retry_after_is_respected() -> None:
    h = Harness()
    h.advance(0.0)
    h.deliver(make_response(h.one(), 503, to_tag="r", headers=[("Retry-After", "120 (maint)")]))
    assert h.reg.state is RegState.BACKOFF
    assert h.reg.status()["next_attempt_at"] == pytest.approx(120.0)
    assert h.reg.last_error == "503 Service Unavailable"


@pytest.mark.parametrize("status", [403, 404, 400, 302, 603])
def test_permanent_failures(status: int) -> None:
    h = Harness()
    h.advance(0.0)
    h.deliver(make_response(h.one(), status, to_tag="r"))
    assert h.reg.state is RegState.FAILED
    assert h.reg.last_status == status


def test_transport_error_backs_off() -> None:
    h = Harness()
    h.advance(0.0)
    h.one()
    h.reg.transport_error(0.0, "connection refused")
    assert h.reg.state is RegState.BACKOFF
    assert h.reg.last_error == "connection refused"
    h.reg.transport_error(0.0)  # nothing in flight: ignored
    assert h.reg.failures == 1


def test_transport_error_during_refresh_keeps_the_binding_and_retries() -> None:
    h = Harness(expires=600, transport="tcp", jitter=itertools.repeat(1.0))
    registrar = Registrar()
    h.advance(0.0)
    h.register_through(registrar)
    refresh_at = refresh_delay(600)
    h.advance(refresh_at)
    refresh = h.one()
    h.reg.transport_error(refresh_at, "transport error: Connection refused")
    assert h.reg.state is RegState.BACKOFF
    assert h.reg.registered  # the binding still runs until expires_at
    assert h.reg.expires_at == pytest.approx(600.0)
    assert h.reg.get_timer() == pytest.approx(refresh_at + BACKOFF_BASE)  # no transaction left
    assert h.sent() == []
    h.advance(refresh_at + BACKOFF_BASE)
    retry = h.one()  # a new transaction, the same registration
    assert retry.top_via.branch != refresh.top_via.branch
    assert retry.call_id == refresh.call_id and retry.cseq.seq == refresh.cseq.seq + 1
    assert retry.headers.get("Authorization") is not None  # still preemptive
    h.deliver(registrar.handle(retry, h.now))  # stale by now: a new nonce, answered
    h.register_through(registrar)
    assert h.reg.state is RegState.REGISTERED
    assert h.reg.failures == 0 and h.reg.last_error is None


def test_binding_lapses_during_backoff() -> None:
    h = Harness(expires=60)
    registrar = Registrar()
    h.advance(0.0)
    h.register_through(registrar)
    assert h.reg.expires_at == pytest.approx(60.0)
    h.advance(refresh_delay(60))
    h.sent()
    h.advance(refresh_delay(60) + 64 * T1)  # the refresh times out after the binding lapsed
    assert h.reg.state is RegState.BACKOFF
    assert h.reg.expires_at is None
    assert h.reg.status(h.now)["expires_in"] is None


# -- unregistering ------------------------------------------------------------------------------
def test_unregister() -> None:
    h = Harness()
    registrar = Registrar()
    h.advance(0.0)
    registered = h.register_through(registrar)
    h.reg.unregister(1.0)
    assert h.reg.state is RegState.UNREGISTERING
    request = h.one()
    assert request.headers.get("Expires") == "0"
    assert request.headers.get("Contact") == f"{CONTACT};expires=0"
    assert request.call_id == registered.call_id
    assert request.cseq.seq == registered.cseq.seq + 1
    assert credentials(request).nc == 2
    h.now = 1.0
    h.deliver(registrar.handle(request, 1.0))
    assert h.reg.state is RegState.UNREGISTERED
    assert h.reg.expires_at is None
    h.advance(1000.0)
    assert h.reg.get_timer() is None and h.sent() == []
    h.reg.unregister(1000.0)  # already: nothing to do
    assert h.sent() == []


def test_unregister_answers_a_challenge() -> None:
    h = Harness()
    h.advance(0.0)
    h.register_through(Registrar())
    h.reg.unregister(0.0)
    h.register_through(Registrar())  # another registrar: our nonce is unknown to it
    assert h.reg.state is RegState.UNREGISTERED


@pytest.mark.parametrize("failure", ["timeout", "403", "bad credentials", "transport"])
def test_unregister_failures_end_unregistered(failure: str) -> None:
    h = Harness()
    registrar = Registrar()
    h.advance(0.0)
    h.register_through(registrar)
    h.reg.unregister(0.0)
    request = h.one()
    if failure == "timeout":
        h.advance(64 * T1)
    elif failure == "transport":
        h.reg.transport_error(0.0, "transport error: Connection refused")
    elif failure == "403":
        h.deliver(make_response(request, 403, to_tag="r"))
    else:
        h.deliver(make_response(request, 401, to_tag="r", headers=registrar.verifier
                                .challenge_headers(0.0)))
        h.deliver(make_response(h.one(), 401, to_tag="r", headers=registrar.verifier
                                .challenge_headers(0.0)))
    assert h.reg.state is RegState.UNREGISTERED
    assert h.reg.expires_at is None


def test_unregister_while_registering_supersedes_it() -> None:
    h = Harness()
    h.advance(0.0)
    first = h.one()
    h.reg.unregister(0.1)
    unregister = h.one()
    assert unregister.headers.get("Expires") == "0"
    # A late answer to the first REGISTER is ours but changes nothing.
    assert h.deliver(make_response(first, 200, to_tag="r"))
    assert h.reg.state is RegState.UNREGISTERING
    h.deliver(make_response(unregister, 200, to_tag="r"))
    assert h.reg.state is RegState.UNREGISTERED


def test_unregister_without_binding() -> None:
    h = Harness()
    h.advance(0.0)
    h.deliver(make_response(h.one(), 503, to_tag="r"))
    assert h.reg.state is RegState.BACKOFF
    h.reg.unregister(1.0)
    assert h.reg.state is RegState.UNREGISTERED
    assert h.reg.get_timer() is not None  # Timer K of the last transaction only
    h.advance(100.0)
    assert h.sent() == [] and h.reg.get_timer() is None

    h = Harness()
    h.advance(0.0)
    h.deliver(make_response(h.one(), 403, to_tag="r"))
    h.reg.unregister(1.0)
    assert h.reg.state is RegState.UNREGISTERED


def test_register_while_unregistering() -> None:
    h = Harness()
    registrar = Registrar()
    h.advance(0.0)
    h.register_through(registrar)
    h.reg.unregister(0.0)
    h.sent()
    h.reg.register(0.0)
    assert h.reg.state is RegState.REGISTERING
    assert h.one().headers.get("Expires") == "600"


# -- matching, routing, status ------------------------------------------------------------------
def test_foreign_responses_are_not_ours() -> None:
    h = Harness()
    h.advance(0.0)
    request = h.one()
    other_branch = make_response(request, 200, to_tag="r")
    other_branch.headers.set("Via", "SIP/2.0/UDP 203.0.113.5:5070;branch=z9hG4bKother")
    assert not h.deliver(other_branch)
    other_call = make_response(request, 200, to_tag="r")
    other_call.headers.set("Call-ID", "someone-else")
    assert not h.deliver(other_call)
    bye = make_response(request, 200, to_tag="r")
    bye.headers.set("CSeq", "1 BYE")
    assert not h.deliver(bye)
    no_via = make_response(request, 200, to_tag="r")
    no_via.headers.remove("Via")
    assert not h.reg.receive_response(no_via, 0.0)
    assert h.reg.state is RegState.REGISTERING
    # Provisional responses are ours but change nothing; a retransmitted 200 is absorbed.
    assert h.deliver(make_response(request, 100))
    assert h.reg.state is RegState.REGISTERING
    ok = make_response(request, 200, to_tag="r", headers=[("Expires", "60")])
    assert h.deliver(ok)
    assert h.deliver(ok)
    assert h.reg.state is RegState.REGISTERED


def test_outbound_proxy_route_and_destination() -> None:
    h = Harness(outbound_proxy="sip:edge.example.net:5080", transport="TCP")
    assert h.reg.destination == Destination("tcp", "edge.example.net", 5080)
    h.advance(0.0)
    request = h.one()
    assert request.headers.get("Route") == "<sip:edge.example.net:5080;lr>"
    assert request.top_via.transport == "TCP"
    assert request.uri == REGISTRAR


def test_default_ports() -> None:
    assert Harness().reg.destination == Destination("udp", "sip.example.com", 5060)
    assert Harness(transport="tls").reg.destination.port == 5061
    with pytest.raises(ValueError):
        Registration("tel:+15550100", AOR, "u", "p", contact=CONTACT, local_sent_by="h:1",
                     new_token=lambda: "t", now=0.0)


def test_public_address_from_via() -> None:
    h = Harness()
    h.advance(0.0)
    request = h.one()
    ok = make_response(request, 200, to_tag="r", headers=[("Expires", "60")])
    ok.headers.set("Via", f"{request.headers.get('Via')};received=198.51.100.20"
                   .replace(";rport", ";rport=40123"))
    h.deliver(ok)
    assert h.reg.public_address == ("198.51.100.20", 40123)
    assert h.reg.status()["public_address"] == "198.51.100.20:40123"


def test_status() -> None:
    h = Harness()
    status = h.reg.status()
    assert status["state"] == "unregistered"
    assert status["registrar"] == REGISTRAR and status["aor"] == AOR
    assert status["expires_at"] is None and status["last_status"] is None
    assert status["next_attempt_at"] == 0.0
    assert "expires_in" not in status
    h.advance(0.0)
    h.register_through(Registrar())
    status = h.reg.status(100.0)
    assert status["state"] == "registered"
    assert status["expires_in"] == pytest.approx(500.0)
    assert status["last_status"] == 200 and status["last_reason"] == "OK"
    assert h.reg.registered


def test_illegal_transition_raises() -> None:
    h = Harness()
    with pytest.raises(LocalProtocolError):
        h.reg._set_state(RegState.REGISTERED)


def test_register_while_registering_starts_over() -> None:
    h = Harness()
    h.advance(0.0)
    first = h.one()
    h.reg.register(0.2)
    second = h.one()
    assert h.reg.state is RegState.REGISTERING
    assert second.cseq.seq == first.cseq.seq + 1


def test_refresh_refused_after_the_binding_lapsed() -> None:
    h = Harness(expires=60)
    h.advance(0.0)
    h.register_through(Registrar())
    h.advance(refresh_delay(60))
    refresh = h.one()
    h.now = 70.0
    h.deliver(make_response(refresh, 403, to_tag="r"))
    assert h.reg.state is RegState.FAILED
    assert h.reg.expires_at is None
