"""A small blocking SIP UAC over UDP on 127.0.0.1, shared by the benchmarks.

bench/setup_time.py times call set-up with it; bench/loadgen.py sets up its calls with it;
bench/flood.py builds its INVITEs with :func:`build_request` and :func:`sdp_offer`.

One :class:`Uac` owns one SIP socket and places calls one after another:
:meth:`Uac.invite` sends the INVITE (retransmitted on Timer A until a provisional answer),
timestamps every answer with ``time.perf_counter()`` right after it arrives, ACKs the 200 and
returns the :class:`CallTiming` with the :class:`Dialog` needed for :meth:`Uac.bye`. Every wait
is bounded.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import select
import socket
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BYE_TIMEOUT",
    "INVITE_TIMEOUT",
    "CallTiming",
    "Dialog",
    "Uac",
    "build_request",
    "header",
    "sdp_media_address",
    "sdp_offer",
    "status_of",
]

LOCALHOST = "127.0.0.1"
INVITE_TIMEOUT = 5.0
"""Seconds to wait for the 200 OK (and the first RTP packet) before the call counts as failed."""
RTP_WAIT_AFTER_200 = 1.0
"""Seconds to keep waiting for the first RTP packet once the 200 OK is in."""
BYE_TIMEOUT = 2.0


def header(message: str, *names: str) -> str | None:
    """The first value of a header (long or compact name), case-insensitive."""
    wanted = {n.lower() for n in names}
    for line in message.split("\r\n")[1:]:
        if not line:
            break
        name, _, value = line.partition(":")
        if name.strip().lower() in wanted:
            return value.strip()
    return None


def status_of(message: str) -> int | None:
    """The status code of a SIP response (None for a request or garbage)."""
    if not message.startswith("SIP/2.0 "):
        return None
    with contextlib.suppress(IndexError, ValueError):
        return int(message[8:11])
    return None


def sdp_media_address(body: str) -> tuple[str, int] | None:
    host = re.search(r"^c=IN IP4 (\S+)", body, re.MULTILINE)
    port = re.search(r"^m=audio (\d+)", body, re.MULTILINE)
    if not host or not port:
        return None
    return host.group(1), int(port.group(1))


def sdp_offer(rtp_host: str, rtp_port: int) -> str:
    """PCMU + telephone-event, 20 ms, sendrecv."""
    return "\r\n".join([
        "v=0",
        f"o=bench {secrets.randbelow(10**9)} 1 IN IP4 {rtp_host}",
        "s=sipagent bench",
        f"c=IN IP4 {rtp_host}",
        "t=0 0",
        f"m=audio {rtp_port} RTP/AVP 0 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
        "",
    ])


def build_request(method: str, uri: str, *, local: tuple[str, int], server: tuple[str, int],
                  call_id: str, cseq: int, from_tag: str, to_tag: str | None = None,
                  body: str = "", branch: str | None = None, user_agent: str = "sipagent-bench",
                  ) -> bytes:
    """One UDP SIP request from ``local`` to the ``echo`` user at ``server``."""
    branch = branch or f"z9hG4bK-bench-{secrets.token_hex(8)}"
    to = f"<sip:echo@{server[0]}:{server[1]}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch={branch};rport",
        f"From: <sip:bench@{local[0]}:{local[1]}>;tag={from_tag}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:bench@{local[0]}:{local[1]}>",
        "Max-Forwards: 70",
        f"User-Agent: {user_agent}",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


@dataclass
class Dialog:
    """What a BYE needs, and where the server sends its RTP from."""

    call_id: str
    from_tag: str
    to_tag: str | None
    target: str
    """The remote target (the 200's Contact)."""
    remote_rtp: tuple[str, int] | None
    """The address in the server's SDP answer."""


@dataclass
class CallTiming:
    """What one call measured (milliseconds from the INVITE leaving)."""

    index: int
    started_at: float = 0.0
    """Unix time the INVITE left (to line outliers up with the server log)."""
    trying_ms: float | None = None
    ringing_ms: float | None = None
    ok_ms: float | None = None
    first_rtp_ms: float | None = None
    echo_ms: float | None = None
    """First probe frame sent → the same payload received back (bench/setup_time.py)."""
    invite_retransmissions: int = 0
    status: int | None = None
    error: str | None = None
    bye_ok: bool = False
    dialog: Dialog | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Uac:
    """Sequential SIP UAC over UDP on 127.0.0.1."""

    def __init__(self, server: tuple[str, int], user_agent: str = "sipagent-bench") -> None:
        self.server = server
        self.user_agent = user_agent
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind((LOCALHOST, 0))
        self.local: tuple[str, int] = (LOCALHOST, self.sip.getsockname()[1])

    def close(self) -> None:
        self.sip.close()

    def _request(self, method: str, uri: str, call_id: str, cseq: int, from_tag: str,
                 to_tag: str | None, body: str = "") -> bytes:
        return build_request(method, uri, local=self.local, server=self.server, call_id=call_id,
                             cseq=cseq, from_tag=from_tag, to_tag=to_tag, body=body,
                             user_agent=self.user_agent)

    def _recv_sip(self) -> str | None:
        try:
            data, _ = self.sip.recvfrom(65535)
        except BlockingIOError:
            return None
        return data.decode(errors="replace")

    def drain(self) -> None:
        """Drop stale datagrams (retransmitted responses of earlier calls)."""
        self.sip.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            for _ in range(10_000):
                self.sip.recvfrom(65535)

    def invite(self, index: int, rtp_port: int, rtp: socket.socket | None = None,
               timeout: float = INVITE_TIMEOUT) -> CallTiming:
        """INVITE offering ``rtp_port``, ACK the 200; with ``rtp`` also time its first packet.

        Without ``rtp`` it returns right after the ACK. The dialog is in ``timing.dialog``
        when the call was answered.
        """
        timing = CallTiming(index)
        self.drain()
        call_id = f"bench-{secrets.token_hex(8)}@{LOCALHOST}"
        from_tag = secrets.token_hex(4)
        uri = f"sip:echo@{self.server[0]}:{self.server[1]}"
        invite = self._request("INVITE", uri, call_id, 1, from_tag, None,
                               sdp_offer(LOCALHOST, rtp_port))
        sockets = [self.sip] if rtp is None else [self.sip, rtp]
        start = time.perf_counter()
        self.sip.sendto(invite, self.server)
        timing.started_at = time.time()
        next_retransmit, interval = start + 0.5, 0.5
        deadline = start + timeout
        while True:
            now = time.perf_counter()
            if timing.ok_ms is not None and (
                rtp is None or timing.first_rtp_ms is not None
                or now > start + timing.ok_ms / 1000 + RTP_WAIT_AFTER_200
            ):
                break
            if now >= deadline:
                timing.error = "no 200 OK" if timing.ok_ms is None else "no RTP"
                break
            if timing.trying_ms is None and timing.ok_ms is None and now >= next_retransmit:
                self.sip.sendto(invite, self.server)  # Timer A
                timing.invite_retransmissions += 1
                interval *= 2
                next_retransmit = now + interval
            wait = max(0.0, min(deadline, next_retransmit) - now)
            readable, _, _ = select.select(sockets, [], [], wait)
            arrived = time.perf_counter()
            if rtp is not None and rtp in readable:
                with contextlib.suppress(BlockingIOError):
                    data = rtp.recv(2048)
                    if timing.first_rtp_ms is None and len(data) >= 12 and data[0] >> 6 == 2:
                        timing.first_rtp_ms = (arrived - start) * 1000
            if self.sip not in readable:
                continue
            message = self._recv_sip()
            status = status_of(message or "")
            if (status is None or message is None
                    or header(message, "Call-ID", "i") != call_id
                    or not (header(message, "CSeq") or "").endswith("INVITE")):
                continue
            if status == 100 and timing.trying_ms is None:
                timing.trying_ms = (arrived - start) * 1000
            elif status == 180 and timing.ringing_ms is None:
                timing.ringing_ms = (arrived - start) * 1000
            elif status >= 200 and timing.ok_ms is None and timing.status is None:
                timing.status = status
                if status != 200:
                    timing.error = f"final response {status}"
                    break
                timing.ok_ms = (arrived - start) * 1000
                match = re.search(r";\s*tag=([^;>\s]+)", header(message, "To", "t") or "")
                to_tag = match.group(1) if match else None
                match = re.search(r"<([^>]+)>", header(message, "Contact", "m") or "")
                timing.dialog = Dialog(
                    call_id=call_id, from_tag=from_tag, to_tag=to_tag,
                    target=match.group(1) if match else uri,
                    remote_rtp=sdp_media_address(message.split("\r\n\r\n", 1)[-1]),
                )
                self.sip.sendto(self._request("ACK", timing.dialog.target, call_id, 1,
                                              from_tag, to_tag), self.server)
        return timing

    def bye(self, dialog: Dialog, timeout: float = BYE_TIMEOUT) -> bool:
        """BYE (retransmitted every 0.5 s); True when its 200 came back in time."""
        bye = self._request("BYE", dialog.target, dialog.call_id, 2, dialog.from_tag,
                            dialog.to_tag)
        start = time.perf_counter()
        self.sip.sendto(bye, self.server)
        next_retransmit, deadline = start + 0.5, start + timeout
        while (now := time.perf_counter()) < deadline:
            if now >= next_retransmit:
                self.sip.sendto(bye, self.server)
                next_retransmit = now + 0.5
            readable, _, _ = select.select([self.sip], [], [],
                                           max(0.0, min(next_retransmit, deadline) - now))
            if readable:
                message = self._recv_sip()
                if (message and status_of(message) == 200
                        and header(message, "Call-ID", "i") == dialog.call_id
                        and (header(message, "CSeq") or "").endswith("BYE")):
                    return True
        return False
