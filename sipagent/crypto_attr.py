"""The SDES ``a=crypto`` attribute (RFC 4568) for the SRTP suites we can key: parse, serialize.

Sans-I/O: no sockets, no clock, no randomness (our key is passed in).

    a=crypto:<tag> <crypto-suite> inline:<base64 key||salt>[|<lifetime>][|<MKI>:<length>] [params]

:meth:`CryptoAttribute.parse` is strict and only accepts what :class:`~rtp.srtp.SrtpContext`
can honour: a supported suite, exactly one ``inline`` key of 30 octets, no MKI (Twilio does
not use one either), and only session parameters that change nothing (``KDR=0``, the ``WSH``
hint, and ``-``-prefixed optional extensions). Anything else raises :class:`CryptoError`;
:func:`choose_crypto` skips such lines, as RFC 4568 section 6.3.7 requires of an answerer
that does not understand a mandatory parameter.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from rtp.srtp import SRTP_KEY_LENGTH, SrtpSuite

from .sdp import SdpError

__all__ = [
    "ALL_SUITES",
    "MAX_SRTP_LIFETIME",
    "CryptoAttribute",
    "CryptoError",
    "choose_crypto",
]

ALL_SUITES: Final[tuple[SrtpSuite, ...]] = tuple(SrtpSuite)
"""Every suite we can key, in our order of preference (80-bit tag first)."""
MAX_SRTP_LIFETIME: Final = 2**48
"""Largest master key lifetime (in packets) for the AES_CM suites (RFC 4568 section 6.2)."""

_TAG = re.compile(r"[0-9]{1,9}")
_LIFETIME = re.compile(r"(?:2\^([0-9]{1,2})|([0-9]{1,15}))")
_KDR = re.compile(r"KDR=([0-9]{1,2})")
_WSH = re.compile(r"WSH=([0-9]{2,})")


class CryptoError(SdpError):
    """An ``a=crypto`` value that is malformed or asks for what we cannot do (line skipped)."""

    def __init__(self, reason: str, status: int = 488) -> None:
        super().__init__(reason, status)


def _parse_lifetime(text: str) -> int:
    match = _LIFETIME.fullmatch(text)
    if match is None:
        raise CryptoError(f"bad key lifetime {text!r}")
    power, number = match.groups()
    lifetime = 2 ** int(power) if power is not None else int(number)
    if not 0 < lifetime <= MAX_SRTP_LIFETIME:
        raise CryptoError(f"key lifetime {text} out of range")
    return lifetime


def _format_lifetime(lifetime: int) -> str:
    if lifetime & (lifetime - 1) == 0:
        return f"2^{lifetime.bit_length() - 1}"
    return str(lifetime)


def _check_session_param(param: str) -> None:
    if param.startswith("-"):
        return  # optional extension: MAY be ignored (RFC 4568 section 6.3.7)
    if _WSH.fullmatch(param) and int(param[4:]) >= 64:
        return  # window size hint; libsrtp's replay window (128) is at least the minimum
    kdr = _KDR.fullmatch(param)
    if kdr is not None and int(kdr.group(1)) == 0:
        return  # the default: no key re-derivation
    raise CryptoError(f"unsupported session parameter {param!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class CryptoAttribute:
    """One usable ``a=crypto`` value: tag, suite, one inline master key and salt."""

    tag: int
    """Identifies the line; the answer repeats the tag of the line it accepts."""
    suite: SrtpSuite
    """The crypto suite."""
    key: bytes
    """Master key followed by master salt (30 octets)."""
    lifetime: int | None = None
    """Master key lifetime in packets, if given."""
    session_params: tuple[str, ...] = ()
    """Session parameters, verbatim (only harmless ones are accepted)."""

    def __post_init__(self) -> None:
        if not 0 <= self.tag <= 999_999_999:
            raise ValueError("crypto tag must have 1-9 digits")
        if len(self.key) != SRTP_KEY_LENGTH:
            raise ValueError(f"{self.suite} needs a {SRTP_KEY_LENGTH}-byte key and salt")

    @classmethod
    def parse(cls, value: str) -> CryptoAttribute:
        """Parse an ``a=crypto`` value (without ``crypto:``); raise CryptoError if unusable."""
        fields = value.split()
        if len(fields) < 3:
            raise CryptoError("a=crypto needs a tag, a suite and key parameters")
        tag_text, suite_text, key_params, *session_params = fields
        if _TAG.fullmatch(tag_text) is None:
            raise CryptoError(f"bad crypto tag {tag_text!r}")
        try:
            suite = SrtpSuite(suite_text)
        except ValueError:
            raise CryptoError(f"unsupported crypto suite {suite_text!r}") from None
        if ";" in key_params:
            raise CryptoError("several master keys (they need an MKI)")
        method, colon, key_info = key_params.partition(":")
        if method != "inline" or not colon:
            raise CryptoError(f"unsupported key method {method!r}")
        key_text, *extra = key_info.split("|")
        if any(":" in field for field in extra):
            raise CryptoError("MKI is not supported")
        if len(extra) > 1:
            raise CryptoError("more than one key lifetime")
        lifetime = _parse_lifetime(extra[0]) if extra else None
        try:
            key = base64.b64decode(key_text, validate=True)
        except (binascii.Error, ValueError):
            raise CryptoError("inline key is not valid base64") from None
        if len(key) != SRTP_KEY_LENGTH:
            raise CryptoError(
                f"{suite} needs {SRTP_KEY_LENGTH} bytes of key and salt, got {len(key)}"
            )
        for param in session_params:
            _check_session_param(param)
        return cls(
            tag=int(tag_text),
            suite=suite,
            key=key,
            lifetime=lifetime,
            session_params=tuple(session_params),
        )

    def serialize(self) -> str:
        """The attribute value, as written after ``a=crypto:``."""
        key_info = base64.b64encode(self.key).decode("ascii")
        if self.lifetime is not None:
            key_info += "|" + _format_lifetime(self.lifetime)
        fields = (str(self.tag), self.suite.value, f"inline:{key_info}", *self.session_params)
        return " ".join(fields)

    def __str__(self) -> str:
        return self.serialize()

    def __repr__(self) -> str:  # never the key
        return f"CryptoAttribute(tag={self.tag}, suite={self.suite}, lifetime={self.lifetime})"


def choose_crypto(
    offered: Iterable[str], supported: Sequence[SrtpSuite] = ALL_SUITES
) -> tuple[CryptoAttribute | None, tuple[str, ...]]:
    """The offerer's most preferred usable line (RFC 4568: lines come in preference order).

    Returns it (or None) and the reasons the lines before it were skipped.
    """
    reasons: list[str] = []
    for value in offered:
        try:
            crypto = CryptoAttribute.parse(value)
        except CryptoError as exc:
            reasons.append(exc.reason)
            continue
        if crypto.suite not in supported:
            reasons.append(f"crypto suite {crypto.suite} is not enabled")
            continue
        return crypto, tuple(reasons)
    return None, tuple(reasons)
