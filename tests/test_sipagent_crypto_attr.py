"""Tests for sipagent.crypto_attr: a=crypto (RFC 4568) round trips, rejections, choice."""

from __future__ import annotations

import base64

import pytest

from rtp.srtp import SrtpSuite
from sipagent.crypto_attr import (
    ALL_SUITES,
    MAX_SRTP_LIFETIME,
    CryptoAttribute,
    CryptoError,
    choose_crypto,
)
from sipagent.sdp import SdpError

# RFC 4568 section 8.1's key; the lines as Twilio, Asterisk and baresip write them.
RFC_KEY = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
KEY = base64.b64decode(RFC_KEY)
TWILIO_80 = "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
ASTERISK_32 = "2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj"
WITH_LIFETIME = "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^31"


@pytest.mark.parametrize(
    "value",
    [
        TWILIO_80,
        ASTERISK_32,
        WITH_LIFETIME,
        f"3 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|1000",
        f"123456789 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} KDR=0 WSH=128 -FOO=bar",
    ],
)
def test_round_trip_is_byte_exact(value: str) -> None:
    crypto = CryptoAttribute.parse(value)
    assert crypto.serialize() == value
    assert str(crypto) == value
    assert CryptoAttribute.parse(crypto.serialize()) == crypto


def test_parsed_fields() -> None:
    crypto = CryptoAttribute.parse(WITH_LIFETIME)
    assert crypto.tag == 1
    assert crypto.suite is SrtpSuite.AES_CM_128_HMAC_SHA1_80
    assert crypto.key == KEY and len(crypto.key) == 30
    assert crypto.lifetime == 2**31
    assert crypto.session_params == ()
    assert CryptoAttribute.parse(ASTERISK_32).lifetime is None
    assert CryptoAttribute.parse(f"1 AES_CM_128_HMAC_SHA1_32 inline:{RFC_KEY}|2^48").lifetime == (
        MAX_SRTP_LIFETIME
    )


def test_tabs_and_repeated_spaces_are_whitespace() -> None:
    crypto = CryptoAttribute.parse(f"1\tAES_CM_128_HMAC_SHA1_80  inline:{RFC_KEY}")
    assert crypto.serialize() == TWILIO_80


def test_built_attribute_serializes_and_hides_the_key() -> None:
    crypto = CryptoAttribute(tag=7, suite=SrtpSuite.AES_CM_128_HMAC_SHA1_32, key=bytes(30))
    assert crypto.serialize() == "7 AES_CM_128_HMAC_SHA1_32 inline:" + "A" * 40
    assert "AAAA" not in repr(crypto) and "tag=7" in repr(crypto)
    with pytest.raises(ValueError):
        CryptoAttribute(tag=1, suite=SrtpSuite.AES_CM_128_HMAC_SHA1_80, key=bytes(29))
    with pytest.raises(ValueError):
        CryptoAttribute(tag=10**9, suite=SrtpSuite.AES_CM_128_HMAC_SHA1_80, key=bytes(30))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1 AES_CM_128_HMAC_SHA1_80", "needs a tag, a suite and key parameters"),
        (f"x AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}", "bad crypto tag"),
        (f"1234567890 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}", "bad crypto tag"),
        (f"1 AES_256_CM_HMAC_SHA1_80 inline:{RFC_KEY}", "unsupported crypto suite"),
        (f"1 aes_cm_128_hmac_sha1_80 inline:{RFC_KEY}", "unsupported crypto suite"),
        (f"1 AEAD_AES_128_GCM inline:{RFC_KEY}", "unsupported crypto suite"),
        (f"1 AES_CM_128_HMAC_SHA1_80 uri:{RFC_KEY}", "unsupported key method"),
        (f"1 AES_CM_128_HMAC_SHA1_80 INLINE:{RFC_KEY}", "unsupported key method"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline", "unsupported key method"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:4", "MKI is not supported"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|1:4", "MKI is not supported"),
        (
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:4;inline:{RFC_KEY}|2^20|2:4",
            "several master keys",
        ),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|2^30", "more than one key lifetime"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^49", "out of range"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|0", "out of range"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^x", "bad key lifetime"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|", "bad key lifetime"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY[:-4]}", "got 27"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}AAAA", "got 33"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:", "got 0"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY[:-1]}", "not valid base64"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY[:-1]}!", "not valid base64"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} UNENCRYPTED_SRTP", "session parameter"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} UNAUTHENTICATED_SRTP", "session parameter"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} KDR=24", "session parameter"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} WSH=32", "session parameter"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} FEC_ORDER=FEC_SRTP", "session parameter"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} NEW_MANDATORY", "session parameter"),
    ],
)
def test_rejections(value: str, reason: str) -> None:
    with pytest.raises(CryptoError) as caught:
        CryptoAttribute.parse(value)
    assert reason in caught.value.reason
    assert caught.value.status == 488
    assert isinstance(caught.value, SdpError)


def test_choose_takes_the_offerers_first_usable_line() -> None:
    mki = f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:4"
    chosen, skipped = choose_crypto([mki, ASTERISK_32, TWILIO_80])
    assert chosen is not None and chosen.tag == 2
    assert chosen.suite is SrtpSuite.AES_CM_128_HMAC_SHA1_32
    assert skipped == ("MKI is not supported",)


def test_choose_honours_the_enabled_suites() -> None:
    only_80 = (SrtpSuite.AES_CM_128_HMAC_SHA1_80,)
    chosen, skipped = choose_crypto([ASTERISK_32, TWILIO_80], only_80)
    assert chosen is not None and chosen.tag == 1
    assert skipped == ("crypto suite AES_CM_128_HMAC_SHA1_32 is not enabled",)
    assert choose_crypto([ASTERISK_32], only_80)[0] is None
    assert choose_crypto([]) == (None, ())
    assert ALL_SUITES[0] is SrtpSuite.AES_CM_128_HMAC_SHA1_80
