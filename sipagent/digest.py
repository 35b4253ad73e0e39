"""HTTP Digest authentication for SIP (RFC 3261 §22, RFC 7616, RFC 8760).

Wire types: :class:`Challenge` (``WWW-Authenticate`` / ``Proxy-Authenticate``) and
:class:`Credentials` (``Authorization`` / ``Proxy-Authorization``), each with ``parse`` and
``serialize``. Algorithms MD5, SHA-256, SHA-512-256 and their ``-sess`` forms; qop ``auth``
and ``auth-int``; ``userhash``.

Client side: :func:`choose_challenge` picks the strongest challenge offered (SHA-256 over
MD5, RFC 8760 §2.4) and :func:`answer_challenge` computes the credentials; ``cnonce`` is
the caller's (randomness is injected, never drawn here).

The server side (nonces, verification, failure counting) is :mod:`sipagent.auth`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .exceptions import RemoteProtocolError

__all__ = [
    "ALGORITHMS",
    "Challenge",
    "Credentials",
    "answer_challenge",
    "choose_challenge",
    "hash_username",
    "compute_response",
    "parse_challenges",
    "parse_credentials",
]


def _hasher(name: str) -> Callable[[bytes], str]:
    def digest(data: bytes) -> str:
        return hashlib.new(name, data).hexdigest()

    return digest


_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": _hasher("md5"),
    "SHA-256": _hasher("sha256"),
}
if "sha512_256" in hashlib.algorithms_available:  # pragma: no branch (OpenSSL ≥ 1.1.1)
    _HASHES["SHA-512-256"] = _hasher("sha512_256")

#: Canonical spelling of every algorithm we compute, by upper-case name.
ALGORITHMS: dict[str, str] = {}
for _name in _HASHES:
    ALGORITHMS[_name] = _name
    ALGORITHMS[f"{_name}-SESS"] = f"{_name}-sess"

#: Preference when several challenges are offered (RFC 8760: SHA-256 before MD5).
_STRENGTH = {"SHA-512-256": 3, "SHA-256": 2, "MD5": 1}

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# Unquoted values: tokens, and token68-ish nonces some servers send unquoted.
_BARE_VALUE_RE = re.compile(r"[^\s,\"]+")
_WS = " \t\r\n"
_NC_RE = re.compile(r"[0-9A-Fa-f]{8}")


def _canonical_algorithm(name: str | None) -> str:
    if name is None:
        return "MD5"
    return ALGORITHMS.get(name.upper(), name)


def _base_hash(algorithm: str) -> Callable[[bytes], str]:
    base = algorithm.upper().removesuffix("-SESS")
    try:
        return _HASHES[base]
    except KeyError:
        raise RemoteProtocolError(f"unsupported digest algorithm {algorithm!r}") from None


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- auth-param scanning (RFC 7235 §2.1) ------------------------------------------------------


def _skip(text: str, index: int, chars: str) -> int:
    while index < len(text) and text[index] in chars:
        index += 1
    return index


def _read_quoted(text: str, index: int) -> tuple[str, int]:
    """Unescaped content of the quoted string at ``index`` and the index after it."""
    out: list[str] = []
    index += 1
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            out.append(text[index + 1])
            index += 2
            continue
        if char == '"':
            return "".join(out), index + 1
        out.append(char)
        index += 1
    raise RemoteProtocolError("unterminated quoted string in authentication header")


def _scan(text: str) -> list[tuple[str, dict[str, tuple[str, bool]]]]:
    """Split a header value into ``(scheme, {name: (value, quoted)})`` challenges."""
    result: list[tuple[str, dict[str, tuple[str, bool]]]] = []
    params: dict[str, tuple[str, bool]] | None = None
    index = 0
    while True:
        index = _skip(text, index, _WS + ",")
        if index >= len(text):
            break
        match = _TOKEN_RE.match(text, index)
        if match is None:
            raise RemoteProtocolError(f"invalid authentication header near {text[index:][:20]!r}")
        word = match.group()
        after = _skip(text, match.end(), _WS)
        if params is not None and after < len(text) and text[after] == "=":
            index = _skip(text, after + 1, _WS)
            if index < len(text) and text[index] == '"':
                value, index = _read_quoted(text, index)
                quoted = True
            else:
                bare = _BARE_VALUE_RE.match(text, index)
                if bare is None:
                    raise RemoteProtocolError(f"auth-param {word!r} has no value")
                value, index, quoted = bare.group(), bare.end(), False
            name = word.lower()
            if name in params:
                raise RemoteProtocolError(f"auth-param {name!r} given twice")
            params[name] = (value, quoted)
            index = _skip(text, index, _WS)
            if index < len(text) and text[index] != ",":
                raise RemoteProtocolError(f"expected ',' after auth-param {name!r}")
        else:
            params = {}
            result.append((word, params))
            index = after
    return result


def _flag(value: str | None) -> bool:
    return value is not None and value.strip().lower() == "true"


# -- wire types -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Challenge:
    """One Digest challenge of a ``WWW-Authenticate`` or ``Proxy-Authenticate`` header."""

    realm: str
    """Protection space the credentials are for."""
    nonce: str
    """Server nonce to hash into the response."""
    algorithm: str = "MD5"
    """Canonical algorithm name (``MD5``, ``SHA-256``, ``SHA-256-sess`` …); MD5 if absent."""
    qop: tuple[str, ...] = ()
    """Offered qop options, lower-case (``auth``, ``auth-int``); empty for RFC 2069 style."""
    opaque: str | None = None
    """Opaque value to echo back unchanged."""
    stale: bool = False
    """The previous nonce expired but the credentials were right: retry with this nonce."""
    domain: str | None = None
    """Space-separated URIs of the protection space, if given."""
    charset: str | None = None
    """``UTF-8`` when the server asks usernames and passwords to be UTF-8."""
    userhash: bool = False
    """The server accepts a hashed username (RFC 7616 §3.4.4)."""
    algorithm_given: bool = True
    """False when the header had no ``algorithm`` (so none is echoed back)."""

    @classmethod
    def parse(cls, text: str) -> Challenge:
        """Parse one ``Digest ...`` value (the first Digest challenge when there are several)."""
        challenges = parse_challenges([text])
        if not challenges:
            raise RemoteProtocolError("no Digest challenge")
        return challenges[0]

    @classmethod
    def _from_params(cls, params: dict[str, tuple[str, bool]]) -> Challenge:
        values = {name: value for name, (value, _) in params.items()}
        realm = values.get("realm")
        nonce = values.get("nonce")
        if realm is None or nonce is None:
            raise RemoteProtocolError("Digest challenge without realm or nonce")
        qop_text = values.get("qop")
        qop = tuple(
            option.strip().lower() for option in (qop_text or "").split(",") if option.strip()
        )
        return cls(
            realm=realm,
            nonce=nonce,
            algorithm=_canonical_algorithm(values.get("algorithm")),
            qop=qop,
            opaque=values.get("opaque"),
            stale=_flag(values.get("stale")),
            domain=values.get("domain"),
            charset=values.get("charset"),
            userhash=_flag(values.get("userhash")),
            algorithm_given="algorithm" in values,
        )

    @property
    def supported(self) -> bool:
        """True when :func:`answer_challenge` can answer it."""
        base = self.algorithm.upper().removesuffix("-SESS")
        if base not in _HASHES:
            return False
        sess = self.algorithm.upper().endswith("-SESS")
        if self.qop and not {"auth", "auth-int"} & set(self.qop):
            return False
        return not (sess and not self.qop)  # -sess needs a cnonce, so a qop

    def serialize(self) -> str:
        parts = [f"realm={_quote(self.realm)}", f"nonce={_quote(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.domain is not None:
            parts.append(f"domain={_quote(self.domain)}")
        if self.algorithm_given:
            parts.append(f"algorithm={self.algorithm}")
        if self.qop:
            parts.append(f"qop={_quote(','.join(self.qop))}")
        if self.stale:
            parts.append("stale=true")
        if self.charset is not None:
            parts.append(f"charset={self.charset}")
        if self.userhash:
            parts.append("userhash=true")
        return "Digest " + ", ".join(parts)

    def __str__(self) -> str:
        return self.serialize()


def parse_challenges(lines: Iterable[str]) -> list[Challenge]:
    """Every Digest challenge in the given header lines, in order; other schemes skipped.

    A malformed line is skipped when another line holds a challenge (a registrar's Basic
    challenge must not spoil its Digest one); with none left, its error is raised.
    """
    challenges: list[Challenge] = []
    error: RemoteProtocolError | None = None
    for line in lines:
        try:
            for scheme, params in _scan(line):
                if scheme.lower() == "digest":
                    challenges.append(Challenge._from_params(params))
        except RemoteProtocolError as exc:
            error = error or exc
    if not challenges and error is not None:
        raise error
    return challenges


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """Digest credentials of an ``Authorization`` or ``Proxy-Authorization`` header."""

    username: str
    """User name (or its hash when ``userhash``)."""
    realm: str
    """Realm of the challenge answered."""
    nonce: str
    """Nonce of the challenge answered."""
    uri: str
    """digest-uri: the Request-URI of the request."""
    response: str
    """The hex digest proving knowledge of the password."""
    algorithm: str | None = None
    """Canonical algorithm name, or None when absent (MD5)."""
    cnonce: str | None = None
    """Client nonce (with a qop)."""
    opaque: str | None = None
    """The challenge's opaque value, echoed."""
    qop: str | None = None
    """Chosen qop (``auth`` or ``auth-int``), or None for RFC 2069 style."""
    nc: int | None = None
    """Nonce count (with a qop): how many requests used this nonce, from 1."""
    userhash: bool = False
    """``username`` is H(username:realm)."""

    @classmethod
    def parse(cls, text: str) -> Credentials:
        items = _scan(text)
        if len(items) != 1 or items[0][0].lower() != "digest":
            raise RemoteProtocolError("credentials are not one Digest value")
        values = {name: value for name, (value, _) in items[0][1].items()}
        missing = [n for n in ("username", "realm", "nonce", "uri", "response") if n not in values]
        if missing:
            raise RemoteProtocolError(f"Digest credentials without {', '.join(missing)}")
        nc_text = values.get("nc")
        nc: int | None = None
        if nc_text is not None:
            if not _NC_RE.fullmatch(nc_text):
                raise RemoteProtocolError(f"invalid nonce-count {nc_text!r}")
            nc = int(nc_text, 16)
        qop = values.get("qop")
        algorithm = values.get("algorithm")
        return cls(
            username=values["username"],
            realm=values["realm"],
            nonce=values["nonce"],
            uri=values["uri"],
            response=values["response"],
            algorithm=_canonical_algorithm(algorithm) if algorithm is not None else None,
            cnonce=values.get("cnonce"),
            opaque=values.get("opaque"),
            qop=qop.lower() if qop is not None else None,
            nc=nc,
            userhash=_flag(values.get("userhash")),
        )

    def serialize(self) -> str:
        # nonce before cnonce and uri before response: naive parsers search "nonce=" first.
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(self.realm)}",
            f"nonce={_quote(self.nonce)}",
            f"uri={_quote(self.uri)}",
            f"response={_quote(self.response)}",
        ]
        if self.algorithm is not None:
            parts.append(f"algorithm={self.algorithm}")
        if self.cnonce is not None:
            parts.append(f"cnonce={_quote(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.qop is not None:
            parts.append(f"qop={self.qop}")
        if self.nc is not None:
            parts.append(f"nc={self.nc:08x}")
        if self.userhash:
            parts.append("userhash=true")
        return "Digest " + ", ".join(parts)

    def __str__(self) -> str:
        return self.serialize()


def parse_credentials(lines: Iterable[str]) -> list[Credentials]:
    """Every Digest credential in the given header lines (others skipped, errors raised)."""
    found: list[Credentials] = []
    for line in lines:
        items = _scan(line)
        if items and items[0][0].lower() == "digest":
            found.append(Credentials.parse(line))
    return found


# -- computation (RFC 7616 §3.4) --------------------------------------------------------------


def hash_username(algorithm: str, username: str, realm: str) -> str:
    """H(username:realm), the ``userhash`` form of a username (RFC 7616 §3.4.4)."""
    return _base_hash(algorithm)(f"{username}:{realm}".encode())


def compute_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    cnonce: str | None = None,
    nc: int | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` value: KD(H(A1), nonce:nc:cnonce:qop:H(A2)), or the RFC 2069 form."""
    h = _base_hash(algorithm)
    ha1 = h(f"{username}:{realm}:{password}".encode())
    if algorithm.upper().endswith("-SESS"):
        if cnonce is None:
            raise RemoteProtocolError(f"{algorithm} needs a cnonce")
        ha1 = h(f"{ha1}:{nonce}:{cnonce}".encode())
    a2 = f"{method}:{uri}"
    if qop == "auth-int":
        a2 += ":" + h(body)
    ha2 = h(a2.encode())
    if qop is None:
        return h(f"{ha1}:{nonce}:{ha2}".encode())
    if cnonce is None or nc is None:
        raise RemoteProtocolError("qop needs a cnonce and a nonce-count")
    return h(f"{ha1}:{nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}".encode())


def choose_challenge(challenges: Sequence[Challenge]) -> Challenge | None:
    """The challenge to answer: the strongest supported algorithm, first offered on a tie."""
    best: Challenge | None = None
    best_strength = 0
    for challenge in challenges:
        if not challenge.supported:
            continue
        strength = _STRENGTH.get(challenge.algorithm.upper().removesuffix("-SESS"), 0)
        if strength > best_strength:
            best, best_strength = challenge, strength
    return best


def answer_challenge(
    challenge: Challenge,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str,
    nc: int,
    *,
    body: bytes = b"",
) -> Credentials:
    """Credentials answering ``challenge`` for a ``method`` request to ``uri``.

    qop ``auth`` is preferred to ``auth-int`` (which hashes ``body``); a challenge without
    qop gets an RFC 2069 answer (no cnonce, no nc). Raises :class:`RemoteProtocolError`
    when the challenge cannot be answered (unknown algorithm, only unknown qops).
    """
    if not challenge.supported:
        raise RemoteProtocolError(
            f"cannot answer a {challenge.algorithm} challenge with qop {challenge.qop}"
        )
    if not 0 < nc < 2**32:
        raise ValueError("nonce-count out of range")
    qop: str | None = None
    if challenge.qop:
        qop = "auth" if "auth" in challenge.qop else "auth-int"
    response = compute_response(
        algorithm=challenge.algorithm,
        username=username,
        realm=challenge.realm,
        password=password,
        method=method,
        uri=uri,
        nonce=challenge.nonce,
        qop=qop,
        cnonce=cnonce if qop else None,
        nc=nc if qop else None,
        body=body,
    )
    return Credentials(
        username=(
            hash_username(challenge.algorithm, username, challenge.realm)
            if challenge.userhash
            else username
        ),
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response,
        algorithm=challenge.algorithm if challenge.algorithm_given else None,
        cnonce=cnonce if qop else None,
        opaque=challenge.opaque,
        qop=qop,
        nc=nc if qop else None,
        userhash=challenge.userhash,
    )
