"""sipagent.digest: Challenge/Credentials wire types, response hashing, the client side."""

from __future__ import annotations

import hashlib

import pytest

from sipagent.digest import (
    ALGORITHMS,
    Challenge,
    Credentials,
    answer_challenge,
    choose_challenge,
    compute_response,
    hash_username,
    parse_challenges,
    parse_credentials,
)
from sipagent.exceptions import RemoteProtocolError

# -- RFC 7616 §3.9.1 --------------------------------------------------------------------------
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_CHALLENGES = [
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
    f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"',
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, '
    f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"',
]
RFC7616_RESPONSES = {
    "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
    "MD5": "8ca523f5e9506fed4657c9700eebdbec",
}


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_rfc7616_example_response(algorithm: str) -> None:
    challenges = parse_challenges(RFC7616_CHALLENGES)
    challenge = next(c for c in challenges if c.algorithm == algorithm)
    assert challenge.qop == ("auth", "auth-int")
    credentials = answer_challenge(
        challenge, "GET", "/dir/index.html", "Mufasa", "Circle of Life", RFC7616_CNONCE, 1
    )
    assert credentials.response == RFC7616_RESPONSES[algorithm]
    assert credentials.qop == "auth"
    assert credentials.nc == 1
    assert credentials.opaque == RFC7616_OPAQUE
    assert credentials.algorithm == algorithm
    text = credentials.serialize()
    assert "nc=00000001" in text
    assert "qop=auth," in text
    assert Credentials.parse(text) == credentials


def test_rfc7616_client_prefers_sha256() -> None:
    """RFC 7616 §3.7 / RFC 8760 §2.4: the SHA-256 challenge is answered, in either order."""
    challenges = parse_challenges(RFC7616_CHALLENGES)
    assert choose_challenge(challenges) is challenges[0]
    assert choose_challenge(challenges[::-1]) is challenges[0]
    assert choose_challenge(challenges[1:]) is challenges[1]
    assert choose_challenge([]) is None


def test_rfc7616_authorization_header_parses() -> None:
    # The Authorization of §3.9.1 as printed, folded onto one line.
    text = (
        'Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", '
        'algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, '
        'response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    credentials = Credentials.parse(text)
    assert credentials.username == "Mufasa"
    assert credentials.nc == 1
    assert credentials.cnonce == RFC7616_CNONCE
    assert credentials.response == RFC7616_RESPONSES["SHA-256"]
    expected = compute_response(
        algorithm="SHA-256", username="Mufasa", realm="http-auth@example.org",
        password="Circle of Life", method="GET", uri="/dir/index.html",
        nonce=credentials.nonce, qop="auth", cnonce=credentials.cnonce, nc=1,
    )
    assert expected == credentials.response


def test_rfc2617_example_response() -> None:
    """RFC 2617 §3.5 (MD5, qop=auth): the classic Mufasa example."""
    challenge = Challenge.parse(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert challenge.algorithm == "MD5" and not challenge.algorithm_given
    credentials = answer_challenge(
        challenge, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", "0a4f113b", 1
    )
    assert credentials.response == "6629fae49393a05397450978507c4ef1"
    assert credentials.algorithm is None  # not given in the challenge: not echoed


def test_rfc2069_style_without_qop() -> None:
    challenge = Challenge.parse('Digest realm="r", nonce="n"')
    credentials = answer_challenge(challenge, "REGISTER", "sip:r", "u", "p", "cn", 1)
    assert credentials.qop is None and credentials.cnonce is None and credentials.nc is None
    ha1 = hashlib.md5(b"u:r:p").hexdigest()
    ha2 = hashlib.md5(b"REGISTER:sip:r").hexdigest()
    assert credentials.response == hashlib.md5(f"{ha1}:n:{ha2}".encode()).hexdigest()


def test_sess_and_auth_int() -> None:
    challenge = Challenge.parse(
        'Digest realm="r", nonce="n", algorithm=sha-256-SESS, qop="auth-int"'
    )
    assert challenge.algorithm == "SHA-256-sess"
    body = b"v=0\r\n"
    credentials = answer_challenge(challenge, "INVITE", "sip:b@r", "u", "p", "cn", 2, body=body)
    assert credentials.qop == "auth-int"

    def h(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    ha1 = h(f"{h('u:r:p')}:n:cn")
    ha2 = h(f"INVITE:sip:b@r:{hashlib.sha256(body).hexdigest()}")
    assert credentials.response == h(f"{ha1}:n:00000002:cn:auth-int:{ha2}")


def test_sha512_256_is_the_real_one_not_rfc7616_errata_4897() -> None:
    """RFC 7616 §3.9.2's printed values were computed with SHA-512 cut to 256 bits.

    Errata 4897: SHA-512/256 has its own initial values (FIPS 180-4), so the published
    userhash and response do not come out of the real algorithm — but do out of truncation.
    """
    published_userhash = "488869477bf257147b804c45308cd62ac4e25eb717b12b298c79e62dcea254ec"
    username = "J\u00e4s\u00f8n Doe"
    truncated = hashlib.sha512(f"{username}:api@example.org".encode()).hexdigest()[:64]
    assert truncated == published_userhash
    ours = hash_username("SHA-512-256", username, "api@example.org")
    assert ours == hashlib.new("sha512_256", f"{username}:api@example.org".encode()).hexdigest()
    assert ours != published_userhash


def test_userhash_answer() -> None:
    challenge = Challenge.parse(
        'Digest realm="api@example.org", qop="auth", algorithm=SHA-256, nonce="n", userhash=true'
    )
    credentials = answer_challenge(challenge, "GET", "/doe.json", "Jason", "pw", "cn", 1)
    assert credentials.userhash
    assert credentials.username == hashlib.sha256(b"Jason:api@example.org").hexdigest()
    assert "userhash=true" in credentials.serialize()
    assert Challenge.parse(challenge.serialize()) == challenge


# -- parsing ----------------------------------------------------------------------------------
def test_challenge_parsing_quirks() -> None:
    challenge = Challenge.parse(
        'Digest  realm = "a \\"quoted\\", realm" ,nonce=abc/def+=, STALE=TRUE, '
        'qop="auth", domain="sip:a sip:b", charset=UTF-8, opaque=""'
    )
    assert challenge.realm == 'a "quoted", realm'
    assert challenge.nonce == "abc/def+="
    assert challenge.stale
    assert challenge.domain == "sip:a sip:b"
    assert challenge.charset == "UTF-8"
    assert challenge.opaque == ""
    again = Challenge.parse(challenge.serialize())
    assert again == challenge
    assert str(challenge) == challenge.serialize()


def test_several_challenges_in_one_line_and_other_schemes() -> None:
    line = ('Basic realm="x", Digest realm="r", nonce="1", algorithm=MD5, '
            'Digest realm="r", nonce="1", algorithm=SHA-256, qop="auth"')
    challenges = parse_challenges([line])
    assert [c.algorithm for c in challenges] == ["MD5", "SHA-256"]
    assert choose_challenge(challenges) is challenges[1]


def test_malformed_line_skipped_when_another_has_a_challenge() -> None:
    good = 'Digest realm="r", nonce="n"'
    assert len(parse_challenges(['Digest realm="unterminated', good])) == 1
    with pytest.raises(RemoteProtocolError):
        parse_challenges(['Digest realm="unterminated'])
    assert parse_challenges(['Basic realm="x"']) == []
    with pytest.raises(RemoteProtocolError):
        Challenge.parse('Basic realm="x"')


@pytest.mark.parametrize(
    "text",
    [
        'Digest realm="r"',  # no nonce
        'Digest realm="r", realm="s", nonce="n"',  # duplicate
        'Digest realm="r" nonce="n"',  # missing comma
        'Digest realm=, nonce="n"',  # no value
        "Digest @=1",
    ],
)
def test_bad_challenges(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        Challenge.parse(text)


def test_unsupported_challenges() -> None:
    for text in (
        'Digest realm="r", nonce="n", algorithm=AKAv1-MD5',
        'Digest realm="r", nonce="n", algorithm=MD5-sess',  # -sess without qop: no cnonce
        'Digest realm="r", nonce="n", qop="auth-conf"',
    ):
        challenge = Challenge.parse(text)
        assert not challenge.supported
        assert choose_challenge([challenge]) is None
        with pytest.raises(RemoteProtocolError):
            answer_challenge(challenge, "REGISTER", "sip:r", "u", "p", "c", 1)
    with pytest.raises(ValueError):
        answer_challenge(Challenge.parse('Digest realm="r", nonce="n", qop=auth'),
                         "REGISTER", "sip:r", "u", "p", "c", 0)


@pytest.mark.parametrize(
    "text",
    [
        'Digest username="u", realm="r", nonce="n", uri="sip:r"',  # no response
        'Digest username="u", realm="r", nonce="n", uri="sip:r", response="x", nc=1',
        'Digest username="u", realm="r", nonce="n", uri="sip:r", response="x", nc=0000000g',
        'Basic dXNlcjpwYXNz',
    ],
)
def test_bad_credentials_syntax(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        Credentials.parse(text)


def test_credentials_roundtrip_and_parse_many() -> None:
    credentials = Credentials(
        username='we"ird\\', realm="r", nonce="n", uri="sip:r", response="abc",
        algorithm="SHA-256", cnonce="c", opaque="o", qop="auth", nc=0xFFFFFFFF, userhash=False,
    )
    text = credentials.serialize()
    assert "nc=ffffffff" in text
    assert Credentials.parse(text) == credentials
    assert str(credentials) == text
    assert parse_credentials(['Basic abc', text]) == [credentials]
    assert parse_credentials([]) == []


def test_compute_response_errors() -> None:
    with pytest.raises(RemoteProtocolError):
        compute_response(algorithm="MD5-sess", username="u", realm="r", password="p",
                         method="M", uri="u", nonce="n")
    with pytest.raises(RemoteProtocolError):
        compute_response(algorithm="MD5", username="u", realm="r", password="p",
                         method="M", uri="u", nonce="n", qop="auth")
    with pytest.raises(RemoteProtocolError):
        compute_response(algorithm="SHA-1", username="u", realm="r", password="p",
                         method="M", uri="u", nonce="n")
    assert ALGORITHMS["SHA-256-SESS"] == "SHA-256-sess"
