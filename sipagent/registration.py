"""Registering a contact with a registrar (RFC 3261 §10), with Digest authentication.

:class:`Registration` is a sans-I/O client for one binding: it builds the REGISTER
requests (one Call-ID and From tag for its whole life, the CSeq growing, RFC 3261
§10.2.4), runs them through :class:`~sipagent.transaction.ClientNonInviteTransaction`\\s
on its own outbox, answers 401/407 challenges (:mod:`sipagent.digest`), refreshes the
binding before it expires, follows 423 Interval Too Brief, and backs off exponentially
with jitter (RFC 5626 §4.5) after timeouts, transport errors and 5xx.

Drive it like the other cores::

    registration = Registration(..., now=loop.time())    # the first REGISTER is due now
    registration.handle_timer(now)                      # at get_timer()
    for data, destination in registration.messages_to_send(): ...
    registration.receive_response(response, now)        # True when it was one of ours

Responses are matched by the branch of their top Via: the shell hands every response the
user agent core does not know to :meth:`Registration.receive_response`.

States (an illegal transition raises :class:`LocalProtocolError`)::

    UNREGISTERED ─► REGISTERING ─► REGISTERED ─(refresh)─► REGISTERING
                        │  ▲            │
            timeout/5xx ▼  │ retry      ▼ unregister()
                     BACKOFF        UNREGISTERING ─► UNREGISTERED
    bad credentials, 403, 404 … ─► FAILED (until register() is called again)
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .digest import Challenge, answer_challenge, choose_challenge, parse_challenges
from .exceptions import LocalProtocolError, RemoteProtocolError
from .headers import NameAddress, SipUri, Via
from .message import Headers, Request, Response
from .transaction import ClientNonInviteTransaction, Destination, Outbox

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_MAX",
    "RegState",
    "Registration",
    "refresh_delay",
]

logger = logging.getLogger(__name__)

BACKOFF_BASE = 10.0
"""First retry delay after a failure, before jitter (s)."""
BACKOFF_MAX = 1800.0
"""Longest retry delay, before jitter (s), as RFC 5626 §4.5's max-time."""
_MAX_CHALLENGES = 3
"""401/407 rounds answered within one attempt before giving up (a looping registrar)."""
_MAX_INTERVAL_RETRIES = 3
"""423 rounds within one attempt."""


class RegState(enum.Enum):
    UNREGISTERED = "unregistered"
    REGISTERING = "registering"
    REGISTERED = "registered"
    BACKOFF = "backoff"
    UNREGISTERING = "unregistering"
    FAILED = "failed"


R = RegState

_TRANSITIONS: dict[RegState, set[RegState]] = {
    R.UNREGISTERED: {R.REGISTERING},
    R.REGISTERING: {R.REGISTERED, R.BACKOFF, R.FAILED, R.UNREGISTERING},
    R.REGISTERED: {R.REGISTERING, R.UNREGISTERING},
    R.BACKOFF: {R.REGISTERING, R.UNREGISTERING, R.UNREGISTERED},
    R.UNREGISTERING: {R.UNREGISTERED, R.REGISTERING},
    R.FAILED: {R.REGISTERING, R.UNREGISTERED, R.UNREGISTERING},
}

_DIGITS = re.compile(r"[0-9]+")

#: Final statuses retried later (with backoff); any other non-2xx is a FAILED registration.
_TRANSIENT = frozenset({408, 480, 500, 502, 503, 504})


def refresh_delay(granted: float) -> float:
    """Seconds after a 2xx to refresh a binding granted for ``granted`` seconds.

    Early enough to survive a lost request and one retry: a tenth of the interval but at
    least a minute before expiry, and never later than half-way (short intervals).
    """
    margin = min(granted / 2, max(60.0, granted / 10))
    return granted - margin


@dataclass(slots=True)
class _Auth:
    """A challenge we answer (again, preemptively, on later requests) and its count."""

    challenge: Challenge
    nc: int = 0
    fresh: bool = True
    """Received during the current attempt (so a rejection means bad credentials)."""
    answered: bool = False
    """Credentials answering it were sent during the current attempt."""


class Registration:
    """One binding of ``contact`` to ``aor`` at a registrar, kept alive until unregistered.

    ``registrar_uri`` is the Request-URI (``sip:sip.example.com``); requests go to
    ``outbound_proxy`` (with a loose Route) when given, else to the registrar's host and
    port over ``transport``. ``local_sent_by`` is our Via sent-by (``host:port``).
    ``new_token`` makes the Call-ID, tags, branches and cnonces; ``random`` returns a float
    in [0, 1) for the backoff jitter. The first REGISTER is due at ``now``.
    """

    def __init__(
        self,
        registrar_uri: str,
        aor: str,
        username: str,
        password: str,
        *,
        contact: str,
        expires: int = 3600,
        outbound_proxy: str | None = None,
        transport: str = "udp",
        local_sent_by: str,
        new_token: Callable[[], str],
        now: float,
        random: Callable[[], float] = lambda: 1.0,
        user_agent: str = "sipagent",
        backoff_base: float = BACKOFF_BASE,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        self.registrar = SipUri.parse(registrar_uri)
        if not self.registrar.is_sip:
            raise ValueError(f"registrar must be a sip: or sips: URI, not {registrar_uri!r}")
        self.registrar_uri = str(self.registrar)
        self.aor = SipUri.parse(aor.strip().strip("<>"))
        self.username = username
        self.contact = NameAddress.parse(contact if "<" in contact else f"<{contact}>")
        self.expires = expires
        self.requested_expires = expires
        self.transport = transport.lower()
        self.local_sent_by = local_sent_by
        self.user_agent = user_agent
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._password = password
        self._token = new_token
        self._random = random
        self._route: str | None = None
        target = self.registrar
        if outbound_proxy:
            proxy = SipUri.parse(outbound_proxy.strip().strip("<>"))
            proxy.params.setdefault("lr", None)
            self._route = f"<{proxy}>"
            target = proxy
        default_port = 5061 if self.transport == "tls" else 5060
        self.destination = Destination(self.transport, target.host, target.port or default_port)

        self.call_id = new_token()
        self.from_tag = new_token()
        self._state = R.UNREGISTERED
        self.cseq = 0
        self.expires_at: float | None = None
        """When the binding lapses unless refreshed (the caller's clock), None if unbound."""
        self.granted: int | None = None
        """The interval the registrar granted last."""
        self.last_status: int | None = None
        self.last_reason: str | None = None
        self.last_error: str | None = None
        self.public_address: tuple[str, int] | None = None
        """Our address as the registrar saw it (Via received/rport of its last answer)."""
        self.failures = 0
        """Consecutive failed attempts (drives the backoff)."""

        self._outbox: Outbox = []
        self._transactions: dict[str, ClientNonInviteTransaction] = {}
        self._current: str | None = None
        """Branch of the transaction whose answer drives the state."""
        self._unregistering = False
        self._auth: dict[tuple[bool, str], _Auth] = {}
        self._challenge_rounds = 0
        self._interval_retries = 0
        self._next_action: float | None = now
        """When to send the next REGISTER (first one, refresh or retry)."""

    # -- I/O boundary -----------------------------------------------------------------------
    def messages_to_send(self) -> list[tuple[bytes, Destination]]:
        out = [(message.serialize(), destination) for message, destination in self._outbox]
        self._outbox.clear()
        return out

    def get_timer(self) -> float | None:
        deadlines = [tx.get_timer() for tx in self._transactions.values()]
        deadlines.append(self._next_action)
        present = [t for t in deadlines if t is not None]
        return min(present) if present else None

    def handle_timer(self, now: float) -> None:
        for branch, tx in list(self._transactions.items()):
            deadline = tx.get_timer()
            if deadline is not None and deadline <= now:
                tx.handle_timer(now)
            if tx.terminated:
                del self._transactions[branch]
                if tx.timed_out and branch == self._current:
                    self._current = None
                    self._fail_transient("timeout", None, now)
        if self._next_action is not None and self._next_action <= now:
            self._next_action = None
            self._start_attempt(unregister=self._unregistering, now=now)

    def receive_response(self, response: Response, now: float) -> bool:
        """Handle a response; False when it is not an answer to one of our REGISTERs."""
        try:
            branch = response.top_via.branch or ""
            method = response.cseq.method
        except RemoteProtocolError:
            return False
        tx = self._transactions.get(branch)
        if tx is None or method != "REGISTER" or response.call_id != self.call_id:
            return False
        delivered = tx.receive_response(response, now)
        if delivered is None or delivered.status < 200 or branch != self._current:
            return True
        self._current = None
        self.last_status = delivered.status
        self.last_reason = delivered.reason
        self._note_public_address(response.top_via)
        if delivered.status < 300:
            self._on_success(delivered, now)
        elif delivered.status in (401, 407):
            self._on_challenge(delivered, now)
        elif delivered.status == 423:
            self._on_interval_too_brief(delivered, now)
        elif delivered.status in _TRANSIENT or 500 <= delivered.status < 600:
            self._fail_transient(f"{delivered.status} {delivered.reason}",
                                 _retry_after(delivered), now)
        else:
            self._fail(f"{delivered.status} {delivered.reason}", now)
        return True

    def transport_error(self, now: float, reason: str = "transport error") -> None:
        """The request could not be sent (unreachable, connection refused): retry later."""
        if self._current is None:
            return
        self._transactions.pop(self._current, None)
        self._current = None
        self._fail_transient(reason, None, now)

    # -- transaction user API ---------------------------------------------------------------
    def register(self, now: float) -> None:
        """(Re)register now, say after FAILED once the credentials were fixed."""
        self._unregistering = False
        self.failures = 0
        self.expires = self.requested_expires
        self._next_action = None
        self._start_attempt(unregister=False, now=now)

    def unregister(self, now: float) -> None:
        """Remove our binding (``Expires: 0``); UNREGISTERED once the registrar agrees."""
        self._next_action = None
        self._unregistering = True
        if self.state in (R.UNREGISTERED, R.UNREGISTERING):
            return
        if self.state in (R.FAILED, R.BACKOFF) and self.expires_at is None:
            self._unregistering = False
            self._set_state(R.UNREGISTERED)  # no binding to remove
            return
        self._start_attempt(unregister=True, now=now)

    def status(self, now: float | None = None) -> dict[str, Any]:
        """What the admin shows for this registration (GET /registrations)."""
        info: dict[str, Any] = {
            "state": self.state.value,
            "registrar": self.registrar_uri,
            "aor": str(self.aor),
            "contact": str(self.contact),
            "transport": self.transport,
            "expires": self.granted,
            "expires_at": self.expires_at,
            "last_status": self.last_status,
            "last_reason": self.last_reason,
            "last_error": self.last_error,
            "failures": self.failures,
            "next_attempt_at": self._next_action,
            "public_address": (
                f"{self.public_address[0]}:{self.public_address[1]}"
                if self.public_address else None
            ),
        }
        if now is not None:
            info["expires_in"] = (
                max(0.0, self.expires_at - now) if self.expires_at is not None else None
            )
        return info

    @property
    def state(self) -> RegState:
        """Where the registration stands (changed only through the transition table)."""
        return self._state

    @property
    def registered(self) -> bool:
        """True while a binding should exist (registered, or refreshing one)."""
        return self.expires_at is not None and self.state is not R.UNREGISTERED

    # -- internals --------------------------------------------------------------------------
    def _set_state(self, state: RegState) -> None:
        if state is self._state:
            return
        if state not in _TRANSITIONS[self._state]:
            raise LocalProtocolError(f"registration: {self._state.value} -> {state.value}")
        logger.debug("registration %s %s: %s -> %s", self.aor, self.call_id,
                     self._state.value, state.value)
        self._state = state

    def _start_attempt(self, *, unregister: bool, now: float) -> None:
        """A new register/refresh/unregister: the per-attempt counters start over."""
        self._challenge_rounds = 0
        self._interval_retries = 0
        for auth in self._auth.values():
            auth.fresh = False
            auth.answered = False
        self._set_state(R.UNREGISTERING if unregister else R.REGISTERING)
        self._send(now)

    def _send(self, now: float) -> None:
        # A transaction still running (superseded by unregister()) lives on: its answer is
        # absorbed and ignored, as only the current branch drives the state.
        request = self._build_request()
        branch = request.top_via.branch or ""
        self._transactions[branch] = ClientNonInviteTransaction(
            request, self.destination, self._outbox, now
        )
        self._current = branch

    def _build_request(self) -> Request:
        self.cseq += 1
        branch = "z9hG4bK" + self._token()
        expires = 0 if self.state is R.UNREGISTERING else self.expires
        headers = Headers()
        headers.add("Via", f"SIP/2.0/{self.transport.upper()} {self.local_sent_by}"
                           f";branch={branch};rport")
        if self._route is not None:
            headers.add("Route", self._route)
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<{self.aor}>;tag={self.from_tag}")
        headers.add("To", f"<{self.aor}>")
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self.cseq} REGISTER")
        headers.add("Contact", f"<{self.contact.uri}>" + (";expires=0" if expires == 0 else ""))
        headers.add("Expires", str(expires))
        headers.add("User-Agent", self.user_agent)
        for (proxy, _realm), auth in self._auth.items():
            auth.nc += 1
            credentials = answer_challenge(
                auth.challenge, "REGISTER", self.registrar_uri, self.username, self._password,
                self._token(), auth.nc,
            )
            if auth.fresh:
                auth.answered = True
            headers.add("Proxy-Authorization" if proxy else "Authorization",
                        credentials.serialize())
        return Request("REGISTER", self.registrar_uri, headers)

    def _on_success(self, response: Response, now: float) -> None:
        self.failures = 0
        self.last_error = None
        if self.state is R.UNREGISTERING:
            self.expires_at = None
            self.granted = None
            self._unregistering = False
            self._set_state(R.UNREGISTERED)
            return
        granted = self._granted_expires(response)
        if granted <= 0:
            self._fail_transient("registrar granted no binding", None, now)
            return
        self.granted = granted
        self.expires_at = now + granted
        self._set_state(R.REGISTERED)
        self._next_action = now + refresh_delay(granted)
        logger.info("registered %s at %s for %ss", self.aor, self.registrar_uri, granted)

    def _granted_expires(self, response: Response) -> int:
        """Our Contact's expires in the 2xx, else its Expires header, else what we asked."""
        contacts: list[NameAddress] = []
        for value in response.headers.get_all("Contact"):
            try:
                contacts.append(NameAddress.parse(value))
            except RemoteProtocolError:
                continue
        ours = [c for c in contacts if _same_contact(c.uri, self.contact.uri)]
        if not ours and len(contacts) == 1:
            ours = contacts  # the registrar rewrote it (NAT aliasing): still ours
        for contact in ours:
            param = contact.params.get("expires")
            if param is not None and _DIGITS.fullmatch(param.strip()):
                return int(param)
        header = (response.headers.get("Expires") or "").strip()
        if _DIGITS.fullmatch(header):
            return int(header)
        return self.expires

    def _on_challenge(self, response: Response, now: float) -> None:
        proxy = response.status == 407
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        try:
            challenges = parse_challenges(response.headers.lines(name))
        except RemoteProtocolError as exc:
            self._fail(f"unreadable challenge: {exc.reason}", now)
            return
        by_realm: dict[str, list[Challenge]] = {}
        for challenge in challenges:
            by_realm.setdefault(challenge.realm, []).append(challenge)
        picks = [choose_challenge(offered) for offered in by_realm.values()]
        chosen = [pick for pick in picks if pick is not None]
        if not chosen or len(chosen) != len(picks):
            self._fail(f"{response.status} without a Digest challenge we can answer", now)
            return
        self._challenge_rounds += 1
        for challenge in chosen:
            previous = self._auth.get((proxy, challenge.realm))
            if previous is not None and previous.answered and not challenge.stale:
                # We answered a challenge of this attempt and the registrar said no again.
                self._fail("bad credentials", now)
                return
        if self._challenge_rounds > _MAX_CHALLENGES:
            self._fail("too many challenges", now)
            return
        for challenge in chosen:
            self._auth[(proxy, challenge.realm)] = _Auth(challenge)
        self._send(now)

    def _on_interval_too_brief(self, response: Response, now: float) -> None:
        value = (response.headers.get("Min-Expires") or "").strip()
        self._interval_retries += 1
        if (
            not _DIGITS.fullmatch(value)
            or int(value) <= self.expires
            or self._interval_retries > _MAX_INTERVAL_RETRIES
        ):
            self._fail(f"423 with unusable Min-Expires {value!r}", now)
            return
        self.expires = int(value)
        self._send(now)

    def _fail_transient(self, error: str, retry_after: float | None, now: float) -> None:
        """Retry after an exponential, jittered delay (RFC 5626 §4.5)."""
        self.last_error = error
        logger.warning("registration of %s failed (%s): backing off", self.aor, error)
        if self.state is R.UNREGISTERING:
            # The binding expires by itself: nothing worth retrying for.
            self.expires_at = None
            self._unregistering = False
            self._set_state(R.UNREGISTERED)
            return
        self.failures += 1
        self._set_state(R.BACKOFF)
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (self.failures - 1))
        delay = ceiling * (0.5 + 0.5 * self._random())
        if retry_after is not None:
            delay = max(delay, retry_after)
        if self.expires_at is not None and self.expires_at <= now:
            self.expires_at = None  # the old binding has lapsed meanwhile
        self._next_action = now + delay

    def _fail(self, error: str, now: float) -> None:
        """Give up until :meth:`register` is called: retrying would not help."""
        self.last_error = error
        logger.error("registration of %s at %s failed: %s", self.aor, self.registrar_uri, error)
        if self.state is R.UNREGISTERING:
            self.expires_at = None
            self._unregistering = False
            self._set_state(R.UNREGISTERED)
            return
        self._next_action = None
        if self.expires_at is not None and self.expires_at <= now:
            self.expires_at = None
        self._set_state(R.FAILED)

    def _note_public_address(self, via: Via) -> None:
        received = via.params.get("received") or via.host
        rport = via.params.get("rport")
        if rport and _DIGITS.fullmatch(rport):
            self.public_address = (received, int(rport))


def _same_contact(a: SipUri, b: SipUri) -> bool:
    return (
        a.scheme == b.scheme
        and (a.user or "") == (b.user or "")
        and a.host.lower() == b.host.lower()
        and (a.port or 5060) == (b.port or 5060)
    )


def _retry_after(response: Response) -> float | None:
    value = (response.headers.get("Retry-After") or "").split(";")[0].split("(")[0].strip()
    return float(value) if _DIGITS.fullmatch(value) else None
