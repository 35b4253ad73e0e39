"""Registration over real sockets against SIPp as a Digest-challenging registrar.

SIPp runs tests/sipp/uas_register_challenge.xml on 127.0.0.1: it answers the first REGISTER
with 401 (fixed nonce, qop=auth, MD5), checks the second one's Authorization with its own
``verifyauth`` (an independent Digest implementation), grants 60 s, then accepts the
unregister only with valid credentials again. The registration is driven by the server's own
shell (:class:`sipagent.registering.Registering`) over a :class:`SipTransport`, first alone,
then inside the whole server. The last test needs no SIPp: a registrar over TCP where nothing
listens, seen from the server's admin view.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from sipagent.message import Response, parse_message
from sipagent.registering import Registering
from sipagent.registration import BACKOFF_BASE, Registration, RegState
from sipagent.transaction import Destination
from sipagent.transport import SipTransport
from tests.peers.harness import start_server, wait_for
from tests.peers.sipp import (
    LOCALHOST,
    SippProcess,
    free_tcp_port,
    free_udp_port,
    sipp_available,
    start_sipp,
)

needs_sipp = pytest.mark.skipif(not sipp_available(), reason="sipp (sip-tester) not installed")


class Shell:
    """The server's registration shell over a SipTransport of our own, and what came back."""

    def __init__(self) -> None:
        self.transport = SipTransport(LOCALHOST, 0, self._on_message)
        self.registering: Registering | None = None
        self.received: list[Response] = []

    @property
    def registration(self) -> Registration:
        assert self.registering is not None
        return self.registering.registration

    async def start(self, make: Callable[[float, int], Registration]) -> None:
        await self.transport.start()
        loop = asyncio.get_running_loop()
        self.registering = Registering(make(loop.time(), self.transport.port), self.transport)
        self.registering.start()

    def _on_message(self, data: bytes, source: Destination) -> None:
        # What the server's user agent does with a response it has no transaction for.
        message = parse_message(data)
        assert isinstance(message, Response) and self.registering is not None
        self.received.append(message)
        loop = asyncio.get_running_loop()
        assert self.registering.receive_response(message, loop.time())


@contextlib.asynccontextmanager
async def shell_running(make: Callable[[float, int], Registration]) -> AsyncIterator[Shell]:
    shell = Shell()
    await shell.start(make)
    try:
        yield shell
    finally:
        await shell.transport.close()


async def wait_state(shell: Shell, state: RegState, timeout: float = 5.0) -> None:
    registration = shell.registration
    await wait_for(lambda: registration.state is state, timeout,
                   what=f"{state} ({registration.status()})")


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


@needs_sipp
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
        async with shell_running(make) as shell:
            await wait_state(shell, RegState.REGISTERED)
            registration = shell.registration
            assert registration.granted == 60  # SIPp's Contact;expires=60, not our 3600
            assert registration.last_status == 200
            status = registration.status(loop.time())
            assert status["state"] == "registered"
            assert 55 < status["expires_in"] <= 60
            assert [r.status for r in shell.received] == [401, 200]

            assert shell.registering is not None
            await shell.registering.stop()
            assert registration.state is RegState.UNREGISTERED
            assert registration.expires_at is None
            assert [r.status for r in shell.received] == [401, 200, 200]
        result = await asyncio.to_thread(sipp.wait, 10.0)
    assert result.ok, result.describe()
    assert result.count("SIP/2.0 401 Unauthorized") == 1
    assert result.count("SIP/2.0 403") == 0
    assert result.count("Authorization: Digest") == 2
    assert 'nonce="c2lwcC1maXhlZC1ub25jZS0wMDE"' in result.messages
    assert "nc=00000002" in result.messages  # the unregister reused the nonce


@needs_sipp
async def test_wrong_password_fails_against_sipp(tmp_path: Path) -> None:
    with sipp_registrar(tmp_path) as (sipp, sipp_port):

        def make(now: float, port: int) -> Registration:
            return Registration(
                f"sip:{LOCALHOST}:{sipp_port}", "sip:agent@sipp.test", "agent", "wrong",
                contact=f"<sip:agent@{LOCALHOST}:{port}>", local_sent_by=f"{LOCALHOST}:{port}",
                new_token=lambda: secrets.token_hex(8), now=now, random=random.random,
            )

        async with shell_running(make) as shell:
            await wait_state(shell, RegState.FAILED)
            registration = shell.registration
            assert registration.last_status == 403
            assert registration.last_error == "403 Forbidden"
        result = await asyncio.to_thread(sipp.wait, 10.0)
    assert not result.ok  # SIPp's verifyauth refused the credentials
    assert result.count("SIP/2.0 403 Forbidden") == 1


@needs_sipp
async def test_server_registers_at_start_and_unregisters_at_stop(tmp_path: Path) -> None:
    """The whole server: SIPAGENT_REGISTRAR & co. make it REGISTER with digest, then leave."""
    from sipagent.server import Server

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


async def test_server_reports_a_refused_registrar_connection_at_once() -> None:
    """A TCP registrar where nothing listens: refused, shown, backing off; not Timer F later."""
    port = free_tcp_port()
    loop = asyncio.get_running_loop()
    started = loop.time()
    server = await start_server(registrar=f"sip:{LOCALHOST}:{port};transport=tcp",
                                registrar_user="agent", registrar_password="s3cret")
    try:
        registration = server.registration
        assert registration is not None
        await wait_for(lambda: registration.state is RegState.BACKOFF, 5.0,
                       what=f"backoff ({registration.status()})")
        noticed = loop.time()
        [status] = server.registrations()
        assert status["state"] == "backoff"
        assert status["last_error"] == (
            f"transport error: Connection refused (tcp {LOCALHOST}:{port})"
        )
        assert status["failures"] == 1 and status["last_status"] is None
        # Noticed within a small fraction of the 32 s the transaction would have waited,
        # and the next attempt waits for the backoff (jittered down to half its base at most).
        assert (noticed - started) / 32.0 < 0.1
        next_attempt = status["next_attempt_at"]
        assert isinstance(next_attempt, float)
        assert next_attempt - noticed >= 0.9 * BACKOFF_BASE / 2
        assert server.ready()["ready"] is False
        assert server.ready()["registration"] == "backoff"
    finally:
        await server.stop()
    assert registration.state is RegState.UNREGISTERED  # nothing bound: nothing to remove
