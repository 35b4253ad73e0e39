"""Edge protection of the SIP listener: who may talk to us, how fast, and which calls we take.

Two checks, both sans-I/O (the caller passes ``now``):

* :meth:`EdgePolicy.check_datagram` runs on every datagram (or framed TCP message)
  *before* it is parsed: the source allow-list (carrier ranges, e.g. the Twilio preset)
  and a per-source token bucket in the spirit of Kamailio's ``pike``. It is O(1) and
  allocates nothing on the flood path, so a flood costs an address lookup, not a parse.
* :meth:`EdgePolicy.check_invite` runs on a new INVITE: the dialled number must be one of
  ours (other tenants share the carrier's addresses), then the concurrent-call cap and the
  new-call rate.

Each returns a :class:`Verdict`: allow, drop silently, or reject with a SIP status (and
``Retry-After``). Refusals are counted per :class:`Reason` in :attr:`EdgePolicy.counters`.

Datagram-stage rejects are rare by construction: a rate-limited source gets one 503 per
:data:`~sipagent.ratelimit.NOTICE_INTERVAL`, then silence; an unknown source is dropped unless
``drop_unknown_sources`` is off, and even then answered no faster than the rate limit.
Building that answer is :func:`refusal`'s job (it parses; the flood path never does).
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import logging
import math
import re
import tomllib
import urllib.parse
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .exceptions import SipError
from .headers import SipUri
from .message import Request, make_response, parse_message
from .ratelimit import NewCallLimiter, RateLimiter
from .transaction import Destination

__all__ = [
    "CAPACITY_RETRY_AFTER",
    "DEFAULT_EXEMPT_CIDRS",
    "PRESETS",
    "Action",
    "CarrierRanges",
    "DialledNumberCheck",
    "EdgePolicy",
    "EdgePolicyConfig",
    "Reason",
    "SourceAllowList",
    "Verdict",
    "dialled_users",
    "load_carrier_ranges",
    "normalize_number",
    "parse_cidrs",
    "parse_numbers",
    "preset_path",
    "refusal",
    "twilio_preset",
]

logger = logging.getLogger(__name__)

#: Retry-After (seconds) when every call slot is taken.
CAPACITY_RETRY_AFTER = 5
#: Sources never rate-limited by default: local processes (a local proxy, SIPp, the admin).
DEFAULT_EXEMPT_CIDRS: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
#: Preset name → file under ``config/presets/``.
PRESETS: Mapping[str, str] = {"twilio": "twilio_ranges.toml"}

_PRESET_DIRS = (
    Path("config") / "presets",  # the working directory, like the settings files
    Path(__file__).resolve().parent.parent / "config" / "presets",  # the source tree
)
_SEPARATORS = re.compile(r"[\s\-.()/]")
_DIGITS = re.compile(r"\+?[0-9]+")
_IPV6_KEY_BASE = 1 << 64  # keeps IPv6 /64 keys apart from IPv4 integers

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Action(enum.Enum):
    """What the shell does with a message or call."""

    ALLOW = "allow"
    DROP = "drop"
    """Discard silently: answering would confirm a server is listening."""
    REJECT = "reject"
    """Answer with :attr:`Verdict.status` (and Retry-After)."""


class Reason(enum.Enum):
    """Why a verdict was given; the values are the counter keys."""

    OK = "ok"
    SOURCE_NOT_ALLOWED = "source_not_allowed"
    RATE_LIMITED = "rate_limited"
    NUMBER_NOT_SERVED = "number_not_served"
    CAPACITY = "capacity"
    NEW_CALL_RATE = "new_call_rate"


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """The outcome of a policy check."""

    action: Action
    """Allow, drop silently, or reject with :attr:`status`."""
    reason: Reason
    """Why; :attr:`Reason.OK` when allowed."""
    status: int | None = None
    """SIP status to answer with when rejecting (403, 404, 486, 503), else None."""
    retry_after: int | None = None
    """Seconds for the Retry-After header, if one is to be sent."""

    @property
    def allowed(self) -> bool:
        return self.action is Action.ALLOW

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """Extra response headers (Retry-After), ready for ``UserAgent.reject``."""
        if self.retry_after is None:
            return ()
        return (("Retry-After", str(self.retry_after)),)


ALLOWED = Verdict(action=Action.ALLOW, reason=Reason.OK)
_DROP_UNKNOWN = Verdict(action=Action.DROP, reason=Reason.SOURCE_NOT_ALLOWED)
_REJECT_UNKNOWN = Verdict(action=Action.REJECT, reason=Reason.SOURCE_NOT_ALLOWED, status=403)
_DROP_LIMITED = Verdict(action=Action.DROP, reason=Reason.RATE_LIMITED)
_NOT_SERVED = Verdict(action=Action.REJECT, reason=Reason.NUMBER_NOT_SERVED, status=404)
_BUSY = Verdict(
    action=Action.REJECT, reason=Reason.CAPACITY, status=486, retry_after=CAPACITY_RETRY_AFTER
)


# -- addresses ---------------------------------------------------------------------------------
def _parse_network(text: str) -> _Network:
    cleaned = text.strip()
    if cleaned.startswith("[") and "]" in cleaned:  # [2001:db8::1] or [2001:db8::]/32
        host, _, rest = cleaned[1:].partition("]")
        cleaned = host + rest
    try:
        network = ipaddress.ip_network(cleaned, strict=False)
    except ValueError:
        raise ValueError(f"not an IP address or CIDR network: {text!r}") from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:  # ::ffff:192.0.2.0/120 is 192.0.2.0/24
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


@functools.lru_cache(maxsize=16384)
def _address(text: str) -> tuple[int, int] | None:
    """(IP version, integer) of a source address, IPv4-mapped IPv6 as IPv4; None if not one."""
    try:
        address: _Address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.version, int(address)


def _source_key(text: str, parsed: tuple[int, int] | None) -> Hashable:
    """The rate limiter's key: the IPv4 address, the IPv6 /64 (one host's usual share)."""
    if parsed is None:
        return text
    version, value = parsed
    return value if version == 4 else _IPV6_KEY_BASE | (value >> 64)


def parse_cidrs(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """CIDRs from a comma-separated string or a list; each checked (ValueError names it)."""
    items = _split(value)
    for item in items:
        _parse_network(item)
    return items


def _split(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    parts = value.split(",") if isinstance(value, str) else value
    return tuple(part.strip() for part in parts if part.strip())


class SourceAllowList:
    """The networks allowed to reach us; an empty list allows everyone.

    Membership costs one dictionary probe per distinct prefix length (a handful), whatever
    the number of networks: they are collapsed, then indexed by prefix length.
    """

    def __init__(self, cidrs: Iterable[str]) -> None:
        parsed = [_parse_network(text) for text in cidrs]
        v4 = [n for n in parsed if isinstance(n, ipaddress.IPv4Network)]
        v6 = [n for n in parsed if isinstance(n, ipaddress.IPv6Network)]
        self.networks: tuple[_Network, ...] = (
            *ipaddress.collapse_addresses(v4),
            *ipaddress.collapse_addresses(v6),
        )
        """The collapsed networks, IPv4 first."""
        self._index: dict[int, list[tuple[int, int, frozenset[int]]]] = {4: [], 6: []}
        by_prefix: dict[tuple[int, int], set[int]] = {}
        for network in self.networks:
            key = (network.version, network.prefixlen)
            by_prefix.setdefault(key, set()).add(int(network.network_address))
        for (version, prefixlen), starts in sorted(by_prefix.items()):
            bits = 32 if version == 4 else 128
            mask = ((1 << prefixlen) - 1) << (bits - prefixlen)
            self._index[version].append((prefixlen, mask, frozenset(starts)))

    @property
    def allows_all(self) -> bool:
        """True for an empty list: no source restriction."""
        return not self.networks

    def __len__(self) -> int:
        return len(self.networks)

    def __contains__(self, address: object) -> bool:
        if self.allows_all:
            return True
        if not isinstance(address, str):
            address = str(address)
        return self._contains(_address(address))

    def _contains(self, parsed: tuple[int, int] | None) -> bool:
        if self.allows_all:
            return True
        if parsed is None:
            return False
        version, value = parsed
        return any(value & mask in starts for _, mask, starts in self._index[version])

    def __repr__(self) -> str:
        shown = ", ".join(str(n) for n in self.networks[:4])
        more = f", … {len(self.networks) - 4} more" if len(self.networks) > 4 else ""
        return f"<SourceAllowList {shown or 'allow all'}{more}>"


# -- carrier presets ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class CarrierRanges:
    """A carrier's published source ranges, as read from ``config/presets/*.toml``."""

    provider: str
    """Carrier name (``twilio``)."""
    source_page: str
    """Title of the carrier's page the ranges were copied from."""
    retrieved: str
    """When they were copied (ISO date): refresh them at deploy time."""
    signalling: Mapping[str, tuple[str, ...]]
    """Edge location → CIDRs SIP comes from."""
    media: tuple[str, ...]
    """CIDRs RTP comes from."""
    media_ports: tuple[int, int] | None = None
    """The carrier's RTP port range, if published."""

    @property
    def signalling_cidrs(self) -> tuple[str, ...]:
        """Every signalling CIDR, all edges."""
        return tuple(cidr for cidrs in self.signalling.values() for cidr in cidrs)


def preset_path(name: str) -> Path:
    """The file of a named preset: ``config/presets/`` in the working directory, else in
    the source tree. ValueError for an unknown name, FileNotFoundError when missing."""
    try:
        file_name = PRESETS[name.strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown allow-list preset {name!r} (known: {', '.join(sorted(PRESETS))})"
        ) from None
    for directory in _PRESET_DIRS:
        candidate = directory / file_name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"preset {name!r}: {file_name} not found in config/presets/")


def load_carrier_ranges(path: str | Path) -> CarrierRanges:
    """Read and check a carrier ranges file (ValueError says what is wrong)."""
    with Path(path).open("rb") as file:
        try:
            data = tomllib.load(file)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: invalid TOML: {exc}") from None
    signalling_table = data.get("signalling", {})
    media_table = data.get("media", {})
    if not isinstance(signalling_table, dict) or not isinstance(media_table, dict):
        raise ValueError(f"{path}: [signalling] and [media] must be tables")
    signalling: dict[str, tuple[str, ...]] = {}
    for edge, cidrs in signalling_table.items():
        if not isinstance(cidrs, list) or not all(isinstance(c, str) for c in cidrs):
            raise ValueError(f"{path}: signalling.{edge} must be a list of CIDR strings")
        signalling[edge] = parse_cidrs(cidrs)
    media = media_table.get("cidrs", [])
    if not isinstance(media, list) or not all(isinstance(c, str) for c in media):
        raise ValueError(f"{path}: media.cidrs must be a list of CIDR strings")
    ports = media_table.get("udp_ports")
    media_ports: tuple[int, int] | None = None
    if ports is not None:
        if not (isinstance(ports, list) and len(ports) == 2
                and all(isinstance(p, int) and 0 < p < 65536 for p in ports)):
            raise ValueError(f"{path}: media.udp_ports must be [low, high]")
        media_ports = (ports[0], ports[1])
    return CarrierRanges(
        provider=str(data.get("provider", Path(path).stem)),
        source_page=str(data.get("source_page", "")),
        retrieved=str(data.get("retrieved", "")),
        signalling=signalling,
        media=parse_cidrs(media),
        media_ports=media_ports,
    )


def twilio_preset(path: str | Path | None = None) -> SourceAllowList:
    """The allow-list of Twilio's SIP signalling ranges, every edge."""
    ranges = load_carrier_ranges(path if path is not None else preset_path("twilio"))
    return SourceAllowList(ranges.signalling_cidrs)


# -- dialled numbers ---------------------------------------------------------------------------
def normalize_number(text: str) -> str:
    """The comparable form of a number or user: E.164 digits without ``+``, else lower-case.

    Accepts ``+1 (415) 555-0100``, ``tel:+1-415-555-0100;phone-context=…``,
    ``sip:+14155550100@host;user=phone``, ``%2B14155550100`` — all ``14155550100``.
    A non-numeric user (``support``) is kept, lower-cased.
    """
    value = text.strip()
    scheme, colon, rest = value.partition(":")
    if colon and scheme.lower() in ("sip", "sips", "tel"):
        value = rest
        if scheme.lower() != "tel":
            value = value.split("@", 1)[0] if "@" in value else ""
    value = urllib.parse.unquote(value.split(";", 1)[0]).strip()
    compact = _SEPARATORS.sub("", value)
    if _DIGITS.fullmatch(compact):
        return compact.removeprefix("+")
    return value.lower()


def parse_numbers(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Numbers from a comma-separated string or a list, normalised (ValueError if empty)."""
    numbers = []
    for item in _split(value):
        number = normalize_number(item)
        if not number:
            raise ValueError(f"not a phone number or user: {item!r}")
        numbers.append(number)
    return tuple(numbers)


class DialledNumberCheck:
    """Only calls to our own numbers: the carrier's addresses also carry other tenants' calls.

    An empty list allows every number.
    """

    def __init__(self, numbers: Iterable[str]) -> None:
        self.numbers = frozenset(parse_numbers(tuple(numbers)))
        """The normalised numbers we answer."""

    @property
    def allows_all(self) -> bool:
        return not self.numbers

    def allows(self, *users: str | None) -> bool:
        """True when any of ``users`` (Request-URI user, To user …) is one of ours."""
        if self.allows_all:
            return True
        return any(user and normalize_number(user) in self.numbers for user in users)


def dialled_users(request: Request) -> tuple[str, ...]:
    """Who an INVITE is for: the Request-URI user, then the To user (tel: numbers too).

    A PBX may send the Request-URI to our Contact user and the number in To, so both count.
    """
    users: list[str] = []
    candidates: list[SipUri | None] = []
    try:
        candidates.append(SipUri.parse(request.uri))
    except SipError:
        candidates.append(None)
    try:
        candidates.append(request.to.uri)
    except SipError:
        candidates.append(None)
    for uri in candidates:
        if uri is None:
            continue
        user = uri.user if uri.is_sip else (uri.opaque or "").split(";", 1)[0]
        if user and user not in users:
            users.append(user)
    return tuple(users)


def _whole_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))


# -- the policy --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class EdgePolicyConfig:
    """What :class:`EdgePolicy` enforces; :meth:`from_settings` reads it from Settings."""

    allow_cidrs: tuple[str, ...] = ()
    """Networks allowed to send SIP (with the preset's); both empty: everyone."""
    allow_preset: str | None = None
    """A carrier preset added to the allow-list (``twilio``), or None."""
    preset_path: str | None = None
    """Read the preset from this file instead of ``config/presets/``."""
    numbers: tuple[str, ...] = ()
    """Numbers (or users) we answer calls for; empty: any."""
    rate_limit: float = 15.0
    """Requests per second per source, sustained (default: 30 per 2 s); 0: no limit."""
    rate_burst: int = 30
    """Requests a source may send at once before the rate applies."""
    max_new_calls_per_second: float = 20.0
    """New calls accepted per second, all sources together; 0: no limit."""
    drop_unknown_sources: bool = True
    """Drop datagrams from sources off the allow-list silently (else answer 403)."""
    max_sources: int = 10_000
    """Sources the rate limiter remembers at once."""
    exempt_cidrs: tuple[str, ...] = DEFAULT_EXEMPT_CIDRS
    """Sources never rate-limited (local processes by default)."""
    exempt_allowed_sources: bool = True
    """When an allow-list is set, its sources (carriers, PBXs) are not rate-limited:
    a carrier's few addresses carry every call, and only they can reach us anyway."""

    @classmethod
    def from_settings(cls, settings: object) -> EdgePolicyConfig:
        """Read the same-named attributes of a settings-like object; missing ones default.

        List settings may be lists or comma-separated strings.
        """
        default = cls()

        def get(name: str) -> object:
            return getattr(settings, name, getattr(default, name))

        preset = get("allow_preset")
        exempt = getattr(settings, "rate_limit_exempt", None)  # the setting's name
        if exempt is None:
            exempt = get("exempt_cidrs")
        return cls(
            allow_cidrs=parse_cidrs(_as_list(get("allow_cidrs"))),
            allow_preset=(str(preset).strip() or None) if preset else None,
            preset_path=_optional_str(get("preset_path")),
            numbers=_split(_as_list(get("numbers"))),
            rate_limit=_as_float(get("rate_limit")),
            rate_burst=int(_as_float(get("rate_burst"))),
            max_new_calls_per_second=_as_float(get("max_new_calls_per_second")),
            drop_unknown_sources=bool(get("drop_unknown_sources")),
            max_sources=int(_as_float(get("max_sources"))),
            exempt_cidrs=parse_cidrs(_as_list(exempt)),
            exempt_allowed_sources=bool(get("exempt_allowed_sources")),
        )


def _as_list(value: object) -> str | Sequence[str] | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Iterable):
        return [str(item) for item in value]
    return str(value)


def _as_float(value: object) -> float:
    if isinstance(value, int | float | str):
        return float(value)
    raise ValueError(f"not a number: {value!r}")


def _optional_str(value: object) -> str | None:
    return str(value) if value else None


class EdgePolicy:
    """The SIP edge's admission rules: source allow-list, per-source rate, calls we take."""

    def __init__(self, config: EdgePolicyConfig | None = None) -> None:
        self.config = config = config or EdgePolicyConfig()
        cidrs = list(config.allow_cidrs)
        if config.allow_preset:
            path = config.preset_path or preset_path(config.allow_preset)
            cidrs.extend(load_carrier_ranges(path).signalling_cidrs)
        self.allow_list = SourceAllowList(cidrs)
        """Who may send SIP; allows everyone when empty."""
        self.exempt = SourceAllowList(config.exempt_cidrs) if config.exempt_cidrs else None
        self.numbers = DialledNumberCheck(config.numbers)
        """The numbers we answer."""
        self.limiter: RateLimiter | None = None
        """The per-source limiter, None when ``rate_limit`` is 0."""
        if config.rate_limit > 0:
            self.limiter = RateLimiter(
                config.rate_limit, config.rate_burst, max_sources=config.max_sources
            )
        self.new_calls = NewCallLimiter(config.max_new_calls_per_second)
        self.counters: Counter[str] = Counter()
        """Refusals per :class:`Reason` value (``rate_limited`` …)."""
        self._exempt_allowed = config.exempt_allowed_sources and not self.allow_list.allows_all
        logger.info(
            "edge policy: %s, rate %s, numbers %s, new calls %s/s",
            self.allow_list,
            f"{config.rate_limit:g}/s burst {config.rate_burst}" if self.limiter else "unlimited",
            len(self.numbers.numbers) or "any",
            f"{config.max_new_calls_per_second:g}" if config.max_new_calls_per_second > 0
            else "unlimited",
        )

    @classmethod
    def from_settings(cls, settings: object) -> EdgePolicy:
        return cls(EdgePolicyConfig.from_settings(settings))

    def check_datagram(self, source_ip: str, now: float) -> Verdict:
        """Before parsing: is ``source_ip`` allowed, and within its rate? O(1)."""
        parsed = _address(source_ip)
        limiter = self.limiter
        if not self.allow_list._contains(parsed):
            self.counters[Reason.SOURCE_NOT_ALLOWED.value] += 1
            if self.config.drop_unknown_sources:
                return _DROP_UNKNOWN
            # Answering costs a parse and a send: never faster than the rate limit.
            key = _source_key(source_ip, parsed)
            if limiter is not None and not (limiter.allow(key, now)
                                            or limiter.notice_due(key, now)):
                return _DROP_UNKNOWN
            return _REJECT_UNKNOWN
        if limiter is None or self._exempt_allowed:
            return ALLOWED
        if self.exempt is not None and self.exempt._contains(parsed):
            return ALLOWED
        key = _source_key(source_ip, parsed)
        if limiter.allow(key, now):
            return ALLOWED
        self.counters[Reason.RATE_LIMITED.value] += 1
        if limiter.notice_due(key, now):
            logger.debug("rate-limiting SIP from %s", source_ip)
            return Verdict(
                action=Action.REJECT,
                reason=Reason.RATE_LIMITED,
                status=503,
                retry_after=_whole_seconds(limiter.retry_after(key, now)),
            )
        return _DROP_LIMITED

    def check_invite(
        self,
        source_ip: str,
        dialled_user: str | Sequence[str | None] | None,
        now: float,
        active_calls: int,
        max_calls: int,
    ) -> Verdict:
        """A new INVITE: our number? a free slot? within the new-call rate?

        ``dialled_user`` is a user or several (see :func:`dialled_users`). It runs before
        any state exists for the INVITE; a refusal is its final response, sent statelessly.
        """
        if not self.allow_list._contains(_address(source_ip)):
            self.counters[Reason.SOURCE_NOT_ALLOWED.value] += 1
            return _REJECT_UNKNOWN
        users = (dialled_user,) if dialled_user is None or isinstance(dialled_user, str) \
            else tuple(dialled_user)
        if not self.numbers.allows(*users):
            self.counters[Reason.NUMBER_NOT_SERVED.value] += 1
            logger.debug("refusing a call from %s to %s: not our number", source_ip, users)
            return _NOT_SERVED
        if active_calls >= max_calls:
            self.counters[Reason.CAPACITY.value] += 1
            return _BUSY
        if not self.new_calls.allow(now):
            self.counters[Reason.NEW_CALL_RATE.value] += 1
            return Verdict(
                action=Action.REJECT,
                reason=Reason.NEW_CALL_RATE,
                status=503,
                retry_after=_whole_seconds(self.new_calls.retry_after(now)),
            )
        return ALLOWED

    def metric_counters(self) -> dict[str, int]:
        """The counters as ``rx_policy_<reason>`` keys, the SIP metrics' "dropped" family."""
        return {f"rx_policy_{reason}": count for reason, count in self.counters.items()}


def refusal(
    data: bytes,
    source: Destination,
    verdict: Verdict,
    *,
    to_tag: str,
    server: str | None = None,
) -> tuple[bytes, Destination] | None:
    """The stateless response a datagram-stage REJECT verdict asks for, and where to send it.

    None when there is nothing to answer: not a request, an ACK, unparseable, or a verdict
    without a status. Responses go to the source address (RFC 3581 style), to the Via port
    unless the request asked for ``rport``.
    """
    if verdict.status is None:
        return None
    try:
        message = parse_message(data, stream=source.reliable)
        if not isinstance(message, Request) or message.method == "ACK":
            return None
        top = message.top_via
    except SipError:
        return None
    headers = list(verdict.headers)
    if server:
        headers.append(("Server", server))
    response = make_response(message, verdict.status, to_tag=to_tag, headers=headers)
    if source.reliable or "rport" in top.params:
        destination = source
    else:
        destination = Destination(source.transport, source.host, top.port or 5060)
    return response.serialize(), destination

