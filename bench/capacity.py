"""Capacity benchmark: server CPU, memory and RTP health at N concurrent echo calls.

    .venv/bin/python -m bench.capacity                       # sweep 50, 100 calls, 20 s each
    .venv/bin/python -m bench.capacity --calls 50,100,200 --duration 30

For every call count N a fresh ``sipagent run`` (echo model, INFO logs, a private RTP port range
outside the kernel's ephemeral range) is started as a subprocess, and SIPp places N calls with
bench/sipp/uac_stream.xml: PCMU only, and from the ACK to the BYE a continuous 20 ms PCMU stream
(SIPp's rtpstream looping the payloads of tests/fixtures/speech_pcmu.pcap), so each call carries
50 packets/s toward the server and the echo sends 50 packets/s back.

Once every call is answered and its ``rtp.packets_in`` grows (admin ``GET /sessions``), the
steady window starts; it ends shortly before the first call hangs up. Both ends are aligned on
the server's once-a-second refresh of the RTP counters, so the packet counts and the CPU time
cover the same interval. Measured over the window: server CPU (``/proc/<pid>/stat``
utime+stime) as % of one core and as ms per call-second, RSS, packets in/out per call per
second, RTP loss (RFC 3550 cumulative ``lost``), kernel drops on the server's sockets
(``/proc/net/udp``), jitter, and the CPU of SIPp and of everything else on the machine (the
machine may be shared: a busy neighbour shows there). After the calls: SIPp's successful/failed
calls, whole-call RTP totals from the ended sessions, calls left behind on the server, and the
server log's warnings/errors. A table is printed and JSON written to
bench/results/capacity-<date>.json (with the run directories: SIPp and server logs).

Every loop here is bounded in count and time; SIPp and the server are started here and stopped
here by PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # python bench/capacity.py as well as python -m bench.capacity
    sys.path.insert(0, str(REPO))

from tests.peers.processes import TERM_THEN_KILL, stop_process  # noqa: E402
from tests.peers.sipp import (  # noqa: E402
    LOCALHOST,
    free_media_port,
    free_tcp_port,
    free_udp_port,
)

BENCH = REPO / "bench"
RESULTS = BENCH / "results"
STREAM_SCENARIO = BENCH / "sipp" / "uac_stream.xml"
SPEECH_PCAP = REPO / "tests" / "fixtures" / "speech_pcmu.pcap"
STREAM_FILE = "speech.ulaw"
"""Raw PCMU written into SIPp's working directory; uac_stream.xml streams it in a loop."""

CLK_TCK = os.sysconf("SC_CLK_TCK")
FRAME_S = 0.020
"""RTP packet interval of every stream here (PCMU, 20 ms)."""
LOADGEN_GRACE_S = 5.0
"""bench.loadgen streams this much longer than ``--duration``: the window still ends where
SIPp's would, and the generator is still streaming (answering ``stats``) when asked."""
RTP_BLOCK = 1000
"""Ports in the server's private RTP range (pairs = RTP_BLOCK / 2)."""
RTP_CANDIDATES = (20200, 21200, 22200, 18200, 19200, 24200, 25200, 26200, 27200, 28200)
"""Where to look for a wholly free RTP range: below the kernel's ephemeral range (32768-60999)
and, first, between the ranges the test suites pick (10000-18000, 23000-32000, 30000+)."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -------------------------------------------------------------------------------- /proc probes


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (all its threads)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_runqueue_wait(pid: int) -> float:
    """Seconds the process's main thread (the event loop) has waited, runnable, for a CPU.

    Field 2 of ``/proc/<pid>/schedstat``: time on the run queue, not running. On a shared
    machine it says how much of the pacing jitter is the neighbours' doing.
    """
    try:
        with open(f"/proc/{pid}/schedstat") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return float("nan")


def proc_memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process, in MiB."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0]) / 1024
    return out


def system_cpu() -> tuple[float, float, float]:
    """(busy, total, steal) seconds of all CPUs together, from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    steal = values[7] if len(values) > 7 else 0
    total = sum(values[:8])  # guest time is already in user/nice
    return (total - idle - steal) / CLK_TCK, total / CLK_TCK, steal / CLK_TCK


def udp_drops(ports: Iterable[int]) -> int:
    """Sum of the kernel's per-socket drop counters of the IPv4 UDP sockets bound to ``ports``."""
    wanted = set(ports)
    total = 0
    with open("/proc/net/udp") as table:
        next(table)
        for line in table:
            cols = line.split()
            port = int(cols[1].rsplit(":", 1)[1], 16)
            if port in wanted:
                total += int(cols[-1])
    return total


def uses_uvloop(pid: int) -> bool:
    """True when the process has uvloop's extension mapped (i.e. runs the uvloop event loop)."""
    try:
        with open(f"/proc/{pid}/maps") as maps:
            return any("uvloop" in line for line in maps)
    except OSError:
        return False


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((LOCALHOST, port))
        except OSError:
            return False
    return True


def pick_rtp_range(size: int = RTP_BLOCK) -> tuple[int, int]:
    """A block of ``size`` UDP ports that are all free now, outside the ephemeral range.

    The server binds the exact port it put in its SDP answer; a port held by another process
    makes that call fail (see bench/README.md), so the range must be free of other users.
    """
    for base in RTP_CANDIDATES:
        if all(port_free(p) for p in range(base, base + size + 1)):
            return base, base + size
    raise RuntimeError(f"no free block of {size} UDP ports among {RTP_CANDIDATES}")


def ephemeral_range() -> tuple[int, int]:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = f.read().split()
    return int(low), int(high)


def machine_facts(server_pid: int | None = None) -> dict[str, Any]:
    """What the numbers depend on: CPUs, kernel, Python, uvloop, SIPp, load at the start."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    sipp_version = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["sipp", "-v"], capture_output=True, text=True, timeout=5)
        match = re.search(r"SIPp v?[\w.\-]+", out.stdout + out.stderr)
        sipp_version = match.group(0) if match else ""
    try:
        import uvloop

        uvloop_version: str | None = str(getattr(uvloop, "__version__", "?"))
    except ImportError:
        uvloop_version = None
    facts: dict[str, Any] = {
        "hostname": platform.node(),
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "python_full": sys.version,
        "uvloop_installed": uvloop_version,
        "sipp": sipp_version,
        "loadavg_at_start": os.getloadavg(),
        "ephemeral_port_range": ephemeral_range(),
        "cpu_pinning": pinning_description(),
    }
    if server_pid is not None:
        facts["uvloop"] = uses_uvloop(server_pid)
    facts.update(git_facts())
    return facts


def git_facts() -> dict[str, Any]:
    """The commit measured, and the files changed from it outside bench/ (a dirty tree)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True,
                                text=True, timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return {}
    changed = [line[3:] for line in status if not line[3:].startswith("bench/")]
    return {"git_commit": head, "git_changed_outside_bench": changed}


# ---------------------------------------------------------------------------------- the server


def server_command() -> list[str]:
    """``.venv/bin/sipagent run`` next to this interpreter (or ``python -m sipagent.cli run``)."""
    script = Path(sys.executable).parent / "sipagent"
    if script.exists():
        return [str(script), "run"]
    return [sys.executable, "-m", "sipagent.cli", "run"]


def cpu_roles() -> dict[str, set[int]] | None:
    """CPUs of the measured process (``server``) and of the harness around it, or None.

    On a machine with two or more CPUs the server (or the bare relay) gets a CPU of its own
    and everything the bench starts to load or serve it (load generator, SIPp, the fake
    Realtime server, the flooder) shares the others, so a busy harness never makes the server
    wait for a CPU and the pacing measured is the server's. ``BENCH_PIN=off`` turns it off.
    """
    if os.environ.get("BENCH_PIN", "on").strip().lower() in ("0", "off", "no", "false"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return {"server": {cpus[-1]}, "harness": set(cpus[:-1])}


def popen_pinned(role: str, command: list[str], **options: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen`` whose process runs on the CPUs of ``role`` (see :func:`cpu_roles`).

    The affinity is set before the program starts (in the child, between fork and exec), so
    every thread it makes inherits it.
    """
    roles = cpu_roles()
    if roles is not None:
        cpus = roles[role]
        options["preexec_fn"] = lambda: os.sched_setaffinity(0, cpus)
    return subprocess.Popen(command, **options)


def pinning_description() -> dict[str, list[int]] | None:
    """The CPU plan as JSON (None when not pinned)."""
    roles = cpu_roles()
    return None if roles is None else {role: sorted(cpus) for role, cpus in roles.items()}


def pinning_label() -> str:
    """The CPU plan in a table title."""
    roles = cpu_roles()
    if roles is None:
        return "not pinned"
    return (f"server on CPU {','.join(map(str, sorted(roles['server'])))}, "
            f"harness on CPU {','.join(map(str, sorted(roles['harness'])))}")


class ChildProcess:
    """What every process the bench starts shares: its PID, whether it runs, its CPU time."""

    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def cpu_seconds(self) -> float:
        """utime + stime so far (NaN once the process is gone)."""
        try:
            return proc_cpu_seconds(self.pid)
        except OSError:
            return float("nan")


@dataclass
class ServerProcess(ChildProcess):
    """A ``sipagent run`` subprocess on private ports, with its admin API."""

    process: subprocess.Popen[bytes]
    sip_port: int
    admin_port: int
    rtp_range: tuple[int, int]
    workdir: Path
    log_path: Path

    @classmethod
    def start(
        cls,
        workdir: Path,
        *,
        max_calls: int,
        rtp_range: tuple[int, int],
        log_level: str = "INFO",
        extra_env: dict[str, str] | None = None,
        ready_timeout: float = 20.0,
    ) -> ServerProcess:
        workdir.mkdir(parents=True, exist_ok=True)
        sip_port = free_port_udp_tcp()
        admin_port = free_tcp_port()
        env = {
            k: v for k, v in os.environ.items()
            if not k.startswith("SIPAGENT_") and k != "OPENAI_API_KEY"
        }
        env.update({
            "SIPAGENT_SIP_HOST": LOCALHOST,
            "SIPAGENT_SIP_PORT": str(sip_port),
            "SIPAGENT_ADMIN_HOST": LOCALHOST,
            "SIPAGENT_ADMIN_PORT": str(admin_port),
            "SIPAGENT_RTP_PORT_MIN": str(rtp_range[0]),
            "SIPAGENT_RTP_PORT_MAX": str(rtp_range[1]),
            "SIPAGENT_MAX_CALLS": str(max_calls),
            "SIPAGENT_LOG_LEVEL": log_level,
            "SIPAGENT_MODEL": "echo",
            # The load generator is the only caller: the production new-calls/s cap off.
            "SIPAGENT_MAX_NEW_CALLS_PER_SECOND": "0",
            **(extra_env or {}),
        })
        log_path = workdir / "server.log"
        with open(log_path, "wb") as out:
            # cwd = the run directory: no config/*.toml or .env of the checkout applies.
            process = popen_pinned(
                "server", server_command(), cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        server = cls(process, sip_port, admin_port, rtp_range, workdir, log_path)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"server exited ({process.returncode}): {log_path.read_text()[-2000:]}"
                )
            with contextlib.suppress(OSError, ValueError):
                if server.get("/ready").get("ready") is True:
                    return server
            time.sleep(0.1)
        server.stop()
        raise RuntimeError(f"server not ready within {ready_timeout} s; see {log_path}")

    def get(self, path: str, timeout: float = 10.0) -> dict[str, Any]:
        url = f"http://{LOCALHOST}:{self.admin_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return json.loads(response.read())  # type: ignore[no-any-return]
        except urllib.error.HTTPError as exc:  # /ready answers 503 with a JSON body
            return json.loads(exc.read())  # type: ignore[no-any-return]

    def sessions(self, state: str | None = None) -> list[dict[str, Any]]:
        path = "/sessions" if state is None else f"/sessions?state={state}"
        return list(self.get(path)["sessions"])

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def memory(self) -> dict[str, float]:
        return proc_memory(self.pid)

    def socket_drops(self) -> int:
        low, high = self.rtp_range
        return udp_drops([*range(low, high + 2), self.sip_port])

    def log_problems(self) -> dict[str, Any]:
        """Counts of WARNING/ERROR/Traceback lines in the server log, and the first few."""
        text = self.log_path.read_text(errors="replace")
        lines = text.splitlines()
        # Plain-text lines (" WARNING ") or the server's JSON lines ('"level": "WARNING"').
        warnings = [line for line in lines if " WARNING " in line or '"WARNING"' in line]
        errors = [line for line in lines if any(
            mark in line for mark in (" ERROR ", " CRITICAL ", '"ERROR"', '"CRITICAL"'))]
        exceptions = re.findall(r"^\w*(?:Error|Exception): .*$", text, re.MULTILINE)
        return {
            "warnings": len(warnings),
            "errors": len(errors),
            "tracebacks": text.count("Traceback (most recent call last)"),
            "first": (errors + warnings)[:5],
            "exceptions": sorted(set(exceptions))[:5],
        }

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (drain), SIGTERM again (immediate), SIGKILL: each by PID, bounded."""
        return stop_process(
            self.process,
            ((signal.SIGTERM, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)),
        )


def free_port_udp_tcp() -> int:
    """A port free for both UDP and TCP (the server listens on both)."""
    for _ in range(50):
        port = free_udp_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((LOCALHOST, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for UDP and TCP")


# ---------------------------------------------------------------------------------------- SIPp


def write_stream_file(directory: Path) -> Path:
    """The PCMU payloads of tests/fixtures/speech_pcmu.pcap, concatenated (SIPp rtp_stream)."""
    path = directory / STREAM_FILE
    path.write_bytes(speech_pcmu())
    return path


def speech_pcmu() -> bytes:
    """The PCMU payloads of tests/fixtures/speech_pcmu.pcap, concatenated (160 bytes a frame)."""
    data = SPEECH_PCAP.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    if magic != 0xA1B2C3D4:
        raise RuntimeError(f"{SPEECH_PCAP}: not a little-endian classic pcap")
    offset, payload = 24, bytearray()
    while offset + 16 <= len(data):
        incl = struct.unpack("<I", data[offset + 8:offset + 12])[0]
        frame = data[offset + 16:offset + 16 + incl]
        offset += 16 + incl
        ihl = (frame[14] & 0x0F) * 4  # Ethernet (14) + IPv4 header + UDP (8) + RTP (12)
        rtp = frame[14 + ihl + 8:]
        if len(rtp) > 12 and rtp[1] & 0x7F == 0:
            payload += rtp[12:]
    if not payload or len(payload) % 160:
        raise RuntimeError(f"{SPEECH_PCAP}: unexpected PCMU payloads ({len(payload)} bytes)")
    return bytes(payload)


@dataclass
class SippLoad(ChildProcess):
    """A SIPp UAC running bench/sipp/uac_stream.xml in its own work directory."""

    process: subprocess.Popen[bytes]
    command: list[str]
    workdir: Path
    media_port: int
    deadline: float

    @classmethod
    def start(
        cls,
        workdir: Path,
        server: ServerProcess,
        *,
        calls: int,
        rate: float,
        duration_s: float,
        timeout_s: float,
        recv_timeout_ms: int = 10_000,
        trace_rtt: bool = False,
        scenario: Path = STREAM_SCENARIO,
        extra_args: Iterable[str] = (),
    ) -> SippLoad:
        binary = shutil.which("sipp")
        if binary is None:
            raise RuntimeError("sipp is not installed (Debian package sip-tester)")
        workdir.mkdir(parents=True, exist_ok=True)
        write_stream_file(workdir)
        media_port = free_media_port()
        command = [
            binary, "-sf", str(scenario), f"{LOCALHOST}:{server.sip_port}",
            "-s", "echo", "-i", LOCALHOST, "-p", str(free_udp_port()),
            "-mi", LOCALHOST, "-mp", str(media_port), "-cp", str(free_udp_port()),
            "-t", "u1", "-m", str(calls), "-l", str(calls),
            "-r", f"{rate:g}", "-rp", "1000", "-d", str(round(duration_s * 1000)),
            "-nostdin", "-timeout", f"{max(1, int(timeout_s))}s", "-timeout_error",
            "-recv_timeout", str(recv_timeout_ms),
            "-trace_stat", "-stf", "stat.csv", "-fd", "1",
            "-trace_err", "-error_file", "errors.log",
            "-trace_screen", "-screen_file", "screen.log",
        ]
        if trace_rtt:
            command += ["-trace_rtt", "-rtt_freq", "1"]
        command += list(extra_args)  # e.g. ["-lost", "10"] (bench/loss.py)
        with open(workdir / "sipp.stdout", "wb") as out, open(workdir / "sipp.stderr", "wb") as err:
            process = popen_pinned(
                "harness", command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out,
                stderr=err, start_new_session=True,
            )
        return cls(process, command, workdir, media_port, time.monotonic() + timeout_s + 5)

    def wait(
        self, until: float | None = None, poll: Callable[[], None] | None = None
    ) -> int | None:
        """Wait for SIPp to exit (``poll()`` every 0.5 s meanwhile); stop it at the deadline."""
        deadline = min(self.deadline, until) if until is not None else self.deadline
        while self.running() and time.monotonic() < deadline:
            if poll is not None:
                poll()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=0.5)
        if self.running():
            log(f"SIPp still running at its deadline: stopping pid {self.pid}")
            self.stop()
        return self.process.returncode

    def stop(self) -> None:
        stop_process(self.process)

    def stats(self) -> dict[str, str]:
        """The last row of SIPp's statistics CSV, by column name."""
        try:
            rows = list(csv.reader((self.workdir / "stat.csv").read_text().splitlines(),
                                   delimiter=";"))
        except OSError:
            return {}
        return dict(zip(rows[0], rows[-1], strict=False)) if len(rows) >= 2 else {}

    def summary(self) -> dict[str, Any]:
        stats = self.stats()

        def count(name: str) -> int | None:
            with contextlib.suppress(KeyError, ValueError):
                return int(stats[name])
            return None

        failures = {
            key[:-3]: int(value) for key, value in stats.items()
            if key.startswith("Failed") and key.endswith("(C)") and value.isdigit()
            and int(value) > 0
        }
        return {
            "returncode": self.process.returncode,
            "created": count("OutgoingCall(C)"),
            "successful": count("SuccessfulCall(C)"),
            "failed": count("FailedCall(C)"),
            "failures": failures,
            "retransmissions": count("Retransmissions(C)"),
            "workdir": str(self.workdir),
        }


# ------------------------------------------------------------------------ bench/loadgen.py


class LineReader:
    """Lines of a child's stdout pipe, read with a deadline (never blocks past it)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self.fd = process.stdout.fileno()
        self.process = process
        self.buffer = b""

    def line(self, prefix: str, timeout: float) -> str | None:
        """The next line starting with ``prefix`` (other lines skipped); None at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\n", 1)
                text = raw.decode(errors="replace")
                if text.startswith(prefix):
                    return text[len(prefix):].strip()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([self.fd], [], [], min(remaining, 0.5))
            if readable:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    return None  # the child closed its stdout (exited)
                self.buffer += chunk


@dataclass
class LoadgenLoad(ChildProcess):
    """bench/loadgen.py in its own process: SIP calls (or fixed RTP ports) streaming PCMU,
    the server's packets kernel-timestamped; ``pacing(t0, t1)`` asks it for a window."""

    process: subprocess.Popen[bytes]
    command: list[str]
    workdir: Path
    report_path: Path
    deadline: float
    reader: LineReader
    ready: dict[str, Any] | None = None

    @classmethod
    def start(
        cls,
        workdir: Path,
        server: ServerProcess | None,
        *,
        calls: int,
        rate: float,
        duration_s: float,
        timeout_s: float,
        rtp_base: tuple[str, int] | None = None,
        sockets: int = 8,
    ) -> LoadgenLoad:
        workdir.mkdir(parents=True, exist_ok=True)
        report_path = workdir / "loadgen.json"
        target = (["--server", f"{LOCALHOST}:{server.sip_port}"] if server is not None
                  else ["--rtp-base", f"{rtp_base[0]}:{rtp_base[1]}"] if rtp_base else [])
        if not target:
            raise ValueError("a server or an RTP base port is needed")
        command = [sys.executable, "-m", "bench.loadgen", *target, "--calls", str(calls),
                   "--rate", f"{rate:g}", "--duration", f"{duration_s:g}",
                   "--sockets", str(sockets), "--out", str(report_path)]
        with open(workdir / "loadgen.stderr", "wb") as err:
            process = popen_pinned(
                "harness", command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=err, start_new_session=True,
            )
        return cls(process, command, workdir, report_path, time.monotonic() + timeout_s + 5,
                   LineReader(process))

    def streaming_at(self, timeout: float = 120.0) -> float | None:
        """Unix time the streams started (waits for the generator's READY line)."""
        if self.ready is None:
            line = self.reader.line("READY ", timeout)
            if line is None:
                return None
            self.ready = json.loads(line)
        return float(self.ready["streaming_at"])

    def _command(self, text: str) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            self.process.stdin.write(text.encode() + b"\n")
            self.process.stdin.flush()

    def pacing(self, t0: float, t1: float, timeout: float = 60.0) -> dict[str, Any]:
        """The server's outbound pacing seen by the generator over the Unix-time window."""
        self._command(f"stats {t0:.6f} {t1:.6f}")
        line = self.reader.line("STATS ", timeout)
        return json.loads(line) if line else {"error": "no STATS answer"}

    def wait(
        self, until: float | None = None, poll: Callable[[], None] | None = None
    ) -> int | None:
        deadline = min(self.deadline, until) if until is not None else self.deadline
        while self.running() and time.monotonic() < deadline:
            if poll is not None:
                poll()
            self.reader.line("DONE", 0.5)
        if self.running():
            log(f"loadgen still running at its deadline: stopping pid {self.pid}")
            self.stop()
        return self.process.returncode

    def stop(self) -> None:
        """``stop`` (BYE every call, write the report), then SIGTERM, then SIGKILL."""
        self._command("stop")
        stop_process(self.process, ((None, 20.0), *TERM_THEN_KILL))

    def report(self) -> dict[str, Any]:
        try:
            return json.loads(self.report_path.read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return {}

    def summary(self) -> dict[str, Any]:
        """SippLoad.summary()'s keys, from the generator's report."""
        report = self.report()
        setup = report.get("setup") or {}
        teardown = report.get("teardown") or {}
        statuses = dict(setup.get("final_statuses") or {})
        statuses.pop("200", None)
        established = report.get("established")
        return {
            "returncode": self.process.returncode,
            "created": report.get("calls"),
            "successful": teardown.get("bye_ok", established),
            "failed": (report["calls"] - established) if established is not None else None,
            "failures": statuses,
            "workdir": str(self.workdir),
            "loadgen": {k: v for k, v in report.items() if k != "pacing_whole_run"},
            "pacing_whole_run": report.get("pacing_whole_run"),
        }


@dataclass
class RelayProcess(ChildProcess):
    """bench/relay_baseline.py: the bare paced RTP echo on ``calls`` ports from ``base``."""

    process: subprocess.Popen[bytes]
    base: int
    calls: int
    reader: LineReader

    @classmethod
    def start(cls, workdir: Path, base: int, calls: int, max_seconds: float) -> RelayProcess:
        workdir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "bench.relay_baseline", "--base", str(base),
                   "--calls", str(calls), "--max-seconds", f"{max_seconds:g}"]
        with open(workdir / "relay.stderr", "wb") as err:
            process = popen_pinned("server", command, cwd=REPO, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=err, start_new_session=True)
        relay = cls(process, base, calls, LineReader(process))
        if relay.reader.line("READY", 20) is None:
            relay.stop()
            raise RuntimeError(f"relay baseline not ready; see {workdir}")
        return relay

    def stop(self) -> dict[str, Any]:
        stop_process(self.process, ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)))
        line = self.reader.line("{", 2)
        counters: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            counters = json.loads("{" + line) if line is not None else {}
        return counters


LoadDriver = SippLoad | LoadgenLoad


# ------------------------------------------------------------------------------------ sampling


def rtp_total(sessions: list[dict[str, Any]]) -> int:
    return sum(s["rtp"]["packets_in"] + s["rtp"]["packets_out"] for s in sessions)


@dataclass
class Sample:
    """Everything read at one boundary of the steady window."""

    mono: float
    cpu: float
    sipp_cpu: float
    system: tuple[float, float, float]
    drops: int
    sessions: list[dict[str, Any]]
    memory: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    """What :attr:`LevelHooks.probe` read right after (empty without one)."""
    wall: float = 0.0
    """Unix time of the sample (the load generator's kernel timestamps are Unix times)."""
    polling_from: float = 0.0
    """Unix time the /sessions polling before this sample began (it loads the server)."""
    runq: float = 0.0
    """The server's event-loop thread: seconds waited for a CPU so far (schedstat)."""


def sample_after_refresh(
    server: ServerProcess, sipp: LoadDriver, *, start_polling_at: float, limit: float = 2.5,
    interval: float = 0.025, probe: Callable[[], dict[str, Any]] | None = None,
) -> Sample:
    """Poll /sessions from ``start_polling_at`` until the RTP counters change, then sample.

    The server copies the counters into /sessions once a second; sampling right after that
    refresh puts the packet counts and the CPU reading at (almost) the same instant.
    """
    now = time.monotonic()
    if start_polling_at > now:
        time.sleep(start_polling_at - now)
    polling_from = time.time()
    before = rtp_total(server.sessions())
    deadline = time.monotonic() + limit
    sessions: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        time.sleep(interval)
        sessions = server.sessions()
        if rtp_total(sessions) != before:
            break
    else:
        log("warning: the RTP counters did not change while polling /sessions")
    sample = Sample(
        mono=time.monotonic(), cpu=server.cpu_seconds(), sipp_cpu=sipp.cpu_seconds(),
        system=system_cpu(), drops=server.socket_drops(), sessions=sessions,
        memory=server.memory(), wall=time.time(), polling_from=polling_from,
        runq=proc_runqueue_wait(server.pid),
    )
    if probe is not None:
        sample.extra = probe()
    return sample


def parse_iso(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5 - 1e-9)))
    return ordered[rank - 1]


# -------------------------------------------------------------------------------- one level


@dataclass
class LevelHooks:
    """What another benchmark (bench/bridged.py) changes in :func:`run_level`."""

    server_env: dict[str, str] = field(default_factory=dict)
    """Extra environment of the server (e.g. ``SIPAGENT_MODEL=openai``)."""
    probe: Callable[[], dict[str, Any]] | None = None
    """Read at both ends of the steady window, right after the server (``Sample.extra``)."""
    after_window: Callable[[ServerProcess, Sample, Sample], dict[str, Any]] | None = None
    """More results from the window's two samples, merged into the level's result."""


def run_level(calls: int, args: argparse.Namespace, run_root: Path,
              rtp_range: tuple[int, int], hooks: LevelHooks | None = None) -> dict[str, Any]:
    """Start a server, load it with ``calls`` streaming calls, measure, stop everything."""
    hooks = hooks or LevelHooks()
    workdir = run_root / f"n{calls}"
    result: dict[str, Any] = {"calls": calls, "workdir": str(workdir)}
    server = ServerProcess.start(workdir / "server", max_calls=calls + 10, rtp_range=rtp_range,
                                 extra_env=hooks.server_env)
    sipp: LoadDriver | None = None
    driver = getattr(args, "driver", "sipp")
    try:
        result["server_pid"] = server.pid
        result["uvloop"] = uses_uvloop(server.pid)
        # Idle baseline: the server with no call (its once-a-second stats task, uvicorn).
        cpu0, t0 = server.cpu_seconds(), time.monotonic()
        time.sleep(args.idle_seconds)
        result["idle_cpu_pct"] = 100 * (server.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        result["rss_idle_mib"] = server.memory().get("VmRSS")

        ramp_s = calls / args.rate
        timeout_s = ramp_s + args.duration + 60
        if driver == "loadgen":
            sipp = LoadgenLoad.start(workdir / "loadgen", server, calls=calls, rate=args.rate,
                                     duration_s=args.duration + LOADGEN_GRACE_S,
                                     timeout_s=timeout_s + LOADGEN_GRACE_S,
                                     sockets=getattr(args, "sockets", 8))
        else:
            sipp = SippLoad.start(workdir / "sipp", server, calls=calls, rate=args.rate,
                                  duration_s=args.duration, timeout_s=timeout_s)
        launched = time.monotonic()
        log(f"{calls} calls: {driver} pid {sipp.pid}, server pid {server.pid}, "
            f"ramp {ramp_s:.1f} s, hold {args.duration:g} s")

        if isinstance(sipp, LoadgenLoad) and sipp.streaming_at(timeout=ramp_s + 60) is None:
            raise RuntimeError("the load generator never started streaming; see " + str(workdir))
        # Wait until every call is answered and its inbound RTP is flowing (or has failed).
        flowing: list[dict[str, Any]] = []
        ready_deadline = launched + ramp_s + 15
        last_change, last_count = time.monotonic(), -1
        while time.monotonic() < ready_deadline and sipp.running():
            sessions = server.sessions()
            flowing = [s for s in sessions
                       if s["state"] == "answered" and s["rtp"]["packets_in"] > 0]
            failed = sipp.summary()["failed"] or 0
            if len(flowing) + failed >= calls:
                break
            now = time.monotonic()
            if len(flowing) != last_count:
                last_change, last_count = now, len(flowing)
            elif now > launched + ramp_s + 1 and now - last_change > 3:
                break  # no progress for 3 s after the ramp: measure what is there
            time.sleep(0.5)
        result["answered_with_media_at_start"] = len(flowing)
        result["ramp_seconds"] = round(time.monotonic() - launched, 2)
        if len(flowing) < calls:
            log(f"warning: only {len(flowing)}/{calls} calls answered with media flowing")
        if not flowing:
            raise RuntimeError("no call got media; see " + str(workdir))

        # Steady window: from settle seconds after the last answer to shortly before the
        # first call's BYE (SIPp: first answer + hold time; loadgen: its streaming start +
        # the duration, every call streaming from the same moment).
        media_from = min(parse_iso(s["answered_at"]) or time.time() for s in flowing)
        if isinstance(sipp, LoadgenLoad):
            media_from = sipp.streaming_at() or media_from
        end_target = time.monotonic() + (media_from + args.duration - time.time()) - 1.5
        start = sample_after_refresh(server, sipp, probe=hooks.probe,
                                     start_polling_at=time.monotonic() + args.settle)
        if end_target - start.mono < 3:
            log("warning: steady window under 3 s: raise --duration or --rate")
        # Poll for the refresh that precedes end_target (period ~1 s, a little more).
        ticks = max(1, int((end_target - start.mono) // 1.0))
        end = sample_after_refresh(server, sipp, start_polling_at=start.mono + ticks - 0.15,
                                   probe=hooks.probe)
        result.update(window_metrics(start, end, calls))
        result["driver"] = driver
        if isinstance(sipp, LoadgenLoad):
            result["pacing"] = sipp.pacing(start.wall, end.wall)
            # The same window without its last stretch, where the bench polls /sessions
            # every 25 ms (up to 2.5 s) to catch the counters' refresh.
            result["pacing_unpolled"] = sipp.pacing(start.wall, end.polling_from)
        if hooks.after_window is not None:
            result.update(hooks.after_window(server, start, end))

        # Let SIPp finish, keeping the final counters of every call as it ends (the admin
        # keeps only the last 100 ended calls).
        ended: dict[str, dict[str, Any]] = {}

        def collect_ended() -> None:
            with contextlib.suppress(OSError, ValueError):
                for s in server.sessions("ended"):
                    ended[s["session_id"]] = s

        sipp.wait(poll=collect_ended)
        time.sleep(1.0)  # the last BYEs' 200s and the sessions' close
        collect_ended()
        leftover = server.sessions()
        result["sipp"] = sipp.summary()
        result["whole_calls"] = whole_call_metrics(list(ended.values()), args.duration)
        result["left_on_server"] = [
            {"call_id": s["call_id"], "state": s["state"], "created_at": s["created_at"]}
            for s in leftover
        ]
        result["rss_end_mib"] = server.memory().get("VmRSS")
        result["rss_peak_mib"] = server.memory().get("VmHWM")
    finally:
        if sipp is not None and sipp.running():
            sipp.stop()
        result["server_exit"] = server.stop()
        result["server_log"] = server.log_problems()
    return result


def run_baseline_level(calls: int, args: argparse.Namespace, run_root: Path,
                       rtp_range: tuple[int, int]) -> dict[str, Any]:
    """bench/relay_baseline.py driven by the load generator (no SIP) at ``calls`` streams.

    Same streams, call length and settle time as the server's level; the window runs from
    ``settle`` s after the streams start to 1.5 s before they stop.
    """
    workdir = run_root / f"n{calls}" / "relay"
    result: dict[str, Any] = {"calls": calls, "workdir": str(workdir), "rtp_base": rtp_range[0]}
    relay = RelayProcess.start(workdir, rtp_range[0], calls, max_seconds=args.duration + 120)
    load: LoadgenLoad | None = None
    try:
        result["relay_pid"] = relay.pid
        load = LoadgenLoad.start(workdir / "loadgen", None, calls=calls, rate=args.rate,
                                 duration_s=args.duration + LOADGEN_GRACE_S,
                                 timeout_s=args.duration + LOADGEN_GRACE_S + 60,
                                 rtp_base=(LOCALHOST, rtp_range[0]),
                                 sockets=getattr(args, "sockets", 8))
        streaming_at = load.streaming_at(timeout=60)
        if streaming_at is None:
            raise RuntimeError("the load generator never started streaming; see " + str(workdir))

        def sample() -> tuple[float, float, float, float, tuple[float, float, float], float]:
            assert load is not None
            return (time.monotonic(), time.time(), proc_cpu_seconds(relay.pid),
                    load.cpu_seconds(), system_cpu(), proc_runqueue_wait(relay.pid))

        time.sleep(max(0.0, streaming_at + args.settle - time.time()))
        mono0, wall0, relay0, load0, sys0, runq0 = sample()
        time.sleep(max(1.0, streaming_at + args.duration - 1.5 - time.time()))
        mono1, wall1, relay1, load1, sys1, runq1 = sample()
        seconds = mono1 - mono0
        cpu, load_cpu, busy = relay1 - relay0, load1 - load0, sys1[0] - sys0[0]
        result.update({
            "window_seconds": round(seconds, 3),
            "relay_cpu_pct": round(100 * cpu / seconds, 2),
            "ms_per_call_second": round(1000 * cpu / (calls * seconds), 3),
            "loadgen_cpu_pct": round(100 * load_cpu / seconds, 2),
            "other_cpu_pct": round(100 * (busy - cpu - load_cpu) / seconds, 2),
            "relay_runqueue_wait_pct": round(100 * (runq1 - runq0) / seconds, 2),
            "relay_rss_mib": proc_memory(relay.pid).get("VmRSS"),
            "pacing": load.pacing(wall0, wall1),
        })
        load.wait()
        result["loadgen"] = load.summary()["loadgen"]
    finally:
        if load is not None and load.running():
            load.stop()
        result["relay"] = relay.stop()
    return result


def window_metrics(start: Sample, end: Sample, calls: int) -> dict[str, Any]:
    seconds = end.mono - start.mono
    cpu = end.cpu - start.cpu
    before = {s["session_id"]: s["rtp"] for s in start.sessions}
    live = [s for s in end.sessions if s["session_id"] in before]
    n = len(live)
    d_in = sum(s["rtp"]["packets_in"] - before[s["session_id"]]["packets_in"] for s in live)
    d_out = sum(s["rtp"]["packets_out"] - before[s["session_id"]]["packets_out"] for s in live)
    d_lost = sum(s["rtp"]["lost"] - before[s["session_id"]]["lost"] for s in live)
    stalled = sum(
        1 for s in live
        if s["rtp"]["packets_in"] == before[s["session_id"]]["packets_in"]
    )
    jitter = [float(s["rtp"]["jitter_ms"]) for s in live]
    busy = end.system[0] - start.system[0]
    sipp_cpu = end.sipp_cpu - start.sipp_cpu
    expected = n * seconds / FRAME_S
    return {
        "window_seconds": round(seconds, 3),
        "live_calls": n,
        "stalled_calls": stalled,
        "server_cpu_seconds": round(cpu, 3),
        "server_cpu_pct": round(100 * cpu / seconds, 2),
        "ms_per_call_second": round(1000 * cpu / (n * seconds), 3) if n else None,
        "sipp_cpu_pct": round(100 * sipp_cpu / seconds, 2),
        "other_cpu_pct": round(100 * (busy - cpu - sipp_cpu) / seconds, 2),
        "machine_busy_pct_of_all_cpus": round(
            100 * busy / (end.system[1] - start.system[1]), 2),
        "steal_pct_of_one_cpu": round(100 * (end.system[2] - start.system[2]) / seconds, 2),
        "server_runqueue_wait_pct": round(100 * (end.runq - start.runq) / seconds, 2),
        "rss_mib": end.memory.get("VmRSS"),
        "packets_in": d_in,
        "packets_out": d_out,
        "packets_expected_each_way": round(expected),
        "in_pps_per_call": round(d_in / (n * seconds), 2) if n else None,
        "out_pps_per_call": round(d_out / (n * seconds), 2) if n else None,
        "lost": d_lost,
        "loss_pct": round(100 * d_lost / (d_in + d_lost), 4) if d_in + d_lost else 0.0,
        "socket_drops": end.drops - start.drops,
        "jitter_ms_mean": round(statistics.fmean(jitter), 3) if jitter else None,
        "jitter_ms_max": round(max(jitter), 3) if jitter else None,
    }


def whole_call_metrics(ended: list[dict[str, Any]], duration: float) -> dict[str, Any]:
    """Totals over the ended calls' final counters (each is refreshed as the call closes)."""
    if not ended:
        return {"calls": 0}
    ins = [s["rtp"]["packets_in"] for s in ended]
    outs = [s["rtp"]["packets_out"] for s in ended]
    lost = sum(s["rtp"]["lost"] for s in ended)
    return {
        "calls": len(ended),
        "expected_packets_per_call": round(duration / FRAME_S),
        "packets_in_per_call_mean": round(statistics.fmean(ins), 1),
        "packets_in_per_call_min": min(ins),
        "packets_out_per_call_mean": round(statistics.fmean(outs), 1),
        "packets_out_per_call_min": min(outs),
        "lost": lost,
        "loss_pct": round(100 * lost / (sum(ins) + lost), 4) if sum(ins) + lost else 0.0,
        "dropped_foreign": sum(s["rtp"]["dropped_foreign"] for s in ended),
    }


# ------------------------------------------------------------------------------------- output


def pace_cells(pacing: dict[str, Any] | None) -> str:
    """``p50/p99/max`` ms and received % of a loadgen pacing dict (dashes without one)."""
    if not pacing or pacing.get("pace_p99_ms") is None:
        return f"{'-':>20} {'-':>6}"
    cells = f"{pacing['pace_p50_ms']:.2f}/{pacing['pace_p99_ms']:.2f}/{pacing['pace_max_ms']:.1f}"
    return f"{cells:>20} {pacing['received_pct']:>6.2f}"


def unpolled_p99(level: dict[str, Any]) -> str:
    value = (level.get("pacing_unpolled") or {}).get("pace_p99_ms")
    return f"{value:>7.2f}" if value is not None else f"{'-':>7}"


def print_table(levels: list[dict[str, Any]]) -> None:
    paced = any("pacing" in r for r in levels)
    header = (
        f"{'calls':>5} {'ok/fail':>9} {'window':>7} {'CPU%':>6} {'ms/call-s':>9} "
        f"{'RSS MiB':>7} {'in pps':>6} {'out pps':>7} {'lost':>5} {'loss%':>7} {'drops':>5} "
        f"{'jit ms':>6} {'load%':>6} {'other%':>6} {'wait%':>5} {'left':>4}"
        + (f" {'pace p50/p99/max ms':>20} {'rx%':>6} {'p99 np':>7}" if paced else "")
    )
    print(header)
    print("-" * len(header))
    for r in levels:
        if "error" in r:
            print(f"{r['calls']:>5}  error: {r['error']}")
            continue
        s = r.get("sipp", {})
        print(
            f"{r['calls']:>5} {str(s.get('successful')) + '/' + str(s.get('failed')):>9} "
            f"{r['window_seconds']:>6.1f}s {r['server_cpu_pct']:>6.1f} "
            f"{r['ms_per_call_second']:>9.3f} {r['rss_mib']:>7.1f} "
            f"{r['in_pps_per_call']:>6.2f} {r['out_pps_per_call']:>7.2f} {r['lost']:>5} "
            f"{r['loss_pct']:>7.3f} {r['socket_drops']:>5} {r['jitter_ms_mean']:>6.2f} "
            f"{r['sipp_cpu_pct']:>6.1f} {r['other_cpu_pct']:>6.1f} "
            f"{r.get('server_runqueue_wait_pct', float('nan')):>5.1f} "
            f"{len(r.get('left_on_server', [])):>4}"
            + (" " + pace_cells(r.get("pacing")) + " " + unpolled_p99(r) if paced else "")
        )
    print(
        "\nCPU% = server process, % of one core over the steady window; ms/call-s = server CPU "
        "ms per second of one call;\nin/out pps = RTP packets per call per second (50 = every "
        "20 ms frame); lost = RFC 3550 loss toward the server;\ndrops = kernel drops on the "
        "server's sockets; jit = mean inbound jitter; load%/other% = CPU of the load generator "
        "(SIPp or\nbench.loadgen) / of every other process; left = calls still live on the server "
        "after the load ended;\npace = |arrival - 20 ms grid| of the server's packets at the "
        "load generator (kernel timestamps), p50/p99/max;\nrx% = packets received / expected "
        "over the window; p99 np = pace p99 without the window's end, where the bench polls "
        "/sessions;\nwait% = time the server's event loop waited for a CPU (runnable, not running: "
        "/proc/<pid>/schedstat), % of the window."
    )


def print_baseline(levels: list[dict[str, Any]], baselines: list[dict[str, Any]]) -> None:
    """The relay's rows, with the server's CPU per call-second as a ratio to the relay's."""
    print("\nbare relay baseline (bench.relay_baseline, same streams, same run):")
    header = (f"{'calls':>5} {'window':>7} {'CPU%':>6} {'ms/call-s':>9} {'server':>7} "
              f"{'ratio':>6} {'pace p50/p99/max ms':>20} {'rx%':>6} {'srv pace p99':>12} "
              f"{'load%':>6} {'other%':>6} {'wait%':>5} {'srv':>5}")
    print(header)
    print("-" * len(header))
    for b in baselines:
        if "error" in b:
            print(f"{b['calls']:>5}  error: {b['error']}")
            continue
        server = next((lvl for lvl in levels if lvl["calls"] == b["calls"]
                       and lvl.get("repeat") == b.get("repeat") and "error" not in lvl), None)
        ms = server.get("ms_per_call_second") if server else None
        ratio = ms / b["ms_per_call_second"] if ms and b["ms_per_call_second"] else None
        srv_p99 = ((server or {}).get("pacing") or {}).get("pace_p99_ms")
        print(f"{b['calls']:>5} {b['window_seconds']:>6.1f}s {b['relay_cpu_pct']:>6.1f} "
              f"{b['ms_per_call_second']:>9.3f} "
              f"{(f'{ms:.3f}' if ms else '-'):>7} {(f'{ratio:.2f}x' if ratio else '-'):>6} "
              f"{pace_cells(b.get('pacing'))} {(f'{srv_p99:.2f}' if srv_p99 else '-'):>12} "
              f"{b['loadgen_cpu_pct']:>6.1f} {b['other_cpu_pct']:>6.1f} "
              f"{b.get('relay_runqueue_wait_pct', float('nan')):>5.1f} "
              f"{(server or {}).get('server_runqueue_wait_pct', float('nan')):>5.1f}")
    print("\nratio = server ms/call-s / relay ms/call-s at the same N in the same run (issue "
          "target <= 2.5x);\nsrv pace p99 = the server's pacing p99 in its own level above; "
          "wait% / srv = relay's / server's event loop waiting for a CPU, % of the window.")


SUMMARY_KEYS = ("server_cpu_pct", "ms_per_call_second", "rss_mib", "in_pps_per_call",
                "out_pps_per_call", "loss_pct", "sipp_cpu_pct", "other_cpu_pct")


def summarize(levels: list[dict[str, Any]],
              baselines: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Per call count: median (and min/max) of the main numbers over the repeats; with
    baselines, the relay's medians and the server/relay CPU ratio of the medians."""
    out: dict[str, Any] = {}
    for calls in sorted({lvl["calls"] for lvl in levels}):
        runs = [lvl for lvl in levels if lvl["calls"] == calls and "error" not in lvl]
        entry: dict[str, Any] = {"runs": len(runs), "errors": sum(
            1 for lvl in levels if lvl["calls"] == calls and "error" in lvl)}
        for key in SUMMARY_KEYS:
            values = [float(r[key]) for r in runs if r.get(key) is not None]
            if values:
                entry[key] = {"median": round(statistics.median(values), 3),
                              "min": round(min(values), 3), "max": round(max(values), 3)}
        entry["lost"] = sum(r["lost"] for r in runs)
        entry["socket_drops"] = sum(r["socket_drops"] for r in runs)
        entry["sipp_failed"] = sum((r.get("sipp") or {}).get("failed") or 0 for r in runs)
        entry["left_on_server"] = sum(len(r.get("left_on_server", [])) for r in runs)
        for key in ("pace_p50_ms", "pace_p99_ms", "pace_max_ms", "received_pct"):
            values = [float(r["pacing"][key]) for r in runs
                      if (r.get("pacing") or {}).get(key) is not None]
            if values:
                entry[key] = {"median": round(statistics.median(values), 3),
                              "min": round(min(values), 3), "max": round(max(values), 3)}
        relay = [b for b in baselines or () if b["calls"] == calls and "error" not in b]
        if relay:
            entry["relay"] = {
                key: round(statistics.median(float(b[key]) for b in relay), 3)
                for key in ("ms_per_call_second", "relay_cpu_pct", "loadgen_cpu_pct",
                            "other_cpu_pct")
            }
            entry["relay"].update({
                key: round(statistics.median(float(b["pacing"][key]) for b in relay), 3)
                for key in ("pace_p50_ms", "pace_p99_ms", "pace_max_ms")
                if all((b.get("pacing") or {}).get(key) is not None for b in relay)
            })
            if "ms_per_call_second" in entry and entry["relay"]["ms_per_call_second"]:
                entry["ratio_ms_per_call_second_vs_relay"] = round(
                    entry["ms_per_call_second"]["median"]
                    / entry["relay"]["ms_per_call_second"], 2)
        out[str(calls)] = entry
    return out


def print_summary(summary: dict[str, Any]) -> None:
    print("\nmedian over repeats [min-max]:")
    for calls, e in summary.items():
        if not e["runs"]:
            continue
        cpu, ms, rss = e["server_cpu_pct"], e["ms_per_call_second"], e["rss_mib"]
        print(f"{calls:>5} calls: CPU {cpu['median']:.1f}% [{cpu['min']:.1f}-{cpu['max']:.1f}], "
              f"{ms['median']:.3f} ms/call-s [{ms['min']:.3f}-{ms['max']:.3f}], "
              f"RSS {rss['median']:.1f} MiB, lost {e['lost']}, drops {e['socket_drops']}, "
              f"SIPp failed {e['sipp_failed']}, left {e['left_on_server']} ({e['runs']} runs)")


def parse_calls(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text}") from exc
    if not values or any(v < 1 or v > 1000 for v in values):
        raise argparse.ArgumentTypeError("call counts must be 1..1000")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.capacity", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--calls", type=parse_calls, default=[50, 100],
                        help="concurrent call counts to sweep, e.g. 50,100,200 (default 50,100)")
    parser.add_argument("--duration", type=float, default=20.0,
                        help="seconds each call streams (SIPp -d; default 20)")
    parser.add_argument("--rate", type=float, default=50.0,
                        help="new calls per second while ramping up (default 50)")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds after the last answer before the window opens (default 2)")
    parser.add_argument("--idle-seconds", type=float, default=2.0,
                        help="seconds of idle-server CPU baseline (default 2)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the whole sweep this many times; medians are reported (1..10)")
    parser.add_argument("--driver", choices=("sipp", "loadgen"), default="sipp",
                        help="who places and streams the calls: SIPp rtp_stream (default) or "
                             "bench.loadgen, which also measures the server's outbound pacing")
    parser.add_argument("--sockets", type=int, default=8,
                        help="loadgen: UDP sockets shared by the calls (default 8)")
    parser.add_argument("--baseline", action="store_true",
                        help="also run bench.relay_baseline at each N (implies --driver loadgen)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default bench/results/capacity-<date>.json)")
    args = parser.parse_args(argv)
    if args.baseline:
        args.driver = "loadgen"
    if not 5 <= args.duration <= 600:
        parser.error("--duration must be 5..600 s")
    if not 0.5 <= args.rate <= 500:
        parser.error("--rate must be 0.5..500 calls/s")
    if not 1 <= args.repeat <= 10:
        parser.error("--repeat must be 1..10")
    if not 1 <= args.sockets <= 1000:
        parser.error("--sockets must be 1..1000")
    if args.driver == "sipp" and shutil.which("sipp") is None:
        parser.error("sipp is not installed (Debian package sip-tester)")

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_root = RESULTS / f"capacity-{stamp}"
    run_root.mkdir(parents=True, exist_ok=True)
    block = max(RTP_BLOCK, 4 * max(args.calls) + 40)
    log(f"run directory {run_root}")
    machine = machine_facts()  # before the load: load average, the commit measured
    levels: list[dict[str, Any]] = []
    baselines: list[dict[str, Any]] = []
    for repeat in range(args.repeat):  # interleaved, so a busy neighbour hits every level
        for calls in args.calls:
            try:
                rtp_range = pick_rtp_range(block)  # again each time: the machine is shared
                level = run_level(calls, args, run_root / f"r{repeat + 1}", rtp_range)
                level["rtp_range"] = rtp_range
            except Exception as exc:  # keep the other levels' results
                log(f"{calls} calls failed: {exc!r}")
                level = {"calls": calls, "error": repr(exc)}
            level["repeat"] = repeat + 1
            levels.append(level)
            if not args.baseline:
                continue
            try:
                baseline = run_baseline_level(calls, args, run_root / f"r{repeat + 1}",
                                              pick_rtp_range(block))
            except Exception as exc:
                log(f"{calls} relay baseline failed: {exc!r}")
                baseline = {"calls": calls, "error": repr(exc)}
            baseline["repeat"] = repeat + 1
            baselines.append(baseline)
    if git_facts() != {k: machine.get(k) for k in ("git_commit", "git_changed_outside_bench")}:
        machine["tree_changed_during_run"] = git_facts()
        log("warning: the working tree changed during the run (see machine.tree_changed...)")
    machine["uvloop"] = next((lvl["uvloop"] for lvl in levels if "uvloop" in lvl), None)
    report: dict[str, Any] = {
        "benchmark": "capacity",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "settings": {
            "calls": args.calls, "duration_s": args.duration, "rate_cps": args.rate,
            "settle_s": args.settle, "model": "echo", "log_level": "INFO",
            "driver": args.driver, "loadgen_sockets": args.sockets, "baseline": args.baseline,
            "rtp_block": block, "scenario": str(STREAM_SCENARIO.relative_to(REPO)),
            "server_command": server_command(),
            "pythonpath": os.environ.get("PYTHONPATH"),
        },
        "levels": levels,
        "baselines": baselines,
        "summary": summarize(levels, baselines),
    }
    output = args.output or RESULTS / f"capacity-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nsipagent capacity, echo model — {machine['nproc']} CPUs ({machine['cpu_model']}), "
          f"Python {machine['python']}, uvloop {'on' if machine['uvloop'] else 'off'}, "
          f"{args.duration:g} s calls, {pinning_label()}\n")
    print_table(levels)
    if baselines:
        print_baseline(levels, baselines)
    if args.repeat > 1:
        print_summary(report["summary"])
    print(f"\nJSON: {output}")
    return 0 if all("error" not in lvl for lvl in levels) else 1


if __name__ == "__main__":
    sys.exit(main())
