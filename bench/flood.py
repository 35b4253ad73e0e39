"""INVITE flood while calls run: do the live calls keep their pacing while the server sheds it?

    .venv/bin/python -m bench.flood                                   # 100 calls, 2000 INVITE/s
    .venv/bin/python -m bench.flood --flood-rate 4000 --flood-seconds 10

A fresh ``sipagent run`` with the production admission settings (new calls per second
``--new-calls-cap``, default 20 as in the server's default; per-source rate limit at its
default), then bench/loadgen.py sets up ``--calls`` calls (at ``--rate`` per second, under the
cap) and streams them, measuring the server's outbound pacing with kernel receive timestamps.
Three windows: ``before`` (``--before`` s of calls alone), ``flood`` (a raw UDP sender in its own
process, bound to ``--source`` 127.0.0.2, sends distinct INVITEs at ``--flood-rate`` per second
for ``--flood-seconds``; it never ACKs) and ``after`` (``--after`` s, recovery). Per window: the
live calls' pacing p50/p99/max and packets received/expected (loadgen), the server's CPU, its
inbound RTP loss and socket drops, the CPU of the generator, the flooder and everything else.
The flooder counts every response by status and, per INVITE, the first final answer and how
long it took. The server's SIP counters (``/metrics``) are kept in the JSON.

The server exempts loopback from the per-source rate limit by default; here
``SIPAGENT_RATE_LIMIT_EXEMPT=127.0.0.1/32`` keeps only the load generator exempt, so the flooder
(127.0.0.2) meets the rate limit (one 503 a second, the rest dropped before parsing) as an
outside source would; ``--exempt-flooder`` restores the default to see the flood reach the
new-calls/s cap and ``max_calls`` (486/503, answered statelessly). With ``--deny-source`` the
allow-list (``SIPAGENT_ALLOW_CIDRS=127.0.0.1/32``) drops the flood before parsing: no answer.

Every loop is bounded in count and time; every process started here is stopped by PID.
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.capacity import (  # noqa: E402
    RESULTS,
    LineReader,
    LoadgenLoad,
    Sample,
    ServerProcess,
    log,
    machine_facts,
    pace_cells,
    percentile,
    pick_rtp_range,
    popen_pinned,
    proc_cpu_seconds,
    sample_after_refresh,
    window_metrics,
)
from bench.uac import build_request, header, sdp_offer, status_of  # noqa: E402
from tests.peers.processes import stop_process  # noqa: E402
from tests.peers.sipp import LOCALHOST  # noqa: E402

FLOOD_SOURCE = "127.0.0.2"
DRAIN_AFTER_S = 3.0
"""The flooder keeps reading answers this long after its last INVITE."""


# ------------------------------------------------------------------------------- the flooder


def flooder(target: tuple[str, int], source: str, rate: float, seconds: float) -> dict[str, Any]:
    """Send distinct INVITEs at ``rate``/s for ``seconds``; count the answers."""
    sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sip.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sip.bind((source, 0))
    sip.setblocking(False)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # never read: RTP of answered floods
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sink.bind((source, 0))
    local = sip.getsockname()
    body = sdp_offer(source, sink.getsockname()[1])
    uri = f"sip:echo@{target[0]}:{target[1]}"
    tag = secrets.token_hex(4)
    sent_at: dict[str, float] = {}
    final: dict[str, int] = {}
    final_ms: list[float] = []
    responses: Counter[str] = Counter()
    send_errors = 0

    def drain(limit: int = 5000) -> None:
        for _ in range(limit):
            try:
                data = sip.recv(65535)
            except BlockingIOError:
                return
            except OSError:
                continue
            now = time.perf_counter()
            message = data.decode(errors="replace")
            status = status_of(message)
            if status is None:
                responses["request"] += 1  # e.g. a BYE for a flood call the server took
                continue
            responses[str(status)] += 1
            call_id = header(message, "Call-ID", "i") or ""
            if status >= 200 and call_id in sent_at and call_id not in final:
                final[call_id] = status
                final_ms.append((now - sent_at[call_id]) * 1000)

    print(f"START {time.time():.6f}", flush=True)
    start = time.perf_counter()
    end = start + seconds
    sent = 0
    while (now := time.perf_counter()) < end:
        due = min(int((now - start) * rate) + 1, int(seconds * rate))
        for _ in range(min(due - sent, 1000)):
            call_id = f"flood-{sent}-{tag}@{source}"
            invite = build_request("INVITE", uri, local=local, server=target, call_id=call_id,
                                   cseq=1, from_tag=f"{tag}{sent}", body=body,
                                   user_agent="sipagent-bench-flood")
            try:
                sip.sendto(invite, target)
                sent_at[call_id] = time.perf_counter()
            except OSError:
                send_errors += 1
            sent += 1
        drain()
        time.sleep(0.001)
    flood_seconds = time.perf_counter() - start
    drain_end = time.perf_counter() + DRAIN_AFTER_S
    while time.perf_counter() < drain_end:
        drain()
        time.sleep(0.005)
    sip.close()
    sink.close()
    finals = Counter(str(v) for v in final.values())
    return {
        "sent": sent, "seconds": round(flood_seconds, 3),
        "rate_achieved": round(sent / flood_seconds, 1), "send_errors": send_errors,
        "responses_by_status": dict(responses),
        "final_by_status": dict(finals),
        "no_final_answer": sent - len(final),
        "final_ms_p50": _round(percentile(final_ms, 0.5)),
        "final_ms_p99": _round(percentile(final_ms, 0.99)),
        "final_ms_max": _round(max(final_ms) if final_ms else None),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


@dataclass
class FlooderProcess:
    process: subprocess.Popen[bytes]
    reader: LineReader
    started_at: float

    @classmethod
    def start(cls, workdir: Path, target: tuple[str, int], args: argparse.Namespace,
              ) -> FlooderProcess:
        workdir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "bench.flood", "--flooder", "--target",
                   f"{target[0]}:{target[1]}", "--source", args.source,
                   "--flood-rate", f"{args.flood_rate:g}",
                   "--flood-seconds", f"{args.flood_seconds:g}"]
        with open(workdir / "flooder.stderr", "wb") as err:
            process = popen_pinned("harness", command, cwd=REPO, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=err, start_new_session=True)
        reader = LineReader(process)
        line = reader.line("START ", 20)
        if line is None:
            stop_process(process)
            raise RuntimeError(f"flooder did not start; see {workdir}")
        return cls(process, reader, float(line))

    def result(self, timeout: float) -> dict[str, Any]:
        line = self.reader.line("RESULT ", timeout)
        stop_process(self.process)
        return json.loads(line) if line else {"error": "no result from the flooder"}


# ------------------------------------------------------------------------------- the run


def sip_metrics(server: ServerProcess) -> list[str]:
    """The server's non-zero ``sipagent_sip*`` Prometheus samples (bounded)."""
    url = f"http://{LOCALHOST}:{server.admin_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode(errors="replace")
    except OSError as exc:
        return [f"error: {exc!r}"]
    lines = [line for line in text.splitlines()
             if line.startswith("sipagent_sip") and not line.rstrip().endswith(" 0.0")]
    return lines[:200]


def measure(server: ServerProcess, load: LoadgenLoad, start: Sample, end: Sample, calls: int,
            extra_cpu: float = 0.0) -> dict[str, Any]:
    """capacity.window_metrics plus the live calls' pacing; ``extra_cpu``: the flooder's."""
    out = window_metrics(start, end, calls)
    seconds = end.mono - start.mono
    out["flooder_cpu_pct"] = round(100 * extra_cpu / seconds, 2)
    out["other_cpu_pct"] = round(out["other_cpu_pct"] - out["flooder_cpu_pct"], 2)
    out["pacing"] = load.pacing(start.wall, end.wall)
    return out


def run(args: argparse.Namespace, run_root: Path) -> dict[str, Any]:
    extra_env = {"SIPAGENT_MAX_NEW_CALLS_PER_SECOND": f"{args.new_calls_cap:g}"}
    if not args.exempt_flooder:
        extra_env["SIPAGENT_RATE_LIMIT_EXEMPT"] = "127.0.0.1/32"
    if args.deny_source:
        extra_env["SIPAGENT_ALLOW_CIDRS"] = "127.0.0.1/32"
    server = ServerProcess.start(run_root / "server", max_calls=args.calls + args.headroom,
                                 rtp_range=pick_rtp_range(), extra_env=extra_env)
    result: dict[str, Any] = {"server_pid": server.pid, "server_env": extra_env}
    load: LoadgenLoad | None = None
    flood: FlooderProcess | None = None
    try:
        # Long enough for every window and the STATS answers; "stop" ends it right after.
        hold = args.settle + args.before + args.flood_seconds + DRAIN_AFTER_S + args.after + 30
        load = LoadgenLoad.start(run_root / "loadgen", server, calls=args.calls, rate=args.rate,
                                 duration_s=hold, timeout_s=args.calls / args.rate + hold + 60)
        streaming_at = load.streaming_at(timeout=args.calls / args.rate + 60)
        if streaming_at is None:
            raise RuntimeError("the load generator never started streaming")
        established = len(server.sessions("answered"))
        result["live_calls_answered"] = established
        log(f"{established} live calls streaming (loadgen pid {load.pid}, server {server.pid})")
        time.sleep(max(0.0, streaming_at + args.settle - time.time()))

        windows: dict[str, dict[str, Any]] = {}
        a0 = sample_after_refresh(server, load, start_polling_at=time.monotonic())
        a1 = sample_after_refresh(server, load, start_polling_at=a0.mono + args.before - 0.15)
        log(f"flooding from {args.source}: {args.flood_rate:g} INVITE/s for "
            f"{args.flood_seconds:g} s")
        flood = FlooderProcess.start(run_root / "flooder",
                                     (LOCALHOST, server.sip_port), args)
        flood_cpu0 = proc_cpu_seconds(flood.process.pid)
        b0 = sample_after_refresh(server, load, start_polling_at=time.monotonic() + 0.3)
        flood_end = time.monotonic() + (flood.started_at + args.flood_seconds - time.time())
        b1 = sample_after_refresh(server, load, start_polling_at=flood_end - 1.3)
        flood_cpu = proc_cpu_seconds(flood.process.pid) - flood_cpu0
        result["flood"] = flood.result(timeout=args.flood_seconds + DRAIN_AFTER_S + 30)
        c0 = sample_after_refresh(server, load, start_polling_at=time.monotonic())
        c1 = sample_after_refresh(server, load, start_polling_at=c0.mono + args.after - 0.15)
        windows["before"] = measure(server, load, a0, a1, args.calls)
        windows["flood"] = measure(server, load, b0, b1, args.calls, flood_cpu)
        windows["after"] = measure(server, load, c0, c1, args.calls)
        result["windows"] = windows
        result["sip_metrics"] = sip_metrics(server)
        result["sessions_at_end"] = len(server.sessions())
        load.stop()
        result["loadgen"] = load.summary()
    finally:
        if flood is not None:
            stop_process(flood.process)
        if load is not None and load.running():
            load.stop()
        result["server_exit"] = server.stop()
        result["server_log"] = server.log_problems()
    return result


def print_report(result: dict[str, Any], args: argparse.Namespace) -> None:
    header_line = (f"{'window':>7} {'secs':>5} {'srv CPU%':>8} {'out pps':>7} {'in lost':>7} "
                   f"{'drops':>5} {'pace p50/p99/max ms':>20} {'rx%':>6} {'load%':>6} "
                   f"{'flood%':>6} {'other%':>6} {'wait%':>5}")
    print(header_line)
    print("-" * len(header_line))
    for name, w in result.get("windows", {}).items():
        print(f"{name:>7} {w['window_seconds']:>5.1f} {w['server_cpu_pct']:>8.1f} "
              f"{w['out_pps_per_call']:>7.2f} {w['lost']:>7} {w['socket_drops']:>5} "
              f"{pace_cells(w.get('pacing'))} {w['sipp_cpu_pct']:>6.1f} "
              f"{w['flooder_cpu_pct']:>6.1f} {w['other_cpu_pct']:>6.1f} "
              f"{w['server_runqueue_wait_pct']:>5.1f}")
    f = result.get("flood", {})
    print(f"\nflood: {f.get('sent')} INVITEs from {args.source} in {f.get('seconds')} s "
          f"({f.get('rate_achieved')}/s); first final answer per INVITE: "
          f"{f.get('final_by_status')}, none: {f.get('no_final_answer')}; "
          f"final answer p50/p99 {f.get('final_ms_p50')}/{f.get('final_ms_p99')} ms; "
          f"all responses: {f.get('responses_by_status')}")
    print("target (issue 7): live calls' pacing p99 <= 5 ms during the flood; pace = |arrival - "
          "20 ms grid| at the load generator\n(kernel timestamps); in lost = RFC 3550 loss of "
          "the live calls' streams toward the server; flood% = the flooder's CPU;\nwait% = the "
          "server's event loop waiting for a CPU (schedstat), % of the window.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.flood", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--calls", type=int, default=100, help="live calls (default 100)")
    parser.add_argument("--rate", type=float, default=15.0,
                        help="live calls set up per second (default 15, under the cap)")
    parser.add_argument("--flood-rate", type=float, default=2000.0,
                        help="flood INVITEs per second (default 2000)")
    parser.add_argument("--flood-seconds", type=float, default=10.0,
                        help="flood length (default 10)")
    parser.add_argument("--source", default=FLOOD_SOURCE,
                        help=f"the flood's source address (default {FLOOD_SOURCE})")
    parser.add_argument("--new-calls-cap", type=float, default=20.0,
                        help="server SIPAGENT_MAX_NEW_CALLS_PER_SECOND (default 20)")
    parser.add_argument("--headroom", type=int, default=50,
                        help="server max_calls = calls + this (default 50)")
    parser.add_argument("--exempt-flooder", action="store_true",
                        help="leave all of loopback exempt from the rate limit (the default)")
    parser.add_argument("--deny-source", action="store_true",
                        help="allow-list 127.0.0.1/32 only: the flood source is not allowed")
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--before", type=float, default=8.0, help="seconds before the flood")
    parser.add_argument("--after", type=float, default=5.0, help="seconds after the flood")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--flooder", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--target", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.flood_rate <= 20_000 or not 1 <= args.flood_seconds <= 120:
        parser.error("--flood-rate 1..20000, --flood-seconds 1..120")
    if args.flooder:
        host, _, port = (args.target or "").rpartition(":")
        result = flooder((host, int(port)), args.source, args.flood_rate, args.flood_seconds)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    if not 1 <= args.calls <= 1000 or not 0.5 <= args.rate <= 500:
        parser.error("--calls 1..1000, --rate 0.5..500")
    if not (2 <= args.before <= 120 and 2 <= args.after <= 120):
        parser.error("--before/--after 2..120 s")

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_root = RESULTS / f"flood-{stamp}"
    log(f"run directory {run_root}")
    machine = machine_facts()
    result = run(args, run_root)
    report = {"benchmark": "flood", "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": machine, "settings": {k: v for k, v in vars(args).items()
                                               if k not in ("flooder", "target", "output")},
              **result}
    output = args.output or RESULTS / f"flood-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nsipagent under an INVITE flood — {args.calls} live calls (echo), "
          f"{machine['nproc']} CPUs ({machine['cpu_model']})\n")
    print_report(result, args)
    print(f"\nJSON: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
