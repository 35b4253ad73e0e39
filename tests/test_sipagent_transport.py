"""SipTransport over real sockets on the loopback (127.0.0.1, and ::1 when available).

A plain asyncio UDP socket, TCP stream or TLS stream plays the peer; messages reach the test
through the transport's ``on_message`` callback into a queue. TLS keys and certificates are
made per test by tests/fixtures/tls/pki.py (a test CA, and another CA nobody should trust).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sipagent.transaction import Destination
from sipagent.transport import SipTransport, TlsConfig, client_context, server_context
from tests.fixtures.tls.pki import TestPki, make_pki

LOCALHOST = "127.0.0.1"
WAIT = 5.0


def sip_message(call: str = "a", body: bytes = b"") -> bytes:
    """An OPTIONS request with a correct Content-Length (``call`` makes the Call-ID unique)."""
    head = (
        "OPTIONS sip:agent@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK" + call + "\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:peer@127.0.0.1>;tag=1\r\n"
        "To: <sip:agent@127.0.0.1>\r\n"
        "Call-ID: " + call + "@127.0.0.1\r\n"
        "CSeq: 1 OPTIONS\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Inbox:
    """Collects ``on_message`` calls."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Destination]] = asyncio.Queue()

    def __call__(self, data: bytes, source: Destination) -> None:
        self.queue.put_nowait((data, source))

    async def get(self) -> tuple[bytes, Destination]:
        return await asyncio.wait_for(self.queue.get(), WAIT)


class UdpPeer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    async def get(self) -> bytes:
        data, _ = await asyncio.wait_for(self.queue.get(), WAIT)
        return data


async def udp_peer(host: str = LOCALHOST) -> UdpPeer:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(UdpPeer, local_addr=(host, 0))
    return peer


async def wait_for(condition: object, timeout: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


@pytest.fixture
async def transport(inbox: Inbox) -> AsyncIterator[SipTransport]:
    transport = SipTransport(LOCALHOST, 0, inbox)
    await transport.start()
    yield transport
    await transport.close()


# -- UDP --------------------------------------------------------------------------------------


async def test_udp_datagram_in_and_reply_to_its_source(
    transport: SipTransport, inbox: Inbox
) -> None:
    peer = await udp_peer()
    assert peer.transport is not None
    message = sip_message("udp")
    peer.transport.sendto(message, (LOCALHOST, transport.port))
    data, source = await inbox.get()
    assert data == message
    assert source == Destination("udp", LOCALHOST, peer.port)
    assert not source.reliable

    transport.send(b"SIP/2.0 200 OK\r\n\r\n", source)
    assert await peer.get() == b"SIP/2.0 200 OK\r\n\r\n"
    peer.transport.close()


async def test_udp_to_a_host_name_is_resolved(transport: SipTransport) -> None:
    peer = await udp_peer()
    transport.send(b"ping", Destination("udp", "localhost", peer.port))
    assert await peer.get() == b"ping"
    assert peer.transport is not None
    peer.transport.close()


# -- TCP --------------------------------------------------------------------------------------


async def test_tcp_two_messages_in_one_write_and_one_split(
    transport: SipTransport, inbox: Inbox
) -> None:
    reader, writer = await asyncio.open_connection(LOCALHOST, transport.port)
    client_port = writer.get_extra_info("sockname")[1]
    expected_source = Destination("tcp", LOCALHOST, client_port)
    first, second = sip_message("one", b"hello"), sip_message("two")
    writer.write(first + second)
    await writer.drain()
    assert await inbox.get() == (first, expected_source)
    assert await inbox.get() == (second, expected_source)

    split = sip_message("three", b"v=0\r\n")
    writer.write(split[:40])
    await writer.drain()
    await asyncio.sleep(0.1)
    assert inbox.queue.empty(), "half a message is not a message"
    writer.write(split[40:])
    await writer.drain()
    assert await inbox.get() == (split, expected_source)
    assert expected_source.reliable

    # The answer goes back over the connection the peer opened.
    response = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"
    transport.send(response, expected_source)
    assert await asyncio.wait_for(reader.readexactly(len(response)), WAIT) == response
    assert transport.counters.get("tcp_framing_errors", 0) == 0
    writer.close()
    await writer.wait_closed()


async def test_tcp_keepalive_crlf_between_messages_is_skipped(
    transport: SipTransport, inbox: Inbox
) -> None:
    _, writer = await asyncio.open_connection(LOCALHOST, transport.port)
    message = sip_message("ka")
    writer.write(b"\r\n\r\n" + message + b"\r\n\r\n")
    await writer.drain()
    assert (await inbox.get())[0] == message
    writer.close()
    await writer.wait_closed()


async def test_tcp_framing_error_closes_the_connection(
    transport: SipTransport, inbox: Inbox
) -> None:
    reader, writer = await asyncio.open_connection(LOCALHOST, transport.port)
    no_length = sip_message("bad").replace(b"Content-Length: 0\r\n", b"")
    writer.write(no_length)
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), WAIT) == b"", "the transport hung up"
    assert transport.counters["tcp_framing_errors"] == 1
    assert inbox.queue.empty()
    await wait_for(lambda: not transport._connections)
    writer.close()
    await writer.wait_closed()

    # The listener itself is fine: the next connection works.
    _, writer = await asyncio.open_connection(LOCALHOST, transport.port)
    writer.write(sip_message("good"))
    assert (await inbox.get())[0] == sip_message("good")
    writer.close()
    await writer.wait_closed()


async def test_tcp_send_without_a_connection_opens_one_and_reuses_it(
    transport: SipTransport, inbox: Inbox
) -> None:
    accepted: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append((reader, writer))

    peer = await asyncio.start_server(on_connect, LOCALHOST, 0)
    peer_port = peer.sockets[0].getsockname()[1]
    destination = Destination("tcp", LOCALHOST, peer_port)
    first, second = sip_message("out1"), sip_message("out2")
    # Both are sent before the connection exists: one connection, in order.
    transport.send(first, destination)
    transport.send(second, destination)
    await wait_for(lambda: accepted)
    reader, writer = accepted[0]
    received = await asyncio.wait_for(reader.readexactly(len(first + second)), WAIT)
    assert received == first + second

    # What the peer sends back on it arrives as coming from that destination...
    writer.write(sip_message("back"))
    assert await inbox.get() == (sip_message("back"), destination)
    # ...and later sends reuse it.
    third = sip_message("out3")
    transport.send(third, destination)
    assert await asyncio.wait_for(reader.readexactly(len(third)), WAIT) == third
    assert len(accepted) == 1
    writer.close()
    peer.close()
    await peer.wait_closed()


async def test_tcp_send_after_the_peer_closed_reconnects(transport: SipTransport) -> None:
    accepted: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append((reader, writer))

    peer = await asyncio.start_server(on_connect, LOCALHOST, 0)
    destination = Destination("tcp", LOCALHOST, peer.sockets[0].getsockname()[1])
    transport.send(b"first", destination)
    await wait_for(lambda: accepted)
    assert await asyncio.wait_for(accepted[0][0].readexactly(5), WAIT) == b"first"
    accepted[0][1].close()
    await wait_for(lambda: not transport._connections)
    transport.send(b"again", destination)
    await wait_for(lambda: len(accepted) == 2)
    assert await asyncio.wait_for(accepted[1][0].readexactly(5), WAIT) == b"again"
    accepted[1][1].close()
    peer.close()
    await peer.wait_closed()


async def test_tcp_connect_failure_is_logged_not_raised(
    transport: SipTransport, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind((LOCALHOST, 0))
        port = probe.getsockname()[1]
    transport.send(b"lost", Destination("tcp", LOCALHOST, port))
    await wait_for(lambda: "cannot connect" in caplog.text)
    assert not transport._connecting


async def test_send_failures_reach_on_error_later_and_successes_do_not(
    transport: SipTransport,
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind((LOCALHOST, 0))
        closed_port = probe.getsockname()[1]
    peer = await udp_peer()
    errors: dict[str, list[Exception]] = {}
    cases = {
        "refused": Destination("tcp", LOCALHOST, closed_port),
        "broadcast": Destination("udp", "255.255.255.255", 5060),  # EACCES without SO_BROADCAST
        "unresolvable": Destination("udp", "registrar.invalid", 5060),
        "no tls": Destination("tls", LOCALHOST, 5061),
        "delivered": Destination("udp", LOCALHOST, peer.port),
    }
    for name, destination in cases.items():
        transport.send(b"x", destination, errors.setdefault(name, []).append)
        assert errors[name] == []  # never from within send()
    assert await peer.get() == b"x"
    await wait_for(lambda: all(errors[name] for name in cases if name != "delivered"), 15.0)
    assert isinstance(errors["refused"][0], ConnectionRefusedError)
    assert isinstance(errors["broadcast"][0], PermissionError)
    assert isinstance(errors["unresolvable"][0], socket.gaierror)
    assert str(errors["no tls"][0]) == "no tls transport"
    assert errors["delivered"] == []
    assert not transport._connect_error_handlers
    assert peer.transport is not None
    peer.transport.close()


async def test_tcp_idle_connection_is_closed(inbox: Inbox) -> None:
    transport = SipTransport(LOCALHOST, 0, inbox, tcp_idle_timeout=0.2)
    await transport.start()
    try:
        reader, writer = await asyncio.open_connection(LOCALHOST, transport.port)
        writer.write(sip_message("idle"))
        await inbox.get()
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        await wait_for(lambda: not transport._connections)
        writer.close()
        await writer.wait_closed()
    finally:
        await transport.close()


async def test_tls_destination_without_connection_is_dropped(
    transport: SipTransport, caplog: pytest.LogCaptureFixture
) -> None:
    transport.send(b"x", Destination("tls", LOCALHOST, 5061))
    assert "no tls transport" in caplog.text


# -- ports and lifecycle ----------------------------------------------------------------------


async def test_port_zero_picks_one_port_for_udp_and_tcp(
    transport: SipTransport, inbox: Inbox
) -> None:
    assert transport.port > 0 and transport.ready
    peer = await udp_peer()
    assert peer.transport is not None
    peer.transport.sendto(b"u", (LOCALHOST, transport.port))
    assert (await inbox.get())[0] == b"u"
    _, writer = await asyncio.open_connection(LOCALHOST, transport.port)
    writer.write(sip_message("t"))
    assert (await inbox.get())[0] == sip_message("t")
    writer.close()
    await writer.wait_closed()
    peer.transport.close()


async def test_close_releases_both_ports(inbox: Inbox) -> None:
    transport = SipTransport(LOCALHOST, 0, inbox)
    await transport.start()
    port = transport.port
    _, writer = await asyncio.open_connection(LOCALHOST, port)
    writer.write(sip_message("c"))
    await inbox.get()
    await transport.close()
    assert not transport.ready and not transport._connections
    transport.send(b"nothing", Destination("udp", LOCALHOST, 9))  # a no-op once closed
    writer.close()
    await writer.wait_closed()

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((LOCALHOST, port))
    again = SipTransport(LOCALHOST, port, inbox)
    await again.start()  # UDP and TCP both bind the same port again
    assert again.port == port
    await again.close()


async def test_start_fails_cleanly_when_the_tcp_port_is_taken(inbox: Inbox) -> None:
    with socket.socket() as listener:
        listener.bind((LOCALHOST, 0))
        listener.listen()
        port = listener.getsockname()[1]
        transport = SipTransport(LOCALHOST, port, inbox)
        with pytest.raises(OSError):
            await transport.start()
        assert not transport.ready
    # The UDP port it had bound was given back.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((LOCALHOST, port))


async def test_any_port_tries_again_when_its_tcp_twin_is_taken(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    create_server = loop.create_server
    refused: list[int] = []

    async def taken_once(*args: Any, **kwargs: Any) -> asyncio.Server:
        if not refused:
            refused.append(args[2])
            raise OSError(errno.EADDRINUSE, "address already in use")
        return await create_server(*args, **kwargs)

    monkeypatch.setattr(loop, "create_server", taken_once)
    transport = SipTransport(LOCALHOST, 0, inbox)
    await transport.start()
    try:
        assert transport.ready and transport.port != refused[0]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOCALHOST, refused[0]))  # the first UDP port was given back
    finally:
        await transport.close()


async def test_start_fails_when_the_udp_port_is_taken(inbox: Inbox) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((LOCALHOST, 0))
        transport = SipTransport(LOCALHOST, udp.getsockname()[1], inbox)
        with pytest.raises(OSError):
            await transport.start()
        assert not transport.ready


# -- IPv6 -------------------------------------------------------------------------------------


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback (::1) on this host")
async def test_ipv6_loopback_udp_and_tcp(inbox: Inbox) -> None:
    transport = SipTransport("::1", 0, inbox)
    await transport.start()
    try:
        peer = await udp_peer("::1")
        assert peer.transport is not None
        peer.transport.sendto(b"v6", ("::1", transport.port))
        data, source = await inbox.get()
        assert (data, source) == (b"v6", Destination("udp", "::1", peer.port))
        transport.send(b"back", source)
        assert await peer.get() == b"back"
        peer.transport.close()

        reader, writer = await asyncio.open_connection("::1", transport.port)
        writer.write(sip_message("v6"))
        data, source = await inbox.get()
        assert source == Destination("tcp", "::1", writer.get_extra_info("sockname")[1])
        transport.send(b"reply", source)
        assert await asyncio.wait_for(reader.readexactly(5), WAIT) == b"reply"
        writer.close()
        await writer.wait_closed()
    finally:
        await transport.close()


# -- TLS --------------------------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return make_pki(tmp_path / "pki")


def tls_config(pki: TestPki, **options: Any) -> TlsConfig:
    options.setdefault("port", 0)
    options.setdefault("cafile", str(pki.ca))
    return TlsConfig(certfile=str(pki.server_cert), keyfile=str(pki.server_key), **options)


@pytest.fixture
async def tls_transport(inbox: Inbox, pki: TestPki) -> AsyncIterator[SipTransport]:
    transport = SipTransport(LOCALHOST, 0, inbox, tls=tls_config(pki))
    await transport.start()
    yield transport
    await transport.close()


def trusting(ca: Path, *, cert: TestPki | None = None) -> ssl.SSLContext:
    """A client context that trusts ``ca`` (and presents ``cert``'s client certificate)."""
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(cert.client_cert, cert.client_key)
    return context


async def open_tls(
    transport: SipTransport, context: ssl.SSLContext, server_hostname: str = "localhost"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    assert transport.tls_port is not None
    return await asyncio.wait_for(asyncio.open_connection(
        LOCALHOST, transport.tls_port, ssl=context, server_hostname=server_hostname
    ), WAIT)


class TlsEchoPeer:
    """A TLS server (``start_server``) that keeps its connections and notes the SNI sent."""

    def __init__(self) -> None:
        self.accepted: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.server_names: list[str | None] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.append((reader, writer))

    def on_sni(self, _connection: object, server_name: str | None, _context: object) -> None:
        self.server_names.append(server_name)


async def tls_peer(pki: TestPki) -> tuple[TlsEchoPeer, asyncio.Server, int]:
    peer = TlsEchoPeer()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.sni_callback = peer.on_sni
    server = await asyncio.start_server(peer, LOCALHOST, 0, ssl=context)
    return peer, server, int(server.sockets[0].getsockname()[1])


async def test_tls_options_in_and_reply_on_the_same_connection(
    tls_transport: SipTransport, inbox: Inbox, pki: TestPki
) -> None:
    assert tls_transport.ready and tls_transport.tls_port not in (None, tls_transport.port)
    reader, writer = await open_tls(tls_transport, trusting(pki.ca))
    message = sip_message("tls", b"hi")
    writer.write(message)
    await writer.drain()
    data, source = await inbox.get()
    client_port = writer.get_extra_info("sockname")[1]
    assert (data, source) == (message, Destination("tls", LOCALHOST, client_port))
    assert source.reliable and tls_transport.connected(source)
    # A plain TCP destination at the same address is another connection: there is none.
    assert not tls_transport.connected(Destination("tcp", LOCALHOST, client_port))
    assert not tls_transport.connected(Destination("udp", LOCALHOST, client_port))

    response = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"
    tls_transport.send(response, source)
    assert await asyncio.wait_for(reader.readexactly(len(response)), WAIT) == response
    assert tls_transport.counters.get("tls_handshake_failures", 0) == 0
    writer.close()
    await writer.wait_closed()
    await wait_for(lambda: not tls_transport.connected(source))


async def test_tls_client_that_does_not_trust_us_is_counted_and_the_listener_goes_on(
    tls_transport: SipTransport, inbox: Inbox, pki: TestPki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sipagent.transport")
    with pytest.raises(ssl.SSLCertVerificationError):
        await open_tls(tls_transport, trusting(pki.other_ca))
    await wait_for(lambda: tls_transport.counters.get("tls_handshake_failures") == 1)
    assert "TLS handshake with" in caplog.text
    assert not tls_transport._tls_connections

    _, writer = await open_tls(tls_transport, trusting(pki.ca))
    writer.write(sip_message("after"))
    assert (await inbox.get())[0] == sip_message("after")
    writer.close()
    await writer.wait_closed()


async def test_tls_plain_sip_on_the_tls_port_is_a_failed_handshake(
    tls_transport: SipTransport, inbox: Inbox
) -> None:
    assert tls_transport.tls_port is not None
    reader, writer = await asyncio.open_connection(LOCALHOST, tls_transport.tls_port)
    writer.write(sip_message("plain"))
    assert await asyncio.wait_for(reader.read(), WAIT) == b""
    await wait_for(lambda: tls_transport.counters.get("tls_handshake_failures") == 1)
    assert inbox.queue.empty()
    writer.close()


async def test_tls_stalled_handshake_is_closed_after_the_timeout(
    inbox: Inbox, pki: TestPki
) -> None:
    transport = SipTransport(LOCALHOST, 0, inbox, tls=tls_config(pki, handshake_timeout=0.2))
    await transport.start()
    try:
        assert transport.tls_port is not None
        reader, writer = await asyncio.open_connection(LOCALHOST, transport.tls_port)
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(), WAIT) == b"", "the server hung up"
        assert asyncio.get_running_loop().time() - started < 3.0
        assert transport.counters["tls_handshake_failures"] == 1
        writer.close()
    finally:
        await transport.close()


async def test_tls_client_certificate_required_when_configured(
    inbox: Inbox, pki: TestPki
) -> None:
    config = tls_config(pki, require_client_cert=True)
    transport = SipTransport(LOCALHOST, 0, inbox, tls=config)
    await transport.start()
    try:
        # TLS 1.3: the client learns of the refusal on its first read, not in the handshake.
        reader, writer = await open_tls(transport, trusting(pki.ca))
        writer.write(sip_message("anonymous"))
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await asyncio.wait_for(reader.read(), WAIT)
        await wait_for(lambda: transport.counters.get("tls_handshake_failures") == 1)
        assert inbox.queue.empty()
        writer.close()

        _, writer = await open_tls(transport, trusting(pki.ca, cert=pki))
        writer.write(sip_message("known"))
        assert (await inbox.get())[0] == sip_message("known")
        writer.close()
        await writer.wait_closed()
    finally:
        await transport.close()


@pytest.mark.parametrize("host", [LOCALHOST, "localhost"])
async def test_tls_send_opens_a_verified_connection_and_reuses_it(
    inbox: Inbox, pki: TestPki, host: str
) -> None:
    transport = SipTransport(LOCALHOST, 0, inbox, tls=tls_config(pki, verify_server=True))
    await transport.start()
    peer, server, port = await tls_peer(pki)
    try:
        destination = Destination("tls", host, port)
        first, second = sip_message("tls1"), sip_message("tls2")
        transport.send(first, destination)
        transport.send(second, destination)
        await wait_for(lambda: peer.accepted)
        reader, writer = peer.accepted[0]
        received = await asyncio.wait_for(reader.readexactly(len(first + second)), WAIT)
        assert received == first + second
        # SNI carries a host name, never an address (RFC 6066 §3).
        assert peer.server_names == [None if host == LOCALHOST else host]

        writer.write(sip_message("back"))
        data, source = await inbox.get()
        assert data == sip_message("back") and source.transport == "tls"
        transport.send(b"third", destination)
        assert await asyncio.wait_for(reader.readexactly(5), WAIT) == b"third"
        assert len(peer.accepted) == 1 and transport.connected(destination)
        writer.close()
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()


async def test_tls_send_to_an_untrusted_server_is_dropped_and_counted(
    inbox: Inbox, pki: TestPki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sipagent.transport")
    config = tls_config(pki, cafile=str(pki.other_ca), verify_server=True)
    transport = SipTransport(LOCALHOST, 0, inbox, tls=config)
    await transport.start()
    peer, server, port = await tls_peer(pki)
    try:
        destination = Destination("tls", LOCALHOST, port)
        transport.send(sip_message("secret"), destination)
        await wait_for(lambda: "message(s) dropped" in caplog.text)
        assert transport.counters["tls_handshake_failures"] == 1
        assert "certificate verify failed" in caplog.text
        assert not transport.connected(destination) and not transport._connecting
        assert not peer.accepted, "the peer's handshake failed too"
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()


async def test_tls_send_without_verification_accepts_any_server(
    inbox: Inbox, pki: TestPki
) -> None:
    config = tls_config(pki, cafile=str(pki.other_ca), verify_server=False)
    transport = SipTransport(LOCALHOST, 0, inbox, tls=config)
    await transport.start()
    peer, server, port = await tls_peer(pki)
    try:
        transport.send(b"hello", Destination("tls", "127.0.0.1", port))
        await wait_for(lambda: peer.accepted)
        assert await asyncio.wait_for(peer.accepted[0][0].readexactly(5), WAIT) == b"hello"
        assert "tls_handshake_failures" not in transport.counters
        peer.accepted[0][1].close()
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()


async def test_tls_destination_never_reuses_a_tcp_connection(
    tls_transport: SipTransport, inbox: Inbox, caplog: pytest.LogCaptureFixture
) -> None:
    reader, writer = await asyncio.open_connection(LOCALHOST, tls_transport.port)
    writer.write(sip_message("tcp"))
    _, source = await inbox.get()
    assert source.transport == "tcp"
    # Same address, but TLS: sent in clear over the TCP connection it must not be.
    tls_transport.send(b"secret", Destination("tls", source.host, source.port))
    await wait_for(lambda: "cannot connect" in caplog.text or "dropped" in caplog.text)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(reader.read(1), 0.2)
    writer.close()
    await writer.wait_closed()


async def test_tls_close_releases_the_tls_port(inbox: Inbox, pki: TestPki) -> None:
    transport = SipTransport(LOCALHOST, 0, inbox, tls=tls_config(pki))
    await transport.start()
    tls_port = transport.tls_port
    assert tls_port is not None
    reader, writer = await open_tls(transport, trusting(pki.ca))
    writer.write(sip_message("c"))
    await inbox.get()
    await transport.close()
    assert not transport.ready and transport.tls_port is None
    assert not transport._tls_connections
    assert await asyncio.wait_for(reader.read(), WAIT) == b"", "the connection was closed"
    writer.close()

    again = SipTransport(LOCALHOST, 0, inbox, tls=tls_config(pki, port=tls_port))
    await again.start()  # binds the same TLS port again
    assert again.tls_port == tls_port
    await again.close()


async def test_close_during_a_handshake_ends_it(inbox: Inbox, pki: TestPki) -> None:
    transport = SipTransport(LOCALHOST, 0, inbox, tls=tls_config(pki))
    await transport.start()
    assert transport.tls_port is not None
    reader, writer = await asyncio.open_connection(LOCALHOST, transport.tls_port)
    # The accept loop, and a handshake waiting for a ClientHello.
    await wait_for(lambda: len(transport._tasks) == 2)
    await asyncio.wait_for(transport.close(), WAIT)
    assert not transport._tasks
    assert await asyncio.wait_for(reader.read(), WAIT) == b""
    writer.close()


async def test_start_fails_cleanly_when_the_tls_port_is_taken(
    inbox: Inbox, pki: TestPki
) -> None:
    with socket.socket() as listener:
        listener.bind((LOCALHOST, 0))
        listener.listen()
        transport = SipTransport(
            LOCALHOST, 0, inbox, tls=tls_config(pki, port=listener.getsockname()[1])
        )
        with pytest.raises(OSError):
            await transport.start()
        assert not transport.ready and transport.tls_port is None
    assert transport._tcp_server is None and transport._udp is None


async def test_start_refuses_unusable_certificate_files(inbox: Inbox, pki: TestPki) -> None:
    # The key of another certificate: caught before any port is bound.
    config = TlsConfig(certfile=str(pki.server_cert), keyfile=str(pki.client_key), port=0)
    transport = SipTransport(LOCALHOST, 0, inbox, tls=config)
    with pytest.raises(ssl.SSLError):
        await transport.start()
    assert not transport.ready and transport._udp is None
    missing = TlsConfig(certfile=str(pki.ca.parent / "missing.pem"), port=0)
    with pytest.raises(FileNotFoundError):
        await SipTransport(LOCALHOST, 0, inbox, tls=missing).start()


def test_tls_contexts_follow_the_configuration(pki: TestPki) -> None:
    verified = client_context(tls_config(pki))
    assert verified.verify_mode is ssl.CERT_REQUIRED and verified.check_hostname
    assert verified.minimum_version is ssl.TLSVersion.TLSv1_2
    unverified = client_context(tls_config(pki, verify_server=False))
    assert unverified.verify_mode is ssl.CERT_NONE and not unverified.check_hostname
    server = server_context(tls_config(pki))
    assert server.verify_mode is ssl.CERT_NONE
    assert server.minimum_version is ssl.TLSVersion.TLSv1_2
    mutual = server_context(tls_config(pki, require_client_cert=True))
    assert mutual.verify_mode is ssl.CERT_REQUIRED
    # Without a CA file the system store is the anchor set.
    system = client_context(tls_config(pki, cafile=None))
    assert system.verify_mode is ssl.CERT_REQUIRED


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback (::1) on this host")
async def test_ipv6_loopback_tls(inbox: Inbox, pki: TestPki) -> None:
    transport = SipTransport("::1", 0, inbox, tls=tls_config(pki))
    await transport.start()
    try:
        assert transport.tls_port is not None
        reader, writer = await asyncio.open_connection(
            "::1", transport.tls_port, ssl=trusting(pki.ca), server_hostname="::1"
        )
        writer.write(sip_message("v6tls"))
        data, source = await inbox.get()
        assert data == sip_message("v6tls")
        assert source == Destination("tls", "::1", writer.get_extra_info("sockname")[1])
        transport.send(b"reply", source)
        assert await asyncio.wait_for(reader.readexactly(5), WAIT) == b"reply"
        writer.close()
        await writer.wait_closed()
    finally:
        await transport.close()
