"""SipTransport over real sockets on the loopback (127.0.0.1, and ::1 when available).

A plain asyncio UDP socket or TCP stream plays the peer; messages reach the test through
the transport's ``on_message`` callback into a queue.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from sipagent.transaction import Destination
from sipagent.transport import SipTransport

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
