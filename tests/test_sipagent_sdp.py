"""Tests for sipagent.sdp: parsing, round-trips and RFC 3264 offer/answer."""

from __future__ import annotations

from typing import Any

import pytest

from sipagent.exceptions import RemoteProtocolError
from sipagent.sdp import (
    PCMA,
    PCMU,
    Attribute,
    Codec,
    Connection,
    Direction,
    MediaDescription,
    Negotiated,
    NegotiationError,
    Origin,
    RtcpAttribute,
    RtpMap,
    SdpError,
    SessionDescription,
    Timing,
    accept_answer,
    make_offer,
    negotiate,
)


def crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


# Offers in the shape real peers send them (written for these tests, not captured).
TWILIO_OFFER = crlf("""v=0
o=root 1185592862 1185592862 IN IP4 168.86.128.10
s=Twilio Media Gateway
c=IN IP4 168.86.128.10
t=0 0
m=audio 14310 RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=maxptime:150
a=rtcp:14311
a=sendrecv
""")

BARESIP_OFFER = crlf("""v=0
o=- 2790227836 1185339574 IN IP4 192.168.1.20
s=-
c=IN IP4 192.168.1.20
t=0 0
m=audio 10384 RTP/AVP 96 9 0 8 101
b=AS:128
a=rtpmap:96 opus/48000/2
a=fmtp:96 stereo=1;sprop-stereo=1
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=rtcp-rsize
a=label:1
a=sendrecv
a=ptime:20
a=ssrc:3312384812 cname:62b3e1a2-2c87-4f11-9d1c-0cb17e5ae43f
""")

PJSIP_OFFER = crlf("""v=0
o=- 3921504563 3921504563 IN IP4 10.0.0.5
s=pjmedia
b=AS:84
t=0 0
a=X-nat:0
m=audio 4000 RTP/AVP 98 97 99 104 3 0 8 9 96 101
c=IN IP4 10.0.0.5
b=TIAS:64000
a=rtcp:4001 IN IP4 10.0.0.5
a=sendrecv
a=rtpmap:98 speex/16000
a=rtpmap:97 speex/8000
a=rtpmap:99 speex/32000
a=rtpmap:104 iLBC/8000
a=fmtp:104 mode=30
a=rtpmap:3 GSM/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:9 G722/8000
a=rtpmap:96 telephone-event/16000
a=fmtp:96 0-16
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ssrc:1946318432 cname:1f1b9a6c6b1d2e35
""")

LINPHONE_OFFER = crlf("""v=0
o=alice 1856 2839 IN IP4 192.168.0.12
s=Talk
c=IN IP4 192.168.0.12
t=0 0
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics
a=record:off
m=audio 7078 RTP/AVP 96 97 98 0 8 18 101 99 100
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:97 SILK/16000
a=rtpmap:98 speex/16000
a=fmtp:98 vbr=on
a=fmtp:18 annexb=yes
a=rtpmap:101 telephone-event/48000
a=rtpmap:99 telephone-event/16000
a=rtpmap:100 telephone-event/8000
a=rtcp:7079
a=rtcp-fb:* trr-int 1000
a=rtcp-fb:* ccm tmmbr
""")

IPV6_OFFER = crlf("""v=0
o=- 20518 0 IN IP6 2001:db8::10
s=-
c=IN IP6 2001:db8::10
t=0 0
m=audio 49170 RTP/AVP 8 0 101
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
""")

SRTP_OFFER = crlf("""v=0
o=- 1 1 IN IP4 192.0.2.7
s=-
c=IN IP4 192.0.2.7
t=0 0
m=audio 30000 RTP/SAVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4
a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32
""")

VIDEO_OFFER = crlf("""v=0
o=- 7 7 IN IP4 192.0.2.8
s=-
c=IN IP4 192.0.2.8
t=0 0
m=video 51372 RTP/AVP 96 97
a=rtpmap:96 H264/90000
a=rtpmap:97 VP8/90000
m=audio 51370 RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
m=image 51374 udptl t38
""")

ALL_OFFERS = [
    TWILIO_OFFER,
    BARESIP_OFFER,
    PJSIP_OFFER,
    LINPHONE_OFFER,
    IPV6_OFFER,
    SRTP_OFFER,
    VIDEO_OFFER,
]


def simple_offer(
    *, connection: str = "IN IP4 192.0.2.1", media: str = "", session: str = ""
) -> str:
    return crlf(
        "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\n"
        f"c={connection}\nt=0 0\n{session}"
        "m=audio 20000 RTP/AVP 0 8 101\n"
        "a=rtpmap:101 telephone-event/8000\n"
        f"{media}"
    )


def negotiated(offer: str, **kwargs: Any) -> Negotiated:
    return negotiate(
        SessionDescription.parse(offer),
        local_host="203.0.113.5",
        local_port=10000,
        session_id=42,
        **kwargs,
    )


# --- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", ALL_OFFERS)
def test_round_trip_is_byte_exact(text: str) -> None:
    parsed = SessionDescription.parse(text)
    assert parsed.serialize() == text
    assert bytes(parsed) == text.encode()
    assert SessionDescription.parse(parsed.serialize()) == parsed


def test_parse_twilio_offer_fields() -> None:
    sdp = SessionDescription.parse(TWILIO_OFFER)
    assert sdp.origin == Origin("root", 1185592862, 1185592862, "168.86.128.10")
    assert sdp.session_name == "Twilio Media Gateway"
    assert sdp.connection == Connection("168.86.128.10")
    assert sdp.times == (Timing(0, 0),)
    (audio,) = sdp.media
    assert (audio.media, audio.port, audio.proto) == ("audio", 14310, "RTP/AVP")
    assert audio.formats == ("0", "8", "101")
    assert audio.payload_types == (0, 8, 101)
    assert audio.rtpmap[101] == RtpMap(101, "telephone-event", 8000)
    assert audio.fmtp == {101: "0-16"}
    assert (audio.ptime, audio.maxptime) == (20, 150)
    assert audio.rtcp == RtcpAttribute(14311)
    assert audio.direction is Direction.SENDRECV
    assert not audio.rtcp_mux
    assert audio.crypto == ()


def test_parse_keeps_unknown_attributes_in_order() -> None:
    sdp = SessionDescription.parse(BARESIP_OFFER)
    names = [attribute.name for attribute in sdp.media[0].attributes]
    assert names[-5:] == ["rtcp-rsize", "label", "sendrecv", "ptime", "ssrc"]
    assert sdp.media[0].attributes[-1] == Attribute(
        "ssrc", "3312384812 cname:62b3e1a2-2c87-4f11-9d1c-0cb17e5ae43f"
    )
    assert sdp.media[0].bandwidths == ("AS:128",)
    assert sdp.media[0].rtpmap[96] == RtpMap(96, "opus", 48000, 2)
    assert sdp.media[0].fmtp[96] == "stereo=1;sprop-stereo=1"


def test_parse_media_level_connection_and_rtcp_address() -> None:
    sdp = SessionDescription.parse(PJSIP_OFFER)
    audio = sdp.media[0]
    assert sdp.connection is None
    assert sdp.bandwidths == ("AS:84",)
    assert sdp.attributes == (Attribute("X-nat", "0"),)
    assert audio.connection == Connection("10.0.0.5")
    assert sdp.connection_for(audio) == Connection("10.0.0.5")
    assert audio.rtcp == RtcpAttribute(4001, Connection("10.0.0.5"))


def test_static_payload_types_without_rtpmap() -> None:
    audio = SessionDescription.parse(IPV6_OFFER).media[0]
    assert 0 not in audio.rtpmap
    assert audio.rtpmap_for(0) == RtpMap(0, "PCMU", 8000)
    assert audio.rtpmap_for(8) == RtpMap(8, "PCMA", 8000)
    assert audio.rtpmap_for(18) == RtpMap(18, "G729", 8000)
    assert audio.rtpmap_for(120) is None


def test_parse_ipv6_connection() -> None:
    sdp = SessionDescription.parse(IPV6_OFFER)
    assert sdp.connection == Connection("2001:db8::10", "IP6")
    assert sdp.origin.address_type == "IP6"


def test_parse_srtp_keeps_crypto_lines() -> None:
    audio = SessionDescription.parse(SRTP_OFFER).media[0]
    assert audio.is_secure
    assert len(audio.crypto) == 2
    assert audio.crypto[0].startswith("1 AES_CM_128_HMAC_SHA1_80 inline:")


def test_parse_lf_only_and_trailing_whitespace() -> None:
    text = TWILIO_OFFER.replace("\r\n", "  \t\n") + "\n\n"
    assert SessionDescription.parse(text) == SessionDescription.parse(TWILIO_OFFER)
    assert SessionDescription.parse(text).serialize() == TWILIO_OFFER


def test_parse_bytes() -> None:
    assert SessionDescription.parse(TWILIO_OFFER.encode()) == SessionDescription.parse(TWILIO_OFFER)


def test_parse_non_rtp_media_formats_are_tokens() -> None:
    image = SessionDescription.parse(VIDEO_OFFER).media[2]
    assert (image.media, image.proto, image.formats) == ("image", "udptl", ("t38",))
    assert image.payload_types == ()
    assert not image.is_rtp


def test_parse_misc_lines_round_trip() -> None:
    text = crlf(
        "v=0\no=- 1 2 IN IP4 192.0.2.1\ns= \ni=info\nu=http://example.com/\n"
        "e=ops@example.com\np=+1 555 0100\nc=IN IP4 224.2.1.1/127\nt=3034423619 3042462419\n"
        "r=604800 3600 0 90000\nz=2882844526 -1h\nk=prompt\na=recvonly\n"
        "m=audio 49170/2 RTP/AVP 0\ni=voice\nb=AS:64\nk=prompt\na=rtcp-mux\na=ptime:30.0\n"
    )
    sdp = SessionDescription.parse(text)
    assert sdp.serialize() == text
    assert sdp.session_name == ""
    assert sdp.connection == Connection("224.2.1.1", suffix="127")
    assert sdp.times[0].repeats == ("604800 3600 0 90000",)
    assert sdp.direction is Direction.RECVONLY
    audio = sdp.media[0]
    assert (audio.port, audio.port_count, audio.information) == (49170, 2, "voice")
    assert audio.rtcp_mux
    assert audio.ptime == 30


def test_parse_missing_t_line_serializes_default_timing() -> None:
    sdp = SessionDescription.parse("v=0\no=- 1 1 IN IP4 a\ns=-\nm=audio 1 RTP/AVP 0\n")
    assert sdp.times == (Timing(),)
    assert "t=0 0\r\n" in sdp.serialize()


def test_malformed_attribute_values_are_kept_but_ignored() -> None:
    text = simple_offer(
        media="a=rtpmap:abc PCMU/8000\na=rtpmap:97 PCMA\na=ptime:soon\na=maxptime:inf\n"
        "a=rtcp:x\na=fmtp:zz 1\n"
    )
    audio = SessionDescription.parse(text).media[0]
    assert set(audio.rtpmap) == {101}
    assert audio.fmtp == {}
    assert audio.ptime is None
    assert audio.maxptime is None
    assert audio.rtcp is None
    assert SessionDescription.parse(text).serialize() == text


BAD_SDP = [
    ("", "empty SDP"),
    ("o=- 1 1 IN IP4 a\ns=-\nm=audio 1 RTP/AVP 0\n", "missing v= line"),
    ("v=1\no=- 1 1 IN IP4 a\ns=-\nm=audio 1 RTP/AVP 0\n", "unsupported SDP version"),
    ("v=0\ns=-\nm=audio 1 RTP/AVP 0\n", "missing o= line"),
    ("v=0\no=- 1 1 IN IP4 a\nm=audio 1 RTP/AVP 0\n", "missing s= line"),
    ("v=0\no=- 1 1 IN IP4 a\ns=-\nt=0 0\n", "missing m= line"),
    ("v=0\no=- 1 1 IN IP4 a\ns=-\nm=audio 1 RTP/AVP\n", "bad m= line"),
    ("v=0\no=- 1 1 IN IP4 a\ns=-\nm=audio port RTP/AVP 0\n", "bad port in m= line"),
    ("v=0\no=- 1 1 IN IP4 a\ns=-\nm=audio 70000 RTP/AVP 0\n", "bad port in m= line"),
    ("v=0\no=- 1 1 IN IP4 a\ns=-\nm=audio -5 RTP/AVP 0\n", "bad port in m= line"),
    ("v=0\no=- 1 1 IN IP4 a\ns=-\nm=audio 5/0 RTP/AVP 0\n", "bad port in m= line"),
    ("v=0\no=- 1 1 IN IP4 a\ns=-\nm=audio 5 RTP/AVP PCMU\n", "bad payload type in m= line"),
    ("v=0\no=- 1 1 IN IP4 a\ns=-\nm=audio 5 RTP/AVP 128\n", "bad payload type in m= line"),
    ("v=0\no=- x 1 IN IP4 a\ns=-\nm=audio 1 RTP/AVP 0\n", "bad o= line"),
    ("v=0\no=- 1 1 IN IP4\ns=-\nm=audio 1 RTP/AVP 0\n", "bad o= line"),
    ("v=0\no=- 1 1 IN IP4 a\ns=-\nc=IN IP4\nm=audio 1 RTP/AVP 0\n", "bad c= line"),
    ("v=0\no=- 1 1 IN IP4 a\ns=-\nc=IN IPX a\nm=audio 1 RTP/AVP 0\n", "bad c= line"),
    ("v=0\no=- 1 1 IN IP4 a\ns=-\nt=now\nm=audio 1 RTP/AVP 0\n", "bad t= line"),
    ("v=0\no=- 1 1 IN IP4 a\ns=-\nr=1 2 3\nm=audio 1 RTP/AVP 0\n", "r= line without t= line"),
    ("v=0\no=- 1 1 IN IP4 a\no=- 1 1 IN IP4 a\ns=-\nm=audio 1 RTP/AVP 0\n", "duplicate o= line"),
    ("v=0\nv=0\no=- 1 1 IN IP4 a\ns=-\nm=audio 1 RTP/AVP 0\n", "duplicate v= line"),
    ("v=0\no=- 1 1 IN IP4 a\ns=-\nx=1\nm=audio 1 RTP/AVP 0\n", "unknown SDP line type 'x'"),
    (
        "v=0\no=- 1 1 IN IP4 a\ns=-\nm=audio 1 RTP/AVP 0\nt=0 0\n",
        "t= line not allowed in media description",
    ),
    (
        "v=0\no=- 1 1 IN IP4 a\ns=-\nm=audio 1 RTP/AVP 0\nc=IN IP4 a\nc=IN IP4 b\n",
        "duplicate c= line in media description",
    ),
    ("v=0\no=- 1 1 IN IP4 a\ns=-\nm=audio 1 RTP/AVP 0\na=:x\n", "bad a= line"),
    ("v=0\no=- 1 1 IN IP4 a\ns=-\nm=audio 1 RTP/AVP 0\nthis is not sdp\n", "malformed SDP line 5"),
    ("v=0\no=- 1 1 IN IP4 a\ns=-\nM=audio 1 RTP/AVP 0\n", "malformed SDP line 4"),
]


@pytest.mark.parametrize(("text", "reason"), BAD_SDP)
def test_malformed_sdp_is_rejected_with_400(text: str, reason: str) -> None:
    with pytest.raises(SdpError) as caught:
        SessionDescription.parse(text)
    assert caught.value.status == 400
    assert caught.value.reason == reason
    assert str(caught.value) == reason
    assert isinstance(caught.value, RemoteProtocolError)


def test_invalid_utf8_is_rejected_with_400() -> None:
    with pytest.raises(SdpError) as caught:
        SessionDescription.parse(b"v=0\r\ns=\xff\r\n")
    assert caught.value.status == 400


# --- negotiation -----------------------------------------------------------------------


def test_answer_to_twilio_offer_is_exact() -> None:
    result = negotiated(TWILIO_OFFER)
    assert result.answer.serialize() == crlf("""v=0
o=- 42 0 IN IP4 203.0.113.5
s=sipagent
c=IN IP4 203.0.113.5
t=0 0
m=audio 10000 RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
""")
    assert result.codec == PCMU
    assert result.dtmf_payload_type == 101
    assert result.remote_addr == ("168.86.128.10", 14310)
    assert result.remote_rtcp_addr == ("168.86.128.10", 14311)
    assert result.direction is Direction.SENDRECV
    assert result.ptime_ms == 20
    assert result.media_index == 0


def test_answer_round_trips() -> None:
    result = negotiated(VIDEO_OFFER)
    assert SessionDescription.parse(result.answer.serialize()) == result.answer


def test_session_version_is_ours() -> None:
    result = negotiated(TWILIO_OFFER, version=3)
    assert result.answer.origin == Origin("-", 42, 3, "203.0.113.5")


def test_baresip_offer_prefers_pcmu_over_opus_and_g722() -> None:
    result = negotiated(BARESIP_OFFER)
    assert result.codec == Codec("PCMU", 0, 8000)
    assert result.dtmf_payload_type == 101
    assert result.answer.media[0].formats == ("0", "101")
    assert result.remote_rtcp_addr == ("192.168.1.20", 10385)


def test_pjsip_offer_picks_8khz_telephone_event() -> None:
    result = negotiated(PJSIP_OFFER)
    assert result.codec == PCMU
    assert result.dtmf_payload_type == 101
    assert result.remote_addr == ("10.0.0.5", 4000)
    assert result.remote_rtcp_addr == ("10.0.0.5", 4001)
    assert result.answer.media[0].fmtp == {101: "0-16"}


def test_linphone_offer() -> None:
    result = negotiated(LINPHONE_OFFER)
    assert result.codec == PCMU
    assert result.dtmf_payload_type == 100
    assert result.remote_addr == ("192.168.0.12", 7078)
    assert result.remote_rtcp_addr == ("192.168.0.12", 7079)


def test_ipv6_offer_and_ipv6_answer() -> None:
    result = negotiate(
        SessionDescription.parse(IPV6_OFFER),
        local_host="2001:db8::1",
        local_port=10002,
        session_id=9,
    )
    assert result.codec == PCMU  # our preference, although the offer lists PCMA first
    assert result.remote_addr == ("2001:db8::10", 49170)
    text = result.answer.serialize()
    assert "o=- 9 0 IN IP6 2001:db8::1\r\n" in text
    assert "c=IN IP6 2001:db8::1\r\n" in text


def test_pcma_when_pcmu_not_offered_with_dynamic_pt_and_lowercase_name() -> None:
    text = crlf(
        "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n"
        "m=audio 20000 RTP/AVP 18 97\na=rtpmap:97 pcma/8000\n"
    )
    result = negotiated(text)
    assert result.codec == Codec("PCMA", 97, 8000)
    assert result.dtmf_payload_type is None
    assert result.answer.media[0].formats == ("97",)
    assert Attribute("rtpmap", "97 PCMA/8000") in result.answer.media[0].attributes


def test_supported_restricts_codecs() -> None:
    result = negotiated(TWILIO_OFFER, supported=(PCMA,))
    assert result.codec == PCMA


def test_dtmf_can_be_disabled() -> None:
    result = negotiated(TWILIO_OFFER, dtmf=False)
    assert result.dtmf_payload_type is None
    assert result.answer.media[0].formats == ("0",)


@pytest.mark.parametrize(
    ("media", "session", "expected"),
    [
        ("a=sendrecv\n", "", Direction.SENDRECV),
        ("a=sendonly\n", "", Direction.RECVONLY),
        ("a=recvonly\n", "", Direction.SENDONLY),
        ("a=inactive\n", "", Direction.INACTIVE),
        ("", "a=sendonly\n", Direction.RECVONLY),
        ("a=sendrecv\n", "a=inactive\n", Direction.SENDRECV),  # media level wins
        ("", "", Direction.SENDRECV),
    ],
)
def test_answer_direction(media: str, session: str, expected: Direction) -> None:
    result = negotiated(simple_offer(media=media, session=session))
    assert result.direction is expected
    assert result.answer.media[0].direction is expected
    assert result.remote_addr == ("192.0.2.1", 20000)


def test_old_style_hold_with_unspecified_address() -> None:
    result = negotiated(simple_offer(connection="IN IP4 0.0.0.0"))
    assert result.direction is Direction.RECVONLY
    assert result.remote_addr is None
    assert result.remote_rtcp_addr is None
    assert "a=recvonly\r\n" in result.answer.serialize()


def test_old_style_hold_combined_with_recvonly_is_inactive() -> None:
    result = negotiated(simple_offer(connection="IN IP4 0.0.0.0", media="a=recvonly\n"))
    assert result.direction is Direction.INACTIVE


def test_local_direction_restricts_answer() -> None:
    assert negotiated(TWILIO_OFFER, direction=Direction.SENDONLY).direction is Direction.SENDONLY
    assert negotiated(TWILIO_OFFER, direction=Direction.INACTIVE).direction is Direction.INACTIVE
    held = negotiated(simple_offer(media="a=sendonly\n"), direction=Direction.SENDONLY)
    assert held.direction is Direction.INACTIVE


def test_ptime_from_offer() -> None:
    assert negotiated(simple_offer(media="a=ptime:30\n")).ptime_ms == 30
    assert negotiated(simple_offer(media="a=ptime:40\na=maxptime:20\n")).ptime_ms == 20
    assert negotiated(simple_offer()).ptime_ms == 20
    # Our own preference is always 20 ms.
    assert negotiated(simple_offer(media="a=ptime:30\n")).answer.media[0].ptime == 20


def test_only_g729_is_488() -> None:
    text = crlf(
        "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n"
        "m=audio 20000 RTP/AVP 18 101\na=rtpmap:18 G729/8000\na=fmtp:18 annexb=no\n"
        "a=rtpmap:101 telephone-event/8000\n"
    )
    with pytest.raises(NegotiationError) as caught:
        negotiated(text)
    assert caught.value.status == 488
    assert caught.value.reason == "no common codec"
    assert isinstance(caught.value, SdpError)


def test_pcmu_at_other_clock_rate_or_stereo_is_not_pcmu() -> None:
    text = crlf(
        "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n"
        "m=audio 20000 RTP/AVP 96 97\na=rtpmap:96 PCMU/16000\na=rtpmap:97 PCMA/8000/2\n"
    )
    with pytest.raises(NegotiationError):
        negotiated(text)


def test_srtp_offer_is_488_never_plain_rtp() -> None:
    with pytest.raises(NegotiationError) as caught:
        negotiated(SRTP_OFFER)
    assert caught.value.status == 488
    assert "SRTP" in caught.value.reason


def test_srtp_stream_beside_plain_stream_is_rejected_not_downgraded() -> None:
    text = SRTP_OFFER + crlf("m=audio 30002 RTP/AVP 0\n")
    result = negotiated(text)
    assert result.media_index == 1
    rejected, accepted = result.answer.media
    assert (rejected.port, rejected.proto) == (0, "RTP/SAVP")
    assert rejected.crypto == ()
    assert (accepted.port, accepted.proto) == (10000, "RTP/AVP")


def test_unsupported_transport_is_488() -> None:
    text = crlf(
        "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 0\nm=audio 9 TCP/RTP/AVP 0\n"
    )
    with pytest.raises(NegotiationError) as caught:
        negotiated(text)
    assert caught.value.status == 488
    text = text.replace("m=audio 9 UDP/TLS/RTP/SAVPF 0\r\n", "")
    with pytest.raises(NegotiationError, match="transport TCP/RTP/AVP"):
        negotiated(text)


def test_offer_without_audio_is_488() -> None:
    text = crlf(
        "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n"
        "m=video 5000 RTP/AVP 96\nm=audio 0 RTP/AVP 0\n"
    )
    with pytest.raises(NegotiationError, match="no audio stream offered"):
        negotiated(text)


def test_audio_without_connection_is_400() -> None:
    text = crlf("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\nm=audio 5000 RTP/AVP 0\n")
    with pytest.raises(SdpError) as caught:
        negotiated(text)
    assert caught.value.status == 400


def test_video_stream_is_rejected_with_port_zero_in_order() -> None:
    result = negotiated(VIDEO_OFFER)
    video, audio, image = result.answer.media
    assert video == MediaDescription(media="video", port=0, proto="RTP/AVP", formats=("96", "97"))
    assert (audio.media, audio.port, audio.formats) == ("audio", 10000, ("0", "101"))
    assert image == MediaDescription(media="image", port=0, proto="udptl", formats=("t38",))
    assert result.media_index == 1
    assert result.remote_addr == ("192.0.2.8", 51370)
    assert "m=video 0 RTP/AVP 96 97\r\n" in result.answer.serialize()


def test_second_audio_stream_is_rejected() -> None:
    text = TWILIO_OFFER + crlf("m=audio 14312 RTP/AVP 0\n")
    result = negotiated(text)
    assert [m.port for m in result.answer.media] == [10000, 0]


# --- late offer ------------------------------------------------------------------------


def test_make_offer_is_exact() -> None:
    offer = make_offer(local_host="198.51.100.4", local_port=12000, session_id=77, version=1)
    assert offer.serialize() == crlf("""v=0
o=- 77 1 IN IP4 198.51.100.4
s=sipagent
c=IN IP4 198.51.100.4
t=0 0
m=audio 12000 RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
""")
    hold = make_offer(
        local_host="::1",
        local_port=12000,
        session_id=77,
        version=2,
        direction=Direction.SENDONLY,
        dtmf=False,
    )
    assert hold.media[0].formats == ("0", "8")
    assert hold.media[0].direction is Direction.SENDONLY
    assert hold.connection == Connection("::1", "IP6")


def late_offer() -> SessionDescription:
    return make_offer(local_host="198.51.100.4", local_port=12000, session_id=77, version=1)


def peer_answer(media: str, *, connection: str = "IN IP4 192.0.2.50", extra: str = "") -> str:
    return crlf(f"v=0\no=peer 5 5 IN IP4 192.0.2.50\ns=-\nc={connection}\nt=0 0\n{media}{extra}")


def test_accept_answer_uses_answer_codec_and_dtmf() -> None:
    text = peer_answer(
        "m=audio 40000 RTP/AVP 8 101\na=rtpmap:8 PCMA/8000\n"
        "a=rtpmap:101 telephone-event/8000\na=ptime:30\n"
    )
    answer = SessionDescription.parse(text)
    result = accept_answer(late_offer(), answer)
    assert result.codec == PCMA
    assert result.dtmf_payload_type == 101
    assert result.remote_addr == ("192.0.2.50", 40000)
    assert result.remote_rtcp_addr == ("192.0.2.50", 40001)
    assert result.direction is Direction.SENDRECV
    assert result.ptime_ms == 30
    assert result.answer is answer


def test_accept_answer_follows_answer_order() -> None:
    answer = SessionDescription.parse(peer_answer("m=audio 1 RTP/AVP 8 0\n"))
    result = accept_answer(late_offer(), answer)
    assert result.codec == PCMA
    assert result.dtmf_payload_type is None


def test_accept_answer_direction_and_hold() -> None:
    answer = SessionDescription.parse(peer_answer("m=audio 1 RTP/AVP 0\na=recvonly\n"))
    assert accept_answer(late_offer(), answer).direction is Direction.SENDONLY
    text = peer_answer("m=audio 1 RTP/AVP 0\n", connection="IN IP4 0.0.0.0")
    answer = SessionDescription.parse(text)
    held = accept_answer(late_offer(), answer)
    assert held.direction is Direction.RECVONLY
    assert held.remote_addr is None


@pytest.mark.parametrize(
    ("media", "reason"),
    [
        ("m=audio 0 RTP/AVP 0\n", "the answer rejected the audio stream"),
        ("m=audio 1 RTP/AVP 18\n", "the answer has no codec from the offer"),
        ("m=audio 1 RTP/SAVP 0\n", "the answer does not match the offered audio stream"),
        ("m=audio 1 RTP/AVP 0\nm=video 0 RTP/AVP 96\n", "answer has 2 m= lines, the offer had 1"),
    ],
)
def test_accept_answer_rejects_bad_answers(media: str, reason: str) -> None:
    with pytest.raises(NegotiationError) as caught:
        accept_answer(late_offer(), SessionDescription.parse(peer_answer(media)))
    assert caught.value.reason == reason
    assert caught.value.status == 488


def test_accept_answer_needs_audio_in_offer() -> None:
    offer = SessionDescription.parse(
        crlf("v=0\no=- 1 1 IN IP4 a\ns=-\nc=IN IP4 a\nt=0 0\nm=video 1 RTP/AVP 96\n")
    )
    answer = SessionDescription.parse(peer_answer("m=video 1 RTP/AVP 96\n"))
    with pytest.raises(NegotiationError, match="no audio stream"):
        accept_answer(offer, answer)


# --- value types -----------------------------------------------------------------------


def test_direction_helpers() -> None:
    assert Direction.SENDONLY.reversed() is Direction.RECVONLY
    assert Direction.INACTIVE.reversed() is Direction.INACTIVE
    assert Direction.SENDRECV.restrict(Direction.RECVONLY) is Direction.RECVONLY
    assert Direction.from_flags(send=False, recv=False) is Direction.INACTIVE


def test_connection_helpers() -> None:
    assert Connection.for_host("sip.example.com") == Connection("sip.example.com", "IP4")
    assert Connection("0.0.0.0").unspecified
    assert Connection("::", "IP6").unspecified
    assert not Connection("sip.example.com").unspecified
    assert str(Connection("224.2.1.1", suffix="127/3")) == "IN IP4 224.2.1.1/127/3"


def test_rtpmap_parse() -> None:
    assert RtpMap.parse("96 opus/48000/2") == RtpMap(96, "opus", 48000, 2)
    assert str(RtpMap(96, "opus", 48000, 2)) == "96 opus/48000/2"
    assert RtpMap.parse("96") is None
    assert RtpMap.parse("96 opus/0") is None
    assert RtpMap.parse("96 opus/48000/0") is None
    assert RtpMap.parse("96 /8000") is None


def test_rtcp_attribute_parse() -> None:
    assert RtcpAttribute.parse("53021 IN IP6 2001:db8::5") == RtcpAttribute(
        53021, Connection("2001:db8::5", "IP6")
    )
    assert RtcpAttribute.parse("53021 IN IP4") is None
    assert RtcpAttribute.parse("70000") is None
