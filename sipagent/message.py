"""SIP messages: model, parser and serializer (RFC 3261 §7, §20, §25).

Parsing happens in two steps, so that a request we can frame but do not accept still gets
an answer:

* :func:`parse_message` frames the bytes (start line, unfolded header lines, body by
  Content-Length) and raises :class:`MessageParseError` only when there is nothing to
  answer — such datagrams are dropped and counted.
* :func:`validate_request` checks what a UAS needs (mandatory headers, CSeq, Via, From/To,
  Request-URI, version) and raises :class:`RemoteProtocolError` carrying the status (400,
  505, 416 …) to answer with.

Header values stay strings; the typed views (:class:`~sipagent.headers.Via`,
:class:`~sipagent.headers.NameAddress`, :class:`~sipagent.headers.SipUri`,
:class:`~sipagent.headers.CSeq`) live in :mod:`sipagent.headers` and are parsed on demand.
Stream transports cut their bytes into messages with :mod:`sipagent.framing` first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from .exceptions import MessageParseError, RemoteProtocolError
from .headers import (
    _TOKEN_RE,  # one token/DIGIT grammar for names, methods and values
    CSeq,
    NameAddress,
    SipUri,
    Via,
    _is_digits,
    split_header_values,
)

__all__ = [
    "MAX_MESSAGE_SIZE",
    "REASONS",
    "FramedError",
    "Headers",
    "Request",
    "Response",
    "canonical_name",
    "make_response",
    "parse_message",
    "validate_request",
]

#: Largest message we accept (UDP datagrams are smaller; TCP framing enforces it).
MAX_MESSAGE_SIZE = 65_535

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

_VERSION_RE = re.compile(r"^SIP/([0-9]+)\.([0-9]+)$", re.IGNORECASE)
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


def _key(name: str) -> str:
    key = name.strip().lower()
    return _COMPACT.get(key, key)


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
