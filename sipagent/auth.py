"""Server side of SIP Digest authentication (RFC 3261 §22, RFC 7616, RFC 8760).

:class:`DigestVerifier` issues stateless nonces — a timestamp and a counter signed with
HMAC-SHA256 — and verifies credentials: the nonce-count must grow per nonce (a replay is
refused), an expired nonce with otherwise right credentials earns a ``stale=true``
challenge, an unknown user and a wrong password fail alike (same answer, same work,
constant-time comparisons). :class:`FailureCounter` keeps a decaying count of failures per
source for the policy layer to rate-limit brute force. :class:`AuthResult` is the verdict.

The wire types and the hashing are :mod:`sipagent.digest`'s. Nothing here reads a clock:
``now`` is passed in, in the units of the caller's clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import struct
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .digest import (
    Challenge,
    Credentials,
    _base_hash,
    _canonical_algorithm,
    compute_response,
    hash_username,
    parse_credentials,
)
from .exceptions import RemoteProtocolError
from .message import Request

__all__ = [
    "AuthResult",
    "DigestVerifier",
    "FailureCounter",
]

logger = logging.getLogger(__name__)


class FailureCounter:
    """Authentication failures per source, decaying exponentially (for brute-force limits).

    Each failure adds 1; the count halves every ``half_life`` seconds. At most
    ``max_sources`` sources are tracked: the weakest are forgotten first.
    """

    def __init__(self, *, half_life: float = 300.0, max_sources: int = 10_000) -> None:
        if half_life <= 0:
            raise ValueError("half_life must be positive")
        self.half_life = half_life
        self.max_sources = max_sources
        self._scores: dict[str, tuple[float, float]] = {}

    def _decayed(self, source: str, now: float) -> float:
        entry = self._scores.get(source)
        if entry is None:
            return 0.0
        score, at = entry
        decay: float = 0.5 ** (max(0.0, now - at) / self.half_life)
        return score * decay

    def failures(self, source: str, now: float) -> float:
        """The decayed failure count of ``source`` at ``now``."""
        return self._decayed(source, now)

    def record(self, source: str, now: float) -> float:
        """Count one failure of ``source``; return its new count."""
        score = self._decayed(source, now) + 1.0
        self._scores[source] = (score, now)
        if len(self._scores) > self.max_sources:
            self._prune(now)
        return score

    def reset(self, source: str) -> None:
        """Forget ``source`` (say, after it authenticated)."""
        self._scores.pop(source, None)

    def _prune(self, now: float) -> None:
        ranked = sorted(self._scores, key=lambda source: self._decayed(source, now))
        for source in ranked[: len(self._scores) - self.max_sources]:
            del self._scores[source]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthResult:
    """What :meth:`DigestVerifier.verify` decided about a request."""

    accepted: bool
    """True when the credentials are right: serve the request."""
    username: str | None
    """The authenticated user (None unless accepted)."""
    reason: str
    """``ok``, ``missing`` (no credentials), ``stale``, ``rejected`` or ``malformed``.

    For logs and metrics only: an unknown user and a wrong password are both ``rejected``.
    """
    status: int
    """Status to answer a refused request with: 401, or 407 for proxy authentication."""
    headers: tuple[tuple[str, str], ...] = field(default=())
    """The challenge headers for that answer (empty when accepted)."""


_NONCE_MAC_BYTES = 16
_NONCE_HEAD = struct.Struct(">QQ")  # issue time (ms), counter


class DigestVerifier:
    """Challenges requests and verifies their Digest credentials, for one realm.

    ``users`` maps a user name to its password, or is a lookup function returning None
    for an unknown user. Nonces need no server state: they carry their issue time and a
    counter, signed with ``secret`` (HMAC-SHA256, truncated to 128 bits), and live for
    ``nonce_ttl`` seconds. What is kept is the highest nonce-count seen per nonce (at most
    ``max_nonces``), to refuse replays. ``new_token``, when given, is called once: its token
    goes into every nonce, so nonces from before a restart (or of another instance sharing
    the secret) are answered ``stale`` rather than trusted with a forgotten nonce-count.
    """

    def __init__(
        self,
        realm: str,
        users: Mapping[str, str] | Callable[[str], str | None],
        *,
        secret: bytes,
        nonce_ttl: float = 300.0,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        qop: Sequence[str] = ("auth",),
        new_token: Callable[[], str] | None = None,
        max_nonces: int = 100_000,
        failures: FailureCounter | None = None,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret must be at least 16 bytes")
        if not algorithms:
            raise ValueError("at least one algorithm is needed")
        self.realm = realm
        self.nonce_ttl = nonce_ttl
        self.algorithms = tuple(_canonical_algorithm(a) for a in algorithms)
        for algorithm in self.algorithms:
            _base_hash(algorithm)  # raises for an unknown one
        self.qop = tuple(qop)
        self.failure_counter = failures or FailureCounter()
        self._users = users
        self._secret = secret
        self._instance = (new_token() if new_token is not None else "").encode()[:16]
        self._counter = 0
        self._max_nonces = max_nonces
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()
        """Nonce → (issue time, highest nonce-count accepted), oldest first."""

    # -- nonces ---------------------------------------------------------------------------------
    def _mac(self, payload: bytes) -> bytes:
        message = payload + b"\x00" + self.realm.encode()
        return hmac.new(self._secret, message, hashlib.sha256).digest()[:_NONCE_MAC_BYTES]

    def new_nonce(self, now: float) -> str:
        self._counter += 1
        payload = _NONCE_HEAD.pack(max(0, int(now * 1000)), self._counter) + self._instance
        return base64.urlsafe_b64encode(payload + self._mac(payload)).decode().rstrip("=")

    def _read_nonce(self, nonce: str) -> tuple[float, bool] | None:
        """(issue time, from this instance) of a nonce we signed, or None."""
        if len(nonce) > 128:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except ValueError:
            return None
        if len(raw) < _NONCE_HEAD.size + _NONCE_MAC_BYTES:
            return None
        payload, mac = raw[:-_NONCE_MAC_BYTES], raw[-_NONCE_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        issued_ms, _counter = _NONCE_HEAD.unpack_from(payload)
        return issued_ms / 1000.0, payload[_NONCE_HEAD.size :] == self._instance

    # -- challenges -----------------------------------------------------------------------------
    def challenges(self, now: float, *, stale: bool = False) -> list[Challenge]:
        """One challenge per algorithm, strongest first, all with one new nonce."""
        nonce = self.new_nonce(now)
        return [
            Challenge(realm=self.realm, nonce=nonce, algorithm=algorithm, qop=self.qop,
                      stale=stale)
            for algorithm in self.algorithms
        ]

    def challenge_headers(
        self, now: float, *, stale: bool = False, proxy: bool = False
    ) -> tuple[tuple[str, str], ...]:
        """``WWW-Authenticate`` (or ``Proxy-Authenticate``) headers for a 401 (407)."""
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        return tuple((name, c.serialize()) for c in self.challenges(now, stale=stale))

    # -- verification ---------------------------------------------------------------------------
    def verify_request(
        self, request: Request, now: float, *, source: str | None = None, proxy: bool = False
    ) -> AuthResult:
        """Verify the (Proxy-)Authorization of ``request`` against its method, URI and body."""
        name = "Proxy-Authorization" if proxy else "Authorization"
        return self.verify(
            method=request.method,
            uri=request.uri,
            authorization=request.headers.lines(name),
            now=now,
            body=request.body,
            source=source,
            proxy=proxy,
        )

    def verify(
        self,
        *,
        method: str,
        uri: str,
        authorization: Sequence[str] | str | None,
        now: float,
        body: bytes = b"",
        source: str | None = None,
        proxy: bool = False,
    ) -> AuthResult:
        """Check credentials of a request; failures are counted against ``source``."""
        lines = [authorization] if isinstance(authorization, str) else list(authorization or ())
        try:
            ours = [c for c in parse_credentials(lines) if c.realm == self.realm]
        except RemoteProtocolError as exc:
            logger.debug("malformed credentials from %s: %s", source, exc.reason)
            return self._refuse("malformed", now, source, proxy)
        if not ours:
            return self._refuse("missing", now, None, proxy)
        credentials = ours[0]
        algorithm = credentials.algorithm or "MD5"
        if algorithm not in self.algorithms or credentials.uri != uri:
            return self._refuse("rejected", now, source, proxy)
        if self.qop and (
            credentials.qop not in self.qop or credentials.nc is None or credentials.cnonce is None
        ):
            return self._refuse("rejected", now, source, proxy)
        username, password = self._lookup(credentials, algorithm)
        try:
            expected = compute_response(
                algorithm=algorithm,
                username=username,
                realm=self.realm,
                password=password if password is not None else "",
                method=method,
                uri=credentials.uri,
                nonce=credentials.nonce,
                qop=credentials.qop,
                cnonce=credentials.cnonce,
                nc=credentials.nc,
                body=body,
            )
        except RemoteProtocolError:  # -sess or a qop without cnonce: nothing to compare
            return self._refuse("malformed", now, source, proxy)
        right = hmac.compare_digest(expected.encode(), credentials.response.lower().encode())
        nonce_info = self._read_nonce(credentials.nonce)
        if password is None or not right or nonce_info is None:
            # An unknown user took the same work as a wrong password, and ends the same way.
            return self._refuse("rejected", now, source, proxy)
        issued, this_instance = nonce_info
        if not this_instance or now - issued > self.nonce_ttl or issued > now + 1.0:
            return self._refuse("stale", now, None, proxy, stale=True)
        if not self._count(credentials.nonce, credentials.nc or 0, issued, now):
            logger.info("replayed nonce-count %s for %r from %s", credentials.nc, username, source)
            return self._refuse("rejected", now, source, proxy)
        if source is not None:
            self.failure_counter.reset(source)
        return AuthResult(accepted=True, username=username, reason="ok",
                          status=407 if proxy else 401)

    def failures(self, source: str, now: float) -> float:
        """Decayed count of authentication failures from ``source`` (see FailureCounter)."""
        return self.failure_counter.failures(source, now)

    def _lookup(self, credentials: Credentials, algorithm: str) -> tuple[str, str | None]:
        """(user name, password or None) for the credentials' username field."""
        name = credentials.username
        if credentials.userhash:
            if not isinstance(self._users, Mapping):
                return name, None
            for candidate in self._users:
                hashed = hash_username(algorithm, candidate, self.realm)
                if hmac.compare_digest(hashed.encode(), name.lower().encode()):
                    return candidate, self._users[candidate]
            return name, None
        if isinstance(self._users, Mapping):
            return name, self._users.get(name)
        return name, self._users(name)

    def _count(self, nonce: str, nc: int, issued: float, now: float) -> bool:
        """Record nonce-count ``nc`` for ``nonce``; False if it does not grow (a replay)."""
        seen = self._seen.get(nonce)
        if seen is not None and nc <= seen[1]:
            return False
        self._seen[nonce] = (issued, nc)
        self._seen.move_to_end(nonce)
        if len(self._seen) > self._max_nonces:
            for old in [n for n, (at, _) in self._seen.items() if now - at > self.nonce_ttl]:
                del self._seen[old]
            while len(self._seen) > self._max_nonces:
                self._seen.popitem(last=False)
        return True

    def _refuse(
        self, reason: str, now: float, source: str | None, proxy: bool, *, stale: bool = False
    ) -> AuthResult:
        if source is not None and reason in ("rejected", "malformed"):
            self.failure_counter.record(source, now)
        return AuthResult(
            accepted=False,
            username=None,
            reason=reason,
            status=407 if proxy else 401,
            headers=self.challenge_headers(now, stale=stale, proxy=proxy),
        )
