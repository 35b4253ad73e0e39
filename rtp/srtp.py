"""SRTP and SRTCP (RFC 3711) for one call's media, keyed by SDES (RFC 4568), over libsrtp.

Sans-I/O: bytes in, bytes out; no sockets, no clock, no randomness (the keys are passed in).

An :class:`SrtpContext` holds two libsrtp sessions (``pylibsrtp.Session``):

* outbound, keyed with *our* master key and salt — the one we wrote in our ``a=crypto`` — for
  whatever SSRC we send from;
* inbound, keyed with the *peer's* master key and salt — the one from its ``a=crypto`` — for
  whatever SSRC it sends from (a new SSRC gets its own replay window once it authenticates).

Packets that fail authentication, replay protection or parsing are never raised: the
``unprotect`` methods return ``None`` and count them, so a forged or replayed datagram costs
one libsrtp call and nothing else. libsrtp checks the replay window before the tag, so a
tampered copy of a packet already received counts as a replay.

Only the two suites every SDES peer (Twilio Secure Trunking included) offers are supported:
``AES_CM_128_HMAC_SHA1_80`` and ``AES_CM_128_HMAC_SHA1_32`` (32-bit tag on SRTP, 80-bit on
SRTCP, RFC 4568 section 6.2.2), without MKI and with the default key derivation rate 0.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Final

import pylibsrtp

__all__ = [
    "MASTER_KEY_LENGTH",
    "MASTER_SALT_LENGTH",
    "SRTP_KEY_LENGTH",
    "SrtpContext",
    "SrtpStats",
    "SrtpSuite",
    "is_rtcp_datagram",
]

logger = logging.getLogger(__name__)

MASTER_KEY_LENGTH: Final = 16
"""AES-128 master key octets."""
MASTER_SALT_LENGTH: Final = 14
"""Master salt octets."""
SRTP_KEY_LENGTH: Final = MASTER_KEY_LENGTH + MASTER_SALT_LENGTH
"""Key and salt concatenated, as SDES carries them (``inline:`` base64 of 30 octets)."""


class SrtpSuite(enum.StrEnum):
    """An SRTP crypto suite, named as in SDES (RFC 4568 section 6.2)."""

    AES_CM_128_HMAC_SHA1_80 = "AES_CM_128_HMAC_SHA1_80"
    AES_CM_128_HMAC_SHA1_32 = "AES_CM_128_HMAC_SHA1_32"

    @property
    def tag_length(self) -> int:
        """SRTP authentication tag octets (SRTCP always uses 10)."""
        return 10 if self is SrtpSuite.AES_CM_128_HMAC_SHA1_80 else 4

    @property
    def key_length(self) -> int:
        """Master key plus master salt octets."""
        return SRTP_KEY_LENGTH


_PROFILES: Final = {
    SrtpSuite.AES_CM_128_HMAC_SHA1_80: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    SrtpSuite.AES_CM_128_HMAC_SHA1_32: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}


def is_rtcp_datagram(data: bytes) -> bool:
    """RTCP rather than RTP on a multiplexed port (RFC 5761 section 4: PT 64-95 with M=1).

    The header stays in the clear under SRTP, so this works on protected packets too.
    """
    return len(data) >= 2 and 192 <= data[1] <= 223


@dataclass(frozen=True, slots=True, kw_only=True)
class SrtpStats:
    """Snapshot of an :class:`SrtpContext`'s counters."""

    protected: int
    """RTP and RTCP packets protected and handed out to be sent."""
    unprotected: int
    """SRTP and SRTCP packets that authenticated and were decrypted."""
    auth_failures: int
    """Inbound packets dropped because the authentication tag did not match."""
    replays: int
    """Inbound packets dropped by the replay window (already received, or too old)."""
    malformed: int
    """Inbound packets libsrtp could not even process (too short, not SRTP)."""
    protect_failures: int
    """Outbound packets that could not be protected and were not sent (should stay 0)."""


def _check_key(name: str, key: bytes) -> bytes:
    if not isinstance(key, bytes) or len(key) != SRTP_KEY_LENGTH:
        raise ValueError(f"{name} must be {SRTP_KEY_LENGTH} bytes (master key and salt)")
    return key


class SrtpContext:
    """The SRTP state of one call: protect what we send, unprotect what the peer sends."""

    def __init__(self, suite: SrtpSuite | str, local_key: bytes, remote_key: bytes) -> None:
        """``local_key`` protects our packets, ``remote_key`` checks the peer's (30 bytes each).

        Raises ValueError for an unknown suite or a key of the wrong length.
        """
        self.suite = SrtpSuite(suite)
        profile = _PROFILES[self.suite]
        outbound = pylibsrtp.Policy(
            key=_check_key("local_key", local_key),
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
            srtp_profile=profile,
        )
        self._outbound = pylibsrtp.Session(outbound)
        self._inbound = self._inbound_session(remote_key)
        self.protected = 0
        self.unprotected = 0
        self.auth_failures = 0
        self.replays = 0
        self.malformed = 0
        self.protect_failures = 0

    def __repr__(self) -> str:  # never the keys
        return f"<SrtpContext {self.suite}>"

    def _inbound_session(self, remote_key: bytes) -> pylibsrtp.Session:
        policy = pylibsrtp.Policy(
            key=_check_key("remote_key", remote_key),
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=_PROFILES[self.suite],
        )
        return pylibsrtp.Session(policy)

    def update_remote_key(self, remote_key: bytes) -> None:
        """The peer re-keyed (a re-offer with a new ``a=crypto``, same suite, our key kept):
        check its packets with ``remote_key`` from now on.

        Only the inbound session is replaced. The outbound one carries on with its rollover
        counter and SRTCP index: a new context under our unchanged key would start them again
        and encrypt new packets with keystream already used (RFC 3711 section 9.1).
        """
        self._inbound = self._inbound_session(remote_key)

    # -- outbound -----------------------------------------------------------------------------

    def protect(self, packet: bytes) -> bytes | None:
        """The SRTP packet for an RTP packet; None (counted) if libsrtp refuses it."""
        try:
            data = self._outbound.protect(packet)
        except (pylibsrtp.Error, ValueError) as exc:
            self._protect_failed("RTP", exc)
            return None
        self.protected += 1
        return data

    def protect_rtcp(self, packet: bytes) -> bytes | None:
        """The SRTCP packet for an RTCP compound packet; None (counted) if libsrtp refuses it."""
        try:
            data = self._outbound.protect_rtcp(packet)
        except (pylibsrtp.Error, ValueError) as exc:
            self._protect_failed("RTCP", exc)
            return None
        self.protected += 1
        return data

    def _protect_failed(self, kind: str, exc: Exception) -> None:
        # Our own packets: a repeated sequence number or an oversized packet is a bug here.
        self.protect_failures += 1
        logger.warning("cannot protect %s packet: %s", kind, exc)

    # -- inbound ------------------------------------------------------------------------------

    def unprotect(self, packet: bytes) -> bytes | None:
        """The RTP packet inside an SRTP packet, or None (counted) if it must be dropped."""
        try:
            data = self._inbound.unprotect(packet)
        except (pylibsrtp.Error, ValueError) as exc:
            self._unprotect_failed("SRTP", exc)
            return None
        self.unprotected += 1
        return data

    def unprotect_rtcp(self, packet: bytes) -> bytes | None:
        """The RTCP packet inside an SRTCP packet, or None (counted) if it must be dropped."""
        try:
            data = self._inbound.unprotect_rtcp(packet)
        except (pylibsrtp.Error, ValueError) as exc:
            self._unprotect_failed("SRTCP", exc)
            return None
        self.unprotected += 1
        return data

    def _unprotect_failed(self, kind: str, exc: Exception) -> None:
        reason = str(exc)
        if reason == "authentication failure":
            self.auth_failures += 1
        elif reason.startswith("replay check failed"):
            self.replays += 1
        else:
            self.malformed += 1
        logger.debug("%s packet dropped: %s", kind, reason)

    def stats(self) -> SrtpStats:
        """A snapshot of the counters."""
        return SrtpStats(
            protected=self.protected,
            unprotected=self.unprotected,
            auth_failures=self.auth_failures,
            replays=self.replays,
            malformed=self.malformed,
            protect_failures=self.protect_failures,
        )
