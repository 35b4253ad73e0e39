"""asyncio SIP transports: UDP and TCP on one address, and optionally a TLS listener.

Thin: bytes in are handed to ``on_message(data, source)`` with a :class:`Destination`
naming where they came from; bytes out go to a Destination, reusing the TCP or TLS
connection that the peer opened (responses and in-dialog requests alike) or opening one.

TLS (RFC 3261 §26.3.1, RFC 5630) has its own port (5061 by convention). A connection is
only registered for reuse once its handshake completed; a failed or stalled handshake is
logged at INFO, counted in ``counters["tls_handshake_failures"]`` and closed.

A sender that must know when its bytes could not leave (a registrar that is unreachable)
passes ``on_error`` to :meth:`SipTransport.send`: it is called from the loop, never from
within ``send``, with the exception when ``sendto`` fails, the name does not resolve or the
connection (or TLS handshake) fails. Linux reports ICMP errors only to connected UDP sockets,
so an unanswered datagram to a closed port is not one of these: that is the transaction's timeout.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

from .exceptions import MessageParseError
from .framing import StreamFramer
from .transaction import Destination

__all__ = ["SendErrorHandler", "SipTransport", "TlsConfig", "client_context", "server_context"]

logger = logging.getLogger(__name__)

MessageHandler = Callable[[bytes, Destination], None]
SendErrorHandler = Callable[[Exception], None]

#: Largest datagram read; SIP over UDP stays well under this (RFC 3261 §18.1.1).
_MAX_DATAGRAM = 65_535
#: A TCP or TLS connection idle this long is closed.
_TCP_IDLE_TIMEOUT = 300.0
#: Seconds a TLS handshake may take before the connection is dropped.
_TLS_HANDSHAKE_TIMEOUT = 10.0
#: Seconds a closing TLS connection waits for the peer's close_notify.
_TLS_SHUTDOWN_TIMEOUT = 2.0
#: Pending connections the TLS listener queues (as asyncio's create_server).
_BACKLOG = 100
#: Seconds the TLS accept loop waits after a failed accept (say, out of descriptors).
_ACCEPT_RETRY = 0.1
#: Tries to find one port free for both UDP and TCP when any port will do.
_ANY_PORT_ATTEMPTS = 5
#: Seconds close() waits for closed connections to be gone.
_CLOSE_WAIT = 1.0

_Peer = tuple[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsConfig:
    """The TLS listener and outbound TLS connections: certificate, trust anchors, checks."""

    certfile: str
    """PEM file with our certificate chain, leaf first (the key too unless ``keyfile``)."""
    keyfile: str | None = None
    """PEM file with the private key of ``certfile``; None: it is in ``certfile``."""
    port: int = 5061
    """Port of the TLS listener (0: any free port, see :attr:`SipTransport.tls_port`)."""
    cafile: str | None = None
    """PEM trust anchors for peers' certificates; None: the system store."""
    verify_server: bool = True
    """Outbound: check the server's chain and that it names the host we dialled."""
    require_client_cert: bool = False
    """Inbound: refuse a handshake without a client certificate that chains to the anchors."""
    handshake_timeout: float = _TLS_HANDSHAKE_TIMEOUT
    """Seconds a handshake may take, either direction, before the connection is closed."""


def server_context(config: TlsConfig) -> ssl.SSLContext:
    """The listener's context: TLS 1.2 or later, our chain, client certificates if required."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.certfile, config.keyfile)
    if config.require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        _load_anchors(context, config.cafile, ssl.Purpose.CLIENT_AUTH)
    return context


def client_context(config: TlsConfig) -> ssl.SSLContext:
    """The context of connections we open: server verified unless configured off.

    Our chain is offered too, for servers that ask for a client certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.verify_server:
        _load_anchors(context, config.cafile, ssl.Purpose.SERVER_AUTH)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(config.certfile, config.keyfile)
    return context


def _load_anchors(context: ssl.SSLContext, cafile: str | None, purpose: ssl.Purpose) -> None:
    if cafile is not None:
        context.load_verify_locations(cafile=cafile)
    else:
        context.load_default_certs(purpose)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self._owner = owner
        self.closed = asyncio.get_running_loop().create_future()
        """Done once the socket is closed and its port free again."""
        self.send_error: Exception | None = None
        """The last error the loop reported (a failed sendto calls error_received at once)."""

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        host, port = str(addr[0]), int(str(addr[1]))
        self._owner.on_message(data, Destination("udp", host, port))

    def error_received(self, exc: Exception) -> None:
        logger.debug("UDP error: %s", exc)
        self.send_error = exc


class _StreamConnection(asyncio.Protocol):
    """One TCP or TLS connection, opened by either side.

    A TLS connection is only made (and so framed, registered, reused) once its handshake
    completed: the loop's SSL layer runs the handshake before ``connection_made``.
    """

    def __init__(self, owner: SipTransport, name: str) -> None:
        self._owner = owner
        self.name = name
        """``tcp`` or ``tls``: the transport of the Destinations it carries."""
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
        self.peer = Destination(self.name, str(host), int(port))
        self._owner._table(self.name)[(self.peer.host, self.peer.port)] = self
        self._idle_timer = self._loop.call_later(self._owner.tcp_idle_timeout, self._check_idle)
        if self.name == "tls":
            logger.debug("TLS with %s: %s", self.peer, transport.get_extra_info("cipher"))

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
            logger.info("closing %s connection from %s: %s", self.name.upper(), self.peer,
                        exc.reason)
            self._owner.count(f"{self.name}_framing_errors")
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
            logger.debug("closing %s connection with %s: idle %.0f s", self.name.upper(),
                         self.peer, idle)
            self.transport.close()
        else:
            self._idle_timer = self._loop.call_later(timeout - idle, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        connections = self._owner._table(self.name)
        for key in [key for key, value in connections.items() if value is self]:
            del connections[key]


class SipTransport:
    """UDP + TCP listener for SIP on one host and port, plus TLS on its own port if given."""

    def __init__(
        self,
        host: str,
        port: int,
        on_message: MessageHandler,
        *,
        tcp_idle_timeout: float = _TCP_IDLE_TIMEOUT,
        tls: TlsConfig | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.on_message = on_message
        self.tcp_idle_timeout = tcp_idle_timeout
        """Seconds without traffic after which a TCP/TLS connection (either direction) closes."""
        self.tls = tls
        self.tls_port: int | None = None
        """The TLS listener's port once started (None without TLS)."""
        self.counters: dict[str, int] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_protocol: _UdpProtocol | None = None
        self._tcp_server: asyncio.Server | None = None
        # TLS accepts by hand (sock_accept + connect_accepted_socket): a loop's TLS server
        # swallows failed handshakes, and those must be counted.
        self._tls_listener: socket.socket | None = None
        self._tls_server_context: ssl.SSLContext | None = None
        self._tls_client_context: ssl.SSLContext | None = None
        # Separate tables: a TLS destination must never be served by a plain TCP connection.
        self._connections: dict[_Peer, _StreamConnection] = {}
        self._tls_connections: dict[_Peer, _StreamConnection] = {}
        # Messages waiting for a connection being opened, so that two sends to the same
        # peer share one connection and keep their order; and who to tell if it fails.
        self._connecting: dict[tuple[str, str, int], list[bytes]] = {}
        self._connect_error_handlers: dict[tuple[str, str, int], list[SendErrorHandler]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def start(self) -> None:
        """Bind UDP and TCP (same port) and the TLS listener; all or nothing.

        Raises OSError if a port is taken, ssl.SSLError / OSError for unusable TLS files.
        """
        loop = asyncio.get_running_loop()
        server_tls = server_context(self.tls) if self.tls is not None else None
        client_tls = client_context(self.tls) if self.tls is not None else None
        # Port 0: the UDP port the system picked may be taken for TCP; pick again.
        attempts = _ANY_PORT_ATTEMPTS if self.port == 0 else 1
        for attempt in range(attempts):
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.host, self.port)
            )
            port = int(transport.get_extra_info("sockname")[1])
            try:
                tcp_server = await loop.create_server(
                    lambda: _StreamConnection(self, "tcp"), self.host, port, reuse_address=True
                )
            except BaseException as exc:
                transport.close()
                await asyncio.shield(protocol.closed)
                if isinstance(exc, OSError) and attempt + 1 < attempts:
                    continue
                raise
            break
        try:
            if self.tls is not None:
                self._tls_listener = await _listen(self.host, self.tls.port)
        except BaseException:
            # Do not keep the ports of a transport that failed to start.
            tcp_server.close()
            await tcp_server.wait_closed()
            transport.close()
            await asyncio.shield(protocol.closed)
            raise
        self._udp = transport
        self._udp_protocol = protocol
        self._tcp_server = tcp_server
        self.port = port
        self._closed = False
        if self._tls_listener is not None:
            self.tls_port = int(self._tls_listener.getsockname()[1])
            self._tls_server_context = server_tls
            self._tls_client_context = client_tls
            self._spawn(self._serve_tls(self._tls_listener))

    @property
    def ready(self) -> bool:
        listening = self._udp is not None and self._tcp_server is not None
        return listening and (self.tls is None or self._tls_listener is not None)

    def connected(self, destination: Destination) -> bool:
        """Whether a usable TCP/TLS connection to ``destination`` exists right now."""
        if destination.transport not in ("tcp", "tls"):
            return False
        connection = self._table(destination.transport).get((destination.host, destination.port))
        return connection is not None and connection.usable

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _table(self, name: str) -> dict[_Peer, _StreamConnection]:
        return self._tls_connections if name == "tls" else self._connections

    def send(
        self, data: bytes, destination: Destination, on_error: SendErrorHandler | None = None
    ) -> None:
        """Send ``data``; ``on_error`` is called later if it could not leave (module docstring)."""
        if self._closed:
            return
        if destination.transport == "udp":
            if self._udp is None:
                return
            if _is_ip(destination.host):
                self._sendto(data, (destination.host, destination.port), on_error)
            else:
                self._spawn(self._resolve_and_send(data, destination, on_error))
            return
        if destination.transport not in ("tcp", "tls") or (
            destination.transport == "tls" and self._tls_client_context is None
        ):
            logger.warning("no %s transport to reach %s", destination.transport, destination)
            self._report(on_error, OSError(f"no {destination.transport} transport"))
            return
        connection = self._table(destination.transport).get((destination.host, destination.port))
        if connection is not None and connection.usable:
            connection.write(data)
            return
        key = (destination.transport, destination.host, destination.port)
        if on_error is not None:
            self._connect_error_handlers.setdefault(key, []).append(on_error)
        pending = self._connecting.get(key)
        if pending is not None:
            pending.append(data)
        else:
            self._connecting[key] = [data]
            self._spawn(self._connect_and_send(destination))

    def _sendto(
        self, data: bytes, address: tuple[str, int], on_error: SendErrorHandler | None
    ) -> None:
        udp, protocol = self._udp, self._udp_protocol
        assert udp is not None and protocol is not None
        # The loop hands a failed sendto (EACCES, ENETUNREACH...) to error_received at once.
        protocol.send_error = None
        udp.sendto(data, address)
        error, protocol.send_error = protocol.send_error, None
        if error is not None:
            logger.info("cannot send to %s:%d: %s", address[0], address[1], error)
            self._report(on_error, error)

    def _report(self, on_error: SendErrorHandler | None, error: Exception) -> None:
        if on_error is not None:
            asyncio.get_running_loop().call_soon(on_error, error)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        # Keep a reference: the loop only holds tasks weakly.
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve_and_send(
        self, data: bytes, destination: Destination, on_error: SendErrorHandler | None
    ) -> None:
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
            self._report(on_error, exc)
            return
        if infos and self._udp is not None:
            host, port = infos[0][4][:2]
            self._sendto(data, (str(host), int(port)), on_error)

    # -- TLS --------------------------------------------------------------------------------
    async def _serve_tls(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as exc:  # out of descriptors and the like: breathe, go on
                logger.warning("TLS accept failed: %s", exc)
                await asyncio.sleep(_ACCEPT_RETRY)
                continue
            self._spawn(self._accept_tls(sock))

    async def _accept_tls(self, sock: socket.socket) -> None:
        assert self._tls_server_context is not None and self.tls is not None
        try:
            host, port = sock.getpeername()[:2]
        except OSError:  # gone already
            sock.close()
            return
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: _StreamConnection(self, "tls"), sock,
                ssl=self._tls_server_context,
                ssl_handshake_timeout=self.tls.handshake_timeout,
                ssl_shutdown_timeout=_TLS_SHUTDOWN_TIMEOUT,
            )
        except OSError as exc:  # ssl.SSLError, a timeout's ConnectionAbortedError, resets
            self._handshake_failed(Destination("tls", str(host), int(port)), exc)
            sock.close()

    async def _open_tls(self, destination: Destination) -> _StreamConnection:
        """Connect, then handshake; OSError if no address answers, _HandshakeFailed after."""
        assert self._tls_client_context is not None and self.tls is not None
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(destination.host, destination.port,
                                       type=socket.SOCK_STREAM)
        error: OSError = OSError(f"no address for {destination.host}")
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, address)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            except BaseException:
                sock.close()
                raise
            try:
                # The host name is the TLS server name: SNI, and what the certificate names.
                _, connection = await loop.create_connection(
                    lambda: _StreamConnection(self, "tls"), sock=sock,
                    ssl=self._tls_client_context, server_hostname=destination.host,
                    ssl_handshake_timeout=self.tls.handshake_timeout,
                    ssl_shutdown_timeout=_TLS_SHUTDOWN_TIMEOUT,
                )
            except OSError as exc:
                sock.close()
                self._handshake_failed(destination, exc)
                raise _HandshakeFailed(str(exc)) from exc
            except BaseException:
                sock.close()
                raise
            return connection
        raise error

    def _handshake_failed(self, peer: Destination, exc: OSError) -> None:
        self.count("tls_handshake_failures")
        logger.info("TLS handshake with %s failed: %s", peer, str(exc) or type(exc).__name__)

    # -- opening connections ----------------------------------------------------------------
    async def _connect_and_send(self, destination: Destination) -> None:
        loop = asyncio.get_running_loop()
        key = (destination.transport, destination.host, destination.port)
        try:
            if destination.transport == "tls":
                connection = await self._open_tls(destination)
            else:
                _, connection = await loop.create_connection(
                    lambda: _StreamConnection(self, "tcp"), destination.host, destination.port
                )
        except _HandshakeFailed as exc:
            dropped = len(self._connecting.pop(key, []))
            logger.warning("no TLS with %s (%d message(s) dropped)", destination, dropped)
            self._connect_failed(key, exc)
            return
        except OSError as exc:
            dropped = len(self._connecting.pop(key, []))
            logger.warning("cannot connect to %s (%d message(s) dropped): %s",
                           destination, dropped, exc)
            self._connect_failed(key, exc)
            return
        except BaseException:
            self._connecting.pop(key, None)
            self._connect_error_handlers.pop(key, None)
            raise
        self._connect_error_handlers.pop(key, None)
        # Also reachable under the name it was asked for (it may be a host name).
        table = self._table(destination.transport)
        known = table.get((destination.host, destination.port))
        if known is None or not known.usable:
            table[(destination.host, destination.port)] = connection
        for data in self._connecting.pop(key, []):
            connection.write(data)
        if self._closed and connection.transport is not None:
            connection.transport.close()

    def _connect_failed(self, key: tuple[str, str, int], error: Exception) -> None:
        for on_error in self._connect_error_handlers.pop(key, []):
            self._report(on_error, error)

    async def close(self) -> None:
        self._closed = True
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._udp_protocol is not None:
            await asyncio.shield(self._udp_protocol.closed)
            self._udp_protocol = None
        for task in list(self._tasks):  # the TLS accept loop and handshakes among them
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._connecting.clear()
        self._connect_error_handlers.clear()
        for connection in [*self._connections.values(), *self._tls_connections.values()]:
            if connection.transport is not None:
                connection.transport.close()
        if self._tcp_server is not None:
            self._tcp_server.close()
            await self._tcp_server.wait_closed()
            self._tcp_server = None
        if self._tls_listener is not None:
            self._tls_listener.close()
            self._tls_listener = None
        self.tls_port = None
        self._tls_server_context = self._tls_client_context = None
        # Let the closed connections run connection_lost before the caller moves on (a TLS
        # one after the close_notify exchange, hence a deadline rather than a few turns).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _CLOSE_WAIT
        turns = 0
        while (self._connections or self._tls_connections) and loop.time() < deadline:
            await asyncio.sleep(0 if turns < 10 else 0.01)
            turns += 1


class _HandshakeFailed(Exception):
    """An outbound TLS handshake failed (already counted and logged)."""


async def _listen(host: str, port: int) -> socket.socket:
    """A non-blocking TCP listening socket on ``host``:``port``, as create_server makes."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
