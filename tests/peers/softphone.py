"""A small asyncio SIP UAC + RTP peer for in-process server tests (UDP, 127.0.0.1 only).

It places one call, streams 20 ms PCMU payloads on an absolute 20 ms grid, records what
comes back (payloads with their arrival time), sends RFC 4733 DTMF or SIP INFO, and hangs up
or answers the server's BYE. SIPp and PJSIP are the independent peers; this one exists
so a test can look at every packet and every timestamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass, field

from aiortc.rtp import RtpPacket

from sipagent.message import Headers, Request, Response, make_response, parse_message

__all__ = ["Softphone", "Received"]

OFFER = (
    "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP {formats}\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na={direction}\r\n"
)


@dataclass
class Received:
    """An RTP packet that came back."""

    at: float
    packet: RtpPacket


class _Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int], float]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr, asyncio.get_running_loop().time()))


@dataclass
class Softphone:
    """One call from 127.0.0.1 to ``server`` (host, port)."""

    server: tuple[str, int]
    user: str = "echo"
    formats: str = "0 8 101"
    sip: _Udp = field(default_factory=_Udp)
    rtp: _Udp = field(default_factory=_Udp)
    received: list[Received] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    remote_media: tuple[str, int] | None = None
    answer: str = ""

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self.sip, local_addr=("127.0.0.1", 0))
        await loop.create_datagram_endpoint(lambda: self.rtp, local_addr=("127.0.0.1", 0))
        self.call_id = secrets.token_hex(8) + "@127.0.0.1"
        self.tag = secrets.token_hex(4)
        self.cseq = 0
        self.to_tag: str | None = None
        self._rtp_task = loop.create_task(self._collect_rtp())

    @property
    def sip_port(self) -> int:
        assert self.sip.transport is not None
        return int(self.sip.transport.get_extra_info("sockname")[1])

    @property
    def rtp_port(self) -> int:
        assert self.rtp.transport is not None
        return int(self.rtp.transport.get_extra_info("sockname")[1])

    def request(self, method: str, body: str = "", *, cseq: int | None = None,
                branch: str | None = None, extra: tuple[tuple[str, str], ...] = (),
                content_type: str = "application/sdp") -> Request:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        headers = Headers()
        headers.add("Via", f"SIP/2.0/UDP 127.0.0.1:{self.sip_port};branch="
                    f"{branch or 'z9hG4bK' + secrets.token_hex(6)};rport")
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<sip:phone@127.0.0.1:{self.sip_port}>;tag={self.tag}")
        to = f"<sip:{self.user}@{self.server[0]}:{self.server[1]}>"
        headers.add("To", to + (f";tag={self.to_tag}" if self.to_tag else ""))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{cseq} {method}")
        headers.add("Contact", f"<sip:phone@127.0.0.1:{self.sip_port}>")
        for name, value in extra:
            headers.add(name, value)
        if body:
            headers.add("Content-Type", content_type)
        uri = f"sip:{self.user}@{self.server[0]}:{self.server[1]}"
        return Request(method, uri, headers, body.encode())

    def send(self, message: Request | Response) -> None:
        assert self.sip.transport is not None
        self.sip.transport.sendto(message.serialize(), self.server)

    async def next_message(self, timeout: float = 5.0) -> Request | Response:
        data, _, _ = await asyncio.wait_for(self.sip.queue.get(), timeout)
        message = parse_message(data)
        if isinstance(message, Response):
            self.responses.append(message)
        else:
            self.requests.append(message)
        return message

    async def final_response(self, timeout: float = 5.0) -> Response:
        while True:
            message = await self.next_message(timeout)
            if isinstance(message, Response) and message.status >= 200:
                return message

    def offer(self, direction: str = "sendrecv") -> str:
        return OFFER.format(port=self.rtp_port, formats=self.formats, direction=direction)

    async def call(self, *, body: str | None = None,
                   extra: tuple[tuple[str, str], ...] = ()) -> Response:
        """INVITE, wait for the final response, ACK it (2xx: new transaction)."""
        invite = self.request("INVITE", self.offer() if body is None else body, extra=extra)
        self.send(invite)
        final = await self.final_response()
        if 200 <= final.status < 300:
            self.to_tag = final.to.tag
            self.answer = final.body.decode()
            for line in self.answer.splitlines():
                if line.startswith("m=audio"):
                    port = int(line.split()[1])
                elif line.startswith("c=IN IP4"):
                    host = line.split()[2]
            self.remote_media = (host, port)
            self.send(self.request("ACK", cseq=invite.cseq.seq))
        else:
            ack = self.request("ACK", cseq=invite.cseq.seq,
                               branch=invite.top_via.branch)
            ack.headers.set("To", final.headers.get("To") or "")
            self.send(ack)
        return final

    async def stream(self, payloads: list[bytes], *, payload_type: int = 0,
                     source: _Udp | None = None) -> None:
        """Send one payload per 20 ms on an absolute grid (marker on the first)."""
        assert self.remote_media is not None
        sender = (source or self.rtp).transport
        assert sender is not None
        loop = asyncio.get_running_loop()
        start = loop.time()
        ssrc = secrets.randbits(32)
        for index, payload in enumerate(payloads):
            packet = RtpPacket(payload_type=payload_type, marker=int(index == 0),
                               sequence_number=index & 0xFFFF, timestamp=index * 160,
                               ssrc=ssrc, payload=payload)
            sender.sendto(packet.serialize(), self.remote_media)
            delay = start + (index + 1) * 0.020 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)

    async def send_dtmf(self, digit: str, *, payload_type: int = 101,
                        marker: bool = True) -> None:
        """One RFC 4733 event: 3 packets of 20 ms, then the end packet 3 times."""
        assert self.remote_media is not None and self.rtp.transport is not None
        event = "0123456789*#ABCD".index(digit)
        ssrc, timestamp = 0x1234, 80_000
        for index in range(6):
            end = index >= 3
            duration = min(index + 1, 4) * 160
            payload = bytes([event, (0x80 if end else 0) | 10]) + duration.to_bytes(2, "big")
            packet = RtpPacket(payload_type=payload_type, marker=int(marker and index == 0),
                               sequence_number=1000 + index, timestamp=timestamp,
                               ssrc=ssrc, payload=payload)
            self.rtp.transport.sendto(packet.serialize(), self.remote_media)
            await asyncio.sleep(0.020)

    async def hangup(self) -> Response:
        self.send(self.request("BYE"))
        return await self.final_response()

    async def expect_bye(self, timeout: float) -> Request:
        """Wait for the server's BYE and answer it 200."""
        while True:
            message = await self.next_message(timeout)
            if isinstance(message, Request) and message.method == "BYE":
                self.send(make_response(message, 200))
                return message

    async def _collect_rtp(self) -> None:
        while True:
            data, _, at = await self.rtp.queue.get()
            if len(data) >= 2 and 200 <= data[1] <= 204:
                continue
            with contextlib.suppress(ValueError):
                self.received.append(Received(at=at, packet=RtpPacket.parse(data)))

    async def close(self) -> None:
        self._rtp_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._rtp_task
        for udp in (self.sip, self.rtp):
            if udp.transport is not None:
                udp.transport.close()
