"""Tests for sipagent.offer_answer: RFC 3264 answers to real peers' offers, late offers."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from rtp.srtp import SrtpContext, SrtpSuite
from sipagent.crypto_attr import CryptoAttribute
from sipagent.offer_answer import (
    Negotiated,
    NegotiationError,
    SrtpKeys,
    SrtpPolicy,
    accept_answer,
    make_offer,
    negotiate,
)
from sipagent.sdp import (
    PCMA,
    PCMU,
    Attribute,
    Codec,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    SdpError,
    SessionDescription,
)
from tests.test_sipagent_sdp import (
    BARESIP_OFFER,
    IPV6_OFFER,
    LINPHONE_OFFER,
    PJSIP_OFFER,
    SRTP_OFFER,
    TWILIO_OFFER,
    VIDEO_OFFER,
    crlf,
    simple_offer,
)


def negotiated(offer: str, **kwargs: Any) -> Negotiated:
    return negotiate(
        SessionDescription.parse(offer),
        local_host="203.0.113.5",
        local_port=10000,
        session_id=42,
        **kwargs,
    )


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


# --- SRTP with SDES keying (RFC 4568) --------------------------------------------------

OUR_KEY = bytes(range(30))
OUR_KEY_B64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd"
KEY_80 = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
KEY_32 = "NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj"

# Twilio Secure Trunking: RTP/SAVP, both suites in order of preference, no MKI.
TWILIO_SRTP_OFFER = TWILIO_OFFER.replace("RTP/AVP", "RTP/SAVP").replace(
    "a=sendrecv\r\n",
    "a=sendrecv\r\n"
    f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}\r\n"
    f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY_32}\r\n",
)


def srtp_offer(*crypto: str, proto: str = "RTP/SAVP") -> str:
    lines = "".join(f"a=crypto:{value}\n" for value in crypto)
    return crlf(
        "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n"
        f"m=audio 20000 {proto} 0 101\na=rtpmap:101 telephone-event/8000\n{lines}"
    )


def secure(offer: str, policy: SrtpPolicy = SrtpPolicy.OPTIONAL, **kwargs: Any) -> Negotiated:
    return negotiated(offer, srtp=policy, srtp_key=OUR_KEY, **kwargs)


@pytest.mark.parametrize("policy", [SrtpPolicy.OPTIONAL, SrtpPolicy.REQUIRED])
def test_twilio_srtp_offer_is_answered_with_srtp_and_our_key(policy: SrtpPolicy) -> None:
    result = secure(TWILIO_SRTP_OFFER, policy)
    assert result.answer.serialize() == crlf(f"""v=0
o=- 42 0 IN IP4 203.0.113.5
s=sipagent
c=IN IP4 203.0.113.5
t=0 0
m=audio 10000 RTP/SAVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{OUR_KEY_B64}
""")
    assert result.srtp == SrtpKeys(
        suite=SrtpSuite.AES_CM_128_HMAC_SHA1_80,
        local_key=OUR_KEY,
        remote_key=base64.b64decode(KEY_80),
        tag=1,
    )
    assert "inline" not in repr(result.srtp) and OUR_KEY_B64 not in repr(result.srtp)
    assert result.codec == PCMU and result.remote_addr == ("168.86.128.10", 14310)


def test_the_offerers_first_supported_suite_wins() -> None:
    result = secure(
        srtp_offer(
            f"5 AES_CM_128_HMAC_SHA1_32 inline:{KEY_32}",
            f"6 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}",
        )
    )
    assert result.srtp is not None
    assert (result.srtp.suite, result.srtp.tag) == (SrtpSuite.AES_CM_128_HMAC_SHA1_32, 5)
    assert result.answer.media[0].crypto == (
        f"5 AES_CM_128_HMAC_SHA1_32 inline:{OUR_KEY_B64}",
    )


def test_enabled_suites_restrict_the_choice() -> None:
    offer = srtp_offer(
        f"1 AES_CM_128_HMAC_SHA1_32 inline:{KEY_32}", f"2 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}"
    )
    only_80 = (SrtpSuite.AES_CM_128_HMAC_SHA1_80,)
    result = secure(offer, srtp_suites=only_80)
    assert result.srtp is not None and result.srtp.tag == 2
    with pytest.raises(NegotiationError, match="not enabled"):
        secure(srtp_offer(f"1 AES_CM_128_HMAC_SHA1_32 inline:{KEY_32}"), srtp_suites=only_80)


def test_unusable_crypto_lines_are_skipped() -> None:
    result = secure(
        srtp_offer(
            f"1 AES_256_CM_HMAC_SHA1_80 inline:{KEY_80}{KEY_32[:20]}",
            f"2 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|2^20|1:4",
            f"3 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80} UNENCRYPTED_SRTP",
            f"4 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|2^31",
        )
    )
    assert result.srtp is not None and result.srtp.tag == 4


def test_srtp_offer_with_only_mki_lines_is_488_never_plain_rtp() -> None:
    with pytest.raises(NegotiationError) as caught:
        secure(SRTP_OFFER)  # RFC 4568's example lines all carry an MKI
    assert caught.value.status == 488
    assert caught.value.reason.startswith("no usable a=crypto in the RTP/SAVP offer")
    assert "MKI is not supported" in caught.value.reason
    with pytest.raises(NegotiationError, match="no usable a=crypto"):
        secure(srtp_offer())  # SAVP without any a=crypto


def test_savpf_is_answered_with_savpf() -> None:
    result = secure(srtp_offer(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}", proto="RTP/SAVPF"))
    assert result.answer.media[0].proto == "RTP/SAVPF"
    assert result.srtp is not None


def test_dtls_srtp_is_not_sdes() -> None:
    offer = srtp_offer(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}", proto="UDP/TLS/RTP/SAVPF")
    with pytest.raises(NegotiationError, match="transport UDP/TLS/RTP/SAVPF"):
        secure(offer)


def test_optional_answers_plain_rtp_with_plain_rtp() -> None:
    result = secure(TWILIO_OFFER)
    assert result.srtp is None
    assert result.answer == negotiated(TWILIO_OFFER).answer


def test_required_refuses_plain_rtp_with_488() -> None:
    with pytest.raises(NegotiationError) as caught:
        secure(TWILIO_OFFER, SrtpPolicy.REQUIRED)
    assert caught.value.status == 488
    assert caught.value.reason == "RTP/AVP (plain RTP) offered but SRTP is required"


def test_off_keeps_refusing_srtp_offers() -> None:
    with pytest.raises(NegotiationError, match="SRTP"):
        negotiated(TWILIO_SRTP_OFFER)
    with pytest.raises(NegotiationError, match="SRTP"):
        negotiated(TWILIO_SRTP_OFFER, srtp=SrtpPolicy.OFF, srtp_key=OUR_KEY)


def test_srtp_stream_is_taken_before_a_plain_one_and_never_downgraded() -> None:
    good = srtp_offer(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}")
    both = good + crlf("m=audio 30002 RTP/AVP 0\n")
    result = secure(both)
    assert result.media_index == 0 and result.srtp is not None
    assert [m.port for m in result.answer.media] == [10000, 0]
    # Unusable SRTP beside plain RTP: optional takes the plain stream, required refuses.
    both = SRTP_OFFER + crlf("m=audio 30002 RTP/AVP 0\n")
    fallback = secure(both)
    assert fallback.media_index == 1 and fallback.srtp is None
    rejected = fallback.answer.media[0]
    assert (rejected.port, rejected.proto, rejected.crypto) == (0, "RTP/SAVP", ())
    with pytest.raises(NegotiationError, match="no usable a=crypto"):
        secure(both, SrtpPolicy.REQUIRED)


@pytest.mark.parametrize("key", [None, bytes(29), bytes(31)])
def test_srtp_needs_our_key(key: bytes | None) -> None:
    for policy in (SrtpPolicy.OPTIONAL, SrtpPolicy.REQUIRED):
        with pytest.raises(ValueError, match="srtp_key"):
            negotiated(TWILIO_OFFER, srtp=policy, srtp_key=key)
        with pytest.raises(ValueError, match="srtp_key"):
            make_offer(
                local_host="::1", local_port=1, session_id=1, version=1, srtp=policy, srtp_key=key
            )


def test_policy_values_are_the_setting_values() -> None:
    assert [SrtpPolicy(v) for v in ("off", "optional", "required")] == list(SrtpPolicy)


# --- SRTP late offer -------------------------------------------------------------------


def srtp_late_offer(policy: SrtpPolicy = SrtpPolicy.REQUIRED) -> SessionDescription:
    return make_offer(
        local_host="198.51.100.4",
        local_port=12000,
        session_id=77,
        version=1,
        srtp=policy,
        srtp_key=OUR_KEY,
    )


def test_required_late_offer_is_savp_with_both_suites() -> None:
    assert srtp_late_offer().serialize() == crlf(f"""v=0
o=- 77 1 IN IP4 198.51.100.4
s=sipagent
c=IN IP4 198.51.100.4
t=0 0
m=audio 12000 RTP/SAVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{OUR_KEY_B64}
a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{OUR_KEY_B64}
""")
    assert srtp_late_offer(SrtpPolicy.OPTIONAL) == late_offer()


def test_late_offer_answered_by_an_sdes_peer_gives_mirrored_keys() -> None:
    peer_key = bytes(range(100, 130))
    offer = srtp_late_offer()
    peer = negotiate(
        SessionDescription.parse(offer.serialize()),
        local_host="192.0.2.50",
        local_port=40000,
        session_id=5,
        srtp=SrtpPolicy.REQUIRED,
        srtp_key=peer_key,
        srtp_suites=(SrtpSuite.AES_CM_128_HMAC_SHA1_32,),
    )
    ours = accept_answer(offer, SessionDescription.parse(peer.answer.serialize()))
    assert ours.srtp == SrtpKeys(
        suite=SrtpSuite.AES_CM_128_HMAC_SHA1_32, local_key=OUR_KEY, remote_key=peer_key, tag=2
    )
    assert peer.srtp is not None
    assert (peer.srtp.local_key, peer.srtp.remote_key) == (peer_key, OUR_KEY)
    # ... and the two contexts built from them talk to each other.
    ours_ctx = SrtpContext(ours.srtp.suite, ours.srtp.local_key, ours.srtp.remote_key)
    peer_ctx = SrtpContext(peer.srtp.suite, peer.srtp.local_key, peer.srtp.remote_key)
    packet = bytes([0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9]) + b"\xff" * 160
    protected = ours_ctx.protect(packet)
    assert protected is not None and peer_ctx.unprotect(protected) == packet


@pytest.mark.parametrize(
    ("crypto", "reason"),
    [
        ("", "exactly one a=crypto line"),
        (
            f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}\n"
            f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY_32}\n",
            "exactly one a=crypto line",
        ),
        (f"a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}\n", "does not match one we offered"),
        (f"a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{KEY_32}\n", "does not match one we offered"),
        (f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|2^20|1:4\n", "MKI"),
    ],
)
def test_bad_srtp_answers_are_488(crypto: str, reason: str) -> None:
    answer = SessionDescription.parse(peer_answer(f"m=audio 40000 RTP/SAVP 0\n{crypto}"))
    with pytest.raises(NegotiationError, match=reason) as caught:
        accept_answer(srtp_late_offer(), answer)
    assert caught.value.status == 488


def test_plain_answer_to_plain_offer_ignores_crypto() -> None:
    crypto = f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}\n"
    text = peer_answer(f"m=audio 40000 RTP/AVP 0\n{crypto}")
    assert accept_answer(late_offer(), SessionDescription.parse(text)).srtp is None


def test_crypto_attribute_in_answer_parses_back() -> None:
    value = secure(TWILIO_SRTP_OFFER).answer.media[0].crypto[0]
    assert CryptoAttribute.parse(value).key == OUR_KEY
