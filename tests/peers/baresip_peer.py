"""A headless baresip softphone peer (Debian ``baresip`` 1.0.x), driven over its ctrl_tcp socket.

No sound card: the audio source is the ``aufile`` module (plays a WAV), the player is an
``aubridge`` device nobody reads, and the ``sndfile`` audio filter dumps what was sent and what was
received (decoded, before the player) to ``dump-<time>-enc.wav`` / ``dump-<time>-dec.wav`` in the
work directory. Everything binds 127.0.0.1 (``net_interface 127.0.0.1``, ``sip_listen``); no
STUN/TURN/ICE, no stdio UI. Commands are the menu module's (``dial``, ``hangup``, ``quit``) sent
as JSON netstrings; call events (``CALL_ESTABLISHED``, ``CALL_CLOSED``...) come back the same way.

    async with Baresip(workdir, play=wav) as phone:
        await phone.command("dial", "sip:echo@127.0.0.1:5060")
        await phone.wait_event("CALL_ESTABLISHED")
        ...
        await phone.command("hangup")
        await phone.wait_event("CALL_CLOSED")
    phone.received_wav()  # what the far end sent, as baresip decoded it

SDES-SRTP: ``mediaenc="srtp-mand"`` loads the ``srtp`` module and puts ``;mediaenc=srtp-mand``
on the account line, so the offer is RTP/SAVP with ``a=crypto`` lines (``"srtp"``: RTP/AVP with
``a=crypto``, best effort; ``"srtp-mandf"``: RTP/SAVPF). :func:`baresip_srtp_available` says
whether the module is installed.

Notes on this version: ``aufile`` ends the call when its WAV runs out ("end of file"), so pad
the WAV if the test hangs up itself; ``-t`` and ``-e`` exist but ctrl_tcp gives events back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

from tests.peers.harness import free_udp_range
from tests.peers.processes import stop_process

__all__ = [
    "MEDIAENC",
    "Baresip",
    "BaresipError",
    "baresip_available",
    "baresip_srtp_available",
    "free_tcp_port",
]

BARESIP = shutil.which("baresip")
MODULE_PATH = Path("/usr/lib/baresip/modules")
MODULES = ("g711.so", "aufile.so", "aubridge.so", "sndfile.so")
APP_MODULES = ("account.so", "menu.so", "ctrl_tcp.so")
SRTP_MODULE = "srtp.so"
#: ``mediaenc`` values of the srtp module: best effort (RTP/AVP), RTP/SAVP, RTP/SAVPF.
MEDIAENC = ("srtp", "srtp-mand", "srtp-mandf")

CONFIG = """\
poll_method\t\tepoll
call_local_timeout\t30
call_max_calls\t\t4
sip_listen\t\t127.0.0.1:{sip_port}
net_interface\t\t127.0.0.1
audio_player\t\taubridge,sipagent-test-sink
audio_alert\t\taubridge,sipagent-test-sink
audio_source\t\taufile,{play}
audio_buffer\t\t20-160
ausrc_format\t\ts16
auplay_format\t\ts16
jitter_buffer_delay\t1-10
rtp_ports\t\t{rtp_min}-{rtp_max}
rtp_stats\t\tyes
module_path\t\t{module_path}
{modules}
ctrl_tcp_listen\t\t127.0.0.1:{ctrl_port}
snd_path\t\t{snd_path}
"""


# How the -s trace frames each SIP message (terminal colour codes around it).
_TRACE_START = "\x1b[36;1m#\n"
_TRACE_END = "\x1b[;m"


class BaresipError(RuntimeError):
    """baresip did not start, or an awaited event did not come."""


def baresip_available() -> bool:
    """The binary and every module this peer loads are installed."""
    return BARESIP is not None and all((MODULE_PATH / m).exists() for m in (*MODULES, *APP_MODULES))


def baresip_srtp_available() -> bool:
    """:func:`baresip_available` and the ``srtp`` module (SDES) is installed too."""
    return baresip_available() and (MODULE_PATH / SRTP_MODULE).exists()


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _netstring(obj: dict[str, Any]) -> bytes:
    payload = json.dumps(obj).encode()
    return str(len(payload)).encode() + b":" + payload + b","


class Baresip:
    """One baresip process with its own config directory (``workdir``)."""

    def __init__(
        self,
        workdir: str | Path,
        *,
        play: str | Path,
        codecs: str = "PCMU,PCMA",
        sip_port: int | None = None,
        rtp_ports: tuple[int, int] | None = None,
        ready_timeout: float = 10.0,
        mediaenc: str | None = None,
    ) -> None:
        if mediaenc is not None and mediaenc not in MEDIAENC:
            raise ValueError(f"mediaenc must be one of {MEDIAENC}, not {mediaenc!r}")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.play = Path(play)
        self.codecs = codecs
        self.sip_port = sip_port or free_tcp_port()
        self.ctrl_port = free_tcp_port()
        if rtp_ports is None:
            base = free_udp_range(18000, 20000)  # below the ephemeral range (32768+)
            rtp_ports = (base, base + 39)
        self.rtp_ports = rtp_ports
        self.ready_timeout = ready_timeout
        self.mediaenc = mediaenc
        self.log_path = self.workdir / "baresip.log"
        self.events: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []
        self.process: subprocess.Popen[bytes] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._tokens = 0

    @property
    def aor(self) -> str:
        """This phone's address of record."""
        return f"sip:baresip@127.0.0.1:{self.sip_port}"

    def write_config(self) -> None:
        media_modules = (*MODULES, SRTP_MODULE) if self.mediaenc else MODULES
        modules = "\n".join(
            [
                *(f"module\t\t\t{m}" for m in media_modules),
                *(f"module_app\t\t{m}" for m in APP_MODULES),
            ]
        )
        (self.workdir / "config").write_text(
            CONFIG.format(
                sip_port=self.sip_port,
                play=self.play,
                rtp_min=self.rtp_ports[0],
                rtp_max=self.rtp_ports[1],
                module_path=MODULE_PATH,
                modules=modules,
                ctrl_port=self.ctrl_port,
                snd_path=self.workdir,
            )
        )
        # regint=0: no REGISTER, the account only gives the From identity; in this version the
        # codec list is an account parameter (a global audio_codecs line is ignored)
        codecs = ",".join(f"{name}/8000/1" for name in self.codecs.split(","))
        account = f"<{self.aor}>;regint=0;audio_codecs={codecs}"
        if self.mediaenc:
            account += f";mediaenc={self.mediaenc}"
        (self.workdir / "accounts").write_text(account + "\n")
        (self.workdir / "contacts").write_text("")

    async def start(self) -> None:
        """Start baresip (SIP trace on: ``-s``) and connect to its control socket."""
        if BARESIP is None:
            raise BaresipError("baresip is not installed")
        self.write_config()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [BARESIP, "-f", str(self.workdir), "-s"],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ready_timeout
        while True:
            if self.process.poll() is not None:
                raise BaresipError(
                    f"baresip exited with {self.process.returncode}:\n{self.log()[-3000:]}"
                )
            if b"baresip is ready." in self.log_path.read_bytes():
                with contextlib.suppress(OSError):
                    self._reader, self._writer = await asyncio.open_connection(
                        "127.0.0.1", self.ctrl_port
                    )
                    break
            if loop.time() > deadline:
                await self.stop()
                raise BaresipError(
                    f"baresip not ready in {self.ready_timeout:g} s:\n{self.log()[-3000:]}"
                )
            await asyncio.sleep(0.05)
        self._task = loop.create_task(self._read())

    async def _read(self) -> None:
        assert self._reader is not None
        buffer = b""
        while True:
            chunk = await self._reader.read(65536)
            if not chunk:
                break
            buffer += chunk
            while b":" in buffer:
                length, _, rest = buffer.partition(b":")
                size = int(length)
                if len(rest) < size + 1:
                    break
                message = json.loads(rest[:size])
                buffer = rest[size + 1 :]  # the trailing ","
                if message.get("event"):
                    self.events.append(message)
                else:
                    self.responses.append(message)
                self._changed.set()
        self._changed.set()

    async def command(self, name: str, params: str = "", timeout: float = 5.0) -> dict[str, Any]:
        """Run a (menu) command; its response (``ok``, ``data``)."""
        assert self._writer is not None
        self._tokens += 1
        token = f"t{self._tokens}"
        request: dict[str, Any] = {"command": name, "token": token}
        if params:
            request["params"] = params
        self._writer.write(_netstring(request))
        await self._writer.drain()
        return await self._wait(
            lambda: next((r for r in self.responses if r.get("token") == token), None),
            timeout,
            f"response to {name!r}",
        )

    async def wait_event(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """The first event of type ``kind`` (e.g. ``CALL_ESTABLISHED``), waiting if need be."""
        return await self._wait(
            lambda: next((e for e in self.events if e.get("type") == kind), None),
            timeout,
            f"event {kind}",
        )

    async def _wait(self, find: Any, timeout: float, what: str) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (found := find()) is None:
            remaining = deadline - loop.time()
            if remaining <= 0 or (self._task is not None and self._task.done()):
                raise BaresipError(
                    f"no {what} in {timeout:g} s; events "
                    f"{[e.get('type') for e in self.events]}\n"
                    f"{self.log()[-4000:]}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.2))
        return dict(found)

    async def stop(self) -> None:
        """``quit``, then SIGTERM/SIGKILL by PID if it lingers."""
        if self._writer is not None and self.process is not None and self.process.poll() is None:
            with contextlib.suppress(Exception):
                self._writer.write(_netstring({"command": "quit", "token": "quit"}))
                await self._writer.drain()
        loop = asyncio.get_running_loop()
        if self.process is not None:
            deadline = loop.time() + 3.0
            while self.process.poll() is None and loop.time() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.to_thread(
                stop_process, self.process, ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0))
            )
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def __aenter__(self) -> Baresip:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def log(self) -> str:
        """baresip's output so far (with the SIP trace)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def sip_trace(self) -> list[tuple[str, str]]:
        """The SIP messages of the ``-s`` trace so far: (``"UDP a:p -> b:q"``, message text)."""
        messages = []
        for block in self.log().split(_TRACE_START)[1:]:
            route, _, message = block.partition("\n")
            messages.append((route, message.split(_TRACE_END, 1)[0]))
        return messages

    def received_wav(self) -> Path:
        """The sndfile dump of the decoded audio baresip received (the last call's)."""
        dumps = sorted(self.workdir.glob("dump-*-dec.wav"))
        if not dumps:
            raise BaresipError(f"no sndfile decode dump in {self.workdir}")
        return dumps[-1]

    def rtp_packets(self) -> tuple[int, int] | None:
        """(transmitted, received) RTP packets from baresip's end-of-call summary, if printed."""
        for line in reversed(self.log().splitlines()):
            fields = line.split()
            if len(fields) == 3 and fields[0] == "packets:":
                return int(fields[1]), int(fields[2])
        return None
