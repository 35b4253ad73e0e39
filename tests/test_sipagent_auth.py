"""sipagent.auth: DigestVerifier nonces and verification, FailureCounter, AuthResult."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from sipagent.auth import AuthResult, DigestVerifier, FailureCounter
from sipagent.digest import Challenge, answer_challenge, choose_challenge, parse_challenges
from sipagent.exceptions import RemoteProtocolError
from sipagent.message import Headers, Request

# -- server side ------------------------------------------------------------------------------
SECRET = b"0123456789abcdef-test-secret"
USERS = {"alice": "wonderland", "bob": "builder"}
URI = "sip:agent@198.51.100.7"


def verifier(**options: object) -> DigestVerifier:
    tokens = (f"inst{i}" for i in itertools.count())
    defaults: dict[str, object] = {"secret": SECRET, "new_token": lambda: next(tokens)}
    defaults.update(options)
    return DigestVerifier("sipagent.test", USERS, **defaults)  # type: ignore[arg-type]


def client_answer(
    result: AuthResult,
    *,
    user: str = "alice",
    password: str = "wonderland",
    nc: int = 1,
    method: str = "INVITE",
    uri: str = URI,
    pick: Callable[[list[Challenge]], Challenge | None] = choose_challenge,
) -> str:
    challenges = parse_challenges(value for _, value in result.headers)
    challenge = pick(challenges)
    assert challenge is not None
    return answer_challenge(challenge, method, uri, user, password, f"cn{nc}", nc).serialize()


def test_verifier_challenge_then_accept() -> None:
    v = verifier()
    first = v.verify(method="INVITE", uri=URI, authorization=None, now=100.0, source="a")
    assert not first.accepted and first.reason == "missing" and first.status == 401
    names = [name for name, _ in first.headers]
    assert names == ["WWW-Authenticate", "WWW-Authenticate"]
    challenges = parse_challenges(value for _, value in first.headers)
    assert [c.algorithm for c in challenges] == ["SHA-256", "MD5"]
    assert all(c.qop == ("auth",) and not c.stale for c in challenges)
    assert v.failures("a", 100.0) == 0  # asking for credentials is no failure
    result = v.verify(method="INVITE", uri=URI, authorization=client_answer(first),
                      now=101.0, source="a")
    assert result.accepted and result.username == "alice" and result.reason == "ok"
    assert result.headers == ()


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_verifier_accepts_each_offered_algorithm(algorithm: str) -> None:
    v = verifier()
    first = v.verify(method="REGISTER", uri=URI, authorization=[], now=0.0)
    answer = client_answer(
        first, method="REGISTER",
        pick=lambda cs: next(c for c in cs if c.algorithm == algorithm),
    )
    assert v.verify(method="REGISTER", uri=URI, authorization=[answer], now=1.0).accepted


def test_verify_request_and_proxy_authentication() -> None:
    v = verifier()
    headers = Headers([("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"), ("CSeq", "1 INVITE")])
    request = Request("INVITE", URI, headers, b"body")
    first = v.verify_request(request, 5.0, proxy=True)
    assert first.status == 407
    assert {name for name, _ in first.headers} == {"Proxy-Authenticate"}
    request.headers.add("Proxy-Authorization", client_answer(first))
    assert v.verify_request(request, 6.0, proxy=True).accepted
    # The same credentials in Authorization are not looked at for proxy authentication.
    other = Request("INVITE", URI, Headers([("Authorization", client_answer(first, nc=2))]))
    assert v.verify_request(other, 6.0, proxy=True).reason == "missing"


def test_replayed_nonce_count_rejected() -> None:
    v = verifier()
    first = v.verify(method="INVITE", uri=URI, authorization=None, now=0.0)
    answer = client_answer(first, nc=1)
    assert v.verify(method="INVITE", uri=URI, authorization=answer, now=1.0).accepted
    replay = v.verify(method="INVITE", uri=URI, authorization=answer, now=2.0, source="x")
    assert not replay.accepted and replay.reason == "rejected" and not _stale(replay)
    assert v.failures("x", 2.0) == pytest.approx(1.0)
    # The next nonce-count is fine; going back is not.
    assert v.verify(method="INVITE", uri=URI, authorization=client_answer(first, nc=3),
                    now=3.0).accepted
    assert not v.verify(method="INVITE", uri=URI, authorization=client_answer(first, nc=2),
                        now=4.0).accepted


def _stale(result: AuthResult) -> bool:
    return all(c.stale for c in parse_challenges(v for _, v in result.headers))


def test_expired_nonce_gets_stale_challenge() -> None:
    v = verifier(nonce_ttl=30.0)
    first = v.verify(method="INVITE", uri=URI, authorization=None, now=0.0)
    late = v.verify(method="INVITE", uri=URI, authorization=client_answer(first), now=31.0,
                    source="s")
    assert not late.accepted and late.reason == "stale" and _stale(late)
    assert v.failures("s", 31.0) == 0  # a stale nonce is no failure
    # Expired and wrong: no stale hint.
    wrong = client_answer(first, password="nope", nc=2)
    result = v.verify(method="INVITE", uri=URI, authorization=wrong, now=31.0)
    assert result.reason == "rejected" and not _stale(result)
    # The new nonce works.
    assert v.verify(method="INVITE", uri=URI, authorization=client_answer(late), now=32.0).accepted


def test_nonce_from_the_future_or_another_instance_is_stale() -> None:
    v = verifier()
    first = v.verify(method="INVITE", uri=URI, authorization=None, now=1000.0)
    result = v.verify(method="INVITE", uri=URI, authorization=client_answer(first), now=10.0)
    assert result.reason == "stale"
    other = verifier(new_token=lambda: "restarted")  # same secret, another instance token
    again = other.verify(method="INVITE", uri=URI, authorization=client_answer(first, nc=2),
                         now=1000.5)
    assert again.reason == "stale"


def test_tampered_nonce_rejected() -> None:
    v = verifier()
    first = v.verify(method="INVITE", uri=URI, authorization=None, now=50.0)
    challenge = parse_challenges(value for _, value in first.headers)[0]
    nonce = challenge.nonce
    flipped = nonce[:5] + ("A" if nonce[5] != "A" else "B") + nonce[6:]
    for bad_nonce in (flipped, "x" * 20, "!!!", "abcde", "A" * 200, nonce[:-4]):
        forged = Challenge(realm=challenge.realm, nonce=bad_nonce, algorithm="SHA-256",
                           qop=("auth",))
        answer = answer_challenge(forged, "INVITE", URI, "alice", "wonderland", "c", 1)
        result = v.verify(method="INVITE", uri=URI, authorization=answer.serialize(), now=51.0)
        assert not result.accepted and result.reason == "rejected", bad_nonce
    other_secret = verifier(secret=b"another-secret-of-16+bytes")
    theirs = other_secret.verify(method="INVITE", uri=URI, authorization=None, now=50.0)
    result = v.verify(method="INVITE", uri=URI, authorization=client_answer(theirs), now=51.0)
    assert result.reason == "rejected"


def test_unknown_user_and_wrong_password_indistinguishable() -> None:
    v = verifier()
    first = v.verify(method="INVITE", uri=URI, authorization=None, now=0.0)
    unknown = v.verify(method="INVITE", uri=URI, now=1.0, source="s1",
                       authorization=client_answer(first, user="mallory", password="x"))
    wrong = v.verify(method="INVITE", uri=URI, now=1.0, source="s2",
                     authorization=client_answer(first, user="alice", password="x", nc=2))

    def shape(result: AuthResult) -> object:
        challenges = parse_challenges(value for _, value in result.headers)
        return (
            result.accepted, result.username, result.reason, result.status,
            [name for name, _ in result.headers],
            [(c.realm, c.algorithm, c.qop, c.stale, c.opaque, len(c.nonce)) for c in challenges],
        )

    assert shape(unknown) == shape(wrong)
    assert v.failures("s1", 1.0) == v.failures("s2", 1.0) == pytest.approx(1.0)


def test_rejections_of_mismatches() -> None:
    v = verifier(algorithms=("SHA-256",))
    first = v.verify(method="INVITE", uri=URI, authorization=None, now=0.0)
    ok = client_answer(first)
    # Wrong request URI, wrong method.
    assert v.verify(method="INVITE", uri="sip:other@h", authorization=ok, now=1.0).reason \
        == "rejected"
    assert not v.verify(method="BYE", uri=URI, authorization=ok, now=1.0).accepted
    # MD5 was not offered.
    md5 = Challenge(realm="sipagent.test", nonce="n", algorithm="MD5", qop=("auth",))
    nonce = parse_challenges(value for _, value in first.headers)[0].nonce
    md5 = Challenge(realm="sipagent.test", nonce=nonce, algorithm="MD5", qop=("auth",))
    answer = answer_challenge(md5, "INVITE", URI, "alice", "wonderland", "c", 5).serialize()
    assert v.verify(method="INVITE", uri=URI, authorization=answer, now=1.0).reason == "rejected"
    # No qop although one was offered (RFC 2069 style).
    bare = Challenge(realm="sipagent.test", nonce=nonce, algorithm="SHA-256")
    answer = answer_challenge(bare, "INVITE", URI, "alice", "wonderland", "c", 6).serialize()
    assert v.verify(method="INVITE", uri=URI, authorization=answer, now=1.0).reason == "rejected"
    # Credentials for another realm are no credentials.
    elsewhere = Challenge(realm="other", nonce=nonce, algorithm="SHA-256", qop=("auth",))
    answer = answer_challenge(elsewhere, "INVITE", URI, "alice", "wonderland", "c", 7).serialize()
    assert v.verify(method="INVITE", uri=URI, authorization=answer, now=1.0).reason == "missing"
    # The right ones still work.
    assert v.verify(method="INVITE", uri=URI, authorization=ok, now=1.0).accepted


def test_malformed_credentials_counted() -> None:
    v = verifier()
    result = v.verify(method="INVITE", uri=URI, authorization='Digest username="x', now=0.0,
                      source="m")
    assert result.reason == "malformed" and result.status == 401 and result.headers
    assert v.failures("m", 0.0) == pytest.approx(1.0)
    # -sess without cnonce and qop=auth without cnonce cannot be computed.
    nonce = parse_challenges(value for _, value in result.headers)[0].nonce
    sess = DigestVerifier("sipagent.test", USERS, secret=SECRET, qop=(),
                          algorithms=("MD5-sess",))
    text = (f'Digest username="alice", realm="sipagent.test", nonce="{nonce}", uri="{URI}", '
            'response="00", algorithm=MD5-sess')
    assert sess.verify(method="INVITE", uri=URI, authorization=text, now=0.0).reason \
        == "malformed"
    text = (f'Digest username="alice", realm="sipagent.test", nonce="{nonce}", uri="{URI}", '
            'response="00", qop=auth, nc=00000001')
    assert v.verify(method="INVITE", uri=URI, authorization=text, now=0.0).reason == "rejected"


def test_verifier_without_qop_and_lookup_function() -> None:
    looked_up: list[str] = []

    def lookup(name: str) -> str | None:
        looked_up.append(name)
        return USERS.get(name)

    v = DigestVerifier("sipagent.test", lookup, secret=SECRET, qop=(), algorithms=("MD5",))
    first = v.verify(method="REGISTER", uri=URI, authorization=None, now=0.0)
    challenge = parse_challenges(value for _, value in first.headers)[0]
    assert challenge.qop == ()
    answer = answer_challenge(challenge, "REGISTER", URI, "bob", "builder", "c", 1)
    result = v.verify(method="REGISTER", uri=URI, authorization=answer.serialize(), now=1.0)
    assert result.accepted and result.username == "bob"
    assert looked_up == ["bob"]


def test_verifier_userhash() -> None:
    v = verifier()
    first = v.verify(method="INVITE", uri=URI, authorization=None, now=0.0)
    base = parse_challenges(value for _, value in first.headers)[0]
    hashed = Challenge(realm=base.realm, nonce=base.nonce, algorithm="SHA-256", qop=("auth",),
                       userhash=True)
    answer = answer_challenge(hashed, "INVITE", URI, "bob", "builder", "c", 1)
    result = v.verify(method="INVITE", uri=URI, authorization=answer.serialize(), now=1.0)
    assert result.accepted and result.username == "bob"
    unknown = answer_challenge(hashed, "INVITE", URI, "eve", "builder", "c", 2)
    assert not v.verify(method="INVITE", uri=URI, authorization=unknown.serialize(),
                        now=1.0).accepted
    # A lookup function cannot be searched by hash.
    by_function = DigestVerifier("sipagent.test", USERS.get, secret=SECRET)
    first = by_function.verify(method="INVITE", uri=URI, authorization=None, now=0.0)
    base = parse_challenges(value for _, value in first.headers)[0]
    hashed = Challenge(realm=base.realm, nonce=base.nonce, algorithm="SHA-256", qop=("auth",),
                       userhash=True)
    answer = answer_challenge(hashed, "INVITE", URI, "bob", "builder", "c", 1)
    assert not by_function.verify(method="INVITE", uri=URI, authorization=answer.serialize(),
                                  now=1.0).accepted


@pytest.mark.parametrize("spacing", [4.0, 0.0])
def test_nonce_table_is_bounded(spacing: float) -> None:
    v = verifier(max_nonces=3, nonce_ttl=10.0)
    for step in range(6):
        first = v.verify(method="INVITE", uri=URI, authorization=None, now=step * spacing)
        assert v.verify(method="INVITE", uri=URI, authorization=client_answer(first),
                        now=step * spacing).accepted
        assert len(v._seen) <= 3


def test_nonces_are_unique() -> None:
    v = verifier()
    nonces = {v.new_nonce(7.0) for _ in range(100)}
    assert len(nonces) == 100


def test_verifier_configuration_errors() -> None:
    with pytest.raises(ValueError):
        DigestVerifier("r", USERS, secret=b"short")
    with pytest.raises(ValueError):
        DigestVerifier("r", USERS, secret=SECRET, algorithms=())
    with pytest.raises(RemoteProtocolError):
        DigestVerifier("r", USERS, secret=SECRET, algorithms=("SHA-1",))
    with pytest.raises(ValueError):
        FailureCounter(half_life=0)


def test_failure_counter_decays_and_is_bounded() -> None:
    counter = FailureCounter(half_life=10.0, max_sources=2)
    assert counter.failures("a", 0.0) == 0.0
    assert counter.record("a", 0.0) == 1.0
    assert counter.record("a", 0.0) == 2.0
    assert counter.failures("a", 10.0) == pytest.approx(1.0)
    assert counter.failures("a", 20.0) == pytest.approx(0.5)
    assert counter.record("a", 10.0) == pytest.approx(2.0)
    counter.record("b", 10.0)
    counter.record("c", 10.0)  # over the bound: the weakest goes
    assert len(counter._scores) == 2
    assert counter.failures("a", 10.0) == pytest.approx(2.0)
    counter.reset("a")
    assert counter.failures("a", 10.0) == 0.0


def test_success_resets_failures() -> None:
    v = verifier()
    first = v.verify(method="INVITE", uri=URI, authorization=None, now=0.0)
    v.verify(method="INVITE", uri=URI, authorization=client_answer(first, password="x"),
             now=0.0, source="z")
    assert v.failures("z", 0.0) == pytest.approx(1.0)
    assert v.verify(method="INVITE", uri=URI, authorization=client_answer(first, nc=2),
                    now=0.0, source="z").accepted
    assert v.failures("z", 0.0) == 0.0
