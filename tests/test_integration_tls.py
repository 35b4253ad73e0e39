"""sipagent over TLS against a real softphone: the PJSIP (pjsua2) caller on a TLS transport.

The server runs in-process (echo model) with a TLS listener whose certificate a test CA,
made for this test (tests/fixtures/tls/pki.py), signed. The caller is pjsua_peer's, on a TLS
transport that trusts that CA and verifies the server (tests/fixtures/tls/pjsua_tls_caller.py).
Every SIP message of the call must arrive over TLS, and the audio must come back.

Settings do not carry TLS yet here, so the test gives the started server a TLS transport the
way Server would (same handler, UserAgent told the TLS port).
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sipagent.message import Request, Response, parse_message
from sipagent.registry import CallRecord
from sipagent.server import Server
from sipagent.transaction import Destination
from sipagent.transport import SipTransport
from tests.fixtures.tls import pjsua_tls_caller
from tests.fixtures.tls.pki import TestPki, make_pki
from tests.peers import pjsua_peer
from tests.peers.audio import is_silence, read_wav
from tests.peers.harness import start_server, wait_for
from tests.peers.pjsua_peer import PeerResult, run_caller
from tests.peers.sipp import free_port

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pjsua2") is None, reason="pjsua2-python not installed"
)

LOCALHOST = "127.0.0.1"
SPEECH = Path(__file__).parent / "fixtures" / "speech_8k.wav"
DURATION = 3.5


@dataclass
class TlsServer:
    server: Server
    pki: TestPki
    seen: list[tuple[str, Destination]]
    """(method or status, source) of every SIP message the server received."""
    sent: list[tuple[Request | Response, Destination]]
    """Every SIP message the server sent, parsed, and where to."""

    @property
    def transport(self) -> SipTransport:
        return self.server.transport

    def uri(self, scheme: str = "sips", user: str = "echo") -> str:
        port = self.transport.tls_port
        if scheme == "sips":
            return f"sips:{user}@{LOCALHOST}:{port}"
        return f"sip:{user}@{LOCALHOST}:{port};transport=tls"


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[TlsServer]:
    pki = make_pki(tmp_path / "pki")
    # The settings turn the TLS listener on (SIPAGENT_TLS_CERT/KEY/CA/PORT).
    server = await start_server(
        rtp_window=(16000, 22000), tls_cert=str(pki.server_cert), tls_key=str(pki.server_key),
        tls_ca=str(pki.ca), tls_port=free_port(udp=False, tcp=True),
    )
    transport = server.transport
    assert transport.tls_port is not None and server.ua.tls_port == transport.tls_port
    seen: list[tuple[str, Destination]] = []
    handler = transport.on_message

    def on_message(data: bytes, source: Destination) -> None:
        message = parse_message(data, stream=source.reliable)
        seen.append((message.method if isinstance(message, Request) else
                     str(message.status), source))
        handler(data, source)

    transport.on_message = on_message
    sent: list[tuple[Request | Response, Destination]] = []
    send = transport.send

    def record_send(data: bytes, destination: Destination) -> None:
        sent.append((parse_message(data, stream=destination.reliable), destination))
        send(data, destination)

    transport.send = record_send  # type: ignore[method-assign]
    yield TlsServer(server=server, pki=pki, seen=seen, sent=sent)
    await server.stop()


async def call_over_tls(
    uri: str, ca: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch, **options: Any
) -> tuple[PeerResult, Path]:
    """One PJSIP caller over TLS trusting ``ca``, in a worker thread; (result, its recording)."""
    monkeypatch.setattr(pjsua_peer, "_peer_command",
                        lambda args: pjsua_tls_caller.command(str(ca), args))
    recording = workdir / "heard.wav"
    options.setdefault("play", SPEECH)
    options.setdefault("duration", DURATION)
    result = await asyncio.to_thread(run_caller, uri, record=recording, workdir=workdir,
                                     **options)
    return result, recording


async def ended_record(server: Server) -> CallRecord:
    await wait_for(lambda: not server.calls and server.registry.ended(), timeout=5.0)
    return server.registry.ended()[-1]


async def test_sips_call_is_answered_echoes_and_hangs_up_over_tls(
    tls_server: TlsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, recording = await call_over_tls(
        tls_server.uri("sips"), tls_server.pki.ca, tmp_path, monkeypatch
    )
    assert result.returncode == 0 and result.confirmed, result.describe()
    assert result.data["error"] is None, result.describe()
    assert result.data["hangup_by"] == "local"
    assert result.data["rx_packets"] > 100 and result.data["tx_packets"] > 100, result.data
    assert not is_silence(read_wav(recording)[0]), "the echo came back"
    record = await ended_record(tls_server.server)
    assert record.end_reason == "remote-bye", record
    assert record.rtp.packets_in > 100 and record.rtp.packets_out > 100, record.rtp

    methods = [what for what, _ in tls_server.seen]
    assert {"INVITE", "ACK", "BYE"} <= set(methods), methods
    sources = {source for _, source in tls_server.seen}
    assert {source.transport for source in sources} == {"tls"}, sources
    assert len(sources) == 1, f"one connection for the whole call: {sources}"
    assert tls_server.transport.counters.get("tls_handshake_failures", 0) == 0
    # The dialog is secure: our Contact is a SIPS URI at the TLS port (RFC 3261 §12.1.1).
    [ok] = [m for m, _ in tls_server.sent
            if isinstance(m, Response) and m.status == 200 and m.cseq.method == "INVITE"]
    tls_port = tls_server.transport.tls_port
    assert ok.headers.get("Contact") == f"<sips:sipagent@{LOCALHOST}:{tls_port}>"
    assert {d.transport for _, d in tls_server.sent} == {"tls"}
    print(f"TLS call: setup {result.data['setup_ms']} ms, rx {result.data['rx_packets']} "
          f"tx {result.data['tx_packets']} packets, server rtp {record.rtp}")


async def test_our_bye_goes_back_over_the_callers_tls_connection(
    tls_server: TlsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = tls_server.server
    caller = asyncio.create_task(call_over_tls(
        tls_server.uri("sip"), tls_server.pki.ca, tmp_path, monkeypatch, duration=20.0
    ))
    await wait_for(
        lambda: any(r.state == "answered" for r in server.registry.active()), timeout=10.0
    )
    await asyncio.sleep(1.0)  # some media first
    [active] = server.registry.active()
    assert await server.hangup(active.session_id)
    result, _ = await asyncio.wait_for(caller, timeout=30.0)
    assert result.returncode == 0, result.describe()
    assert result.data["hangup_by"] == "remote", result.describe()
    assert result.data["duration_s"] < 5.0
    record = await ended_record(server)
    assert record.end_reason == "admin-hangup"
    # Our BYE went over the connection the INVITE came on, and PJSIP's 200 came back on it.
    tls_port = tls_server.transport.tls_port
    [(bye, destination)] = [(m, d) for m, d in tls_server.sent
                            if isinstance(m, Request) and m.method == "BYE"]
    assert bye.headers.get("Via", "").startswith(f"SIP/2.0/TLS {LOCALHOST}:{tls_port};")
    [ok] = [m for m, _ in tls_server.sent
            if isinstance(m, Response) and m.status == 200 and m.cseq.method == "INVITE"]
    assert ok.headers.get("Contact") == f"<sip:sipagent@{LOCALHOST}:{tls_port};transport=tls>"
    sources = {source for what, source in tls_server.seen if what in ("INVITE", "200")}
    assert sources == {destination} and destination.transport == "tls", tls_server.seen


async def test_caller_that_does_not_trust_the_certificate_never_gets_a_call(
    tls_server: TlsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, _ = await call_over_tls(
        tls_server.uri("sips"), tls_server.pki.other_ca, tmp_path, monkeypatch,
        duration=1.0, setup_timeout=5.0,
    )
    assert not result.confirmed, result.describe()
    assert not tls_server.seen, "no SIP message got through"
    assert not tls_server.server.registry.ended() and not tls_server.server.calls
    print(f"untrusting caller: status {result.data.get('status_code')} "
          f"{result.data.get('reason')!r}, server counters {tls_server.transport.counters}")
