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
from collections.abc import Callable, Coroutine
from typing import Any, cast

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

_Peer = tuple[str, int]


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self._owner = owner
        self.closed = asyncio.get_running_loop().create_future()
        """Done once the socket is closed and its port free again."""

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        host, port = str(addr[0]), int(str(addr[1]))
        self._owner.on_message(data, Destination("udp", host, port))

    def error_received(self, exc: Exception) -> None:
        logger.debug("UDP error: %s", exc)


class _TcpConnection(asyncio.Protocol):
    def __init__(self, owner: SipTransport) -> None:
        self._owner = owner
        self._framer = StreamFramer()
        self._loop = asyncio.get_running_loop()
        self._last_activity = self._loop.time()
        self._idle_timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        self.peer: Destination | None = None

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = Destination("tcp", str(host), int(port))
        self._owner._connections[(self.peer.host, self.peer.port)] = self
        self._idle_timer = self._loop.call_later(self._owner.tcp_idle_timeout, self._check_idle)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self._last_activity = self._loop.time()
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.transport is not None
        self._last_activity = self._loop.time()
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

    def _check_idle(self) -> None:
        # One timer per connection, re-armed for the remainder rather than on every byte.
        self._idle_timer = None
        if self.transport is None or self.transport.is_closing():
            return
        idle = self._loop.time() - self._last_activity
        timeout = self._owner.tcp_idle_timeout
        if idle >= timeout:
            logger.debug("closing TCP connection with %s: idle %.0f s", self.peer, idle)
            self.transport.close()
        else:
            self._idle_timer = self._loop.call_later(timeout - idle, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        connections = self._owner._connections
        for key in [key for key, value in connections.items() if value is self]:
            del connections[key]


class SipTransport:
    """UDP + TCP listener for SIP on one host and port."""

    def __init__(
        self,
        host: str,
        port: int,
        on_message: MessageHandler,
        *,
        tcp_idle_timeout: float = _TCP_IDLE_TIMEOUT,
    ) -> None:
        self.host = host
        self.port = port
        self.on_message = on_message
        self.tcp_idle_timeout = tcp_idle_timeout
        """Seconds without traffic after which a TCP connection (either direction) is closed."""
        self.counters: dict[str, int] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_protocol: _UdpProtocol | None = None
        self._tcp_server: asyncio.Server | None = None
        self._connections: dict[_Peer, _TcpConnection] = {}
        # Messages waiting for a TCP connection being opened, so that two sends to the
        # same peer share one connection and keep their order.
        self._connecting: dict[_Peer, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=(self.host, self.port)
        )
        try:
            port = int(transport.get_extra_info("sockname")[1])
            self._tcp_server = await loop.create_server(
                lambda: _TcpConnection(self), self.host, port, reuse_address=True
            )
        except BaseException:
            # Do not keep the UDP port of a transport that failed to start.
            transport.close()
            await asyncio.shield(protocol.closed)
            raise
        self._udp = transport
        self._udp_protocol = protocol
        self.port = port
        self._closed = False

    @property
    def ready(self) -> bool:
        return self._udp is not None and self._tcp_server is not None

    def send(self, data: bytes, destination: Destination) -> None:
        if self._closed:
            return
        if destination.transport == "udp":
            if self._udp is None:
                return
            if _is_ip(destination.host):
                self._udp.sendto(data, (destination.host, destination.port))
            else:
                self._spawn(self._resolve_and_send(data, destination))
            return
        key = (destination.host, destination.port)
        connection = self._connections.get(key)
        if connection is not None and connection.usable:
            connection.write(data)
        elif destination.transport == "tcp":
            pending = self._connecting.get(key)
            if pending is not None:
                pending.append(data)
            else:
                self._connecting[key] = [data]
                self._spawn(self._connect_and_send(destination))
        else:
            logger.warning("no %s transport to reach %s", destination.transport, destination)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        # Keep a reference: the loop only holds tasks weakly.
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve_and_send(self, data: bytes, destination: Destination) -> None:
        loop = asyncio.get_running_loop()
        udp = self._udp
        if udp is None:
            return
        # Only addresses of our socket's family can be reached from it.
        family = udp.get_extra_info("socket").family
        try:
            infos = await loop.getaddrinfo(
                destination.host, destination.port, family=family, type=socket.SOCK_DGRAM
            )
        except OSError as exc:
            logger.warning("cannot resolve %s: %s", destination.host, exc)
            return
        if infos and self._udp is not None:
            self._udp.sendto(data, infos[0][4][:2])

    async def _connect_and_send(self, destination: Destination) -> None:
        loop = asyncio.get_running_loop()
        key = (destination.host, destination.port)
        try:
            transport, connection = await loop.create_connection(
                lambda: _TcpConnection(self), destination.host, destination.port
            )
        except OSError as exc:
            dropped = len(self._connecting.pop(key, []))
            logger.warning("cannot connect to %s (%d message(s) dropped): %s",
                           destination, dropped, exc)
            return
        except BaseException:
            self._connecting.pop(key, None)
            raise
        # Also reachable under the name it was asked for (it may be a host name).
        known = self._connections.get(key)
        if known is None or not known.usable:
            self._connections[key] = connection
        for data in self._connecting.pop(key, []):
            connection.write(data)
        if self._closed:
            transport.close()

    async def close(self) -> None:
        self._closed = True
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._udp_protocol is not None:
            await asyncio.shield(self._udp_protocol.closed)
            self._udp_protocol = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._connecting.clear()
        for connection in list(self._connections.values()):
            if connection.transport is not None:
                connection.transport.close()
        if self._tcp_server is not None:
            self._tcp_server.close()
            await self._tcp_server.wait_closed()
            self._tcp_server = None
        # Let the closed connections run connection_lost before the caller moves on.
        for _ in range(10):
            if not self._connections:
                break
            await asyncio.sleep(0)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
