"""Soak: ~100 live calls for 10 minutes, calls starting and ending all along; leaks show.

    .venv/bin/python -m bench.soak                                  # 100 calls x 10 min
    .venv/bin/python -m bench.soak --minutes 3 --calls 50 --call-seconds 30

A fresh ``sipagent run`` (echo model) is started, sampled idle (the baseline), then SIPp places
calls of ``--call-seconds`` (60 s) streaming 20 ms PCMU both ways (bench/sipp/uac_stream.xml,
as bench/capacity.py) at ``--calls`` ÷ ``--call-seconds`` calls per second, so that about
``--calls`` are up from the end of the first wave on and every second some calls end and new
ones start. Calls are placed for ``--minutes`` minus one call length, so the last call ends when
the soak's time is up. Every ``--sample-seconds`` (10 s) the server is sampled: RSS (and peak),
open file descriptors (``/proc/<pid>/fd``), the UDP and TCP sockets among them (matched against
``/proc/<pid>/net/udp*``/``tcp*``), threads, live calls and asyncio tasks (admin ``/metrics``:
``sipagent_active_calls``, ``sipagent_asyncio_tasks``) and its CPU since the previous sample.
Once SIPp is done the server is sampled until the calls are gone and fds, sockets and tasks are
back at the idle baseline (bounded), then stopped.

Reported: RSS growth from the first warm sample (one call length plus one sample period after
the start: the first wave has ended and been replaced) to the last sample before the calls
wind down (the issue's target: at most 5 %), the RSS slope over that steady part (least
squares, MiB per hour), and whether fds, UDP sockets and tasks came back to the baseline (no
leaked ports or tasks). Samples go to ``samples.jsonl`` in the run directory as they are taken;
the report to bench/results/soak-<date>.json.

Every loop is bounded in count and time; SIPp and the server are started and stopped here by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.capacity import (  # noqa: E402
    RESULTS,
    STREAM_SCENARIO,
    ServerProcess,
    SippLoad,
    git_facts,
    log,
    machine_facts,
    pick_rtp_range,
    system_cpu,
    uses_uvloop,
)
from bench.common import (  # noqa: E402
    add_output_option,
    metric,
    process_sockets,
    scrape_metrics,
    sip_metrics,
    sipp_error_statuses,
)

RSS_TARGET_PCT = 5.0
"""The issue's target: RSS growth from the first warm sample to the end."""
DRAIN_SAMPLES = 20
DRAIN_PERIOD_S = 2.0
"""After the load: at most this many samples this far apart while waiting for the baseline."""
BASELINE_KEYS = ("fds", "udp_sockets", "tcp_sockets", "asyncio_tasks", "threads")


def threads(pid: int) -> int | None:
    with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return None


class Sampler:
    """Reads the server's resources; keeps the CPU reading of the previous sample."""

    def __init__(self, server: ServerProcess, started: float, journal: Path) -> None:
        self.server = server
        self.started = started
        self.journal = journal
        self.last_cpu = (server.cpu_seconds(), time.monotonic(), system_cpu())

    def sample(self, phase: str) -> dict[str, Any]:
        server = self.server
        now = time.monotonic()
        cpu, system = server.cpu_seconds(), system_cpu()
        cpu0, t0, system0 = self.last_cpu
        self.last_cpu = (cpu, now, system)
        elapsed = max(now - t0, 1e-9)
        memory = server.memory()
        live: float | None = None
        tasks: float | None = None
        with contextlib.suppress(OSError, ValueError):
            samples = scrape_metrics(server)
            live = metric(samples, "sipagent_active_calls")
            tasks = metric(samples, "sipagent_asyncio_tasks")
        row: dict[str, Any] = {
            "t": round(now - self.started, 1),
            "phase": phase,
            "rss_mib": round(memory.get("VmRSS", 0.0), 2),
            "rss_peak_mib": round(memory.get("VmHWM", 0.0), 2),
            **process_sockets(server.pid),
            "threads": threads(server.pid),
            "live_calls": None if live is None else int(live),
            # NaN (no loop serving the scrape) is not JSON: None.
            "asyncio_tasks": None if tasks is None or tasks != tasks else int(tasks),
            "cpu_pct": round(100 * (cpu - cpu0) / elapsed, 2),
            "machine_busy_pct_of_all_cpus": round(
                100 * (system[0] - system0[0]) / max(system[1] - system0[1], 1e-9), 1),
        }
        with open(self.journal, "a") as out:
            out.write(json.dumps(row) + "\n")
        return row


def rss_slope_mib_per_hour(rows: list[dict[str, Any]]) -> float | None:
    if len(rows) < 3:
        return None
    fit = statistics.linear_regression([r["t"] for r in rows], [r["rss_mib"] for r in rows])
    return round(fit.slope * 3600, 2)


def analyse(samples: list[dict[str, Any]], call_seconds: float, sample_seconds: float,
            steady_end: float) -> dict[str, Any]:
    """RSS growth warm → end of steady load, and whether the resources came back to baseline."""
    idle = [s for s in samples if s["phase"] == "idle"]
    load = [s for s in samples if s["phase"] == "load"]
    after = [s for s in samples if s["phase"] == "after"]
    warm_from = call_seconds + sample_seconds
    steady = [s for s in load if warm_from <= s["t"] <= steady_end + sample_seconds / 2]
    out: dict[str, Any] = {"warm_from_s": warm_from, "steady_end_s": steady_end,
                           "steady_samples": len(steady)}
    if idle:
        out["baseline"] = {k: idle[-1].get(k) for k in ("rss_mib", *BASELINE_KEYS)}
    if after:
        out["after"] = {k: after[-1].get(k) for k in ("rss_mib", "live_calls", *BASELINE_KEYS)}
    if len(steady) >= 2:
        warm, end = steady[0], steady[-1]
        growth = 100 * (end["rss_mib"] - warm["rss_mib"]) / warm["rss_mib"]
        out.update({
            "rss_warm_mib": warm["rss_mib"], "rss_warm_t": warm["t"],
            "rss_end_mib": end["rss_mib"], "rss_end_t": end["t"],
            "rss_growth_pct": round(growth, 2),
            "rss_growth_ok": growth <= RSS_TARGET_PCT,
            "rss_slope_mib_per_hour": rss_slope_mib_per_hour(steady),
            "live_calls_steady": {
                "median": statistics.median(s["live_calls"] or 0 for s in steady),
                "min": min(s["live_calls"] or 0 for s in steady),
                "max": max(s["live_calls"] or 0 for s in steady)},
            "cpu_pct_steady_median": statistics.median(s["cpu_pct"] for s in steady),
            "machine_busy_pct_median": statistics.median(
                s["machine_busy_pct_of_all_cpus"] for s in steady),
        })
    if idle and after:
        base, last = idle[-1], after[-1]
        back = {k: (last.get(k) is not None and base.get(k) is not None
                    and last[k] <= base[k]) for k in BASELINE_KEYS}
        out["back_at_baseline"] = back
        out["leaked"] = {k: last[k] - base[k] for k in BASELINE_KEYS
                         if not back[k] and last.get(k) is not None and base.get(k) is not None}
        out["rss_after_vs_idle_pct"] = round(
            100 * (last["rss_mib"] - base["rss_mib"]) / base["rss_mib"], 2)
    return out


def run_soak(args: argparse.Namespace, run_root: Path) -> dict[str, Any]:
    load_s = args.minutes * 60
    rate = args.calls / args.call_seconds
    total = max(1, round(rate * (load_s - args.call_seconds)))
    rtp_range = pick_rtp_range()
    server = ServerProcess.start(run_root / "server", max_calls=2 * args.calls + 50,
                                 rtp_range=rtp_range)
    result: dict[str, Any] = {"rtp_range": rtp_range, "rate_cps": round(rate, 3),
                              "calls_planned": total, "server_pid": server.pid,
                              "uvloop": uses_uvloop(server.pid)}
    sipp: SippLoad | None = None
    samples: list[dict[str, Any]] = []
    try:
        sampler = Sampler(server, time.monotonic(), run_root / "samples.jsonl")
        time.sleep(3.0)  # start-up done: the admin, the stats task
        for _ in range(3):
            samples.append(sampler.sample("idle"))
            time.sleep(2.0)
        base = samples[-1]
        result["sip_before"] = sip_metrics(scrape_metrics(server))
        sipp = SippLoad.start(run_root / "sipp", server, calls=total, rate=rate,
                              duration_s=args.call_seconds, timeout_s=load_s + 120)
        sampler.started = time.monotonic()
        log(f"soak: {total} calls of {args.call_seconds:g} s at {rate:.3f}/s over "
            f"{args.minutes:g} min; SIPp pid {sipp.pid}, server pid {server.pid}")
        next_at = sampler.started + args.sample_seconds
        limit = sampler.started + load_s + 120
        while sipp.running() and time.monotonic() < limit:
            delay = next_at - time.monotonic()
            if delay > 0:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    sipp.process.wait(timeout=delay)  # SippLoad.wait would stop SIPp
                if not sipp.running():
                    break
            row = sampler.sample("load")
            samples.append(row)
            next_at += args.sample_seconds
            if int(row["t"]) % 60 < args.sample_seconds:
                log(f"t={row['t']:.0f}s live {row['live_calls']} RSS {row['rss_mib']:.1f} MiB "
                    f"fds {row['fds']} udp {row['udp_sockets']} tasks {row['asyncio_tasks']} "
                    f"cpu {row['cpu_pct']:.1f}%")
        sipp.wait()
        for _ in range(DRAIN_SAMPLES):
            time.sleep(DRAIN_PERIOD_S)
            row = sampler.sample("after")
            samples.append(row)
            if not row["live_calls"] and all(
                    row.get(k) is not None and base.get(k) is not None and row[k] <= base[k]
                    for k in BASELINE_KEYS):
                break
        result["sipp"] = sipp.summary()
        result["unexpected_statuses"] = sipp_error_statuses(sipp.workdir)
        result["sip_after"] = sip_metrics(scrape_metrics(server))
        result["left_on_server"] = [{"call_id": s["call_id"], "state": s["state"]}
                                    for s in server.sessions()]
    finally:
        if sipp is not None and sipp.running():
            sipp.stop()
        result["server_exit"] = server.stop()
        result["server_log"] = server.log_problems()
    result["samples"] = samples
    result.update(analyse(samples, args.call_seconds, args.sample_seconds,
                          steady_end=load_s - args.call_seconds))
    return result


def print_report(result: dict[str, Any]) -> None:
    print(f"{'t s':>6} {'phase':<6} {'live':>5} {'RSS MiB':>8} {'fds':>5} {'udp':>5} "
          f"{'tcp':>4} {'tasks':>6} {'thr':>4} {'CPU%':>6} {'busy%':>6}")
    rows = result["samples"]
    step = max(1, len(rows) // 40)  # about 40 rows: every idle/after row, load rows thinned
    for i, r in enumerate(rows):
        if r["phase"] == "load" and i % step and i != len(rows) - 1:
            continue
        print(f"{r['t']:>6.0f} {r['phase']:<6} {r['live_calls']!s:>5} {r['rss_mib']:>8.1f} "
              f"{r['fds']:>5} {r['udp_sockets']:>5} {r['tcp_sockets']:>4} "
              f"{r['asyncio_tasks']!s:>6} {r['threads']!s:>4} {r['cpu_pct']:>6.1f} "
              f"{r['machine_busy_pct_of_all_cpus']:>6.1f}")
    s = result.get("sipp", {})
    print(f"\nSIPp: {s.get('successful')}/{s.get('created')} successful, {s.get('failed')} "
          f"failed {s.get('failures') or ''}, {s.get('retransmissions')} retransmissions; "
          f"left on the server: {len(result.get('left_on_server', []))}")
    if "rss_growth_pct" in result:
        print(f"RSS {result['rss_warm_mib']:.1f} MiB at t={result['rss_warm_t']:.0f} s → "
              f"{result['rss_end_mib']:.1f} MiB at t={result['rss_end_t']:.0f} s: "
              f"{result['rss_growth_pct']:+.2f} % (target ≤ {RSS_TARGET_PCT:g} %: "
              f"{'met' if result['rss_growth_ok'] else 'NOT met'}), slope "
              f"{result['rss_slope_mib_per_hour']} MiB/h over {result['steady_samples']} samples; "
              f"live calls {result['live_calls_steady']}")
    else:
        print("no steady part (raise --minutes or lower --call-seconds): no RSS growth figure")
    if "back_at_baseline" in result:
        print(f"baseline {result['baseline']}\nafter    {result['after']}\n"
              f"back at baseline: {result['back_at_baseline']}; "
              f"leaked: {result['leaked'] or 'none'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--calls", type=int, default=100,
                        help="calls kept up (default 100)")
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="length of the load (default 10)")
    parser.add_argument("--call-seconds", type=float, default=60.0,
                        help="length of each call (default 60)")
    parser.add_argument("--sample-seconds", type=float, default=10.0,
                        help="sampling period (default 10)")
    add_output_option(parser, "soak-<date>.json")
    args = parser.parse_args(argv)
    if not 1 <= args.calls <= 1000:
        parser.error("--calls must be 1..1000")
    if not 0.5 <= args.minutes <= 240:
        parser.error("--minutes must be 0.5..240")
    if not 1 <= args.sample_seconds <= 60 or not 5 <= args.call_seconds <= 600:
        parser.error("--sample-seconds must be 1..60 and --call-seconds 5..600")
    if args.minutes * 60 < 2 * args.call_seconds + 2 * args.sample_seconds:
        parser.error("--minutes too short for --call-seconds: no steady part would remain")
    if shutil.which("sipp") is None:
        parser.error("sipp is not installed (Debian package sip-tester)")

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_root = RESULTS / f"soak-{stamp}"
    run_root.mkdir(parents=True, exist_ok=True)
    log(f"run directory {run_root}")
    machine = machine_facts()
    try:
        result = run_soak(args, run_root)
    except Exception as exc:
        log(f"soak failed: {exc!r}")
        result = {"error": repr(exc)}
    if git_facts() != {k: machine.get(k) for k in ("git_commit", "git_changed_outside_bench")}:
        machine["tree_changed_during_run"] = git_facts()
    machine["uvloop"] = result.get("uvloop")
    machine["loadavg_at_end"] = list(os.getloadavg())
    report: dict[str, Any] = {
        "benchmark": "soak",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "settings": {"calls": args.calls, "minutes": args.minutes,
                     "call_seconds": args.call_seconds, "sample_seconds": args.sample_seconds,
                     "scenario": str(STREAM_SCENARIO.relative_to(REPO)), "model": "echo",
                     "workdir": str(run_root)},
        **result,
    }
    output = args.output or RESULTS / f"soak-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nsipagent soak, echo model — {machine['nproc']} CPUs ({machine['cpu_model']}), "
          f"Python {machine['python']}, {args.calls} calls of {args.call_seconds:g} s over "
          f"{args.minutes:g} min\n")
    if "error" in result:
        print(f"error: {result['error']}")
    else:
        print_report(report)
    print(f"\nJSON: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
