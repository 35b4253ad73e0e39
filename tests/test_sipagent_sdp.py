"""Tests for sipagent.sdp: parsing, byte-exact round-trips and the value types."""

from __future__ import annotations

import pytest

from sipagent.exceptions import RemoteProtocolError
from sipagent.sdp import (
    Attribute,
    Connection,
    Direction,
    Origin,
    RtcpAttribute,
    RtpMap,
    SdpError,
    SessionDescription,
    Timing,
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
