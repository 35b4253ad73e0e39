"""Thin asyncio shell around :class:`~rtp.session.RtpSession`.

One :class:`RtpEndpoint` per call owns a UDP socket pair — RTP on an even port, RTCP on the
next odd one, both from a :class:`PortAllocator` — and one timer: after every datagram and
every timer callback it delivers the session's events, sends what the session wants sent and
re-arms a single ``loop.call_at(session.get_timer())`` (like aioquic's ``QuicConnectionProtocol``).
Only this module touches sockets and ``loop.time()``.

With :class:`TickGroups` (the server has one) the calls whose 20 ms grids share a phase of the
frame share one timer instead: the calls' grids are spread over the frame's milliseconds by
:class:`~rtp.pacer.TickPhases`, and one ``call_at`` chain per millisecond runs every member's
tick. The event loop fires timers to the millisecond anyway, so the members' ticks run exactly
when their own timers would have, without a timer handle made and cancelled per call per
frame. RTCP reports and the inactivity timeout, due between ticks, run at the next tick.

Events are delivered before the due RTP packets are sent, so a consumer that pushes audio into
``session.playout`` from ``on_event`` (the echo) has it sent in the same tick.

With an :class:`~rtp.srtp.SrtpContext` (SDES-keyed SRTP) the endpoint protects every RTP and
RTCP datagram on its way to the socket and unprotects every one that arrives before the session
sees it; the session core never knows. Datagrams that fail authentication or the replay check
are dropped and counted by the context (``endpoint.srtp.stats()``), never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from typing import Final

from .pacer import TickPhases
from .session import RtpEvent, RtpSession
from .srtp import SrtpContext, is_rtcp_datagram

__all__ = [
    "PortAllocator",
    "PortReservation",
    "PortsExhaustedError",
    "RtpEndpoint",
    "TickGroups",
    "reserve_port_pair",
]

logger = logging.getLogger(__name__)

Address = tuple[str, int]
EventCallback = Callable[[RtpEvent], None]

RECEIVE_BUFFER: Final = 2048
"""Datagram read size; asyncio's default 256 KiB read costs page faults per packet."""
BIND_ATTEMPTS: Final = 16
"""Port pairs tried before giving up when ports are taken by other processes."""


class PortsExhaustedError(RuntimeError):
    """Every RTP port pair of the configured range is in use."""


class PortAllocator:
    """Hands out even RTP ports (RTCP = port + 1) from ``[min_port, max_port]``, round-robin.

    Round-robin rather than lowest-free: a port released by one call is not immediately given
    to the next, so stray packets from the old call's peer do not reach the new call.
    """

    def __init__(self, min_port: int = 10000, max_port: int = 20000) -> None:
        first = min_port + (min_port & 1)
        if first + 1 > max_port or first < 1 or max_port > 65535:
            raise ValueError(f"no RTP port pair in {min_port}-{max_port}")
        self._ports = range(first, max_port, 2)
        self._in_use: set[int] = set()
        self._cursor = 0

    @property
    def capacity(self) -> int:
        """Number of port pairs in the range."""
        return len(self._ports)

    @property
    def in_use(self) -> int:
        """Number of port pairs currently allocated."""
        return len(self._in_use)

    def allocate(self) -> int:
        """Reserve and return an even port; raises :class:`PortsExhaustedError` when none left."""
        ports = self._ports
        for _ in range(len(ports)):
            port = ports[self._cursor]
            self._cursor = (self._cursor + 1) % len(ports)
            if port not in self._in_use:
                self._in_use.add(port)
                return port
        raise PortsExhaustedError(f"all {len(ports)} RTP port pairs are in use")

    def release(self, port: int) -> None:
        """Return a port obtained from :meth:`allocate` (unknown ports are ignored)."""
        self._in_use.discard(port)


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return ":" in host


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if _is_ipv6(host) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    rtp_sock = _bind(host, port)
    try:
        return rtp_sock, _bind(host, port + 1)
    except OSError:
        rtp_sock.close()
        raise


class PortReservation:
    """An RTP/RTCP port pair bound now, to be written into SDP before media starts.

    Made by :func:`reserve_port_pair`; handed to :meth:`RtpEndpoint.create`, which takes
    the sockets over, or given back with :meth:`release`.
    """

    def __init__(
        self, port: int, sockets: tuple[socket.socket, socket.socket], allocator: PortAllocator
    ) -> None:
        self.port = port
        """The RTP port (even); RTCP is ``port + 1``."""
        self._sockets: tuple[socket.socket, socket.socket] | None = sockets
        self._allocator = allocator

    def take(self) -> tuple[socket.socket, socket.socket]:
        """The bound sockets; the caller owns them (and the port) from now on."""
        if self._sockets is None:
            raise RuntimeError("port reservation already taken or released")
        sockets, self._sockets = self._sockets, None
        return sockets

    def release(self) -> None:
        """Close the sockets and return the port; harmless once taken or released."""
        if self._sockets is None:
            return
        for sock in self._sockets:
            sock.close()
        self._sockets = None
        self._allocator.release(self.port)


def reserve_port_pair(local_host: str, allocator: PortAllocator) -> PortReservation:
    """Bind a free RTP/RTCP pair from ``allocator``, skipping pairs another process holds.

    Raises :class:`PortsExhaustedError` when the range is used up and :class:`OSError` when
    no pair could be bound.
    """
    for _ in range(min(BIND_ATTEMPTS, allocator.capacity)):
        port = allocator.allocate()
        try:
            sockets = _bind_pair(local_host, port)
        except OSError as exc:
            allocator.release(port)
            logger.debug("cannot bind %s:%d/%d: %s", local_host, port, port + 1, exc)
            continue
        return PortReservation(port, sockets, allocator)
    raise OSError(f"could not bind an RTP port pair on {local_host}")


def source_address(addr: tuple[str, int] | tuple[str, int, int, int]) -> Address:
    """A received source as the session compares it: (host, port), IPv4-mapped unwrapped."""
    host, port = addr[0], addr[1]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return (host, port)


def destination_address(addr: Address, ipv6_socket: bool) -> Address:
    """Where to send on our socket: IPv4 peers of an IPv6 socket need the mapped form."""
    if ipv6_socket and ":" not in addr[0]:
        return (f"::ffff:{addr[0]}", addr[1])
    return addr


class _SocketProtocol(asyncio.DatagramProtocol):
    """Forwards one socket's datagrams to its endpoint."""

    def __init__(self, endpoint: RtpEndpoint, rtcp: bool) -> None:
        self._endpoint = endpoint
        self._rtcp = rtcp

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transport has no such knob (and reads efficiently already).
        with contextlib.suppress(AttributeError):
            transport.max_size = RECEIVE_BUFFER  # type: ignore[attr-defined]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._endpoint._datagram_received(data, addr, self._rtcp)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable while the peer is not listening yet: normal for RTP.
        logger.debug("RTP socket error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._endpoint._socket_closed()


class TickGroups:
    """One timer per phase of the frame, running the ticks of every endpoint in that phase.

    :meth:`place` and :meth:`release` hand out grid starts (:class:`~rtp.pacer.TickPhases`);
    an endpoint created with ``ticks=`` joins the group of its session's grid start and leaves
    it when it closes. A group's timer runs on the absolute grid ``start + n * ptime`` (a loop
    stalled for more than a frame resumes at the next grid point: the members' pacers send
    what they missed) and stops when its last member leaves.
    """

    def __init__(self, ptime: float = 0.020, slots: int = 20) -> None:
        self.phases = TickPhases(ptime, slots)
        self.ptime = ptime
        self._members: list[dict[RtpEndpoint, None]] = [{} for _ in range(slots)]
        self._timers: list[asyncio.TimerHandle | None] = [None] * slots
        self._next: list[float] = [0.0] * slots

    def place(self, now: float) -> float:
        """A grid start in the least-used phase (see :meth:`TickPhases.place`)."""
        return self.phases.place(now)

    def release(self, start: float) -> None:
        """Give back a phase :meth:`place` handed out."""
        self.phases.release(start)

    def members(self) -> int:
        """Endpoints ticking through the groups."""
        return sum(len(group) for group in self._members)

    def join(self, endpoint: RtpEndpoint, start: float) -> None:
        """Run ``endpoint``'s ticks from ``start`` on, with the group of that phase."""
        slot = self.phases.slot_of(start)
        self._members[slot][endpoint] = None
        if self._timers[slot] is None:
            self._next[slot] = start
            self._timers[slot] = asyncio.get_running_loop().call_at(start, self._fire, slot)

    def leave(self, endpoint: RtpEndpoint, start: float) -> None:
        """Stop running ``endpoint``'s ticks; the group's timer stops with its last member."""
        slot = self.phases.slot_of(start)
        group = self._members[slot]
        group.pop(endpoint, None)
        timer = self._timers[slot]
        if not group and timer is not None:
            timer.cancel()
            self._timers[slot] = None

    def _fire(self, slot: int) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for endpoint in list(self._members[slot]):
            try:
                endpoint._on_tick(now)
            except Exception:
                logger.exception("RTP tick failed on port %d", endpoint.port)
        if not self._members[slot]:
            self._timers[slot] = None
            return
        when = self._next[slot] + self.ptime
        if when < now - self.ptime:  # stalled: resume on the grid, not with a burst of timers
            when += (int((now - when) / self.ptime) + 1) * self.ptime
        self._next[slot] = when
        self._timers[slot] = loop.call_at(when, self._fire, slot)


class RtpEndpoint:
    """A session's UDP sockets and timer; create with :meth:`create`."""

    def __init__(
        self,
        session: RtpSession,
        local_host: str,
        port: int,
        port_allocator: PortAllocator,
        on_event: EventCallback | None,
        srtp: SrtpContext | None = None,
        ticks: TickGroups | None = None,
    ) -> None:
        self.session = session
        self.local_host = local_host
        self.port = port
        """Local RTP port (even); RTCP is ``port + 1``."""
        self.on_event = on_event
        """Called with each session event (from the event loop; must not block)."""
        self.srtp = srtp
        """SRTP protection of everything sent and received, None for plain RTP. Replacing it
        (a re-INVITE with new keys) takes effect with the next datagram."""
        self._allocator = port_allocator
        self._loop = asyncio.get_running_loop()
        self._ipv6 = _is_ipv6(local_host)
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._timer: asyncio.Handle | None = None
        self._timer_when: float | None = None
        self._ticks = ticks
        """The group running this endpoint's ticks (then it has no timer of its own)."""
        self._open_sockets = 0
        self._closing = False
        self._closed = self._loop.create_future()

    @classmethod
    async def create(
        cls,
        session: RtpSession,
        local_host: str,
        port_allocator: PortAllocator,
        on_event: EventCallback | None = None,
        *,
        port: int | None = None,
        reservation: PortReservation | None = None,
        srtp: SrtpContext | None = None,
        ticks: TickGroups | None = None,
    ) -> RtpEndpoint:
        """Bind an RTP/RTCP port pair on ``local_host`` (IPv4 or IPv6) and start the session.

        Without ``port`` a free pair is taken from ``port_allocator`` (pairs another process
        holds are skipped).  With ``port`` — obtained earlier from ``port_allocator.allocate()``,
        e.g. to put it in the SDP answer before media starts — exactly that pair is bound.
        Either way the endpoint owns the port from here on: it is released when the endpoint
        has closed, or at once if ``create`` raises.

        With ``srtp`` (the negotiated SDES suite and keys) all media on the pair is SRTP/SRTCP.
        With ``ticks`` the session's ticks run with the group of its grid's phase (its
        ``tick_start`` should come from ``ticks.place``), not on a timer of the endpoint's own.
        """
        loop = asyncio.get_running_loop()
        if reservation is not None:
            port = reservation.port
            rtp_sock, rtcp_sock = reservation.take()
        elif port is not None:
            try:
                rtp_sock, rtcp_sock = _bind_pair(local_host, port)
            except OSError:
                port_allocator.release(port)
                raise
        else:
            reserved = reserve_port_pair(local_host, port_allocator)
            port = reserved.port
            rtp_sock, rtcp_sock = reserved.take()
        endpoint = cls(session, local_host, port, port_allocator, on_event, srtp, ticks)
        try:
            endpoint._rtp, _ = await loop.create_datagram_endpoint(
                lambda: _SocketProtocol(endpoint, rtcp=False), sock=rtp_sock
            )
            endpoint._open_sockets += 1
            endpoint._rtcp, _ = await loop.create_datagram_endpoint(
                lambda: _SocketProtocol(endpoint, rtcp=True), sock=rtcp_sock
            )
            endpoint._open_sockets += 1
        except BaseException:
            if endpoint._rtp is not None:
                endpoint._rtp.close()  # releases the port once closed
            else:
                rtp_sock.close()
                port_allocator.release(port)
            rtcp_sock.close()
            raise
        session.wallclock_offset = time.time() - loop.time()
        logger.debug("RTP endpoint on %s:%d", local_host, port)
        if ticks is not None:
            ticks.join(endpoint, session.tick_start)
        endpoint._service(loop.time())
        return endpoint

    @property
    def local_addr(self) -> Address:
        """Local (host, RTP port)."""
        return (self.local_host, self.port)

    @property
    def rtcp_port(self) -> int:
        """Local RTCP port."""
        return self.port + 1

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closing

    # -- I/O ----------------------------------------------------------------------------------

    def _datagram_received(self, data: bytes, addr: tuple[str, int], rtcp: bool) -> None:
        if self._closing:
            return
        srtp = self.srtp
        if srtp is not None:
            clear = (
                srtp.unprotect_rtcp(data)
                if rtcp or is_rtcp_datagram(data)
                else srtp.unprotect(data)
            )
            if clear is None:
                return  # forged, replayed or plain: counted by the context
            data = clear
        now = self._loop.time()
        source = source_address(addr)
        session = self.session
        if rtcp:
            session.receive_rtcp(data, source, now)
        else:
            session.receive_datagram(data, source, now)
        # A received datagram yields events at most (latching, DTMF): RTP and RTCP to send
        # come from the timer. The timer is re-armed all the same (inactivity moved).
        event = session.next_event()
        if event is not None:
            self._service(now, event)
        elif self._ticks is None:
            self._arm_timer()

    def _on_timer(self) -> None:
        self._timer = None
        if self._closing:
            return
        now = self._loop.time()
        self.session.handle_timer(now)
        self._service(now)

    def _on_tick(self, now: float) -> None:
        """The group's tick (see :class:`TickGroups`)."""
        if not self._closing:
            self.session.handle_timer(now)
            self._service(now)

    def _service(self, now: float, event: RtpEvent | None = None) -> None:
        session = self.session
        if event is None:
            event = session.next_event()
        while event is not None:
            if self.on_event is not None:
                try:
                    self.on_event(event)
                except Exception:
                    # The event's name only: its repr holds the audio payload.
                    logger.exception("RTP event handler failed on %s", type(event).__name__)
            if self._closing:
                return
            event = session.next_event()
        rtp = self._rtp
        if rtp is None:
            return
        srtp = self.srtp
        ipv6 = self._ipv6
        for data, addr in session.datagrams_to_send(now):
            wire = data if srtp is None else srtp.protect(data)
            if wire is not None:
                rtp.sendto(wire, destination_address(addr, True) if ipv6 else addr)
        for data, addr in session.rtcp_to_send(now):
            self._send_rtcp(data, addr)
        if self._ticks is None:
            self._arm_timer()

    def _send_rtcp(self, data: bytes, addr: Address) -> None:
        transport = self._rtp if self.session.rtcp_mux else self._rtcp
        wire = data if self.srtp is None else self.srtp.protect_rtcp(data)
        if transport is not None and wire is not None:
            transport.sendto(wire, destination_address(addr, self._ipv6))

    def _arm_timer(self) -> None:
        when = self.session.get_timer()
        timer = self._timer
        if timer is not None:
            # The armed deadline is remembered here: uvloop returns a plain Handle (no
            # ``when()``) for deadlines already in the past.
            if when == self._timer_when:
                return
            timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = self._loop.call_at(when, self._on_timer)
            self._timer_when = when

    # -- shutdown -----------------------------------------------------------------------------

    def close(self) -> None:
        """Send RTCP BYE, close both sockets; the ports return to the allocator once closed."""
        if self._closing:
            return
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._ticks is not None:
            self._ticks.leave(self, self.session.tick_start)
        for data, addr in self.session.close(self._loop.time()):
            self._send_rtcp(data, addr)
        # No event is delivered after close: drop the handler (it usually holds the call, which
        # holds this endpoint; without the cycle the call is freed as soon as it is let go).
        self.on_event = None
        for transport in (self._rtp, self._rtcp):
            if transport is not None:
                transport.close()
        logger.debug("RTP endpoint on %s:%d closing", self.local_host, self.port)

    async def wait_closed(self) -> None:
        """Wait until both sockets are closed and the port pair is released."""
        await asyncio.shield(self._closed)

    def _socket_closed(self) -> None:
        self._open_sockets -= 1
        if self._open_sockets == 0:
            self._allocator.release(self.port)
            if not self._closed.done():
                self._closed.set_result(None)
