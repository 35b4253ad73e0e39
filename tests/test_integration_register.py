"""The registration core over a real UDP socket against SIPp as a Digest-challenging registrar.

SIPp runs tests/sipp/uas_register_challenge.xml on 127.0.0.1: it answers the first REGISTER
with 401 (fixed nonce, qop=auth, MD5), checks the second one's Authorization with its own
``verifyauth`` (an independent Digest implementation), grants 60 s, then accepts the
unregister only with valid credentials again. The registration is driven by a small asyncio
shell written here — what the server's shell does: send ``messages_to_send()``, hand responses
to ``receive_response`` and re-arm ``loop.call_at(get_timer())``, with ``loop.time()`` as now.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest

from sipagent.message import Response, parse_message
from sipagent.registration import Registration, RegState
from tests.peers.sipp import (
    LOCALHOST,
    SippProcess,
    free_udp_port,
    sipp_available,
    start_sipp,
)

pytestmark = pytest.mark.skipif(not sipp_available(), reason="sipp (sip-tester) not installed")


class RegistrationShell(asyncio.DatagramProtocol):
    """The thin asyncio side of one Registration: a UDP socket and one timer."""

    def __init__(self, make: Callable[[float, int], Registration]) -> None:
        self.loop = asyncio.get_running_loop()
        self._make = make
        self.registration: Registration | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.received: list[Response] = []
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        port = self.transport.get_extra_info("sockname")[1]
        self.registration = self._make(self.loop.time(), port)
        self.pump()

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        message = parse_message(data)
        assert self.registration is not None
        if isinstance(message, Response):
            self.received.append(message)
            assert self.registration.receive_response(message, self.loop.time())
        self.pump()

    def pump(self) -> None:
        """Send what is queued and re-arm the one timer."""
        registration, transport = self.registration, self.transport
        assert registration is not None and transport is not None
        for data, destination in registration.messages_to_send():
            transport.sendto(data, (destination.host, destination.port))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = registration.get_timer()
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        assert self.registration is not None
        self.registration.handle_timer(self.loop.time())
        self.pump()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()


async def wait_state(shell: RegistrationShell, state: RegState, timeout: float = 5.0) -> None:
    registration = shell.registration
    assert registration is not None
    deadline = shell.loop.time() + timeout
    while registration.state is not state:
        if shell.loop.time() > deadline:
            raise AssertionError(f"still {registration.state} ({registration.status()})")
        await asyncio.sleep(0.01)


@contextlib.contextmanager
def sipp_registrar(tmp_path: Path) -> Iterator[tuple[SippProcess, int]]:
    """SIPp playing a registrar that challenges (uas_register_challenge.xml), and its port."""
    sipp_port = free_udp_port()
    sipp = start_sipp("uas_register_challenge.xml", local_port=sipp_port, timeout=20.0,
                      workdir=tmp_path / "sipp")
    try:
        assert sipp.wait_ready(), sipp.stop().describe()
        yield sipp, sipp_port
    finally:
        if sipp.running():
            sipp.stop()


async def test_register_with_digest_challenge_against_sipp(tmp_path: Path) -> None:
    with sipp_registrar(tmp_path) as (sipp, sipp_port):

        def make(now: float, port: int) -> Registration:
            return Registration(
                f"sip:{LOCALHOST}:{sipp_port}",
                "sip:agent@sipp.test",
                "agent",
                "s3cret",
                contact=f"<sip:agent@{LOCALHOST}:{port}>",
                expires=3600,
                transport="udp",
                local_sent_by=f"{LOCALHOST}:{port}",
                new_token=lambda: secrets.token_hex(8),
                now=now,
                random=random.random,
            )

        loop = asyncio.get_running_loop()
        _, shell = await loop.create_datagram_endpoint(
            lambda: RegistrationShell(make), local_addr=(LOCALHOST, 0)
        )
        try:
            await wait_state(shell, RegState.REGISTERED)
            registration = shell.registration
            assert registration is not None
            assert registration.granted == 60  # SIPp's Contact;expires=60, not our 3600
            assert registration.last_status == 200
            status = registration.status(loop.time())
            assert status["state"] == "registered"
            assert 55 < status["expires_in"] <= 60
            assert [r.status for r in shell.received] == [401, 200]

            registration.unregister(loop.time())
            shell.pump()
            await wait_state(shell, RegState.UNREGISTERED)
            assert registration.expires_at is None
            assert [r.status for r in shell.received] == [401, 200, 200]
        finally:
            shell.close()
        result = await asyncio.to_thread(sipp.wait, 10.0)
    assert result.ok, result.describe()
    assert result.count("SIP/2.0 401 Unauthorized") == 1
    assert result.count("SIP/2.0 403") == 0
    assert result.count("Authorization: Digest") == 2
    assert 'nonce="c2lwcC1maXhlZC1ub25jZS0wMDE"' in result.messages
    assert "nc=00000002" in result.messages  # the unregister reused the nonce


async def test_wrong_password_fails_against_sipp(tmp_path: Path) -> None:
    with sipp_registrar(tmp_path) as (sipp, sipp_port):

        def make(now: float, port: int) -> Registration:
            return Registration(
                f"sip:{LOCALHOST}:{sipp_port}", "sip:agent@sipp.test", "agent", "wrong",
                contact=f"<sip:agent@{LOCALHOST}:{port}>", local_sent_by=f"{LOCALHOST}:{port}",
                new_token=lambda: secrets.token_hex(8), now=now, random=random.random,
            )

        loop = asyncio.get_running_loop()
        _, shell = await loop.create_datagram_endpoint(
            lambda: RegistrationShell(make), local_addr=(LOCALHOST, 0)
        )
        try:
            await wait_state(shell, RegState.FAILED)
            registration = shell.registration
            assert registration is not None
            assert registration.last_status == 403
            assert registration.last_error == "403 Forbidden"
        finally:
            shell.close()
        result = await asyncio.to_thread(sipp.wait, 10.0)
    assert not result.ok  # SIPp's verifyauth refused the credentials
    assert result.count("SIP/2.0 403 Forbidden") == 1


async def test_server_registers_at_start_and_unregisters_at_stop(tmp_path: Path) -> None:
    """The whole server: SIPAGENT_REGISTRAR & co. make it REGISTER with digest, then leave."""
    from sipagent.server import Server
    from tests.peers.harness import start_server

    with sipp_registrar(tmp_path) as (sipp, sipp_port):
        server: Server = await start_server(
            registrar=f"sip:{LOCALHOST}:{sipp_port}", registrar_user="agent",
            registrar_password="s3cret",
        )
        try:
            registration = server.registration
            assert registration is not None
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5.0
            while registration.state is not RegState.REGISTERED:
                assert loop.time() < deadline, registration.status()
                await asyncio.sleep(0.02)
            [status] = server.registrations()
            assert status["state"] == "registered" and status["last_status"] == 200
            assert server.ready()["ready"] is True
            assert server.ready()["registration"] == "registered"
        finally:
            await server.stop()
        assert registration.status()["state"] == "unregistered"  # stop() un-REGISTERed
        result = sipp.wait(timeout=10.0)
        assert result.ok, result.describe()
