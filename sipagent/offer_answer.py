"""RFC 3264 offer/answer for one audio stream, over the :mod:`sipagent.sdp` wire types.

Sans-I/O: no sockets, no clock, no randomness; session ids and versions are passed in.

* :func:`negotiate` answers a peer's offer (our codec preference, their payload types);
* :func:`make_offer` writes our offer when an INVITE came without SDP (late offer);
* :func:`accept_answer` checks the peer's answer to that offer.

Each returns or reads a :class:`Negotiated`: codec, DTMF payload type, where to send RTP
and RTCP, direction, ptime and — for an SRTP stream — the SDES suite and keys. A valid
description we cannot accept raises :class:`NegotiationError` (488); an invalid one raises
:class:`~sipagent.sdp.SdpError` (400).

SRTP with SDES keying (RFC 4568) is opt-in through :class:`SrtpPolicy`: ``off`` rejects
RTP/SAVP streams, ``optional`` answers RTP/SAVP with SRTP and RTP/AVP with RTP, ``required``
also rejects plain RTP. An RTP/SAVP offer is never answered with plain RTP. Our master key and
salt are passed in (``srtp_key``, 30 random bytes from the caller).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from rtp.srtp import SRTP_KEY_LENGTH, SrtpSuite

from .crypto_attr import ALL_SUITES, CryptoAttribute, CryptoError, choose_crypto
from .sdp import (
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Attribute,
    Codec,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    SdpError,
    SessionDescription,
)

__all__ = [
    "NegotiationError",
    "Negotiated",
    "SrtpKeys",
    "SrtpPolicy",
    "accept_answer",
    "make_offer",
    "negotiate",
]

logger = logging.getLogger(__name__)


class NegotiationError(SdpError):
    """The peer's SDP is valid but offers nothing we can accept (answer 488)."""

    def __init__(self, reason: str, status: int = 488) -> None:
        super().__init__(reason, status)


class SrtpPolicy(enum.StrEnum):
    """Whether calls use SRTP (settings: ``SIPAGENT_SRTP``)."""

    OFF = "off"
    """Plain RTP only: RTP/SAVP streams are rejected (488 if nothing else is offered)."""
    OPTIONAL = "optional"
    """SRTP when the peer offers RTP/SAVP, plain RTP when it offers RTP/AVP."""
    REQUIRED = "required"
    """SRTP only: RTP/AVP streams are rejected (488), late offers are RTP/SAVP."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SrtpKeys:
    """The SDES outcome, for ``rtp.srtp.SrtpContext(suite, local_key, remote_key)``."""

    suite: SrtpSuite
    """The crypto suite both sides use."""
    local_key: bytes
    """Our master key and salt (in our a=crypto): protects what we send."""
    remote_key: bytes
    """The peer's master key and salt (in its a=crypto): checks what we receive."""
    tag: int
    """The tag of the accepted a=crypto line."""

    def __repr__(self) -> str:  # never the keys
        return f"SrtpKeys(suite={self.suite}, tag={self.tag})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Negotiated:
    """The outcome of an offer/answer exchange for the audio stream."""

    answer: SessionDescription
    """The answer: ours from negotiate(), the peer's from accept_answer()."""
    codec: Codec
    """The audio codec, with the payload type the offerer chose for it."""
    dtmf_payload_type: int | None
    """RFC 4733 telephone-event payload type, None if not negotiated."""
    remote_addr: tuple[str, int] | None
    """Where to send RTP; None when the peer gave port 0 or an unspecified address (hold)."""
    remote_rtcp_addr: tuple[str, int] | None
    """Where to send RTCP (a=rtcp, else RTP port + 1); None when remote_addr is None."""
    direction: Direction
    """Our direction: whether we send and/or receive audio."""
    ptime_ms: int
    """Packet duration the peer wants to receive (its a=ptime, default 20)."""
    media_index: int
    """Index of the audio m= line in the offer and the answer."""
    srtp: SrtpKeys | None = None
    """SRTP suite and keys when the stream is RTP/SAVP(F), None for plain RTP."""


_ANSWERABLE_PROTOS = ("RTP/AVP", "RTP/AVPF")
_ANSWERABLE_SECURE_PROTOS = ("RTP/SAVP", "RTP/SAVPF")
_DEFAULT_PTIME_MS = 20
_DTMF_EVENTS = "0-16"


def _choose_codec(
    media: MediaDescription, supported: Sequence[Codec], *, ours_first: bool
) -> Codec | None:
    """First supported codec among the offered formats, in our order or in theirs."""
    offered = [(pt, media.rtpmap_for(pt)) for pt in media.payload_types]
    pairs = (
        [(codec, pt, rtpmap) for codec in supported for pt, rtpmap in offered]
        if ours_first
        else [(codec, pt, rtpmap) for pt, rtpmap in offered for codec in supported]
    )
    for codec, pt, rtpmap in pairs:
        if rtpmap is not None and rtpmap.matches(codec):
            return Codec(codec.name, pt, codec.clock_rate)
    return None


def _dtmf_payload_type(media: MediaDescription, clock_rate: int) -> int | None:
    event = Codec(TELEPHONE_EVENT.name, TELEPHONE_EVENT.payload_type, clock_rate)
    for pt in media.payload_types:
        rtpmap = media.rtpmap_for(pt)
        if rtpmap is not None and rtpmap.matches(event):
            return pt
    return None


@dataclass(frozen=True, slots=True)
class _RemoteMedia:
    direction: Direction
    addr: tuple[str, int] | None
    rtcp_addr: tuple[str, int] | None
    ptime_ms: int


def _remote_media(description: SessionDescription, media: MediaDescription) -> _RemoteMedia:
    """What the peer's m= section says about its side of the stream."""
    connection = description.connection_for(media)
    if connection is None:
        raise SdpError("no c= line for the audio stream")
    declared = description.direction_for(media)
    # RFC 3264 section 8.4: c=0.0.0.0 is the RFC 2543 way of saying "do not send to me".
    receives = declared.receives and not connection.unspecified
    direction = Direction.from_flags(send=declared.sends, recv=receives)
    addr: tuple[str, int] | None = None
    rtcp_addr: tuple[str, int] | None = None
    if media.port != 0 and not connection.unspecified:
        addr = (connection.address, media.port)
        rtcp = media.rtcp
        if rtcp is not None:
            rtcp_host = rtcp.connection.address if rtcp.connection else connection.address
            rtcp_addr = (rtcp_host, rtcp.port)
        elif media.port < 65535:
            rtcp_addr = (connection.address, media.port + 1)
    ptime = media.ptime or _DEFAULT_PTIME_MS
    if media.maxptime is not None:
        ptime = min(ptime, media.maxptime)
    return _RemoteMedia(direction, addr, rtcp_addr, ptime)


def _audio_media(
    *,
    local_port: int,
    proto: str,
    codecs: Sequence[Codec],
    dtmf_payload_type: int | None,
    direction: Direction,
    crypto: Sequence[CryptoAttribute] = (),
) -> MediaDescription:
    formats = [codec.payload_type for codec in codecs]
    attributes = [Attribute("rtpmap", f"{c.payload_type} {c.name}/{c.clock_rate}") for c in codecs]
    if dtmf_payload_type is not None:
        formats.append(dtmf_payload_type)
        event = f"{dtmf_payload_type} {TELEPHONE_EVENT.name}/{TELEPHONE_EVENT.clock_rate}"
        attributes.append(Attribute("rtpmap", event))
        attributes.append(Attribute("fmtp", f"{dtmf_payload_type} {_DTMF_EVENTS}"))
    attributes.append(Attribute("ptime", str(_DEFAULT_PTIME_MS)))
    attributes.append(Attribute(direction.value))
    attributes.extend(Attribute("crypto", c.serialize()) for c in crypto)
    return MediaDescription(
        media="audio",
        port=local_port,
        proto=proto,
        formats=tuple(str(pt) for pt in formats),
        attributes=tuple(attributes),
    )


def _local_description(
    *, local_host: str, session_id: int, version: int, media: Sequence[MediaDescription]
) -> SessionDescription:
    connection = Connection.for_host(local_host)
    return SessionDescription(
        origin=Origin("-", session_id, version, local_host, connection.address_type),
        session_name="sipagent",
        connection=connection,
        media=tuple(media),
    )


def _check_srtp_key(srtp: SrtpPolicy, srtp_key: bytes | None) -> bytes | None:
    """Our key, required (and checked) whenever SRTP may be used."""
    if srtp is SrtpPolicy.OFF:
        return None
    if srtp_key is None or len(srtp_key) != SRTP_KEY_LENGTH:
        raise ValueError(f"SRTP {srtp} needs srtp_key: {SRTP_KEY_LENGTH} random bytes")
    return srtp_key


def _stream_refusal(
    media: MediaDescription,
    srtp: SrtpPolicy,
    srtp_suites: Sequence[SrtpSuite],
) -> tuple[str | None, CryptoAttribute | None]:
    """Why an offered audio stream's transport is not acceptable (None if it is), and for
    an SRTP stream the offered a=crypto line we accept."""
    proto = media.proto.upper()
    if media.is_secure:
        if srtp is SrtpPolicy.OFF:
            return f"{media.proto} (SRTP) is not supported", None
        if proto not in _ANSWERABLE_SECURE_PROTOS:
            return f"transport {media.proto} is not supported", None
        crypto, skipped = choose_crypto(media.crypto, srtp_suites)
        if crypto is None:
            detail = f" ({'; '.join(skipped)})" if skipped else ""
            return f"no usable a=crypto in the {media.proto} offer{detail}", None
        return None, crypto
    if proto not in _ANSWERABLE_PROTOS:
        return f"transport {media.proto} is not supported", None
    if srtp is SrtpPolicy.REQUIRED:
        return f"{media.proto} (plain RTP) offered but SRTP is required", None
    return None, None


def negotiate(
    offer: SessionDescription,
    *,
    local_host: str,
    local_port: int,
    session_id: int,
    version: int = 0,
    supported: Sequence[Codec] = (PCMU, PCMA),
    dtmf: bool = True,
    direction: Direction = Direction.SENDRECV,
    srtp: SrtpPolicy = SrtpPolicy.OFF,
    srtp_key: bytes | None = None,
    srtp_suites: Sequence[SrtpSuite] = ALL_SUITES,
) -> Negotiated:
    """Answer an offer (RFC 3264): accept the first usable audio stream, reject the rest.

    The codec is the first of ``supported`` (our preference) that the offer lists.
    ``direction`` is what we want locally (e.g. sendonly to put the peer on hold); the
    answer's direction is that restricted by the offer's.

    With ``srtp`` optional or required, an RTP/SAVP(F) stream is answered with SRTP: the
    offerer's first a=crypto line with a suite of ``srtp_suites`` (and no MKI or other
    unsupported parameter) is accepted, and our a=crypto carries its tag and ``srtp_key``
    (30 random bytes, required unless ``srtp`` is off; ValueError otherwise).

    Raise NegotiationError (488) when no acceptable audio stream with a common codec is
    offered, SdpError (400) when the chosen stream has no connection address.
    """
    our_key = _check_srtp_key(srtp, srtp_key)
    chosen: tuple[int, MediaDescription, Codec, CryptoAttribute | None] | None = None
    reasons: list[str] = []
    for index, media in enumerate(offer.media):
        if media.media.lower() != "audio" or media.port == 0:
            continue
        refusal, offered_crypto = _stream_refusal(media, srtp, srtp_suites)
        if refusal is not None:
            reasons.append(refusal)
            continue
        codec = _choose_codec(media, supported, ours_first=True)
        if codec is None:
            reasons.append("no common codec")
            continue
        chosen = (index, media, codec, offered_crypto)
        break
    if chosen is None:
        raise NegotiationError(reasons[0] if reasons else "no audio stream offered")

    index, offered, codec, offered_crypto = chosen
    keys: SrtpKeys | None = None
    answer_crypto: list[CryptoAttribute] = []
    if offered_crypto is not None:
        assert our_key is not None  # a secure stream is only chosen when SRTP is enabled
        answer_crypto.append(
            CryptoAttribute(tag=offered_crypto.tag, suite=offered_crypto.suite, key=our_key)
        )
        keys = SrtpKeys(
            suite=offered_crypto.suite,
            local_key=our_key,
            remote_key=offered_crypto.key,
            tag=offered_crypto.tag,
        )
    remote = _remote_media(offer, offered)
    our_direction = remote.direction.reversed().restrict(direction)
    dtmf_payload_type = _dtmf_payload_type(offered, codec.clock_rate) if dtmf else None
    answer_media = [
        _audio_media(
            local_port=local_port,
            proto=offered.proto,
            codecs=[codec],
            dtmf_payload_type=dtmf_payload_type,
            direction=our_direction,
            crypto=answer_crypto,
        )
        if position == index
        else MediaDescription(media=media.media, port=0, proto=media.proto, formats=media.formats)
        for position, media in enumerate(offer.media)
    ]
    answer = _local_description(
        local_host=local_host, session_id=session_id, version=version, media=answer_media
    )
    logger.debug(
        "negotiated %s pt=%d dtmf=%s direction=%s remote=%s srtp=%s",
        codec.name,
        codec.payload_type,
        dtmf_payload_type,
        our_direction,
        remote.addr,
        keys.suite if keys is not None else None,
    )
    return Negotiated(
        answer=answer,
        codec=codec,
        dtmf_payload_type=dtmf_payload_type,
        remote_addr=remote.addr,
        remote_rtcp_addr=remote.rtcp_addr,
        direction=our_direction,
        ptime_ms=remote.ptime_ms,
        media_index=index,
        srtp=keys,
    )


def make_offer(
    *,
    local_host: str,
    local_port: int,
    session_id: int,
    version: int,
    direction: Direction = Direction.SENDRECV,
    supported: Sequence[Codec] = (PCMU, PCMA),
    dtmf: bool = True,
    srtp: SrtpPolicy = SrtpPolicy.OFF,
    srtp_key: bytes | None = None,
    srtp_suites: Sequence[SrtpSuite] = ALL_SUITES,
) -> SessionDescription:
    """Our offer, for an INVITE that came without SDP (late offer): PCMU, PCMA, PT 101 events.

    With ``srtp`` required the offer is RTP/SAVP with one a=crypto line per suite of
    ``srtp_suites`` (tags 1, 2...), all carrying ``srtp_key``: only one of them is ever used.
    With ``srtp`` optional it stays RTP/AVP, which every peer can answer.
    """
    our_key = _check_srtp_key(srtp, srtp_key)
    crypto: list[CryptoAttribute] = []
    if srtp is SrtpPolicy.REQUIRED and our_key is not None:
        crypto = [
            CryptoAttribute(tag=tag, suite=suite, key=our_key)
            for tag, suite in enumerate(srtp_suites, start=1)
        ]
    media = _audio_media(
        local_port=local_port,
        proto="RTP/SAVP" if crypto else "RTP/AVP",
        codecs=supported,
        dtmf_payload_type=TELEPHONE_EVENT.payload_type if dtmf else None,
        direction=direction,
        crypto=crypto,
    )
    return _local_description(
        local_host=local_host, session_id=session_id, version=version, media=[media]
    )


def _answered_srtp(offered: MediaDescription, answered: MediaDescription) -> SrtpKeys | None:
    """The keys of an answered RTP/SAVP stream: its one a=crypto must echo one of ours."""
    if not offered.is_secure:
        return None
    if len(answered.crypto) != 1:
        raise NegotiationError("the SRTP answer needs exactly one a=crypto line")
    try:
        theirs = CryptoAttribute.parse(answered.crypto[0])
    except CryptoError as exc:
        raise NegotiationError(f"the answer's a=crypto is not usable: {exc.reason}") from None
    for value in offered.crypto:
        ours = CryptoAttribute.parse(value)
        if ours.tag == theirs.tag:
            if ours.suite is not theirs.suite:
                break
            return SrtpKeys(
                suite=ours.suite, local_key=ours.key, remote_key=theirs.key, tag=ours.tag
            )
    raise NegotiationError("the answer's a=crypto does not match one we offered")


def accept_answer(offer: SessionDescription, answer: SessionDescription) -> Negotiated:
    """Check the peer's answer (e.g. in the ACK) to our offer and read the agreed stream.

    The codec is the first format of the answer that we offered and support (the answerer's
    preference, RFC 3264 section 7). For an RTP/SAVP offer (ours, from make_offer) the
    answer's a=crypto must repeat the tag and suite of one of our lines; our key is read back
    from that line. Raise NegotiationError if the answer does not match the offer or rejects
    the audio stream.
    """
    if len(answer.media) != len(offer.media):
        raise NegotiationError(
            f"answer has {len(answer.media)} m= lines, the offer had {len(offer.media)}"
        )
    index = next(
        (i for i, media in enumerate(offer.media) if media.media == "audio" and media.port),
        None,
    )
    if index is None:
        raise NegotiationError("the offer has no audio stream")
    offered, answered = offer.media[index], answer.media[index]
    if answered.port == 0:
        raise NegotiationError("the answer rejected the audio stream")
    if answered.proto.upper() != offered.proto.upper() or answered.media != offered.media:
        raise NegotiationError("the answer does not match the offered audio stream")
    offered_rtpmaps = (offered.rtpmap_for(pt) for pt in offered.payload_types)
    ours = [
        Codec(rtpmap.encoding_name.upper(), rtpmap.payload_type, rtpmap.clock_rate)
        for rtpmap in offered_rtpmaps
        if rtpmap is not None and rtpmap.encoding_name.lower() != TELEPHONE_EVENT.name
    ]
    codec = _choose_codec(answered, ours, ours_first=False)
    if codec is None:
        raise NegotiationError("the answer has no codec from the offer")
    keys = _answered_srtp(offered, answered)
    remote = _remote_media(answer, answered)
    our_direction = remote.direction.reversed().restrict(offer.direction_for(offered))
    dtmf_payload_type = (
        _dtmf_payload_type(answered, codec.clock_rate)
        if _dtmf_payload_type(offered, codec.clock_rate) is not None
        else None
    )
    return Negotiated(
        answer=answer,
        codec=codec,
        dtmf_payload_type=dtmf_payload_type,
        remote_addr=remote.addr,
        remote_rtcp_addr=remote.rtcp_addr,
        direction=our_direction,
        ptime_ms=remote.ptime_ms,
        media_index=index,
        srtp=keys,
    )
