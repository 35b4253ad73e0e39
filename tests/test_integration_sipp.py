"""sipagent against SIPp over real sockets on 127.0.0.1.

The server runs in-process (``start_server`` below, like the one of tests/test_sipagent_server.py:
a free SIP port and a private RTP range) and SIPp runs as a subprocess from a worker thread
(``asyncio.to_thread(run_sipp, ...)``), so the server's event loop keeps serving while SIPp waits.
Every scenario in tests/sipp/uac_*.xml was first validated SIPp-against-SIPp in
tests/test_peers_sipp.py, so a failure here points at the server. Each test checks SIPp's verdict
(``result.ok``, with ``result.describe()`` as the message) and then what the server recorded:
the registry entry (end reason, codec, RTP counters, DTMF), and that no call or RTP port is left.

RFC 4475 torture messages are also sent over the wire (one UDP datagram each): the server must
keep answering and must not leak calls or ports.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from sipagent.dialog import DialogState
from sipagent.registry import CallRecord, CallState
from sipagent.server import Server
from sipagent.transaction import Destination
from tests.peers.harness import start_server, wait_for
from tests.peers.sipp import SippResult, run_sipp, sipp_available, start_sipp

pytestmark = pytest.mark.skipif(not sipp_available(), reason="sipp (sip-tester) not installed")

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not IS_ROOT, reason="SIPp's play_pcap_audio sends RTP through a raw socket: needs root"
)
RFC4475 = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "rfc4475"
LOCALHOST = "127.0.0.1"

ServerFactory = Callable[..., Awaitable[Server]]
RTP_SPAN = 200


@pytest.fixture
async def make_server() -> AsyncIterator[ServerFactory]:
    """Start servers with settings overrides; all are stopped at the end of the test."""
    servers: list[Server] = []

    async def make(**overrides: object) -> Server:
        server = await start_server(**overrides)
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


@pytest.fixture
async def server(make_server: ServerFactory) -> Server:
    return await make_server()


async def sipp(
    server: Server, scenario: str | Path, tmp_path: Path, **options: object
) -> SippResult:
    """Run a UAC scenario against ``server`` from a worker thread (the loop keeps running)."""
    options.setdefault("timeout", 20.0)
    options.setdefault("workdir", tmp_path / Path(scenario).stem)
    return await asyncio.to_thread(
        run_sipp, scenario, remote=(LOCALHOST, server.transport.port), **options
    )


async def wait_idle(server: Server, timeout: float = 5.0) -> None:
    """No call left and every RTP port released."""
    await wait_for(
        lambda: not server.calls and server.ports.in_use == 0,
        timeout,
        what=f"server idle (calls={len(server.calls)}, ports in use={server.ports.in_use})",
    )


def call_ids(result: SippResult) -> set[str]:
    return set(re.findall(r"^Call-ID: *(\S+)", result.messages, re.M | re.I))


def the_record(server: Server, result: SippResult) -> CallRecord:
    """The registry record of SIPp's (single) call."""
    ids = call_ids(result)
    assert len(ids) == 1, ids
    record = server.registry.by_call_id(ids.pop())
    assert record is not None, "the call is not in the registry"
    return record


def records_for(server: Server, call_id: str) -> list[CallRecord]:
    return [r for r in server.registry.active() + server.registry.ended() if r.call_id == call_id]


def responses(messages: str, status: int, method: str) -> list[str]:
    """Received/sent messages of the log that are ``status`` responses to ``method``."""
    blocks = re.split(r"^-{5,}.*$", messages, flags=re.M)
    return [
        block
        for block in blocks
        if re.search(rf"^SIP/2\.0 {status} ", block, re.M)
        and re.search(rf"^CSeq: *\d+ {method}\s*$", block, re.M | re.I)
    ]


class StateSampler:
    """Records every state a registry record goes through (registry listener)."""

    def __init__(self, server: Server) -> None:
        self.states: dict[str, list[str]] = {}
        self._server = server
        server.registry.subscribe(self)

    def __call__(self, _kind: object, record: CallRecord) -> None:
        seen = self.states.setdefault(record.call_id, [])
        if not seen or seen[-1] != record.state:
            seen.append(str(record.state))

    def close(self) -> None:
        self._server.registry.unsubscribe(self)


# ------------------------------------------------------------------------------- basic call


@needs_root
async def test_basic_call_with_rtp(server: Server, tmp_path: Path) -> None:
    result = await sipp(server, "uac_basic_rtp.xml", tmp_path)
    assert result.ok, result.describe()
    assert (result.successful, result.failed) == (1, 0), result.describe()
    await wait_idle(server)
    record = the_record(server, result)
    assert record.state == CallState.ENDED
    assert record.end_reason == "remote-bye"
    assert record.codec == "PCMU"
    assert record.rtp.packets_in >= 140, record.rtp
    assert record.rtp.packets_out >= 140, record.rtp
    assert server.ports.in_use == 0


# ------------------------------------------------------------------------------------ cancel


async def test_cancel_while_ringing(make_server: ServerFactory, tmp_path: Path) -> None:
    server = await make_server(ring_ms=2000)
    result = await sipp(server, "uac_cancel.xml", tmp_path)
    assert result.ok, result.describe()
    assert result.count("SIP/2.0 487") >= 1, result.describe()
    assert not responses(result.messages, 200, "INVITE"), "answered although cancelled"
    # The 487 belongs to the early dialog of the 180 (same To tag, RFC 3261 8.2.6.2).
    to_tags = set(re.findall(r"^To: .*;tag=([^;\s]+)", result.messages, re.M))
    assert len(to_tags) == 1, to_tags
    await wait_idle(server)
    record = the_record(server, result)
    assert record.end_reason == "cancelled"
    assert record.answered_at is None


# ----------------------------------------------------------------------------------- options


async def test_options(server: Server, tmp_path: Path) -> None:
    result = await sipp(server, "uac_options.xml", tmp_path)
    assert result.ok, result.describe()
    allow = re.search(r"^Allow: *(.*?)\r?$", result.messages, re.M | re.I)
    assert allow is not None, result.describe()
    methods = {m.strip() for m in allow.group(1).split(",")}
    assert {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"} <= methods
    assert not server.calls and len(server.registry.active()) == 0


# -------------------------------------------------------------------------------------- hold


async def test_hold_and_resume(server: Server, tmp_path: Path) -> None:
    sampler = StateSampler(server)
    try:
        result = await sipp(server, "uac_hold.xml", tmp_path)
    finally:
        sampler.close()
    assert result.ok, result.describe()
    hold_ok = responses(result.messages, 200, "INVITE")
    assert len(hold_ok) >= 3, result.describe()  # initial, hold, resume
    assert any("CSeq: 2 INVITE" in b and "a=recvonly" in b for b in hold_ok)
    assert any("CSeq: 3 INVITE" in b and "a=sendrecv" in b for b in hold_ok)
    await wait_idle(server)
    record = the_record(server, result)
    assert record.end_reason == "remote-bye"
    states = sampler.states[record.call_id]
    assert states[-1] == "ended"
    held = states.index("held")
    assert "answered" in states[:held] and "answered" in states[held:], states


# ------------------------------------------------------------------------- error responses


async def test_bye_for_unknown_dialog_gets_481(server: Server, tmp_path: Path) -> None:
    result = await sipp(server, "uac_481.xml", tmp_path)
    assert result.ok, result.describe()
    assert result.count("SIP/2.0 481") >= 1
    assert not server.calls and server.ports.in_use == 0
    assert not server.registry.active() and not server.registry.ended()


async def test_no_common_codec_gets_488_and_no_port_leaks(server: Server, tmp_path: Path) -> None:
    result = await sipp(server, "uac_488.xml", tmp_path)
    assert result.ok, result.describe()
    assert result.count("SIP/2.0 488") >= 1
    await wait_idle(server)
    assert server.ports.in_use == 0
    assert not server.registry.active()


# -------------------------------------------------------------------------------- late offer


async def test_late_offer(server: Server, tmp_path: Path) -> None:
    result = await sipp(server, "uac_late_offer.xml", tmp_path)
    assert result.ok, result.describe()
    await wait_idle(server)
    record = the_record(server, result)
    assert record.codec == "PCMU"
    assert record.end_reason == "remote-bye"


# -------------------------------------------------------------------- retransmitted INVITE


async def test_retransmitted_invite_makes_one_call(server: Server, tmp_path: Path) -> None:
    result = await sipp(server, "uac_retrans.xml", tmp_path)
    assert result.ok, result.describe()
    await wait_idle(server)
    (call_id,) = call_ids(result)
    assert len(records_for(server, call_id)) == 1
    oks = responses(result.messages, 200, "INVITE")
    assert oks, result.describe()
    to_tags = set(re.findall(r"^To: .*;tag=([^;\s]+)", result.messages, re.M))
    assert len(to_tags) == 1, to_tags  # one dialog: every response carries the same To tag
    assert records_for(server, call_id)[0].end_reason == "remote-bye"


# ------------------------------------------------------------------------ server hangs up


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
async def test_admin_hangup_sends_bye(server: Server, tmp_path: Path, transport: str) -> None:
    recorder = SendRecorder(server)
    process = start_sipp(
        "uac_server_bye.xml",
        remote=(LOCALHOST, server.transport.port),
        timeout=20.0,
        workdir=tmp_path / "sipp",
        transport=transport,
    )
    try:
        await wait_for(
            lambda: any(c.dialog.state is DialogState.CONFIRMED for c in server.calls.values()),
            timeout=10.0,
            what="call confirmed",
        )
        (call,) = server.calls.values()
        assert await server.hangup(call.session_id)
        result = await asyncio.to_thread(process.wait)
    finally:
        if process.running():
            await asyncio.to_thread(process.stop)
        recorder.restore()
    assert result.ok, result.describe()
    if transport == "t1":  # the BYE too goes over the connection SIPp opened
        _assert_same_connection(recorder, result)
    # The BYE goes to the caller's Contact, the dialog's remote target (RFC 3261 12.2.1.1).
    sipp_port = result.command[result.command.index("-p") + 1]
    byes = re.findall(r"^BYE (\S+) SIP/2\.0", result.messages, re.M)
    assert byes == [f"sip:sipp@127.0.0.1:{sipp_port}"], result.describe()
    await wait_idle(server)
    record = the_record(server, result)
    assert record.end_reason == "admin-hangup"


async def test_rtp_inactivity_hangs_up(make_server: ServerFactory, tmp_path: Path) -> None:
    server = await make_server(rtp_inactivity_timeout=1.0)
    started = time.monotonic()
    result = await sipp(server, "uac_server_bye.xml", tmp_path, recv_timeout_ms=8000)
    assert result.ok, result.describe()
    assert time.monotonic() - started < 8.0
    await wait_idle(server)
    record = the_record(server, result)
    assert record.end_reason == "rtp-timeout"
    assert record.answered_at is not None and record.ended_at is not None
    assert 0.9 <= record.ended_at - record.answered_at < 4.0, record.ended_at - record.answered_at


# --------------------------------------------------------------------- RTP port unusable


_HEADERS = """\
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={branch}
      From: "sipp" <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>{to_tag}
      Call-ID: [call_id]
      CSeq: {cseq}
      Max-Forwards: 70"""

ANSWER_OR_503 = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<!-- UAC: INVITE offering PCMU; the call either is answered (ACK, BYE) or refused with 503
     (ACK on the INVITE's branch). Anything else, or no final response, fails the call. -->
<scenario name="sipagent uac answer or 503">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
{_HEADERS.format(branch="z9hG4bK-a503-[pid]-[call_number]", to_tag="", cseq="1 INVITE")}
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 1000 1 IN IP[local_ip_type] [media_ip]
      s=sipagent test
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
      a=sendrecv

    ]]>
  </send>

  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="503" optional="true" next="refused"/>
  <recv response="200" rtd="true" rrs="true"/>

  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
{_HEADERS.format(branch="[branch]", to_tag="[peer_tag_param]", cseq="1 ACK")}
      [routes]
      Content-Length: 0

    ]]>
  </send>

  <pause milliseconds="300"/>

  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
{_HEADERS.format(branch="[branch]", to_tag="[peer_tag_param]", cseq="2 BYE")}
      [routes]
      Content-Length: 0

    ]]>
  </send>

  <recv response="200" crlf="true" next="done"/>

  <label id="refused"/>

  <send>
    <![CDATA[

      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
{
    _HEADERS.format(
        branch="z9hG4bK-a503-[pid]-[call_number]", to_tag="[peer_tag_param]", cseq="1 ACK"
    )
}
      Content-Length: 0

    ]]>
  </send>

  <label id="done"/>
  <pause milliseconds="200"/>
</scenario>
"""


async def test_a_busy_rtp_port_does_not_stall_the_call(server: Server, tmp_path: Path) -> None:
    """Another process holds the first port of the server's RTP range. The call must either
    get another port and be answered (preferred) or be refused at once with 503 + Retry-After
    (as when no port is free). Never hang; nothing may leak."""
    first = server.settings.rtp_port_min + (server.settings.rtp_port_min & 1)
    scenario = tmp_path / "uac_answer_or_503.xml"
    scenario.write_text(ANSWER_OR_503)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind((LOCALHOST, first))
        result = await sipp(server, scenario, tmp_path, recv_timeout_ms=3000, timeout=10.0)
    assert result.ok, result.describe()
    await wait_idle(server)
    if result.count("SIP/2.0 503") or not responses(result.messages, 200, "INVITE"):
        assert re.search(r"^Retry-After:", result.messages, re.M | re.I), result.describe()
    else:
        record = the_record(server, result)
        assert (record.codec, record.end_reason) == ("PCMU", "remote-bye")
    assert not server.registry.active()


# -------------------------------------------------------------------------------------- DTMF


@needs_root
async def test_rfc4733_dtmf(server: Server, tmp_path: Path) -> None:
    result = await sipp(server, "uac_dtmf.xml", tmp_path)
    assert result.ok, result.describe()
    await wait_idle(server)
    record = the_record(server, result)
    assert record.dtmf == ["1", "2", "3", "4", "#"]


# --------------------------------------------------------------------------------------- TCP


class SendRecorder:
    """Wraps ``server.transport.send`` to note every destination.

    Messages still go out, except, with ``loopback_only``, those for a host outside 127/8
    (noted in ``dropped``): the tests must not reach any other host.
    """

    def __init__(self, server: Server, *, loopback_only: bool = False) -> None:
        self.destinations: list[Destination] = []
        self.dropped: list[Destination] = []
        self._loopback_only = loopback_only
        self.accepted: set[tuple[str, int]] = set()
        self._transport = server.transport
        self._send = server.transport.send
        self._transport.send = self  # type: ignore[method-assign]

    def __call__(self, data: bytes, destination: Destination) -> None:
        if destination.transport == "tcp":
            # Connections opened by the peer are in _connections before we answer on them.
            connection = self._transport._connections.get((destination.host, destination.port))
            if connection is not None:
                self.accepted.add((destination.host, destination.port))
        self.destinations.append(destination)
        if self._loopback_only and not destination.host.startswith("127."):
            self.dropped.append(destination)
            return
        self._send(data, destination)

    def restore(self) -> None:
        self._transport.send = self._send  # type: ignore[method-assign]


async def test_options_over_tcp(server: Server, tmp_path: Path) -> None:
    recorder = SendRecorder(server)
    try:
        result = await sipp(server, "uac_options.xml", tmp_path, transport="t1")
    finally:
        recorder.restore()
    assert result.ok, result.describe()
    assert "SIP/2.0/TCP" in result.messages
    _assert_same_connection(recorder, result)


@needs_root
async def test_basic_call_over_tcp(server: Server, tmp_path: Path) -> None:
    recorder = SendRecorder(server)
    try:
        result = await sipp(server, "uac_basic_rtp.xml", tmp_path, transport="t1")
    finally:
        recorder.restore()
    assert result.ok, result.describe()
    _assert_same_connection(recorder, result)
    await wait_idle(server)
    record = the_record(server, result)
    assert record.end_reason == "remote-bye"
    assert record.codec == "PCMU"
    assert record.rtp.packets_in >= 140 and record.rtp.packets_out >= 140, record.rtp


def _assert_same_connection(recorder: SendRecorder, result: SippResult) -> None:
    sent = recorder.destinations
    assert sent, "the server sent nothing"
    assert all(d.transport == "tcp" for d in sent), sent
    peers = {(d.host, d.port) for d in sent}
    # Everything went back on the one connection SIPp opened (already accepted by the server
    # when the server wrote to it), never on a connection of the server's own.
    assert len(peers) == 1 and peers == recorder.accepted, (peers, recorder.accepted)
    assert result.count("TCP message received") >= 1, result.describe()


# -------------------------------------------------------------------------------------- load


@needs_root
async def test_small_load(server: Server, tmp_path: Path) -> None:
    started = time.monotonic()
    result = await sipp(
        server,
        "uac_basic_rtp.xml",
        tmp_path,
        calls=20,
        limit=10,
        rate=10,
        trace_messages=False,
        timeout=30.0,
    )
    assert result.ok, result.describe()
    assert (result.successful, result.failed) == (20, 0), result.describe()
    await wait_idle(server)
    ended = server.registry.ended()
    assert len(ended) == 20
    assert {r.end_reason for r in ended} == {"remote-bye"}
    assert all(r.rtp.packets_in >= 140 for r in ended), [r.rtp.packets_in for r in ended]
    print(f"20 calls, 10 concurrent: {time.monotonic() - started:.1f} s")


# --------------------------------------------------------------------------- RFC 4475 wire


def _torture_messages() -> list[Path]:
    return sorted(RFC4475.glob("*.sip")) if RFC4475.is_dir() else []


def _options(port: int, tag: str) -> bytes:
    return (
        f"OPTIONS sip:echo@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{tag};rport\r\n"
        f"From: <sip:probe@127.0.0.1>;tag={tag}\r\n"
        f"To: <sip:echo@127.0.0.1>\r\n"
        f"Call-ID: {tag}@127.0.0.1\r\n"
        f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def _in_dialog(method: str, call: object, port: int, seq: int) -> bytes:
    """ACK/BYE for a call the server answered, from the test (the UAC's side of the dialog)."""
    dialog = call.dialog  # type: ignore[attr-defined]
    key = dialog.key
    branch = f"z9hG4bK-{uuid.uuid4().hex[:10]}"
    return (
        f"{method} sip:echo@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport\r\n"
        f"From: <sip:caller@127.0.0.1>;tag={key.remote_tag}\r\n"
        f"To: <sip:echo@127.0.0.1>;tag={key.local_tag}\r\n"
        f"Call-ID: {key.call_id}\r\n"
        f"CSeq: {seq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def _request(
    sock: socket.socket, data: bytes, server_port: int, timeout: float = 3.0
) -> bytes | None:
    """Send ``data`` and return the first final response, or None."""
    loop = asyncio.get_running_loop()
    sock.sendto(data, (LOCALHOST, server_port))
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            reply = sock.recv(65535)
        except BlockingIOError:
            await asyncio.sleep(0.02)
            continue
        if not reply.startswith(b"SIP/2.0 1"):
            return reply
    return None


@pytest.mark.skipif(not _torture_messages(), reason=f"RFC 4475 messages not found in {RFC4475}")
async def test_rfc4475_messages_over_udp(server: Server) -> None:
    """Every torture message as one datagram; the server keeps answering and leaks nothing.

    TEST-NET-1 addresses (192.0.2.x) are rewritten to 127.0.0.x, same length so Content-Length
    and framing are untouched: on this host 192.0.2.0/24 is the real LAN, and a call the server
    accepts would send RTP to its SDP's c= address. The server's own sends are watched: it must
    never send anywhere but loopback (responses go to the source address, RFC 3261 18.2.2).
    """
    port = server.transport.port
    recorder = SendRecorder(server, loopback_only=True)
    messages = {
        path.name: path.read_bytes().replace(b"192.0.2.", b"127.0.0.")
        for path in _torture_messages()
    }
    torture_ids: dict[str, str] = {}
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as prober,
    ):
        sender.bind((LOCALHOST, 0))
        prober.bind((LOCALHOST, 0))
        sender.setblocking(False)
        prober.setblocking(False)
        for name, data in messages.items():
            match = re.search(rb"^(?:Call-ID|i)[ \t]*:[ \t]*(\S+)", data, re.M | re.I)
            if match:
                torture_ids[match.group(1).decode("utf-8", "replace")] = name
            sender.sendto(data, (LOCALHOST, port))
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.3)

        reply = await _request(prober, _options(prober.getsockname()[1], "after-4475"), port)
        assert reply is not None and reply.startswith(b"SIP/2.0 200 "), reply

        # The valid INVITEs are real calls (their answers went to the Via port, not to us):
        # take them to their end as their caller would, with ACK and BYE.
        answered = {c.dialog.call_id: c for c in server.calls.values()}
        unknown = set(answered) - set(torture_ids)
        assert not unknown, unknown
        must_not_call = {
            "dblreq.sip",
            "clerr.sip",
            "ncl.sip",
            "invut.sip",
            "multi01.sip",
            "sdp01.sip",
            "insuf.sip",
            "badinv01.sip",
            "mismatch01.sip",
        }
        made = {torture_ids[cid] for cid in answered}
        assert not made & must_not_call, made & must_not_call
        await wait_for(
            lambda: all(c.dialog.state is not DialogState.EARLY for c in server.calls.values()),
            what="answers sent",
        )
        for call in list(server.calls.values()):
            seq = call.dialog.invite.cseq.seq
            sender_port = prober.getsockname()[1]
            prober.sendto(_in_dialog("ACK", call, sender_port, seq), (LOCALHOST, port))
            bye = await _request(prober, _in_dialog("BYE", call, sender_port, seq + 1), port)
            assert bye is not None and bye.startswith(b"SIP/2.0 200 "), (
                torture_ids.get(call.dialog.call_id),
                bye,
            )
        await wait_idle(server)
        print("calls created by RFC 4475 messages:", sorted(made))

        reply = await _request(prober, _options(prober.getsockname()[1], "final"), port)
        assert reply is not None and reply.startswith(b"SIP/2.0 200 "), reply
    recorder.restore()
    assert not recorder.dropped, recorder.dropped
    assert not server.calls and server.ports.in_use == 0
