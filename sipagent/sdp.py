"""SDP (RFC 8866) wire types: a session description and its parts, parsed and serialized.

Sans-I/O: no sockets, no clock, no randomness.

A :class:`SessionDescription` keeps every ``a=`` line verbatim and in order, so parsing and
serializing an RFC-conformant description gives the same bytes back (CRLF line endings).
The structured views the negotiation needs (``rtpmap``, ``fmtp``, ``ptime``, direction,
``rtcp``, ``rtcp-mux``, ``crypto``) are read-only properties computed from those lines; an
attribute whose value we cannot understand is kept but ignored by the views.

Errors are the peer's fault: :class:`SdpError` (400) for a description that is not valid
SDP. The RFC 3264 offer/answer over these types, and its :class:`NegotiationError` (488)
for a valid description we cannot accept, are in :mod:`sipagent.offer_answer`.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from sipagent.exceptions import RemoteProtocolError

__all__ = [
    "PCMA",
    "PCMU",
    "TELEPHONE_EVENT",
    "Attribute",
    "Codec",
    "Connection",
    "Direction",
    "MediaDescription",
    "Origin",
    "RtcpAttribute",
    "RtpMap",
    "SdpError",
    "SessionDescription",
    "Timing",
]


class SdpError(RemoteProtocolError):
    """The peer's SDP is not a valid session description (answer 400)."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason, status)



class Direction(enum.StrEnum):
    """Media direction attribute (RFC 8866 section 6.7), seen from the side that wrote it."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def from_flags(cls, *, send: bool, recv: bool) -> Direction:
        if send:
            return cls.SENDRECV if recv else cls.SENDONLY
        return cls.RECVONLY if recv else cls.INACTIVE

    def reversed(self) -> Direction:
        """The matching direction of the other side (sendonly <-> recvonly)."""
        return Direction.from_flags(send=self.receives, recv=self.sends)

    def restrict(self, other: Direction) -> Direction:
        """What both directions allow."""
        return Direction.from_flags(
            send=self.sends and other.sends, recv=self.receives and other.receives
        )


# RFC 3551 table 4: static audio payload types usable without a=rtpmap.
_STATIC_AUDIO: dict[int, tuple[str, int, int | None]] = {
    0: ("PCMU", 8000, None),
    3: ("GSM", 8000, None),
    4: ("G723", 8000, None),
    5: ("DVI4", 8000, None),
    6: ("DVI4", 16000, None),
    7: ("LPC", 8000, None),
    8: ("PCMA", 8000, None),
    9: ("G722", 8000, None),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, None),
    12: ("QCELP", 8000, None),
    13: ("CN", 8000, None),
    14: ("MPA", 90000, None),
    15: ("G728", 8000, None),
    16: ("DVI4", 11025, None),
    17: ("DVI4", 22050, None),
    18: ("G729", 8000, None),
}


def _uint(text: str, maximum: int) -> int | None:
    """A decimal number in 0..maximum, or None (rejects signs, spaces, non-ASCII digits)."""
    if not text or not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= maximum else None


@dataclass(frozen=True, slots=True)
class Codec:
    """An RTP audio format: encoding name, payload type and clock rate."""

    name: str
    payload_type: int
    clock_rate: int = 8000


PCMU = Codec("PCMU", 0)
PCMA = Codec("PCMA", 8)
TELEPHONE_EVENT = Codec("telephone-event", 101)


@dataclass(frozen=True, slots=True)
class Attribute:
    """One ``a=`` line: ``a=name`` (value None) or ``a=name:value``."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        return f"a={self.name}" if self.value is None else f"a={self.name}:{self.value}"


@dataclass(frozen=True, slots=True)
class RtpMap:
    """An ``a=rtpmap`` value: ``<pt> <encoding>/<clock rate>[/<channels>]``."""

    payload_type: int
    encoding_name: str
    clock_rate: int
    channels: int | None = None

    @classmethod
    def parse(cls, value: str) -> RtpMap | None:
        """The rtpmap in ``value``, or None if it is malformed."""
        parts = value.split(maxsplit=1)
        if len(parts) != 2:
            return None
        payload_type = _uint(parts[0], 127)
        encoding = parts[1].strip().split("/")
        if payload_type is None or len(encoding) not in (2, 3) or not encoding[0]:
            return None
        clock_rate = _uint(encoding[1], 10_000_000)
        channels = _uint(encoding[2], 255) if len(encoding) == 3 else None
        if not clock_rate or (len(encoding) == 3 and not channels):
            return None
        return cls(payload_type, encoding[0], clock_rate, channels)

    def matches(self, codec: Codec) -> bool:
        """Same encoding (case-insensitive), same clock rate, mono."""
        return (
            self.encoding_name.lower() == codec.name.lower()
            and self.clock_rate == codec.clock_rate
            and self.channels in (None, 1)
        )

    def __str__(self) -> str:
        channels = "" if self.channels is None else f"/{self.channels}"
        return f"{self.payload_type} {self.encoding_name}/{self.clock_rate}{channels}"


@dataclass(frozen=True, slots=True)
class Connection:
    """A ``c=`` value: ``IN IP4|IP6 <address>[/<multicast suffix>]``."""

    address: str
    address_type: str = "IP4"
    net_type: str = "IN"
    suffix: str | None = None
    """Multicast TTL/count, kept verbatim for round-trips; we never use it."""

    @classmethod
    def parse(cls, value: str) -> Connection:
        parts = value.split()
        if (
            len(parts) != 3
            or parts[0].upper() != "IN"
            or parts[1].upper() not in ("IP4", "IP6")
            or parts[2].startswith("/")
        ):
            raise SdpError("bad c= line")
        address, slash, suffix = parts[2].partition("/")
        return cls(address, parts[1], parts[0], suffix if slash else None)

    @classmethod
    def for_host(cls, host: str) -> Connection:
        """The connection for a local IP address or host name (names count as IP4)."""
        try:
            is_ip6 = ipaddress.ip_address(host).version == 6
        except ValueError:
            is_ip6 = False
        return cls(host, "IP6" if is_ip6 else "IP4")

    @property
    def unspecified(self) -> bool:
        """0.0.0.0 (RFC 2543 hold) or ``::``: the peer gives no address to send to."""
        try:
            return ipaddress.ip_address(self.address).is_unspecified
        except ValueError:
            return False

    def __str__(self) -> str:
        suffix = "" if self.suffix is None else f"/{self.suffix}"
        return f"{self.net_type} {self.address_type} {self.address}{suffix}"


@dataclass(frozen=True, slots=True)
class RtcpAttribute:
    """An ``a=rtcp`` value (RFC 3605): the RTCP port and optionally its own address."""

    port: int
    connection: Connection | None = None

    @classmethod
    def parse(cls, value: str) -> RtcpAttribute | None:
        port_text, _, rest = value.strip().partition(" ")
        port = _uint(port_text, 65535)
        if port is None:
            return None
        try:
            connection = Connection.parse(rest) if rest.strip() else None
        except SdpError:
            return None
        return cls(port, connection)


@dataclass(frozen=True, slots=True)
class Origin:
    """The ``o=`` line: who made the description, its id and its version."""

    username: str
    session_id: int
    session_version: int
    address: str
    address_type: str = "IP4"
    net_type: str = "IN"

    @classmethod
    def parse(cls, value: str) -> Origin:
        parts = value.split()
        session_id = _uint(parts[1], 2**128) if len(parts) == 6 else None
        session_version = _uint(parts[2], 2**128) if len(parts) == 6 else None
        if session_id is None or session_version is None:
            raise SdpError("bad o= line")
        return cls(parts[0], session_id, session_version, parts[5], parts[4], parts[3])

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.net_type} {self.address_type} {self.address}"
        )


@dataclass(frozen=True, slots=True)
class Timing:
    """A ``t=`` line and the ``r=`` lines that follow it."""

    start: int = 0
    stop: int = 0
    repeats: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: str) -> Timing:
        parts = value.split()
        start = _uint(parts[0], 2**64) if len(parts) == 2 else None
        stop = _uint(parts[1], 2**64) if len(parts) == 2 else None
        if start is None or stop is None:
            raise SdpError("bad t= line")
        return cls(start, stop)


def _first(attributes: Iterable[Attribute], name: str) -> str | None:
    for attribute in attributes:
        if attribute.name == name and attribute.value is not None:
            return attribute.value
    return None


_DIRECTIONS = frozenset(direction.value for direction in Direction)


def _direction(attributes: Iterable[Attribute]) -> Direction | None:
    for attribute in attributes:
        if attribute.value is None and attribute.name in _DIRECTIONS:
            return Direction(attribute.name)
    return None


def _is_secure(proto: str) -> bool:
    return "SAVP" in proto.upper()


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaDescription:
    """One ``m=`` section; structured views are computed from ``attributes``."""

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    port_count: int | None = None
    information: str | None = None
    connection: Connection | None = None
    bandwidths: tuple[str, ...] = ()
    key: str | None = None
    attributes: tuple[Attribute, ...] = ()

    @property
    def is_rtp(self) -> bool:
        """The formats are RTP payload types (RTP/AVP, RTP/SAVP, UDP/TLS/RTP/SAVPF...)."""
        return "RTP/" in self.proto.upper()

    @property
    def is_secure(self) -> bool:
        """SRTP profile (SAVP/SAVPF), which plain RTP must never answer."""
        return _is_secure(self.proto)

    @property
    def payload_types(self) -> tuple[int, ...]:
        """The formats as RTP payload types (empty for non-RTP media such as udptl)."""
        if not self.is_rtp:
            return ()
        return tuple(pt for pt in (_uint(fmt, 127) for fmt in self.formats) if pt is not None)

    @property
    def rtpmap(self) -> Mapping[int, RtpMap]:
        """Explicit ``a=rtpmap`` lines by payload type (first one wins)."""
        result: dict[int, RtpMap] = {}
        for attribute in self.attributes:
            if attribute.name == "rtpmap" and attribute.value is not None:
                rtpmap = RtpMap.parse(attribute.value)
                if rtpmap is not None:
                    result.setdefault(rtpmap.payload_type, rtpmap)
        return result

    @property
    def fmtp(self) -> Mapping[int, str]:
        """``a=fmtp`` parameters by payload type (first one wins)."""
        result: dict[int, str] = {}
        for attribute in self.attributes:
            if attribute.name == "fmtp" and attribute.value is not None:
                pt_text, _, params = attribute.value.partition(" ")
                payload_type = _uint(pt_text, 127)
                if payload_type is not None:
                    result.setdefault(payload_type, params.strip())
        return result

    def rtpmap_for(self, payload_type: int) -> RtpMap | None:
        """The rtpmap of a payload type, falling back to the RFC 3551 static table."""
        explicit = self.rtpmap.get(payload_type)
        if explicit is not None:
            return explicit
        static = _STATIC_AUDIO.get(payload_type)
        return None if static is None else RtpMap(payload_type, *static)

    @property
    def ptime(self) -> int | None:
        return self._milliseconds("ptime")

    @property
    def maxptime(self) -> int | None:
        return self._milliseconds("maxptime")

    def _milliseconds(self, name: str) -> int | None:
        value = _first(self.attributes, name)
        try:
            milliseconds = round(float(value)) if value is not None else None
        except (ValueError, OverflowError):
            return None
        return milliseconds if milliseconds is not None and 0 < milliseconds <= 10_000 else None

    @property
    def direction(self) -> Direction | None:
        """The media-level direction attribute, if any (see SessionDescription.direction_for)."""
        return _direction(self.attributes)

    @property
    def rtcp(self) -> RtcpAttribute | None:
        value = _first(self.attributes, "rtcp")
        return None if value is None else RtcpAttribute.parse(value)

    @property
    def rtcp_mux(self) -> bool:
        return any(attribute.name == "rtcp-mux" for attribute in self.attributes)

    @property
    def crypto(self) -> tuple[str, ...]:
        """``a=crypto`` values (RFC 4568), verbatim."""
        return tuple(
            attribute.value
            for attribute in self.attributes
            if attribute.name == "crypto" and attribute.value is not None
        )

    def lines(self) -> Iterator[str]:
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        yield " ".join(("m=" + self.media, port, self.proto, *self.formats))
        if self.information is not None:
            yield f"i={self.information}"
        if self.connection is not None:
            yield f"c={self.connection}"
        yield from (f"b={bandwidth}" for bandwidth in self.bandwidths)
        if self.key is not None:
            yield f"k={self.key}"
        yield from (str(attribute) for attribute in self.attributes)


_Line = tuple[str, str]
_SESSION_KINDS = frozenset("osiuepcbtrzka")
_MEDIA_KINDS = frozenset("icbka")


def _single(lines: Sequence[_Line], kind: str, where: str = "") -> str | None:
    """The value of a line type that may appear at most once in a section."""
    values = [value for line_kind, value in lines if line_kind == kind]
    if len(values) > 1:
        raise SdpError(f"duplicate {kind}= line{where}")
    return values[0] if values else None


def _many(lines: Sequence[_Line], kind: str) -> tuple[str, ...]:
    return tuple(value for line_kind, value in lines if line_kind == kind)


def _attributes(lines: Sequence[_Line]) -> tuple[Attribute, ...]:
    return tuple(_parse_attribute(value) for kind, value in lines if kind == "a")


def _parse_media(lines: Sequence[_Line]) -> MediaDescription:
    """One m= line and the lines after it, up to the next m= line."""
    parts = lines[0][1].split()
    body = lines[1:]
    if len(parts) < 4:
        raise SdpError("bad m= line")
    port_text, slash, count_text = parts[1].partition("/")
    port = _uint(port_text, 65535)
    port_count = _uint(count_text, 65535) if slash else None
    if port is None or (slash and not port_count):
        raise SdpError("bad port in m= line")
    for kind, _ in body:
        if kind not in _MEDIA_KINDS:
            raise SdpError(f"{kind}= line not allowed in media description")
    where = " in media description"
    connection = _single(body, "c", where)
    media = MediaDescription(
        media=parts[0],
        port=port,
        proto=parts[2],
        formats=tuple(parts[3:]),
        port_count=port_count,
        information=_single(body, "i", where),
        connection=None if connection is None else Connection.parse(connection),
        bandwidths=_many(body, "b"),
        key=_single(body, "k", where),
        attributes=_attributes(body),
    )
    if media.is_rtp and any(_uint(fmt, 127) is None for fmt in media.formats):
        raise SdpError("bad payload type in m= line")
    return media


def _parse_times(lines: Sequence[_Line]) -> tuple[Timing, ...]:
    times: list[Timing] = []
    for kind, value in lines:
        if kind == "t":
            times.append(Timing.parse(value))
        elif kind == "r":
            if not times:
                raise SdpError("r= line without t= line")
            last = times[-1]
            times[-1] = Timing(last.start, last.stop, (*last.repeats, value))
    return tuple(times) or (Timing(),)


def _parse_attribute(value: str) -> Attribute:
    name, colon, rest = value.partition(":")
    if not name:
        raise SdpError("bad a= line")
    return Attribute(name, rest if colon else None)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionDescription:
    """A whole SDP body. Line types are kept in RFC 8866 order, attributes in input order."""

    origin: Origin
    session_name: str = "-"
    version: int = 0
    information: str | None = None
    uri: str | None = None
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    connection: Connection | None = None
    bandwidths: tuple[str, ...] = ()
    times: tuple[Timing, ...] = (Timing(),)
    zone: str | None = None
    key: str | None = None
    attributes: tuple[Attribute, ...] = ()
    media: tuple[MediaDescription, ...] = ()

    @property
    def direction(self) -> Direction | None:
        """The session-level direction attribute, if any."""
        return _direction(self.attributes)

    def direction_for(self, media: MediaDescription) -> Direction:
        """Effective direction of a stream: media level, else session level, else sendrecv."""
        return media.direction or self.direction or Direction.SENDRECV

    def connection_for(self, media: MediaDescription) -> Connection | None:
        """Effective connection of a stream: media level, else session level."""
        return media.connection or self.connection

    @classmethod
    def parse(cls, data: str | bytes) -> SessionDescription:
        """Parse an SDP body (CRLF or LF lines); raise SdpError (400) if it is not valid SDP."""
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SdpError("SDP is not valid UTF-8") from exc
        lines: list[_Line] = []
        for number, line in enumerate(data.split("\n"), start=1):
            line = line.rstrip()
            if not line:
                continue
            if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
                raise SdpError(f"malformed SDP line {number}")
            lines.append((line[0], line[2:]))
        if not lines:
            raise SdpError("empty SDP")
        if lines[0][0] != "v":
            raise SdpError("missing v= line")
        if lines[0][1].strip() != "0":
            raise SdpError("unsupported SDP version")
        starts = [index for index, (kind, _) in enumerate(lines) if kind == "m"]
        session = lines[1 : starts[0] if starts else len(lines)]
        for kind, _ in session:
            if kind == "v":
                raise SdpError("duplicate v= line")
            if kind not in _SESSION_KINDS:
                raise SdpError(f"unknown SDP line type {kind!r}")
        origin = _single(session, "o")
        session_name = _single(session, "s")
        if origin is None:
            raise SdpError("missing o= line")
        if session_name is None:
            raise SdpError("missing s= line")
        if not starts:
            raise SdpError("missing m= line")
        connection = _single(session, "c")
        return cls(
            origin=Origin.parse(origin),
            session_name=session_name,
            information=_single(session, "i"),
            uri=_single(session, "u"),
            emails=_many(session, "e"),
            phones=_many(session, "p"),
            connection=None if connection is None else Connection.parse(connection),
            bandwidths=_many(session, "b"),
            times=_parse_times(session),
            zone=_single(session, "z"),
            key=_single(session, "k"),
            attributes=_attributes(session),
            media=tuple(
                _parse_media(lines[start:end])
                for start, end in zip(starts, [*starts[1:], len(lines)], strict=True)
            ),
        )

    def lines(self) -> Iterator[str]:
        yield f"v={self.version}"
        yield f"o={self.origin}"
        yield f"s={self.session_name or ' '}"
        optional = (("i", self.information), ("u", self.uri))
        yield from (f"{kind}={value}" for kind, value in optional if value is not None)
        yield from (f"e={email}" for email in self.emails)
        yield from (f"p={phone}" for phone in self.phones)
        if self.connection is not None:
            yield f"c={self.connection}"
        yield from (f"b={bandwidth}" for bandwidth in self.bandwidths)
        for timing in self.times or (Timing(),):
            yield f"t={timing.start} {timing.stop}"
            yield from (f"r={repeat}" for repeat in timing.repeats)
        optional = (("z", self.zone), ("k", self.key))
        yield from (f"{kind}={value}" for kind, value in optional if value is not None)
        yield from (str(attribute) for attribute in self.attributes)
        for media in self.media:
            yield from media.lines()

    def serialize(self) -> str:
        """The description as text with CRLF line endings."""
        return "".join(line + "\r\n" for line in self.lines())

    def __bytes__(self) -> bytes:
        return self.serialize().encode("utf-8")
