"""SRTP (SDES, RFC 4568) calls through the whole server, with real softphones as the SDES peer.

baresip (libre's own SRTP) and PJSIP (pjmedia over libsrtp) call the in-process server (echo
model, ``SIPAGENT_SRTP=required``) with RTP/SAVP offers. Per call:

- SDP, as the peer sent and received it: the offer is RTP/SAVP, the answer RTP/SAVP with exactly
  one ``a=crypto``, carrying the tag and suite of the first offered line we support and a key of
  our own;
- audio: the peer hears its own speech back (cross-correlation), the server's SRTP context
  counted no authentication, replay or protection failure;
- the wire (dumpcap on lo, when it can run here): every RTP packet either way is
  12 + 160 + tag octets (10 for ``_80``, 4 for ``_32``) and decrypts under the keys of the SDP;
  no payload on the wire equals its plaintext, the peer's payloads as sent are noise and
  decrypted are its speech (cross-correlation), and the server's decrypted payloads are the
  peer's, byte for byte (the echo); every RTCP packet the server sends is SRTCP (E flag, index,
  10-octet tag, decrypts to RTCP), and so is every RTCP packet the peer sends, but libre's plain
  APP "PING" before its SRTP starts and plain BYE after it stops (baresip 1.0 sends both in the
  clear).

And the refusals, with real peers: an RTP/SAVP-only peer when SRTP is off, a plain-RTP peer when
it is required → 488, never a plain-RTP answer; ``optional`` with a plain peer → a plain call.
Last, a mid-call peer re-key (our softphone: these peers keep their keys on a re-INVITE).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import os
import shutil
import struct
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from aiortc.rtp import RtpPacket

from rtp.srtp import SRTP_KEY_LENGTH, SrtpContext, SrtpSuite, is_rtcp_datagram
from sipagent.call import Call
from sipagent.crypto_attr import CryptoAttribute
from sipagent.registry import CallRecord
from sipagent.sdp import SessionDescription
from sipagent.server import Server
from tests.peers.audio import (
    cross_correlate,
    is_silence,
    read_wav,
    ulaw_decode,
    ulaw_encode,
    write_wav,
)
from tests.peers.baresip_peer import Baresip, baresip_srtp_available
from tests.peers.harness import start_server, wait_for
from tests.peers.pcap import capture, read_udp
from tests.peers.pjsua_peer import PeerResult, run_caller
from tests.peers.softphone import Softphone
from tests.test_integration_pjsua import echo_alignment, echo_lag_ms

SPEECH = Path(__file__).parent / "fixtures" / "speech_8k.wav"
SPEECH_SECONDS = 3.0
PJSIP_SECONDS = 4.5  # the speech, its echo, and time for a regular RTCP report
FRAME = 160  # octets of a 20 ms G.711 payload
SRTCP_TRAILER = 4 + 10  # E flag + SRTCP index, then the 80-bit tag (every suite, RFC 4568)
CAN_CAPTURE = shutil.which("dumpcap") is not None and os.geteuid() == 0
HAS_PJSUA = importlib.util.find_spec("pjsua2") is not None
_80 = SrtpSuite.AES_CM_128_HMAC_SHA1_80
_32 = SrtpSuite.AES_CM_128_HMAC_SHA1_32
BARESIP_WINDOW = (16000, 18000)  # server RTP ports; baresip's own are 18000-19999
PJSIP_WINDOW = (10000, 16000)  # below PJSIP's (ephemeral) media ports

needs_baresip = pytest.mark.skipif(
    not baresip_srtp_available(), reason="baresip or its srtp/g711/aufile/... modules missing"
)
needs_pjsua = pytest.mark.skipif(not HAS_PJSUA, reason="pjsua2-python not installed")


# ------------------------------------------------------------------------------- helpers


@contextlib.asynccontextmanager
async def running(srtp: str, rtp_window: tuple[int, int]) -> AsyncIterator[Server]:
    """An in-process server with ``SIPAGENT_SRTP=srtp``."""
    server = await start_server(srtp=srtp, rtp_window=rtp_window)
    try:
        yield server
    finally:
        await server.stop()


def target(server: Server) -> str:
    return f"sip:echo@127.0.0.1:{server.transport.port}"


@contextlib.contextmanager
def media_capture(server: Server, path: Path) -> Iterator[Path | None]:
    """The server's RTP and RTCP ports captured on lo (None when dumpcap cannot run here)."""
    if not CAN_CAPTURE:
        yield None
        return
    low, high = server.settings.rtp_port_min, server.settings.rtp_port_max + 1
    with capture(path, bpf=f"udp portrange {low}-{high}", max_seconds=60) as pcap:
        yield pcap


def padded_speech(tmp_path: Path) -> Path:
    """The speech then 5 s of silence: baresip's aufile ends the call at the end of its file."""
    speech, rate = read_wav(SPEECH)
    path = tmp_path / "speech_padded.wav"
    write_wav(path, np.concatenate([speech, np.zeros(5 * rate, dtype=np.int16)]), rate)
    return path


def baresip_sdp(phone: Baresip) -> tuple[str, str]:
    """(offer, answer): the SDP of baresip's INVITE and of the final response to it ("" if
    that response has none)."""
    offer = answer = None
    for _route, message in phone.sip_trace():
        head, _, body = message.partition("\n\n")
        first_line, *headers = head.split("\n")
        cseq = next((h.split()[-1] for h in headers if h.lower().startswith("cseq:")), "")
        if first_line.startswith("INVITE ") and offer is None:
            offer = body
        elif (
            first_line.startswith("SIP/2.0 ")
            and cseq == "INVITE"
            and answer is None
            and int(first_line.split()[1]) >= 200
        ):
            answer = body
    assert offer is not None and answer is not None, phone.log()[-3000:]
    return offer, answer


@dataclass(frozen=True, slots=True, kw_only=True)
class Sdes:
    """What one SDES offer/answer agreed on."""

    suite: SrtpSuite
    """The suite of the accepted line."""
    tag: int
    """The tag of the accepted line."""
    offered: tuple[str, ...]
    """Every offered suite name, in the offer's order."""
    peer_key: bytes
    """The peer's master key and salt (its a=crypto): protects what it sends."""
    server_key: bytes
    """The server's (the answer's a=crypto): protects what the server sends."""
    server_port: int
    """The server's RTP port (RTCP on the next one)."""


def check_sdes(offer: str, answer: str) -> Sdes:
    """The offer is RTP/SAVP, the answer RTP/SAVP with one a=crypto that accepts the first
    offered line we support (RFC 4568: lines come in the offerer's preference) with a new key."""
    offered = SessionDescription.parse(offer).media[0]
    answered = SessionDescription.parse(answer).media[0]
    assert offered.media == "audio" and offered.proto == "RTP/SAVP", offer
    assert answered.proto == "RTP/SAVP" and answered.port != 0, answer
    assert len(answered.crypto) == 1, answer
    ours = CryptoAttribute.parse(answered.crypto[0])
    supported = {suite.value for suite in SrtpSuite}
    first_usable = next(v for v in offered.crypto if v.split()[1] in supported)
    theirs = CryptoAttribute.parse(first_usable)
    assert (ours.tag, ours.suite) == (theirs.tag, theirs.suite), (offer, answer)
    assert ours.key != theirs.key
    return Sdes(
        suite=ours.suite,
        tag=ours.tag,
        offered=tuple(v.split()[1] for v in offered.crypto),
        peer_key=theirs.key,
        server_key=ours.key,
        server_port=answered.port,
    )


def reader(suite: SrtpSuite, key: bytes) -> SrtpContext:
    """A context that unprotects what was protected with ``key`` (it never protects)."""
    return SrtpContext(suite, bytes(SRTP_KEY_LENGTH), key)


def rtcp_packet_types(compound: bytes) -> list[int]:
    """The packet types of an RTCP compound packet, checking that its lengths add up."""
    kinds, offset = [], 0
    while offset < len(compound):
        assert len(compound) - offset >= 4 and compound[offset] >> 6 == 2, compound
        kinds.append(compound[offset + 1])
        offset += 4 * (struct.unpack_from("!H", compound, offset + 2)[0] + 1)
    assert offset == len(compound), compound
    return kinds


def is_libre_plain_rtcp(data: bytes) -> bool:
    """What libre (baresip 1.0) sends as plain RTCP around its SRTP: an APP "PING" before the
    SRTP is on (a pinhole opener) and its BYE + SDES once it is off again, at hang-up."""
    with contextlib.suppress(AssertionError, struct.error):
        kinds = rtcp_packet_types(data)
        return (kinds == [204] and data[8:12] == b"PING") or kinds == [203, 202]
    return False


def check_srtp_wire(pcap: Path, sdes: Sdes, *, peer: str) -> str:
    """The captured media of one call is SRTP/SRTCP under the SDP's keys (see the module
    docstring); returns a summary for the test output."""
    rtp_port, rtcp_port = sdes.server_port, sdes.server_port + 1
    datagrams = read_udp(pcap)
    to_server = [d.payload for d in datagrams if d.dst[1] == rtp_port]
    from_server = [d.payload for d in datagrams if d.src[1] == rtp_port]
    rtcp_in = [d.payload for d in datagrams if d.dst[1] == rtcp_port]
    rtcp_out = [d.payload for d in datagrams if d.src[1] == rtcp_port]
    assert len(to_server) > 100 and len(from_server) > 100, (len(to_server), len(from_server))
    assert not any(is_rtcp_datagram(d) for d in to_server + from_server)  # no rtcp-mux here

    size = 12 + FRAME + sdes.suite.tag_length
    sizes = {len(d) for d in to_server + from_server}
    assert sizes == {size}, f"SRTP packet sizes {sizes}, expected 12 + {FRAME} + tag = {size}"

    def decrypted(packets: Sequence[bytes], key: bytes) -> list[tuple[bytes, RtpPacket]]:
        """(wire payload, decrypted packet) in sequence order; every packet must decrypt."""
        context = reader(sdes.suite, key)
        pairs = []
        for packet in packets:
            clear = context.unprotect(packet)
            assert clear is not None, context.stats()
            pairs.append((packet[12 : 12 + FRAME], RtpPacket.parse(clear)))
        return sorted(pairs, key=lambda pair: pair[1].sequence_number)

    inbound = decrypted(to_server, sdes.peer_key)
    outbound = decrypted(from_server, sdes.server_key)
    for wire, packet in inbound + outbound:
        assert wire != packet.payload, "a G.711 payload went out in the clear"
    reference, _ = read_wav(SPEECH)
    sent = [packet.payload for _, packet in inbound]
    clear = cross_correlate(reference, ulaw_decode(b"".join(sent)), max_lag_ms=1000)
    cipher = cross_correlate(
        reference, ulaw_decode(b"".join(wire for wire, _ in inbound)), max_lag_ms=1000
    )
    assert clear.peak >= 0.99, clear  # decrypted: the speech the peer played
    assert cipher.peak < 0.3, cipher  # on the wire: noise
    steps, unmatched, compared = echo_alignment(sent, [packet.payload for _, packet in outbound])
    assert not unmatched, (steps, unmatched[:20], compared)  # the echo, byte for byte
    assert compared >= len(sent) - 5, (steps, compared, len(sent))

    kinds: list[int] = []

    def srtcp(packets: Sequence[bytes], key: bytes) -> tuple[int, list[bytes]]:
        """(SRTCP packets that decrypt to RTCP, the packets that are not SRTCP)."""
        context = reader(sdes.suite, key)
        good, plain = 0, []
        for packet in packets:
            clear = context.unprotect_rtcp(packet)
            if clear is None:
                plain.append(packet)
                continue
            (index,) = struct.unpack_from("!I", packet, len(packet) - SRTCP_TRAILER)
            assert index & 0x8000_0000, "SRTCP without the E (encrypted) flag"
            assert len(packet) == len(clear) + SRTCP_TRAILER
            assert packet[8 : len(clear)] != clear[8:], "SRTCP body in the clear"
            kinds.extend(rtcp_packet_types(clear))
            good += 1
        return good, plain

    server_srtcp, server_plain = srtcp(rtcp_out, sdes.server_key)
    peer_srtcp, peer_plain = srtcp(rtcp_in, sdes.peer_key)
    assert {200, 201} & set(kinds), kinds  # sender or receiver reports among them
    assert server_srtcp >= 1 and not server_plain, (server_srtcp, server_plain)
    assert peer_srtcp >= 1, (peer_srtcp, peer_plain)
    assert all(peer == "baresip" and is_libre_plain_rtcp(p) for p in peer_plain), peer_plain
    return (
        f"wire: SRTP {len(to_server)} in / {len(from_server)} out, {size} octets each;"
        f" SRTCP {peer_srtcp} in / {server_srtcp} out, RTCP types {sorted(set(kinds))}"
        f" (plain RTCP in: {len(peer_plain)}); speech peak decrypted {clear.peak:.3f},"
        f" as sent {cipher.peak:.3f}; echo offsets {steps}"
    )


async def answered_call(server: Server, timeout: float = 10.0) -> Call:
    """The server's one call, once its media is up."""
    await wait_for(
        lambda: any(c.endpoint is not None for c in server.calls.values()), timeout=timeout
    )
    [call] = server.calls.values()
    return call


async def ended_record(server: Server) -> CallRecord:
    await wait_for(lambda: not server.calls and server.registry.ended(), timeout=5.0)
    return server.registry.ended()[-1]


def check_server_srtp(call: Call, record: CallRecord, sdes: Sdes) -> None:
    """The server used the suite and keys of the SDP and dropped nothing."""
    assert call.negotiated is not None and call.negotiated.srtp is not None
    keys = call.negotiated.srtp
    assert (keys.suite, keys.tag) == (sdes.suite, sdes.tag)
    assert (keys.local_key, keys.remote_key) == (sdes.server_key, sdes.peer_key)
    assert call.endpoint is not None and call.endpoint.srtp is not None
    stats = call.endpoint.srtp.stats()
    assert stats.auth_failures == stats.replays == stats.protect_failures == 0, stats
    assert record.rtp.packets_in > 100 and record.rtp.packets_out > 100, record.rtp
    assert record.rtp.lost == 0 and record.rtp.dropped_foreign == 0, record.rtp
    assert stats.unprotected >= record.rtp.packets_in, (stats, record.rtp)
    assert stats.protected >= record.rtp.packets_out, (stats, record.rtp)


# ------------------------------------------------------------------------------- baresip


@needs_baresip
async def test_baresip_srtp_mandatory_call_through_the_server(tmp_path: Path) -> None:
    played = padded_speech(tmp_path)
    async with running("required", BARESIP_WINDOW) as server:
        with media_capture(server, tmp_path / "call.pcap") as pcap:
            phone = Baresip(tmp_path / "baresip", play=played, codecs="PCMU", mediaenc="srtp-mand")
            async with phone:
                dialed = await phone.command("dial", target(server))
                assert dialed["ok"], dialed
                established = await phone.wait_event("CALL_ESTABLISHED")
                call = await answered_call(server)
                assert call.record.call_id == established["id"]
                await asyncio.sleep(SPEECH_SECONDS + 0.6)  # the speech and its echo
                hung_up = await phone.command("hangup")
                assert hung_up["ok"], hung_up
                await phone.wait_event("CALL_CLOSED")
                record = await ended_record(server)
    log = phone.log()  # complete once baresip has quit
    assert record.end_reason == "remote-bye" and record.codec == "PCMU", record
    offer, answer = baresip_sdp(phone)
    sdes = check_sdes(offer, answer)
    assert sdes.offered == (_80.value,), offer  # all baresip 1.0's srtp module offers
    assert f"SRTP is Enabled (cryptosuite={sdes.suite})" in log, log[-3000:]
    check_server_srtp(call, record, sdes)

    reference, _ = read_wav(SPEECH)
    heard, rate = read_wav(phone.received_wav())  # decrypted by libre, then decoded
    assert not is_silence(heard)
    correlation = cross_correlate(reference, heard, sample_rate=rate, max_lag_ms=1000)
    assert correlation.peak >= 0.9, correlation
    wire = "" if pcap is None else check_srtp_wire(pcap, sdes, peer="baresip")
    assert call.endpoint is not None and call.endpoint.srtp is not None
    print(
        f"baresip SDES {sdes.suite} tag {sdes.tag}: echo peak {correlation.peak:.3f}"
        f" lag {correlation.lag_ms:.1f} ms; server {call.endpoint.srtp.stats()};"
        f" {wire or 'no capture (needs dumpcap and root)'}"
    )


@needs_baresip
@pytest.mark.parametrize(
    ("policy", "mediaenc"),
    [("off", "srtp-mand"), ("required", None), ("required", "srtp")],
    ids=["srtp-off-savp-only-peer", "srtp-required-plain-peer", "srtp-required-best-effort-peer"],
)
async def test_baresip_refused_with_488(tmp_path: Path, policy: str, mediaenc: str | None) -> None:
    async with running(policy, BARESIP_WINDOW) as server:
        phone = Baresip(tmp_path / "baresip", play=padded_speech(tmp_path), mediaenc=mediaenc)
        async with phone:
            await phone.command("dial", target(server))
            closed = await phone.wait_event("CALL_CLOSED")
        assert not server.calls and not server.registry.active()
        assert server.ports.in_use == 0
    assert "CALL_ESTABLISHED" not in [e.get("type") for e in phone.events]
    assert closed["param"] == "488 Not Acceptable Here", closed
    offer, answer = baresip_sdp(phone)
    offered = SessionDescription.parse(offer).media[0]
    # best effort ("srtp"): RTP/AVP with a=crypto, which RFC 4568 leaves undefined: plain RTP
    assert offered.proto == ("RTP/SAVP" if mediaenc == "srtp-mand" else "RTP/AVP"), offer
    assert bool(offered.crypto) == (mediaenc is not None), offer
    assert answer == "", answer  # refused: no SDP, in particular no plain-RTP answer


@needs_baresip
async def test_srtp_optional_takes_a_plain_baresip_call(tmp_path: Path) -> None:
    played = padded_speech(tmp_path)
    async with (
        running("optional", BARESIP_WINDOW) as server,
        Baresip(tmp_path / "baresip", play=played, codecs="PCMU") as phone,
    ):
        await phone.command("dial", target(server))
        await phone.wait_event("CALL_ESTABLISHED")
        call = await answered_call(server)
        await asyncio.sleep(SPEECH_SECONDS + 0.6)
        await phone.command("hangup")
        await phone.wait_event("CALL_CLOSED")
        record = await ended_record(server)
    offer, answer = baresip_sdp(phone)
    assert SessionDescription.parse(offer).media[0].proto == "RTP/AVP"
    answered = SessionDescription.parse(answer).media[0]
    assert answered.proto == "RTP/AVP" and answered.crypto == (), answer
    assert call.negotiated is not None and call.negotiated.srtp is None
    assert call.endpoint is not None and call.endpoint.srtp is None
    assert record.end_reason == "remote-bye" and record.rtp.packets_in > 150, record
    heard, rate = read_wav(phone.received_wav())
    correlation = cross_correlate(read_wav(SPEECH)[0], heard, sample_rate=rate, max_lag_ms=1000)
    assert correlation.peak >= 0.9, correlation


# --------------------------------------------------------------------------------- PJSIP


async def pjsip_call(
    server: Server, workdir: Path, **options: object
) -> tuple[PeerResult, Path, Call | None]:
    """One PJSIP caller (subprocess, from a worker thread); (result, recording, server call)."""
    recording = workdir / "heard.wav"
    caller = asyncio.create_task(
        asyncio.to_thread(
            run_caller, target(server), play=SPEECH, record=recording, workdir=workdir,
            **options,  # type: ignore[arg-type]
        )
    )
    call: Call | None = None
    with contextlib.suppress(AssertionError):  # refused calls never get media
        while call is None and not caller.done():
            call = await answered_call(server, timeout=0.5)
    result = await asyncio.wait_for(caller, timeout=60.0)
    return result, recording, call


@needs_pjsua
@pytest.mark.parametrize(
    ("cryptos", "suite"),
    [((), _80), ((_32.value,), _32)],
    ids=["pjsip-default-offer", "32-bit-tag-offer"],
)
async def test_pjsip_srtp_mandatory_call_through_the_server(
    tmp_path: Path, cryptos: tuple[str, ...], suite: SrtpSuite
) -> None:
    async with running("required", PJSIP_WINDOW) as server:
        with media_capture(server, tmp_path / "call.pcap") as pcap:
            result, recording, call = await pjsip_call(
                server, tmp_path, duration=PJSIP_SECONDS, srtp="mandatory", srtp_cryptos=cryptos
            )
        record = await ended_record(server)
    lag = echo_lag_ms(result, recording, f"PJSIP SRTP {suite}")
    assert result.returncode == 0 and result.data["status_code"] == 200, result.describe()
    assert result.data["codec"] == "PCMU/8000"
    assert record.end_reason == "remote-bye" and record.codec == "PCMU", record
    sdes = check_sdes(result.data["local_sdp"], result.data["remote_sdp"])
    assert sdes.suite is suite
    if cryptos:
        assert sdes.offered == cryptos
    else:
        # PJSIP 2.15 offers its AES-256 suites first: the answer skips to the first we support.
        assert _80.value in sdes.offered and _32.value in sdes.offered, sdes.offered
        assert sdes.offered.index(_80.value) < sdes.offered.index(_32.value)
    assert call is not None
    check_server_srtp(call, record, sdes)
    wire = "" if pcap is None else check_srtp_wire(pcap, sdes, peer="pjsip")
    print(
        f"PJSIP SDES {sdes.suite} (tag {sdes.tag} of {list(sdes.offered)}): echo lag {lag:.1f} ms,"
        f" setup {result.data['setup_ms']} ms, PJSIP rx/tx {result.data['rx_packets']}/"
        f"{result.data['tx_packets']}; {wire or 'no capture (needs dumpcap and root)'}"
    )


@needs_pjsua
@pytest.mark.parametrize(
    ("policy", "srtp"),
    [("off", "mandatory"), ("required", "off")],
    ids=["srtp-off-savp-only-peer", "srtp-required-plain-peer"],
)
async def test_pjsip_refused_with_488(tmp_path: Path, policy: str, srtp: str) -> None:
    async with running(policy, PJSIP_WINDOW) as server:
        result, _, call = await pjsip_call(server, tmp_path, duration=1.0, srtp=srtp,
                                           setup_timeout=5.0)
        assert call is None and not server.calls and server.ports.in_use == 0
    assert not result.confirmed, result.describe()
    assert result.data["status_code"] == 488, result.describe()
    proto = SessionDescription.parse(result.data["local_sdp"]).media[0].proto
    assert proto == ("RTP/SAVP" if srtp == "mandatory" else "RTP/AVP")
    assert "remote_sdp" not in result.data, result.describe()  # no answer, plain or not


@needs_pjsua
async def test_srtp_optional_takes_a_plain_pjsip_call(tmp_path: Path) -> None:
    async with running("optional", PJSIP_WINDOW) as server:
        result, recording, call = await pjsip_call(server, tmp_path, duration=3.5)
        record = await ended_record(server)
    echo_lag_ms(result, recording, "PJSIP plain RTP, SRTP optional")
    answered = SessionDescription.parse(result.data["remote_sdp"]).media[0]
    assert answered.proto == "RTP/AVP" and answered.crypto == ()
    assert call is not None and call.endpoint is not None and call.endpoint.srtp is None
    assert record.end_reason == "remote-bye" and record.rtp.packets_in > 100, record


# ------------------------------------------------------------------ mid-call peer re-key


async def test_peer_rekey_mid_call_keeps_the_servers_outbound_srtp() -> None:
    # No real peer here re-keys on a re-INVITE, so our softphone does: same suite, new key.
    # The server must keep its own key and its running outbound context (a fresh context
    # under the same key restarts the SRTP rollover counter and SRTCP index: keystream reuse)
    # and check the peer's packets with the new key only.
    keys = [bytes(range(30)), bytes(range(100, 130))]
    speech = ulaw_encode(read_wav(SPEECH)[0])
    frames = [speech[i : i + FRAME] for i in range(0, len(speech) - FRAME + 1, FRAME)]
    async with running("required", BARESIP_WINDOW) as server:
        phone = Softphone(server=("127.0.0.1", server.transport.port))
        await phone.open()
        try:

            def savp_offer(key: bytes) -> str:
                crypto = base64.b64encode(key).decode()
                return phone.offer().replace("RTP/AVP", "RTP/SAVP") + (
                    f"a=crypto:1 {_80.value} inline:{crypto}\r\n"
                )

            answer = await phone.call(body=savp_offer(keys[0]))
            assert answer.status == 200, answer
            server_crypto = crypto_of(phone.answer)
            call = await answered_call(server)
            assert call.endpoint is not None and call.endpoint.srtp is not None
            context = call.endpoint.srtp
            sender = SrtpContext(_80, keys[0], server_crypto.key)
            await stream_srtp(phone, sender, frames[:25], first_seq=0)
            protected_before = context.protected

            reinvite = phone.request("INVITE", savp_offer(keys[1]))
            phone.send(reinvite)
            reanswer = await phone.final_response()
            assert reanswer.status == 200, reanswer
            phone.send(phone.request("ACK", cseq=reinvite.cseq.seq))
            assert crypto_of(reanswer.body.decode()).key == server_crypto.key  # ours kept
            assert call.endpoint.srtp is context  # the running context goes on
            assert context.protected >= protected_before

            in_before = call.endpoint.session.stats().packets_in
            stale = SrtpContext(_80, keys[0], server_crypto.key)  # the old key, new indexes
            for seq in range(1000, 1005):
                packet = RtpPacket(payload_type=0, sequence_number=seq, timestamp=seq * 160,
                                   ssrc=0x5A5A, payload=frames[0]).serialize()
                protected = stale.protect(packet)
                assert protected is not None and phone.rtp.transport is not None
                phone.rtp.transport.sendto(protected, phone.remote_media)
            rekeyed = SrtpContext(_80, keys[1], server_crypto.key)
            await stream_srtp(phone, rekeyed, frames[25:75], first_seq=25)
            await wait_for(lambda: context.auth_failures >= 5, timeout=2.0)
            stats = context.stats()
            packets_in = call.endpoint.session.stats().packets_in - in_before
            assert stats.auth_failures == 5 and stats.replays == 0, stats  # the old key only
            assert packets_in >= 45, packets_in  # the new key's packets
            from_server = reader(_80, server_crypto.key)
            echoed = [from_server.unprotect(r.packet.serialize()) for r in phone.received]
            assert len(echoed) >= 50 and None not in echoed  # one stream across the re-key
            await phone.hangup()
        finally:
            await phone.close()


async def test_suite_change_mid_call_gets_a_fresh_server_key() -> None:
    # _80 and _32 derive the same session keys from a master key: answering a re-offer that
    # switches suite under our old key would reuse its keystream, so the server picks a new key.
    async with running("required", BARESIP_WINDOW) as server:
        phone = Softphone(server=("127.0.0.1", server.transport.port))
        await phone.open()
        try:

            def savp_offer(suite: SrtpSuite) -> str:
                crypto = base64.b64encode(bytes(range(30))).decode()
                return phone.offer().replace("RTP/AVP", "RTP/SAVP") + (
                    f"a=crypto:1 {suite.value} inline:{crypto}\r\n"
                )

            answer = await phone.call(body=savp_offer(_80))
            assert answer.status == 200, answer
            first = crypto_of(phone.answer)
            call = await answered_call(server)
            assert call.endpoint is not None
            context = call.endpoint.srtp

            reinvite = phone.request("INVITE", savp_offer(_32))
            phone.send(reinvite)
            reanswer = await phone.final_response()
            assert reanswer.status == 200, reanswer
            phone.send(phone.request("ACK", cseq=reinvite.cseq.seq))
            second = crypto_of(reanswer.body.decode())
            assert second.suite is _32
            assert second.key != first.key
            assert call.endpoint.srtp is not context  # a new context, under the new key
            await phone.hangup()
        finally:
            await phone.close()


def crypto_of(sdp: str) -> CryptoAttribute:
    """The one a=crypto of an SDP answer."""
    [value] = SessionDescription.parse(sdp).media[0].crypto
    return CryptoAttribute.parse(value)


async def stream_srtp(
    phone: Softphone, context: SrtpContext, frames: Sequence[bytes], *, first_seq: int
) -> None:
    """Send ``frames`` as SRTP from the softphone, one per 20 ms (SSRC 0x5A5A)."""
    assert phone.remote_media is not None and phone.rtp.transport is not None
    for index, frame in enumerate(frames, start=first_seq):
        packet = RtpPacket(payload_type=0, sequence_number=index, timestamp=index * 160,
                           ssrc=0x5A5A, payload=frame).serialize()
        protected = context.protect(packet)
        assert protected is not None
        phone.rtp.transport.sendto(protected, phone.remote_media)
        await asyncio.sleep(0.02)
