"""The server as a whole, in-process, over real UDP sockets on 127.0.0.1.

A scripted softphone (tests/peers/softphone.py) places calls, streams the espeak-ng speech
fixture as paced PCMU, and records every packet that comes back, so the echo can be
compared sample for sample with what was sent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from aiortc.rtp import RtpPacket

from admin.app import create_app
from rtp.srtp import SrtpContext, SrtpSuite
from sipagent.crypto_attr import CryptoAttribute
from sipagent.dialog import DialogState
from sipagent.digest import answer_challenge, choose_challenge, parse_challenges
from sipagent.message import Request, Response, make_response
from sipagent.policy import EdgePolicy, EdgePolicyConfig
from sipagent.registry import CallRecord
from sipagent.server import Server, parse_dtmf_relay
from tests.peers.audio import cross_correlate, ulaw_decode
from tests.peers.harness import start_server, wait_for
from tests.peers.pcap import read_rtp, rtp_payloads
from tests.peers.softphone import Softphone

FIXTURES = Path(__file__).parent / "fixtures"


def speech_payloads() -> list[bytes]:
    return rtp_payloads(read_rtp(FIXTURES / "speech_pcmu.pcap"))


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    server = await start_server()
    yield server
    await server.stop()


@pytest.fixture
async def phone(server: Server) -> AsyncIterator[Softphone]:
    phone = Softphone(server=("127.0.0.1", server.transport.port))
    await phone.open()
    yield phone
    await phone.close()


async def test_echo_call_returns_the_same_audio(server: Server, phone: Softphone) -> None:
    ok = await phone.call()
    assert ok.status == 200
    assert "m=audio" in phone.answer and "RTP/AVP 0 101" in phone.answer
    sent = speech_payloads()
    await phone.stream(sent)
    await asyncio.sleep(0.3)
    record = server.registry.active()[0]
    assert record.state == "answered" and record.codec == "PCMU"
    bye = await phone.hangup()
    assert bye.status == 200

    voiced = [r for r in phone.received if r.packet.payload_type == 0]
    echoed = b"".join(r.packet.payload for r in voiced)
    result = cross_correlate(ulaw_decode(b"".join(sent)), ulaw_decode(echoed), max_lag_ms=1000)
    assert result.peak >= 0.9, result
    print(f"echo: correlation {result.peak:.3f}, round-trip lag {result.lag_ms:.1f} ms")
    # Lag between our first sent packet and its echo is the jitter buffer plus one tick.
    assert 0 <= result.lag_ms < 1000
    markers = [r for r in voiced if r.packet.marker]
    assert markers, "the first packet of a talkspurt carries the marker bit"
    await wait_for(lambda: not server.calls)
    ended = server.registry.get(record.session_id)
    assert ended is not None and ended.end_reason == "remote-bye"
    assert ended.rtp.packets_in >= len(sent) - 2


async def test_live_records_get_the_rtp_counters_while_the_call_runs(
    server: Server, phone: Softphone
) -> None:
    assert (await phone.call()).status == 200
    sent = speech_payloads()[:25]
    await phone.stream(sent)
    record = server.registry.active()[0]
    # Copied about once a second (in slices spread over the second), before any hangup.
    await wait_for(lambda: record.rtp.packets_in >= len(sent) - 2, timeout=3.0,
                   what="the live record's RTP counters")
    assert record.rtp.packets_out > 0
    assert (await phone.hangup()).status == 200


async def test_media_is_continuous_and_paced(server: Server, phone: Softphone) -> None:
    await phone.call()
    await phone.stream(speech_payloads()[:50])
    await phone.hangup()
    packets = [r.packet for r in phone.received]
    assert len(packets) >= 45
    seqs = [p.sequence_number for p in packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    stamps = [p.timestamp for p in packets]
    assert all((b - a) & 0xFFFFFFFF == 160 for a, b in itertools.pairwise(stamps))
    assert len({p.ssrc for p in packets}) == 1


async def test_admin_hangup_sends_bye(server: Server, phone: Softphone) -> None:
    await phone.call()
    record = server.registry.active()[0]
    app = create_app(server.registry, server)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        listed = (await client.get("/sessions")).json()
        assert listed["count"] == 1
        assert listed["sessions"][0]["call_id"] == phone.call_id
        response = await client.delete(f"/sessions/{record.session_id}")
        assert response.status_code == 202
    bye = await phone.expect_bye(timeout=5)
    assert bye.headers.get("CSeq") == "1 BYE"
    await wait_for(lambda: not server.calls)
    assert record.end_reason == "admin-hangup"


async def test_rtp_inactivity_hangs_up() -> None:
    server = await start_server(rtp_inactivity_timeout=0.5)
    phone = Softphone(server=("127.0.0.1", server.transport.port))
    await phone.open()
    try:
        await phone.call()
        await phone.stream(speech_payloads()[:5])
        await phone.expect_bye(timeout=5)
        await wait_for(lambda: not server.calls)
        assert server.registry.ended()[-1].end_reason == "rtp-timeout"
    finally:
        await phone.close()
        await server.stop()


async def test_capacity_refuses_with_486_and_retry_after() -> None:
    server = await start_server(max_calls=1)
    first = Softphone(server=("127.0.0.1", server.transport.port))
    second = Softphone(server=("127.0.0.1", server.transport.port))
    await first.open()
    await second.open()
    try:
        assert (await first.call()).status == 200
        busy = await second.call()
        assert busy.status == 486
        assert busy.headers.get("Retry-After") == "5"
        assert len(server.calls) == 1
        # Refused without state: a caller that never ACKs (a flood) leaves nothing behind.
        assert len(server.ua.dialogs) == 1
        assert server.ua.counters["stateless_refusals"] == 1
    finally:
        await first.close()
        await second.close()
        await server.stop()


async def test_draining_refuses_with_503(server: Server, phone: Softphone) -> None:
    server.draining = True
    response = await phone.call()
    assert response.status == 503
    assert response.headers.get("Retry-After")
    assert server.ready()["ready"] is False


async def test_no_common_codec_is_488_and_releases_the_port(
    server: Server, phone: Softphone
) -> None:
    phone.formats = "18"
    body = phone.offer().replace("a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n", "")
    response = await phone.call(body=body)
    assert response.status == 488
    assert server.ports.in_use == 0
    assert not server.calls


async def test_dtmf_rfc4733_and_info_reach_the_call(server: Server, phone: Softphone) -> None:
    await phone.call()
    await phone.send_dtmf("5")
    await phone.send_dtmf("#", marker=False)  # a missing marker bit is still a digit
    info = phone.request("INFO", "Signal=7\r\nDuration=160\r\n",
                         content_type="application/dtmf-relay")
    phone.send(info)
    assert (await phone.final_response()).status == 200
    record = server.registry.active()[0]
    await wait_for(lambda: len(record.dtmf) == 3)
    assert sorted(record.dtmf) == sorted(["5", "#", "7"])
    await phone.hangup()


async def test_hold_and_resume_by_reinvite(server: Server, phone: Softphone) -> None:
    await phone.call()
    record = server.registry.active()[0]
    hold = phone.request("INVITE", phone.offer("sendonly"))
    phone.send(hold)
    ok = await phone.final_response()
    assert ok.status == 200 and "a=recvonly" in ok.body.decode()
    phone.send(phone.request("ACK", cseq=hold.cseq.seq))
    await wait_for(lambda: record.state == "held")
    count = len(phone.received)
    await asyncio.sleep(0.2)
    assert len(phone.received) <= count + 1, "no audio is sent to a caller who holds"
    resume = phone.request("INVITE", phone.offer("sendrecv"))
    phone.send(resume)
    ok = await phone.final_response()
    assert "a=sendrecv" in ok.body.decode()
    phone.send(phone.request("ACK", cseq=resume.cseq.seq))
    await wait_for(lambda: record.state == "answered")
    await phone.hangup()


async def test_late_offer_gets_our_offer_and_uses_the_ack_answer(
    server: Server, phone: Softphone
) -> None:
    invite = phone.request("INVITE")
    phone.send(invite)
    ok = await phone.final_response()
    assert ok.status == 200 and "m=audio" in ok.body.decode()
    port = next(int(line.split()[1]) for line in ok.body.decode().splitlines()
                if line.startswith("m=audio"))
    phone.remote_media = ("127.0.0.1", port)
    phone.to_tag = ok.to.tag
    answer = phone.offer().replace(" 0 8 101", " 0 101")
    phone.send(phone.request("ACK", answer, cseq=invite.cseq.seq))
    await phone.stream(speech_payloads()[:40])
    await wait_for(lambda: len(phone.received) > 20)
    record = server.registry.active()[0]
    assert record.codec == "PCMU"
    await phone.hangup()


async def test_rtp_from_a_stranger_is_dropped_and_counted(
    server: Server, phone: Softphone
) -> None:
    await phone.call()
    await phone.stream(speech_payloads()[:10])
    stranger = Softphone(server=phone.server)
    await stranger.open()
    stranger.remote_media = phone.remote_media
    await stranger.stream([b"\x00" * 160] * 10)
    await asyncio.sleep(0.1)
    call = next(iter(server.calls.values()))
    assert call.endpoint is not None
    stats = call.endpoint.session.stats()
    assert stats.dropped_foreign == 10
    # Our audio still goes to the caller, never to the injector.
    assert not stranger.received
    await stranger.close()
    await phone.hangup()


async def test_cancel_while_ringing() -> None:
    server = await start_server(ring_ms=2000)
    phone = Softphone(server=("127.0.0.1", server.transport.port))
    await phone.open()
    try:
        invite = phone.request("INVITE", phone.offer())
        phone.send(invite)
        while not any(r.status == 180 for r in phone.responses):
            await phone.next_message()
        cancel = phone.request("CANCEL", cseq=invite.cseq.seq, branch=invite.top_via.branch)
        phone.send(cancel)
        statuses: set[int] = set()
        while not {200, 487} <= statuses:
            message = await phone.next_message()
            assert isinstance(message, Response)
            statuses.add(message.status)
        await wait_for(lambda: not server.calls)
        assert server.ports.in_use == 0
        assert server.registry.ended()[-1].end_reason == "cancelled"
    finally:
        await phone.close()
        await server.stop()


async def test_caller_number_prefers_p_asserted_identity(
    server: Server, phone: Softphone
) -> None:
    await phone.call(extra=(
        ("P-Asserted-Identity", '"Ana" <tel:+5511999990000>'),
        ("X-Twilio-CallSid", "CA0123456789abcdef0123456789abcdef"),
        ("X-Twilio-AccountSid", "AC0123456789abcdef0123456789abcdef"),
    ))
    record = server.registry.active()[0]
    assert record.caller_number == "+5511999990000"
    assert record.facts == {
        "x-twilio-callsid": "CA0123456789abcdef0123456789abcdef",
        "x-twilio-accountsid": "AC0123456789abcdef0123456789abcdef",
    }
    assert record.from_uri.startswith("sip:phone@127.0.0.1")
    await phone.hangup()


def test_parse_dtmf_relay() -> None:
    assert parse_dtmf_relay(b"Signal=5\r\nDuration=160\r\n") == "5"
    assert parse_dtmf_relay(b"Signal= #\r\n") == "#"
    assert parse_dtmf_relay(b"signal=11\r\n") == "#"
    assert parse_dtmf_relay(b"Signal=X\r\n") is None
    assert parse_dtmf_relay(b"Duration=100\r\n") is None


def test_echo_payloads_fixture_is_speech() -> None:
    payloads = speech_payloads()
    assert len(payloads) >= 100
    samples = ulaw_decode(b"".join(payloads))
    assert float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) > 300


async def confirmed_call(server: Server, phone: Softphone) -> CallRecord:
    """Call, and wait until the server has the ACK (a REFER needs a confirmed dialog)."""
    await phone.call()
    await wait_for(lambda: any(d.state is DialogState.CONFIRMED for d in server.calls))
    return server.registry.active()[0]


async def expect_request(phone: Softphone, method: str, timeout: float = 5.0) -> Request:
    while True:
        message = await phone.next_message(timeout)
        if isinstance(message, Request) and message.method == method:
            return message


async def test_blind_transfer_by_refer(server: Server, phone: Softphone) -> None:
    record = await confirmed_call(server, phone)
    transferring = asyncio.create_task(server.transfer(record.session_id, "sip:human@pbx.test"))
    refer = await expect_request(phone, "REFER")
    assert refer.headers.get("Refer-To") == "<sip:human@pbx.test>"
    phone.send(make_response(refer, 202))
    assert await transferring is True
    for sipfrag, state in ((b"SIP/2.0 180 Ringing\r\n", "active"),
                           (b"SIP/2.0 200 OK\r\n", "terminated;reason=noresource")):
        notify = phone.request(
            "NOTIFY", sipfrag.decode(), content_type="message/sipfrag",
            extra=(("Event", "refer"), ("Subscription-State", state)),
        )
        phone.send(notify)
        assert (await phone.final_response()).status == 200
    await phone.expect_bye(timeout=5)
    await wait_for(lambda: not server.calls)
    assert record.end_reason == "transferred"
    events = [line.get("event") for line in record.transcript if line["role"] == "system"]
    assert events == ["transfer-requested", "transfer-accepted", "transferred"]


async def test_refused_transfer_keeps_the_call(server: Server, phone: Softphone) -> None:
    record = await confirmed_call(server, phone)
    transferring = asyncio.create_task(server.transfer(record.session_id, "tel:+15550100"))
    refer = await expect_request(phone, "REFER")
    phone.send(make_response(refer, 603))
    assert await transferring is False
    assert server.calls and record.state == "answered"
    assert record.transcript[-1]["event"] == "transfer-rejected"
    with pytest.raises(ValueError):
        await server.transfer(record.session_id, "human@pbx")
    assert await server.transfer("no-such-session", "sip:human@pbx.test") is False
    await phone.hangup()


async def test_edge_policy_in_front_of_the_core(server: Server) -> None:
    server.policy = EdgePolicy(EdgePolicyConfig(
        allow_cidrs=("127.0.0.1/32",), numbers=("+15550100",), rate_limit=5.0, rate_burst=10,
        exempt_cidrs=(), exempt_allowed_sources=False,
    ))
    phone = Softphone(server=("127.0.0.1", server.transport.port), user="+1-555-0100")
    other = Softphone(server=("127.0.0.1", server.transport.port), user="+15559999")
    await phone.open()
    await other.open()
    try:
        assert (await other.call()).status == 404  # not one of our numbers
        assert (await phone.call()).status == 200
        await phone.hangup()
        flood = Softphone(server=phone.server)
        await flood.open()
        for _ in range(60):
            flood.send(flood.request("OPTIONS"))
        answered: list[int] = []
        with contextlib.suppress(TimeoutError):
            while True:
                message = await flood.next_message(timeout=0.5)
                assert isinstance(message, Response)
                answered.append(message.status)
        await flood.close()
        assert answered.count(200) <= 10 and answered.count(503) == 1
        assert server.policy.counters["rate_limited"] >= 49
    finally:
        await phone.close()
        await other.close()


async def test_untrusted_callers_must_answer_a_digest_challenge() -> None:
    server = await start_server(auth_users="alice:correct-horse")
    phone = Softphone(server=("127.0.0.1", server.transport.port))
    await phone.open()
    try:
        challenged = await phone.call()
        assert challenged.status == 401
        challenge = choose_challenge(
            parse_challenges(challenged.headers.get_all("WWW-Authenticate"))
        )
        assert challenge is not None and challenge.algorithm == "SHA-256"
        for password, expected in (("wrong", 401), ("correct-horse", 200)):
            uri = phone.request("INVITE").uri
            credentials = answer_challenge(
                challenge, "INVITE", uri, "alice", password, cnonce="c0ffee", nc=1
            )
            answer = await phone.call(extra=(("Authorization", credentials.serialize()),))
            assert answer.status == expected
        assert server.registry.active()[0].caller_number == "phone"
        await phone.hangup()
    finally:
        await phone.close()
        await server.stop()


async def test_srtp_call_echoes_encrypted_audio() -> None:
    server = await start_server(srtp="required")
    phone = Softphone(server=("127.0.0.1", server.transport.port))
    await phone.open()
    try:
        plain = await phone.call()
        assert plain.status == 488  # required: a plain RTP offer is refused
        phone_key = bytes(range(30))
        crypto = base64.b64encode(phone_key).decode()
        offer = phone.offer().replace("RTP/AVP", "RTP/SAVP") + (
            f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{crypto}\r\n"
        )
        answer = await phone.call(body=offer)
        assert answer.status == 200 and "RTP/SAVP" in phone.answer
        line = next(v for v in phone.answer.splitlines() if v.startswith("a=crypto:"))
        server_crypto = CryptoAttribute.parse(line.removeprefix("a=crypto:"))
        assert server_crypto.tag == 1 and server_crypto.key != phone_key
        suite = SrtpSuite.AES_CM_128_HMAC_SHA1_80
        ours = SrtpContext(suite, phone_key, server_crypto.key)
        assert phone.remote_media is not None and phone.rtp.transport is not None
        sent = speech_payloads()[:50]
        for index, payload in enumerate(sent):
            packet = RtpPacket(payload_type=0, sequence_number=index, timestamp=index * 160,
                               ssrc=0x5A5A, payload=payload)
            protected = ours.protect(packet.serialize())
            assert protected is not None
            phone.rtp.transport.sendto(protected, phone.remote_media)
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        decrypted = [ours.unprotect(r.packet.serialize()) for r in phone.received]
        payloads = [RtpPacket.parse(d).payload for d in decrypted if d is not None]
        assert len(payloads) >= 45 and b"".join(sent[:20]) in b"".join(payloads)
        call = next(iter(server.calls.values()))
        assert call.endpoint is not None and call.endpoint.session.stats().packets_in >= 48
        await phone.hangup()
    finally:
        await phone.close()
        await server.stop()
