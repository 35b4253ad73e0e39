"""The registration shell over a real SipTransport on 127.0.0.1: send failures reported at once.

What a registrar that answers looks like is in tests/test_integration_register.py (SIPp) and
tests/test_integration_kamailio.py (Kamailio); here nothing answers, and the question is how
soon the shell hears of it and when it tries again.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from sipagent.registering import Registering, describe_send_error, registration_from_settings
from sipagent.registration import Registration, RegState
from sipagent.settings import load_settings
from sipagent.transaction import Destination
from sipagent.transport import SipTransport
from tests.peers.harness import wait_for
from tests.peers.sipp import LOCALHOST, free_tcp_port, free_udp_port

#: RFC 3261 Timer F (64·T1): when a REGISTER nobody answers would time out.
TIMER_F = 32.0

ShellFactory = Callable[..., Registering]


@pytest.fixture
async def transport() -> AsyncIterator[SipTransport]:
    """Our SIP transport: UDP and TCP on a free port; nothing ever answers it."""
    sip = SipTransport(LOCALHOST, 0, lambda data, source: None)
    await sip.start()
    yield sip
    await sip.close()


@pytest.fixture
async def make_shell(transport: SipTransport) -> AsyncIterator[ShellFactory]:
    """Registering shells over ``transport``; stopped at the end of the test."""
    shells: list[Registering] = []
    loop = asyncio.get_running_loop()

    def make(registrar: str, transport_name: str = "udp", **options: Any) -> Registering:
        port = transport.port
        registration = Registration(
            registrar, "sip:agent@registrar.test", "agent", "s3cret",
            contact=f"<sip:agent@{LOCALHOST}:{port}>", transport=transport_name,
            local_sent_by=f"{LOCALHOST}:{port}", new_token=lambda: secrets.token_hex(6),
            now=loop.time(), **options,
        )
        shell = Registering(registration, transport)
        shells.append(shell)
        shell.start()
        return shell

    yield make
    for shell in shells:
        await shell.stop(timeout=0.5)


async def test_connection_refused_backs_off_at_once_then_retries_after_the_backoff(
    make_shell: ShellFactory,
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    base = 0.5
    shell = make_shell(f"sip:{LOCALHOST}:{free_tcp_port()};transport=tcp", "tcp",
                       backoff_base=base, random=lambda: 1.0)  # no jitter: base, 2·base, ...
    registration = shell.registration
    # Each failure's time, read back from the retry it scheduled (base · 2^(n-1) later).
    failed_at: dict[int, float] = {}
    retry_at: dict[int, float] = {}
    deadline = started + 10.0
    while len(failed_at) < 3 and loop.time() < deadline:
        failures = registration.failures
        if failures and failures not in failed_at:
            scheduled = registration.status()["next_attempt_at"]
            assert isinstance(scheduled, float)
            retry_at[failures] = scheduled
            failed_at[failures] = scheduled - base * 2 ** (failures - 1)
        await asyncio.sleep(0.005)
    assert sorted(failed_at) == [1, 2, 3], registration.status()
    status = registration.status()
    assert status["state"] == "backoff"
    assert status["last_error"] == (
        f"transport error: Connection refused (tcp {LOCALHOST}:{registration.destination.port})"
    )
    # Reported by the transport: a tiny fraction of the transaction's own timeout.
    assert (failed_at[1] - started) / TIMER_F < 0.05
    # Every retry waited for its backoff, and the backoff doubled.
    for attempt in (1, 2):
        assert failed_at[attempt + 1] >= retry_at[attempt] - 0.001
    gaps = [failed_at[2] - failed_at[1], failed_at[3] - failed_at[2]]
    assert 1.5 < gaps[1] / gaps[0] < 3.0, gaps


async def test_unresolvable_registrar_backs_off(make_shell: ShellFactory) -> None:
    shell = make_shell("sip:registrar.invalid")  # RFC 2606: never resolves
    registration = shell.registration
    await wait_for(lambda: registration.state is RegState.BACKOFF, 15.0,
                   what=f"backoff ({registration.status()})")
    error = registration.last_error
    assert error is not None
    assert error.startswith("transport error: cannot resolve registrar.invalid: "), error
    assert registration.failures == 1


async def test_failed_sendto_backs_off(make_shell: ShellFactory) -> None:
    """The broadcast address without SO_BROADCAST: sendto fails with EACCES at once."""
    shell = make_shell("sip:255.255.255.255")
    registration = shell.registration
    await wait_for(lambda: registration.state is RegState.BACKOFF, 5.0,
                   what=f"backoff ({registration.status()})")
    assert registration.last_error == (
        "transport error: Permission denied (udp 255.255.255.255:5060)"
    )


async def test_unanswered_udp_is_left_to_the_transaction(make_shell: ShellFactory) -> None:
    """Nothing listens on the UDP port: the ICMP port-unreachable never reaches an unconnected
    socket on Linux, so the REGISTER stays in flight (retransmitted) until Timer F."""
    shell = make_shell(f"sip:{LOCALHOST}:{free_udp_port()}")
    registration = shell.registration
    await asyncio.sleep(0.6)  # T1 and 2·T1: two retransmissions went out meanwhile
    assert registration.state is RegState.REGISTERING
    assert registration.last_error is None


async def test_stop_in_backoff_ends_unregistered_and_sends_nothing_more(
    make_shell: ShellFactory,
) -> None:
    shell = make_shell(f"sip:{LOCALHOST}:{free_tcp_port()};transport=tcp", "tcp",
                       backoff_base=0.2, random=lambda: 1.0)
    registration = shell.registration
    await wait_for(lambda: registration.failures == 1, 5.0, what="the first failure")
    await shell.stop(timeout=0.5)
    assert registration.state is RegState.UNREGISTERED  # no binding: nothing to remove
    await asyncio.sleep(0.5)  # more than the backoff: the cancelled timer did not fire
    assert registration.failures == 1
    assert registration.state is RegState.UNREGISTERED


@pytest.mark.parametrize(
    ("registrar", "contact", "destination"),
    [
        ("sip:pbx.test", "<sip:alice@192.0.2.7:5070>", ("udp", "pbx.test", 5060)),
        ("sip:pbx.test:5080;transport=tcp", "<sip:alice@192.0.2.7:5070;transport=tcp>",
         ("tcp", "pbx.test", 5080)),
        ("sip:pbx.test;transport=tls", "<sip:alice@192.0.2.7:5071;transport=tls>",
         ("tls", "pbx.test", 5061)),
        ("sips:pbx.test", "<sips:alice@192.0.2.7:5071>", ("tls", "pbx.test", 5061)),
    ],
)
def test_registration_from_settings(
    registrar: str, contact: str, destination: tuple[str, str, int]
) -> None:
    settings = load_settings(registrar=registrar, registrar_user="alice",
                             registrar_password="pw", registrar_expires=120)
    registration = registration_from_settings(
        settings, public_host="192.0.2.7", port=5070, tls_port=5071, now=5.0
    )
    assert str(registration.contact) == contact
    assert registration.destination == Destination(*destination)
    assert str(registration.aor) == "sip:alice@pbx.test"
    assert registration.requested_expires == 120
    assert registration.get_timer() == 5.0  # the first REGISTER is due at once


def test_registration_from_settings_ipv6_and_outbound_proxy() -> None:
    settings = load_settings(registrar="sip:pbx.test", registrar_user="alice",
                             registrar_password="pw", outbound_proxy="sip:[2001:db8::1]:5090")
    registration = registration_from_settings(
        settings, public_host="2001:db8::7", port=5070, tls_port=None, now=0.0
    )
    assert str(registration.contact) == "<sip:alice@[2001:db8::7]:5070>"
    assert registration.local_sent_by == "[2001:db8::7]:5070"
    assert registration.destination.port == 5090


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 9)"),
         "transport error: Connection refused (tcp h.test:9)"),
        (socket.gaierror(-2, "Name or service not known"),
         "transport error: cannot resolve h.test: Name or service not known (tcp h.test:9)"),
        (OSError("no tls transport"), "transport error: no tls transport (tcp h.test:9)"),
        (RuntimeError(), "transport error: RuntimeError (tcp h.test:9)"),
    ],
)
def test_describe_send_error(error: Exception, expected: str) -> None:
    assert describe_send_error(error, Destination("tcp", "h.test", 9)) == expected
