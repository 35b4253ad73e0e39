"""Typed SIP header values: URIs, name-addrs, Via, CSeq and header parameters (RFC 3261 §20, §25).

:class:`~sipagent.message.Headers` keeps header values as strings; these are the views a
value is parsed into on demand. Each type has ``parse(text)``, raising
:class:`RemoteProtocolError` (400) on a value we cannot accept, and ``__str__`` to write
it back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .exceptions import RemoteProtocolError

__all__ = [
    "CSeq",
    "NameAddress",
    "SipUri",
    "Via",
    "parse_params",
    "split_header_values",
]

_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
# ASCII digits only: str.isdigit() accepts '²', which int() then refuses.
_DIGITS_RE = re.compile(r"[0-9]+")


def _is_digits(text: str) -> bool:
    return _DIGITS_RE.fullmatch(text) is not None


def split_header_values(value: str) -> list[str]:
    """Split a header value at commas that are outside quotes and angle brackets."""
    parts: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    start = 0
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "<":
            depth += 1
        elif char == ">":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            parts.append(value[start:index].strip())
            start = index + 1
    if quoted:
        raise RemoteProtocolError("unterminated quoted string")
    parts.append(value[start:].strip())
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1], flags=re.DOTALL)
    return value


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ``;name=value;flag`` parameters (LWS tolerated around ``;`` and ``=``)."""
    params: dict[str, str | None] = {}
    for raw in _split_outside_quotes(text, ";"):
        item = raw.strip()
        if not item:
            continue
        if "=" in item:
            name, _, value = item.partition("=")
            name = name.strip().lower()
            value = value.strip()
            if not name or not _TOKEN_RE.match(name):
                raise RemoteProtocolError(f"invalid parameter {item!r}")
            params[name] = _unquote(value)
        else:
            if not _TOKEN_RE.match(item):
                raise RemoteProtocolError(f"invalid parameter {item!r}")
            params[item.lower()] = None
    return params


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    quoted = False
    escaped = False
    start = 0
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == sep and not quoted:
            parts.append(text[start:index])
            start = index + 1
    if quoted:
        raise RemoteProtocolError("unterminated quoted string")
    parts.append(text[start:])
    return parts


def _closing_quote(text: str) -> int:
    """Index of the quote closing the quoted string that starts ``text``."""
    escaped = False
    for index in range(1, len(text)):
        char = text[index]
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return index
    raise RemoteProtocolError("unterminated quoted string")


def _format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


@dataclass(slots=True)
class SipUri:
    """A ``sip:``/``sips:`` URI, or any other absolute URI kept opaque (``tel:`` …)."""

    scheme: str
    """Lower-case scheme: ``sip``, ``sips``, ``tel`` or anything else."""
    user: str | None = None
    """User part, still %-escaped (never unescape-then-reparse: RFC 4475 §3.1.1.3)."""
    host: str = ""
    """Host name or address (IPv6 without brackets)."""
    port: int | None = None
    """Port, or None for the scheme default."""
    params: dict[str, str | None] = field(default_factory=dict)
    """URI parameters (``transport``, ``lr`` …), names lower-case."""
    headers: str | None = None
    """Escaped ``?headers`` part, kept verbatim and never applied."""
    opaque: str | None = None
    """Everything after the scheme for non-SIP URIs."""
    password: str | None = None
    """Password part of userinfo, if any."""

    @classmethod
    def parse(cls, text: str) -> SipUri:
        text = text.strip()
        scheme, sep, rest = text.partition(":")
        if not sep or not scheme or not re.match(r"^[A-Za-z][A-Za-z0-9+\-.]*$", scheme):
            raise RemoteProtocolError(f"invalid URI {text!r}")
        if any(c in text for c in " \t<>\""):
            raise RemoteProtocolError(f"invalid characters in URI {text!r}")
        scheme = scheme.lower()
        if scheme not in ("sip", "sips"):
            return cls(scheme=scheme, opaque=rest)
        user: str | None = None
        password: str | None = None
        if "@" in rest:
            # '@' cannot appear unescaped in userinfo or headers, while '?' and ';'
            # can appear in the user part (RFC 3261 §25.1; RFC 4475 §3.1.1.2).
            userinfo, _, rest = rest.partition("@")
            user, _, pw = userinfo.partition(":")
            password = pw or None
            if not user:
                raise RemoteProtocolError(f"empty user in URI {text!r}")
        rest, _, headers = rest.partition("?")
        hostport, _, param_text = rest.partition(";")
        host, port = _parse_hostport(hostport)
        params = parse_params(param_text) if param_text else {}
        return cls(
            scheme=scheme,
            user=user,
            password=password,
            host=host,
            port=port,
            params=params,
            headers=headers or None,
        )

    @property
    def is_sip(self) -> bool:
        return self.scheme in ("sip", "sips")

    @property
    def transport(self) -> str:
        value = self.params.get("transport")
        if value:
            return value.lower()
        return "tls" if self.scheme == "sips" else "udp"

    def __str__(self) -> str:
        if not self.is_sip:
            return f"{self.scheme}:{self.opaque or ''}"
        userinfo = ""
        if self.user is not None:
            userinfo = self.user + (f":{self.password}" if self.password else "") + "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        headers = f"?{self.headers}" if self.headers else ""
        return f"{self.scheme}:{userinfo}{host}{port}{_format_params(self.params)}{headers}"


def _parse_hostport(text: str) -> tuple[str, int | None]:
    text = text.strip()
    port_text = ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise RemoteProtocolError(f"invalid IPv6 reference {text!r}")
        if rest:
            if not rest.startswith(":"):
                raise RemoteProtocolError(f"invalid host {text!r}")
            port_text = rest[1:]
    else:
        host, _, port_text = text.partition(":")
    if not host or not re.match(r"^[A-Za-z0-9\-.:_]+$", host):
        raise RemoteProtocolError(f"invalid host {text!r}")
    port: int | None = None
    if port_text:
        if not _is_digits(port_text) or not 0 < int(port_text) < 65536:
            raise RemoteProtocolError(f"invalid port {text!r}")
        port = int(port_text)
    return host, port


@dataclass(slots=True)
class NameAddress:
    """A From/To/Contact/Route value: optional display name, URI and header parameters."""

    uri: SipUri
    """The address."""
    display_name: str | None = None
    """Display name, unquoted."""
    params: dict[str, str | None] = field(default_factory=dict)
    """Header parameters (``tag``, ``expires`` …), names lower-case."""
    wildcard: bool = False
    """``Contact: *``."""

    @classmethod
    def parse(cls, text: str) -> NameAddress:
        text = text.strip()
        if text == "*":
            return cls(uri=SipUri(scheme="*"), wildcard=True)
        display: str | None = None
        if text.startswith('"'):
            # A quoted display name may hold '<', '>' and escaped quotes: scan it first.
            end = _closing_quote(text)
            display = _unquote(text[: end + 1])
            text = text[end + 1 :].lstrip()
            if not text.startswith("<"):
                raise RemoteProtocolError("quoted display name without <URI>")
        if "<" in text:
            before, _, after = text.partition("<")
            uri_text, sep, rest = after.partition(">")
            if not sep:
                raise RemoteProtocolError("unterminated <URI>")
            before = before.strip()
            if before:
                if not all(_TOKEN_RE.match(word) for word in before.split()):
                    raise RemoteProtocolError(f"invalid display name {before!r}")
                display = " ".join(before.split())
            uri = SipUri.parse(uri_text)
            rest = rest.strip()
            if rest and not rest.startswith(";"):
                raise RemoteProtocolError(f"unexpected text after URI: {rest!r}")
            params = parse_params(rest) if rest else {}
        else:
            # addr-spec form: parameters after the URI belong to the header (§20.10).
            uri_text, _, param_text = text.partition(";")
            uri = SipUri.parse(uri_text)
            if uri.headers is not None:
                raise RemoteProtocolError("URI with headers must be enclosed in <>")
            params = parse_params(param_text) if param_text else {}
        return cls(uri=uri, display_name=display, params=params)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        if self.wildcard:
            return "*"
        display = ""
        if self.display_name:
            escaped = self.display_name.replace("\\", "\\\\").replace('"', '\\"')
            display = f'"{escaped}" '
        return f"{display}<{self.uri}>{_format_params(self.params)}"


@dataclass(slots=True)
class Via:
    """One Via entry: ``SIP/2.0/UDP host:port;branch=…;rport``."""

    transport: str
    """Upper-case transport (UDP, TCP, TLS, SCTP, WS …)."""
    host: str
    """sent-by host."""
    port: int | None
    """sent-by port, or None."""
    params: dict[str, str | None] = field(default_factory=dict)
    """Via parameters (``branch``, ``rport``, ``received`` …)."""

    @classmethod
    def parse(cls, text: str) -> Via:
        # LWS is allowed around the slashes: "SIP  /   2.0 /UDP host" (RFC 4475 §3.1.1.1).
        match = re.match(r"^\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+(.*)$", text, re.S)
        if not match:
            raise RemoteProtocolError(f"invalid Via {text!r}")
        transport, rest = match.group(1).upper(), match.group(2)
        sent_by, _, param_text = rest.partition(";")
        host, port = _parse_hostport(sent_by)
        params = parse_params(param_text) if param_text else {}
        return cls(transport=transport, host=host, port=port, params=params)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {host}{port}{_format_params(self.params)}"


@dataclass(frozen=True, slots=True)
class CSeq:
    """The CSeq header: sequence number and method."""

    seq: int
    """Sequence number, 0 ≤ seq < 2**31."""
    method: str
    """Method, upper-case as sent."""

    @classmethod
    def parse(cls, text: str) -> CSeq:
        parts = text.split()
        if len(parts) != 2 or not _is_digits(parts[0]):
            raise RemoteProtocolError(f"invalid CSeq {text!r}")
        seq = int(parts[0])
        if seq >= 2**31:
            raise RemoteProtocolError("CSeq number out of range")
        if not _TOKEN_RE.match(parts[1]):
            raise RemoteProtocolError(f"invalid CSeq method {parts[1]!r}")
        return cls(seq=seq, method=parts[1])

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"
