"""asyncio SIP transports: one UDP socket and one TCP listener on the same address.

Thin: bytes in are handed to ``on_message(data, source)`` with a :class:`Destination`
naming where they came from; bytes out go to a Destination, reusing the TCP connection
that the peer opened (responses and in-dialog requests alike) or opening one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import cast

from .exceptions import MessageParseError
from .framing import StreamFramer
from .transaction import Destination

__all__ = ["SipTransport"]

logger = logging.getLogger(__name__)

MessageHandler = Callable[[bytes, Destination], None]

#: Largest datagram read; SIP over UDP stays well under this (RFC 3261 §18.1.1).
_MAX_DATAGRAM = 65_535
#: A TCP connection idle this long is closed.
_TCP_IDLE_TIMEOUT = 300.0


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        host, port = str(addr[0]), int(str(addr[1]))
        self._owner.on_message(data, Destination("udp", host, port))

    def error_received(self, exc: Exception) -> None:
        logger.debug("UDP error: %s", exc)


class _TcpConnection(asyncio.Protocol):
    def __init__(self, owner: SipTransport) -> None:
        self._owner = owner
        self._framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: Destination | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = Destination("tcp", str(host), int(port))
        self._owner._connections[(self.peer.host, self.peer.port)] = self

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.transport is not None
        try:
            messages = self._framer.feed(data)
        except MessageParseError as exc:
            logger.info("closing TCP connection from %s: %s", self.peer, exc.reason)
            self._owner.counters["tcp_framing_errors"] = (
                self._owner.counters.get("tcp_framing_errors", 0) + 1
            )
            self.transport.close()
            return
        for message in messages:
            self._owner.on_message(message, self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self._owner._connections.pop((self.peer.host, self.peer.port), None)


class SipTransport:
    """UDP + TCP listener for SIP on one host and port."""

    def __init__(self, host: str, port: int, on_message: MessageHandler) -> None:
        self.host = host
        self.port = port
        self.on_message = on_message
        self.counters: dict[str, int] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.Server | None = None
        self._connections: dict[tuple[str, int], _TcpConnection] = {}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=(self.host, self.port)
        )
        self._udp = transport
        if self.port == 0:
            self.port = int(transport.get_extra_info("sockname")[1])
        self._tcp_server = await loop.create_server(
            lambda: _TcpConnection(self), self.host, self.port, reuse_address=True
        )

    @property
    def ready(self) -> bool:
        return self._udp is not None and self._tcp_server is not None

    def send(self, data: bytes, destination: Destination) -> None:
        if destination.transport == "udp":
            if self._udp is None:
                return
            if _is_ip(destination.host):
                self._udp.sendto(data, (destination.host, destination.port))
            else:
                asyncio.get_running_loop().create_task(self._resolve_and_send(data, destination))
            return
        connection = self._connections.get((destination.host, destination.port))
        if connection is not None and connection.transport is not None:
            connection.transport.write(data)
        elif destination.transport == "tcp":
            asyncio.get_running_loop().create_task(self._connect_and_send(data, destination))
        else:
            logger.warning("no %s transport to reach %s", destination.transport, destination)

    async def _resolve_and_send(self, data: bytes, destination: Destination) -> None:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                destination.host, destination.port, type=socket.SOCK_DGRAM
            )
        except OSError as exc:
            logger.warning("cannot resolve %s: %s", destination.host, exc)
            return
        if infos and self._udp is not None:
            self._udp.sendto(data, infos[0][4][:2])

    async def _connect_and_send(self, data: bytes, destination: Destination) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_connection(
                lambda: _TcpConnection(self), destination.host, destination.port
            )
        except OSError as exc:
            logger.warning("cannot connect to %s: %s", destination, exc)
            return
        transport.write(data)

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        for connection in list(self._connections.values()):
            if connection.transport is not None:
                connection.transport.close()
        if self._tcp_server is not None:
            self._tcp_server.close()
            await self._tcp_server.wait_closed()
            self._tcp_server = None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
