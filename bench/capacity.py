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


@dataclass
class ServerProcess:
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
            process = subprocess.Popen(
                server_command(), cwd=workdir, env=env, stdin=subprocess.DEVNULL,
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

    @property
    def pid(self) -> int:
        return self.process.pid

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
        warnings = [line for line in lines if " WARNING " in line]
        errors = [line for line in lines if " ERROR " in line or " CRITICAL " in line]
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
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if self.process.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=wait)
        return self.process.returncode


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
    path = directory / STREAM_FILE
    path.write_bytes(bytes(payload))
    return path


@dataclass
class SippLoad:
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
        with open(workdir / "sipp.stdout", "wb") as out, open(workdir / "sipp.stderr", "wb") as err:
            process = subprocess.Popen(
                command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True,
            )
        return cls(process, command, workdir, media_port, time.monotonic() + timeout_s + 5)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def cpu_seconds(self) -> float:
        try:
            return proc_cpu_seconds(self.pid)
        except OSError:
            return float("nan")

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
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.process.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)

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


def sample_after_refresh(
    server: ServerProcess, sipp: SippLoad, *, start_polling_at: float, limit: float = 2.5,
    interval: float = 0.025, probe: Callable[[], dict[str, Any]] | None = None,
) -> Sample:
    """Poll /sessions from ``start_polling_at`` until the RTP counters change, then sample.

    The server copies the counters into /sessions once a second; sampling right after that
    refresh puts the packet counts and the CPU reading at (almost) the same instant.
    """
    now = time.monotonic()
    if start_polling_at > now:
        time.sleep(start_polling_at - now)
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
        memory=server.memory(),
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
    sipp: SippLoad | None = None
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
        sipp = SippLoad.start(workdir / "sipp", server, calls=calls, rate=args.rate,
                              duration_s=args.duration, timeout_s=timeout_s)
        launched = time.monotonic()
        log(f"{calls} calls: SIPp pid {sipp.pid}, server pid {server.pid}, "
            f"ramp {ramp_s:.1f} s, hold {args.duration:g} s")

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
        # first call's BYE (first answer + hold time).
        first_answer = min(parse_iso(s["answered_at"]) or time.time() for s in flowing)
        end_target = time.monotonic() + (first_answer + args.duration - time.time()) - 1.5
        start = sample_after_refresh(server, sipp, probe=hooks.probe,
                                     start_polling_at=time.monotonic() + args.settle)
        if end_target - start.mono < 3:
            log("warning: steady window under 3 s: raise --duration or --rate")
        # Poll for the refresh that precedes end_target (period ~1 s, a little more).
        ticks = max(1, int((end_target - start.mono) // 1.0))
        end = sample_after_refresh(server, sipp, start_polling_at=start.mono + ticks - 0.15,
                                   probe=hooks.probe)
        result.update(window_metrics(start, end, calls))
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


def print_table(levels: list[dict[str, Any]]) -> None:
    header = (
        f"{'calls':>5} {'ok/fail':>9} {'window':>7} {'CPU%':>6} {'ms/call-s':>9} "
        f"{'RSS MiB':>7} {'in pps':>6} {'out pps':>7} {'lost':>5} {'loss%':>7} {'drops':>5} "
        f"{'jit ms':>6} {'sipp%':>6} {'other%':>6} {'left':>4}"
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
            f"{len(r.get('left_on_server', [])):>4}"
        )
    print(
        "\nCPU% = server process, % of one core over the steady window; ms/call-s = server CPU "
        "ms per second of one call;\nin/out pps = RTP packets per call per second (50 = every "
        "20 ms frame); lost = RFC 3550 loss toward the server;\ndrops = kernel drops on the "
        "server's sockets; jit = mean inbound jitter; sipp%/other% = CPU of SIPp / of every "
        "other process;\nleft = calls still live on the server after SIPp ended."
    )


SUMMARY_KEYS = ("server_cpu_pct", "ms_per_call_second", "rss_mib", "in_pps_per_call",
                "out_pps_per_call", "loss_pct", "sipp_cpu_pct", "other_cpu_pct")


def summarize(levels: list[dict[str, Any]]) -> dict[str, Any]:
    """Per call count: median (and min/max) of the main numbers over the repeats."""
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
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default bench/results/capacity-<date>.json)")
    args = parser.parse_args(argv)
    if not 5 <= args.duration <= 600:
        parser.error("--duration must be 5..600 s")
    if not 0.5 <= args.rate <= 500:
        parser.error("--rate must be 0.5..500 calls/s")
    if not 1 <= args.repeat <= 10:
        parser.error("--repeat must be 1..10")
    if shutil.which("sipp") is None:
        parser.error("sipp is not installed (Debian package sip-tester)")

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_root = RESULTS / f"capacity-{stamp}"
    run_root.mkdir(parents=True, exist_ok=True)
    block = max(RTP_BLOCK, 4 * max(args.calls) + 40)
    log(f"run directory {run_root}")
    machine = machine_facts()  # before the load: load average, the commit measured
    levels: list[dict[str, Any]] = []
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
            "rtp_block": block, "scenario": str(STREAM_SCENARIO.relative_to(REPO)),
            "server_command": server_command(),
        },
        "levels": levels,
        "summary": summarize(levels),
    }
    output = args.output or RESULTS / f"capacity-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nsipagent capacity, echo model — {machine['nproc']} CPUs ({machine['cpu_model']}), "
          f"Python {machine['python']}, uvloop {'on' if machine['uvloop'] else 'off'}, "
          f"{args.duration:g} s calls\n")
    print_table(levels)
    if args.repeat > 1:
        print_summary(report["summary"])
    print(f"\nJSON: {output}")
    return 0 if all("error" not in lvl for lvl in levels) else 1


if __name__ == "__main__":
    sys.exit(main())
