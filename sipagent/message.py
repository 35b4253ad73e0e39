"""SIP messages: model, parser and serializer (RFC 3261 §7, §20, §25).

Parsing happens in two steps, so that a request we can frame but do not accept still gets
an answer:

* :func:`parse_message` frames the bytes (start line, unfolded header lines, body by
  Content-Length) and raises :class:`MessageParseError` only when there is nothing to
  answer — such datagrams are dropped and counted.
* :func:`validate_request` checks what a UAS needs (mandatory headers, CSeq, Via, From/To,
  Request-URI, version) and raises :class:`RemoteProtocolError` carrying the status (400,
  505, 416 …) to answer with.

Header values stay strings; the typed views (:class:`Via`, :class:`NameAddress`,
:class:`SipUri`, :class:`CSeq`) are parsed on demand.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .exceptions import MessageParseError, RemoteProtocolError

__all__ = [
    "MAX_MESSAGE_SIZE",
    "CSeq",
    "Headers",
    "NameAddress",
    "Request",
    "Response",
    "SipUri",
    "StreamFramer",
    "Via",
    "canonical_name",
    "make_response",
    "parse_message",
    "parse_params",
    "split_header_values",
    "validate_request",
]

#: Largest message we accept (UDP datagrams are smaller; TCP framing enforces it).
MAX_MESSAGE_SIZE = 65_535
#: Largest header section on a stream before the peer is cut off.
MAX_HEADER_SIZE = 16_384

_COMPACT = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

_SPECIAL_CASE = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "p-asserted-identity": "P-Asserted-Identity",
    "p-preferred-identity": "P-Preferred-Identity",
    "rack": "RAck",
    "rseq": "RSeq",
}

#: Headers whose comma-separated values are separate entries (RFC 3261 §7.3.1).
_MULTI_VALUE = frozenset(
    {
        "via",
        "contact",
        "route",
        "record-route",
        "allow",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "content-encoding",
        "allow-events",
    }
)

#: Headers that must appear exactly once (RFC 3261 §20; RFC 4475 §3.3.8).
_SINGLE_VALUE = ("call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type")

_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_VERSION_RE = re.compile(r"^SIP/([0-9]+)\.([0-9]+)$", re.IGNORECASE)
# ASCII digits only: str.isdigit() accepts '²', which int() then refuses.
_DIGITS_RE = re.compile(r"[0-9]+")
_FOLD_RE = re.compile(rb"\r?\n[ \t]+")
_WS_RE = re.compile(r"[ \t]+")

_MAGIC_COOKIE = "z9hG4bK"


def canonical_name(name: str) -> str:
    """Return the usual spelling of a header name, expanding compact forms."""
    key = name.strip().lower()
    key = _COMPACT.get(key, key)
    special = _SPECIAL_CASE.get(key)
    if special is not None:
        return special
    return "-".join(part.capitalize() for part in key.split("-"))


def _is_digits(text: str) -> bool:
    return _DIGITS_RE.fullmatch(text) is not None


def _key(name: str) -> str:
    key = name.strip().lower()
    return _COMPACT.get(key, key)


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


class Headers:
    """Ordered, case-insensitive SIP headers that know compact names and multi-values."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(canonical_name(n), v) for n, v in items]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(_key(n) == _key(name) for n, _ in self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of ``name`` (the whole line for multi-value headers)."""
        key = _key(name)
        for item_name, value in self._items:
            if _key(item_name) == key:
                return value
        return default

    def lines(self, name: str) -> list[str]:
        """Every header line of ``name``, unsplit."""
        key = _key(name)
        return [value for item_name, value in self._items if _key(item_name) == key]

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, comma-separated lines split for multi-value headers."""
        values: list[str] = []
        multi = _key(name) in _MULTI_VALUE
        for line in self.lines(name):
            if multi:
                values.extend(v for v in split_header_values(line) if v)
            else:
                values.append(line)
        return values

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every line of ``name`` by one, at the place of the first."""
        key = _key(name)
        for index, (item_name, _) in enumerate(self._items):
            if _key(item_name) == key:
                self._items[index] = (canonical_name(name), value)
                self._items = [
                    item
                    for i, item in enumerate(self._items)
                    if i <= index or _key(item[0]) != key
                ]
                return
        self.add(name, value)

    def remove(self, name: str) -> None:
        key = _key(name)
        self._items = [item for item in self._items if _key(item[0]) != key]

    def copy(self) -> Headers:
        new = Headers()
        new._items = list(self._items)
        return new


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


class _Message:
    __slots__ = ("body", "headers", "version")

    def __init__(self, headers: Headers | None, body: bytes, version: str) -> None:
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self.version = version

    # Typed views over the header strings.
    @property
    def call_id(self) -> str:
        return (self.headers.get("Call-ID") or "").strip()

    @property
    def cseq(self) -> CSeq:
        return CSeq.parse(self.headers.get("CSeq") or "")

    @property
    def from_(self) -> NameAddress:
        return NameAddress.parse(self.headers.get("From") or "")

    @property
    def to(self) -> NameAddress:
        return NameAddress.parse(self.headers.get("To") or "")

    @property
    def vias(self) -> list[Via]:
        return [Via.parse(v) for v in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via:
        values = self.headers.get_all("Via")
        if not values:
            raise RemoteProtocolError("missing Via")
        return Via.parse(values[0])

    @property
    def content_type(self) -> str:
        value = self.headers.get("Content-Type") or ""
        return value.split(";", 1)[0].strip().lower()

    def _serialize(self, start_line: str) -> bytes:
        lines = [start_line]
        lines.extend(f"{n}: {v}" for n, v in self.headers if n != "Content-Length")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body

    def __bytes__(self) -> bytes:
        return self.serialize()

    def serialize(self) -> bytes:
        raise NotImplementedError


class Request(_Message):
    """A SIP request."""

    __slots__ = ("method", "uri")

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers, body, version)
        self.method = method
        self.uri = uri

    def serialize(self) -> bytes:
        return self._serialize(f"{self.method} {self.uri} {self.version}")

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} Call-ID={self.call_id!r}>"


class Response(_Message):
    """A SIP response."""

    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers, body, version)
        self.status = status
        self.reason = reason

    def serialize(self) -> bytes:
        return self._serialize(f"{self.version} {self.status} {self.reason}")

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} Call-ID={self.call_id!r}>"


REASONS = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "Version Not Supported",
    603: "Decline",
}


def _split_head(data: bytes) -> tuple[bytes, bytes, bool]:
    """Split at the first empty line; the flag says whether one was found."""
    found = [(index, sep) for sep in (b"\r\n\r\n", b"\n\n") if (index := data.find(sep)) >= 0]
    if not found:
        return data.rstrip(b"\r\n"), b"", False
    index, sep = min(found)
    return data[:index], data[index + len(sep) :], True


def _parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    unfolded = _FOLD_RE.sub(b" ", head)
    try:
        text = unfolded.decode("utf-8")
    except UnicodeDecodeError:
        text = unfolded.decode("latin-1")
    lines = re.split(r"\r?\n", text)
    start_line = lines[0]
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not name or not _TOKEN_RE.match(name):
            raise RemoteProtocolError(f"malformed header line {line[:40]!r}")
        headers.append((name, _WS_RE.sub(" ", value).strip()))
    return start_line, headers


def parse_message(data: bytes, *, stream: bool = False) -> Request | Response:
    """Frame one message from a datagram (or a complete stream message).

    Raises :class:`MessageParseError` for data that cannot be answered, and
    :class:`RemoteProtocolError` (with ``.partial`` set on the exception) when the
    message could be framed but its framing headers are wrong, so a 400 can be sent.
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise MessageParseError("message too large", 513)
    # CRLFs before the start line are keep-alives or padding (§7.5): skip them.
    head, rest, complete = _split_head(data.lstrip(b"\r\n"))
    try:
        start_line, header_items = _parse_head(head)
    except RemoteProtocolError as exc:
        raise MessageParseError(exc.reason) from exc
    headers = Headers(header_items)
    message = _parse_start_line(start_line, headers)
    # From here on the message is framed well enough to be answered.
    lengths = headers.get_all("Content-Length")
    if len(lengths) > 1:
        raise _answerable(message, "multiple Content-Length values")
    if not complete:
        raise _answerable(message, "no empty line after the headers")
    if lengths:
        value = lengths[0].strip()
        if not _is_digits(value):
            raise _answerable(message, f"invalid Content-Length {value!r}")
        length = int(value)
        if length > len(rest):
            raise _answerable(message, "Content-Length larger than the message")
        # RFC 3261 §18.3: octets beyond Content-Length in a datagram are discarded.
        message.body = rest[:length]
    elif stream:
        raise _answerable(message, "Content-Length is mandatory on stream transports")
    else:
        message.body = rest
    return message


class FramedError(RemoteProtocolError):
    """A framing error on a message whose start line and headers could be read."""

    def __init__(self, reason: str, message: Request | Response) -> None:
        super().__init__(reason, 400)
        self.message = message


def _answerable(message: Request | Response, reason: str) -> FramedError:
    return FramedError(reason, message)


def _parse_start_line(line: str, headers: Headers) -> Request | Response:
    if line.upper().startswith("SIP/"):
        parts = line.split(" ", 2)
        if len(parts) < 2 or not re.fullmatch(r"[1-6][0-9][0-9]", parts[1]):
            raise MessageParseError(f"invalid status line {line[:40]!r}")
        if not _VERSION_RE.match(parts[0]):
            raise MessageParseError(f"invalid version in {line[:40]!r}")
        return Response(int(parts[1]), parts[2] if len(parts) > 2 else "", headers, b"", parts[0])
    line = line.rstrip(" \t")  # trailing SP after the version: be liberal (RFC 4475 §3.1.2.10)
    method, sep, rest = line.partition(" ")
    if not sep or not method:
        raise MessageParseError(f"invalid request line {line[:40]!r}")
    uri, _, version = rest.rpartition(" ")
    if not _VERSION_RE.match(version.strip()):
        raise MessageParseError(f"invalid request line {line[:40]!r}")
    return Request(method, uri, headers, b"", version)


def validate_request(request: Request) -> None:
    """Check what a UAS needs of a request; raise the status to answer with."""
    version = _VERSION_RE.match(request.version)
    if not version or (version.group(1), version.group(2)) != ("2", "0"):
        raise RemoteProtocolError(f"version {request.version} not supported", 505)
    if not _TOKEN_RE.match(request.method):
        raise RemoteProtocolError(f"invalid method {request.method!r}")
    if request.uri != request.uri.strip() or " " in request.uri or "\t" in request.uri:
        raise RemoteProtocolError("whitespace in Request-URI")
    if request.uri.startswith("<"):
        raise RemoteProtocolError("Request-URI enclosed in <>")
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if name not in request.headers:
            raise RemoteProtocolError(f"missing {name} header")
    for name in _SINGLE_VALUE:
        lines = request.headers.lines(name)
        splittable = name not in ("call-id", "cseq")
        if len(lines) > 1 or any(splittable and len(split_header_values(v)) > 1 for v in lines):
            raise RemoteProtocolError(f"more than one {canonical_name(name)} value")
    cseq = request.cseq
    if cseq.method != request.method:
        raise RemoteProtocolError("CSeq method does not match the request method")
    if not request.call_id or any(c in request.call_id for c in " \t,"):
        raise RemoteProtocolError("invalid Call-ID")
    for value in request.headers.get_all("Via"):
        via = Via.parse(value)
        if via.branch is not None and via.branch == _MAGIC_COOKIE:
            raise RemoteProtocolError("Via branch has no transaction identifier")
    request.from_  # noqa: B018  (parses, raising on errors)
    request.to  # noqa: B018
    for value in request.headers.get_all("Contact"):
        NameAddress.parse(value)
    max_forwards = request.headers.get("Max-Forwards")
    if max_forwards is not None and not _is_digits(max_forwards.strip()):
        raise RemoteProtocolError("invalid Max-Forwards")
    uri = SipUri.parse(request.uri)
    if not uri.is_sip and uri.scheme != "tel":
        raise RemoteProtocolError(f"URI scheme {uri.scheme!r} not supported", 416)


def _has_tag(value: str) -> bool:
    try:
        return NameAddress.parse(value).tag is not None
    except RemoteProtocolError:  # answering a malformed request: best effort
        return ";tag=" in value.replace(" ", "")


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> Response:
    """Build a response to ``request`` copying Via, From, To, Call-ID and CSeq (§8.2.6)."""
    out = Headers()
    for value in request.headers.lines("Via"):
        out.add("Via", value)
    for name in ("From", "To", "Call-ID", "CSeq"):
        copied = request.headers.get(name)
        if copied is not None:
            if name == "To" and to_tag is not None and not _has_tag(copied):
                copied = f"{copied};tag={to_tag}"
            out.add(name, copied)
    for name, value in headers:
        out.add(name, value)
    if body and content_type:
        out.add("Content-Type", content_type)
    return Response(status, reason or REASONS.get(status, "Unknown"), out, body)


class StreamFramer:
    """Cut a TCP/TLS byte stream into messages (RFC 3261 §18.3).

    ``feed(data)`` returns the complete messages' bytes; keep-alive CRLFs between
    messages are skipped. A header section over :data:`MAX_HEADER_SIZE` or a message
    without a usable Content-Length raises :class:`MessageParseError`: the connection
    must be closed, as the stream cannot be re-synchronised.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        messages: list[bytes] = []
        while True:
            stripped = self._buffer.lstrip(b"\r\n")
            self._buffer = stripped
            if not stripped:
                return messages
            end = stripped.find(b"\r\n\r\n")
            if end < 0:
                if len(stripped) > MAX_HEADER_SIZE:
                    raise MessageParseError("header section too large")
                return messages
            if end > MAX_HEADER_SIZE:
                raise MessageParseError("header section too large")
            head = stripped[:end]
            length = _stream_content_length(head)
            total = end + 4 + length
            if total > MAX_MESSAGE_SIZE:
                raise MessageParseError("message too large", 513)
            if len(stripped) < total:
                return messages
            messages.append(stripped[:total])
            self._buffer = stripped[total:]


def _stream_content_length(head: bytes) -> int:
    found: list[int] = []
    for line in _FOLD_RE.sub(b" ", head).split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() in (b"content-length", b"l"):
            text = value.strip()
            if not text.isdigit():
                raise MessageParseError("invalid Content-Length on stream")
            found.append(int(text))
    if len(found) != 1:
        raise MessageParseError("stream message needs exactly one Content-Length")
    return found[0]
