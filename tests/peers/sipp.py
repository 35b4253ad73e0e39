"""Run SIPp scenarios as subprocesses, on 127.0.0.1 only, always bounded in time.

    result = run_sipp("tests/sipp/uac_basic_rtp.xml", remote=("127.0.0.1", 5060), timeout=30)
    assert result.ok, result.describe()
    assert "SIP/2.0 200 OK" in result.messages

For a UAS (or any peer that must run while something else happens) use ``start_sipp`` and
``SippProcess.wait``. Every run gets its own work directory holding the statistics CSV
(``-trace_stat``), the message log (``-trace_msg``), the unexpected-message log (``-trace_err``),
the final screen and the process' stdout/stderr.

Command line built here (UAC against sipagent on 127.0.0.1:5060)::

    sipp -sf tests/sipp/uac_basic_rtp.xml 127.0.0.1:5060 -s echo -i 127.0.0.1 -p <free>
         -mi 127.0.0.1 -mp <free even port> -cp <free> -t u1 -m 1 -l 1 -r 1 -rp 1000 -nostdin
         -timeout <t-2>s -timeout_error -recv_timeout 10000 -trace_stat -stf <dir>/stat.csv -fd 1
         -trace_err ... -trace_screen ... -trace_msg ...

The request URI is ``sip:[service]@remote``; RTP is sent from and received on ``-mp``, which is
what the scenarios put in their SDP (``[media_port]``). The pcaps a scenario plays are found
relative to the scenario file (``../fixtures/...``); SIPp runs with tests/sipp as its working
directory too. A scenario may ask for extra options in a ``<!-- sipp-args: ... -->`` comment
(uac_retrans.xml needs ``-nr``). Playing pcaps needs root (a raw socket).

SIPp exit codes: 0 all calls succeeded, 1 at least one failed, 97 stopped by an internal command,
99 normal exit without any call processed, 255 fatal error, 254 could not bind a socket.
SIPp binds the media port given with ``-mp`` and ``-mp + 2`` (audio and video), so media ports
come from :func:`free_media_port`, which finds four consecutive free UDP ports.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.peers.processes import stop_process

__all__ = [
    "LOCALHOST",
    "SCENARIOS",
    "SippError",
    "SippProcess",
    "SippResult",
    "free_media_port",
    "free_port",
    "free_tcp_port",
    "free_udp_port",
    "run_sipp",
    "sipp_available",
    "sipp_running",
    "start_sipp",
    "wait_udp_bound",
]

LOCALHOST = "127.0.0.1"
SCENARIOS = Path(__file__).resolve().parents[1] / "sipp"
"""tests/sipp: the scenario files; pcaps they play are referenced relative to this directory."""

_EXIT_MEANINGS = {
    0: "all calls succeeded",
    1: "at least one call failed",
    97: "exit on internal command",
    99: "normal exit without calls processed",
    254: "fatal error binding a socket",
    255: "fatal error",
}
_STOP_GRACE = 3.0

# Ports handed out by this process, so that consecutive calls never return the same one even
# before the first caller has bound it.
_handed_out: set[int] = set()


class SippError(RuntimeError):
    """SIPp is missing or could not be started."""


def sipp_available() -> bool:
    """True when a ``sipp`` binary is on PATH."""
    return shutil.which("sipp") is not None


# ------------------------------------------------------------------------------------------ ports


def _bindable(port: int, kind: int, host: str) -> bool:
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _kernel_port(host: str, kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def free_port(host: str = LOCALHOST, *, udp: bool = True, tcp: bool = False) -> int:
    """A port free on ``host`` for UDP and/or TCP, not handed out before by this process."""
    for _attempt in range(200):
        port = _kernel_port(host, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        if port in _handed_out:
            continue
        if udp and tcp and not _bindable(port, socket.SOCK_STREAM, host):
            continue
        _handed_out.add(port)
        return port
    raise SippError("no free port found")


def free_udp_port(host: str = LOCALHOST) -> int:
    """A free UDP port on ``host``."""
    return free_port(host, udp=True)


def free_tcp_port(host: str = LOCALHOST) -> int:
    """A free TCP port on ``host``."""
    return free_port(host, udp=False, tcp=True)


def free_media_port(host: str = LOCALHOST, count: int = 4) -> int:
    """An even UDP port P with P..P+count-1 all free (RTP, RTCP, and SIPp's video pair)."""
    for _attempt in range(200):
        base = _kernel_port(host, socket.SOCK_DGRAM) & ~1
        ports = range(base, base + count)
        if base < 1024 or base + count > 65535 or any(p in _handed_out for p in ports):
            continue
        if all(_bindable(p, socket.SOCK_DGRAM, host) for p in ports):
            _handed_out.update(ports)
            return base
    raise SippError("no free media port range found")


def wait_udp_bound(port: int, host: str = LOCALHOST, timeout: float = 5.0) -> bool:
    """Poll until something has bound UDP ``host:port``; False if that took longer than timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _bindable(port, socket.SOCK_DGRAM, host):
            return True
        time.sleep(0.02)
    return False


# ----------------------------------------------------------------------------------------- result


@dataclass
class SippResult:
    """Outcome of one SIPp run."""

    command: list[str]
    """The full command line."""
    returncode: int | None
    """SIPp's exit code (None if it had to be killed)."""
    timed_out: bool
    """True when SIPp did not finish within the timeout and was stopped."""
    successful: int | None
    """SuccessfulCall(C) from the statistics CSV, or None when there was none."""
    failed: int | None
    """FailedCall(C) from the statistics CSV, or None when there was none."""
    stats: dict[str, str]
    """Last row of the statistics CSV by column name (empty when there was none)."""
    messages: str
    """The SIP messages sent and received (-trace_msg)."""
    errors: str
    """Unexpected messages and errors (-trace_err)."""
    screen: str
    """The final statistics screen."""
    stdout: str
    """SIPp's stdout (screen refreshes)."""
    stderr: str
    """SIPp's stderr (warnings, pcap loading, fatal errors)."""
    workdir: Path
    """Where all the files of this run are."""

    @property
    def ok(self) -> bool:
        """SIPp exited 0 (every call succeeded) in time."""
        return self.returncode == 0 and not self.timed_out

    def count(self, text: str) -> int:
        """How many times ``text`` occurs in the message log (e.g. "SIP/2.0 481")."""
        return self.messages.count(text)

    def describe(self) -> str:
        """A summary for assertion messages: exit code, counts, errors and the tail of the logs."""
        meaning = _EXIT_MEANINGS.get(self.returncode or 0, "?") if self.returncode is not None \
            else "killed"
        return "\n".join([
            f"sipp exit={self.returncode} ({meaning}) timed_out={self.timed_out} "
            f"successful={self.successful} failed={self.failed} workdir={self.workdir}",
            f"command: {' '.join(self.command)}",
            "--- stderr ---", self.stderr[-2000:],
            "--- errors ---", self.errors[-3000:],
            "--- messages (tail) ---", self.messages[-4000:],
        ])


_MAX_LOG_BYTES = 4 << 20


def _read(path: Path) -> str:
    """The file's text (its last 4 MiB when larger), or "" when it does not exist."""
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - _MAX_LOG_BYTES))
            return log.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def _last_stats_row(path: Path) -> dict[str, str]:
    text = _read(path)
    rows = list(csv.reader(text.splitlines(), delimiter=";"))
    if len(rows) < 2:
        return {}
    header = rows[0]
    return dict(zip(header, rows[-1], strict=False))


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------- process


@dataclass
class SippProcess:
    """A running SIPp; ``wait()`` collects the result, ``stop()`` ends it early."""

    process: subprocess.Popen[bytes]
    """The SIPp subprocess."""
    command: list[str]
    """The full command line."""
    workdir: Path
    """The run's work directory."""
    local_port: int
    """SIP port SIPp listens on (-p)."""
    media_port: int
    """RTP port SIPp uses (-mp)."""
    deadline: float
    """time.monotonic() after which wait() stops SIPp."""
    _result: SippResult | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        """The SIPp process id."""
        return self.process.pid

    def wait_ready(self, timeout: float = 5.0) -> bool:
        """Wait until SIPp has bound its SIP port (False if it exited or took too long)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running():
            if wait_udp_bound(self.local_port, LOCALHOST, timeout=0.1):
                return self.running()
        return False

    def running(self) -> bool:
        """True while SIPp has not exited."""
        return self.process.poll() is None

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for SIPp to exit (until its deadline or ``timeout``), stop it if needed."""
        if self._result is not None:
            return self._result
        limit = self.deadline - time.monotonic() if timeout is None else timeout
        timed_out = False
        try:
            self.process.wait(timeout=max(0.0, limit))
        except subprocess.TimeoutExpired:
            timed_out = True
            self._terminate()
        self._result = self._collect(timed_out)
        return self._result

    def stop(self) -> SippResult:
        """Stop SIPp now (SIGTERM, then SIGKILL) and collect what it wrote."""
        if self._result is not None:
            return self._result
        stopped_early = self.running()
        self._terminate()
        self._result = self._collect(stopped_early)
        return self._result

    def _terminate(self) -> None:
        stop_process(self.process, ((signal.SIGTERM, _STOP_GRACE), (signal.SIGKILL, _STOP_GRACE)))

    def _collect(self, timed_out: bool) -> SippResult:
        stats = _last_stats_row(self.workdir / "stat.csv")
        returncode = self.process.returncode
        if returncode is not None and returncode < 0:  # killed by a signal
            returncode = None
        return SippResult(
            command=self.command,
            returncode=returncode,
            timed_out=timed_out,
            successful=_int_or_none(stats.get("SuccessfulCall(C)")),
            failed=_int_or_none(stats.get("FailedCall(C)")),
            stats=stats,
            messages=_read(self.workdir / "messages.log"),
            errors=_read(self.workdir / "errors.log"),
            screen=_read(self.workdir / "screen.log"),
            stdout=_read(self.workdir / "stdout.txt"),
            stderr=_read(self.workdir / "stderr.txt"),
            workdir=self.workdir,
        )

    def __enter__(self) -> SippProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.running():
            self.stop()


_SIPP_ARGS = re.compile(r"<!--\s*sipp-args:(.*?)-->", re.DOTALL)


def _scenario_args(scenario: str | Path) -> list[str]:
    """-sf/-sn for the scenario, plus the options a ``<!-- sipp-args: ... -->`` line asks for."""
    name = str(scenario)
    if name.endswith(".xml") or os.sep in name:
        path = Path(name)
        if not path.is_absolute() and not path.exists():
            path = SCENARIOS / path.name
        if not path.exists():
            raise SippError(f"scenario not found: {scenario}")
        declared = _SIPP_ARGS.search(path.read_text(errors="replace"))
        return ["-sf", str(path.resolve()), *(shlex.split(declared.group(1)) if declared else [])]
    return ["-sn", name]  # a built-in: uac, uas, uac_pcap, ...


def start_sipp(
    scenario: str | Path,
    *,
    remote: tuple[str, int] | str | None = None,
    service: str = "echo",
    calls: int = 1,
    limit: int = 1,
    rate: float = 1.0,
    rate_period_ms: int = 1000,
    local_ip: str = LOCALHOST,
    local_port: int | None = None,
    media_ip: str = LOCALHOST,
    media_port: int | None = None,
    transport: str = "u1",
    rtp_echo: bool = False,
    keys: Mapping[str, str] | None = None,
    variables: Mapping[str, str] | None = None,
    recv_timeout_ms: int | None = 10_000,
    trace_messages: bool = True,
    timeout: float = 30.0,
    extra_args: Sequence[str] = (),
    workdir: str | Path | None = None,
) -> SippProcess:
    """Start SIPp in the background and return at once.

    ``scenario`` is a file (``tests/sipp/x.xml``, or just ``x.xml`` for one in tests/sipp) or a
    built-in name (``uas``). ``remote`` is the peer for a UAC (``(host, port)`` or ``"host:port"``).
    ``keys`` become ``-key name value`` ([name] in the scenario), ``variables`` ``-set``.
    SIPp gets its own ``-timeout`` (with ``-timeout_error``) a little shorter than ``timeout``, and
    ``recv_timeout_ms`` fails a call that waits for a message longer than that. Turn
    ``trace_messages`` off for load runs (the message log grows with every call).
    """
    binary = shutil.which("sipp")
    if binary is None:
        raise SippError("sipp is not installed (Debian package sip-tester; run bash .ci/setup)")
    if workdir is None:
        workdir = tempfile.mkdtemp(prefix="sipp-")
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    local_port = local_port or free_udp_port(local_ip)
    media_port = media_port or free_media_port(media_ip)
    control_port = free_udp_port(local_ip)
    sipp_timeout = max(1, int(timeout - 2))
    command = [binary, *_scenario_args(scenario)]
    if remote is not None:
        command.append(remote if isinstance(remote, str) else f"{remote[0]}:{remote[1]}")
    command += [
        "-s", service,
        "-i", local_ip, "-p", str(local_port),
        "-mi", media_ip, "-mp", str(media_port),
        "-cp", str(control_port),
        "-t", transport,
        "-m", str(calls), "-l", str(limit),
        "-r", f"{rate:g}", "-rp", str(rate_period_ms),
        "-nostdin",
        "-timeout", f"{sipp_timeout}s", "-timeout_error",
        "-trace_stat", "-stf", str(work / "stat.csv"), "-fd", "1",
        "-trace_err", "-error_file", str(work / "errors.log"),
        "-trace_screen", "-screen_file", str(work / "screen.log"),
    ]
    if trace_messages:
        command += ["-trace_msg", "-message_file", str(work / "messages.log")]
    if recv_timeout_ms:
        command += ["-recv_timeout", str(recv_timeout_ms)]
    if rtp_echo:
        command.append("-rtp_echo")
    for name, value in (keys or {}).items():
        command += ["-key", name, str(value)]
    for name, value in (variables or {}).items():
        command += ["-set", name, str(value)]
    command += list(extra_args)
    with open(work / "stdout.txt", "wb") as stdout, open(work / "stderr.txt", "wb") as stderr:
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                cwd=SCENARIOS, start_new_session=True,
            )
        except OSError as exc:
            raise SippError(f"cannot start sipp: {exc}") from exc
    return SippProcess(process=process, command=command, workdir=work, local_port=local_port,
                       media_port=media_port, deadline=time.monotonic() + timeout)


def run_sipp(scenario: str | Path, **options: object) -> SippResult:
    """Start SIPp with ``start_sipp(scenario, **options)`` and wait for its result."""
    process = start_sipp(scenario, **options)  # type: ignore[arg-type]
    return process.wait()


@contextlib.contextmanager
def sipp_running(scenario: str | Path, **options: object) -> Iterator[SippProcess]:
    """Run SIPp for the duration of a ``with`` block; stopped on exit if still running."""
    process = start_sipp(scenario, **options)  # type: ignore[arg-type]
    try:
        yield process
    finally:
        if process.running():
            process.stop()
