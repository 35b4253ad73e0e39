"""Call rate: the highest rate of new calls (calls/s) the server takes with zero failures.

    .venv/bin/python -m bench.callrate                          # 25, 50, 100... 60 s each
    .venv/bin/python -m bench.callrate --duration 10            # a quick look, 10 s per rate
    .venv/bin/python -m bench.callrate --rates 300 --no-bisect  # one rate for the full 60 s

For each rate R (searched upward, ``--rates``) a fresh ``sipagent run`` (echo model,
``max_new_calls_per_second=0``, ``max_calls`` well above R x call length) is started and SIPp
places R calls per second for ``--duration`` seconds (R x duration calls). Each call is short:
``--call-seconds`` (1 s) from the ACK to the BYE; with ``--media stream`` (the default) SIPp
streams 20 ms PCMU for that second (bench/sipp/uac_stream.xml, as bench/capacity.py), with
``--media none`` it sends no RTP (bench/sipp/uac_short.xml: set-up and teardown only; the
server's echo still sends its silence).

A rate passes when every call SIPp placed succeeded. After the first rate that fails, the
interval between it and the last passing rate is bisected (``--bisect`` steps) and the
ceiling is the highest passing rate. Reported per rate: calls attempted / successful /
failed (SIPp's failure counters, and the status codes of the unexpected responses in its error
log), the rate SIPp really reached, INVITE → 200 OK p50/p99 from SIPp's ``-trace_rtt`` (whole
milliseconds), SIPp's retransmissions, server CPU (% of one core over the run and ms per call),
peak live calls, kernel drops on the server's sockets and calls left on the server. JSON goes to
bench/results/callrate-<date>.json.

Every loop is bounded in count and time; SIPp and the server are started and stopped here by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.capacity import (  # noqa: E402
    BENCH,
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
    read_rtt_rows,
    scrape_metrics,
    sip_metrics,
    sipp_error_statuses,
)
from bench.setup_time import distribution  # noqa: E402

SHORT_SCENARIO = BENCH / "sipp" / "uac_short.xml"
SCENARIOS = {"stream": STREAM_SCENARIO, "none": SHORT_SCENARIO}
DEFAULT_RATES = (25, 50, 100, 150, 200, 300, 400, 600, 800)
TARGET_CPS = 100
"""The issue's target: at least this many new calls per second with no failure."""
MAX_RTP_BLOCK = 2800
"""20200-23000 at most: between the port ranges the test suites pick (see bench/README.md)."""
POLL_S = 2.0
"""How often the live-call count is read from /metrics while SIPp runs."""
DRAIN_LIMIT_S = 40.0
"""After SIPp: how long the server may take to end its last calls (its 32 s timers + margin)."""


def children_cpu() -> float:
    """CPU seconds of the reaped children of this process (SIPp, once waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def achieved_rate(rows: list[tuple[float, float]]) -> float | None:
    """Calls per second SIPp really placed: the INVITEs' send times (response time subtracted
    from the time of the 200 OK, ms resolution) over the span from the first to the last."""
    sent = sorted(date - rtt for date, rtt in rows)
    if len(sent) < 2 or sent[-1] <= sent[0]:
        return None
    return (len(sent) - 1) / ((sent[-1] - sent[0]) / 1000)


def run_rate(rate: float, args: argparse.Namespace, run_root: Path) -> dict[str, Any]:
    """One fresh server, SIPp at ``rate`` calls/s for ``args.duration`` s; everything measured."""
    calls = max(1, round(rate * args.duration))
    # As many ports as the gap between the test suites' ranges allows: calls whose ACK was
    # lost hold their pair for 32 s, and a full range answers 503 (a bench artefact).
    rtp_range = pick_rtp_range(MAX_RTP_BLOCK)
    workdir = run_root / f"r{rate:g}"
    result: dict[str, Any] = {"rate": rate, "calls_planned": calls, "rtp_range": rtp_range,
                              "workdir": str(workdir)}
    server = ServerProcess.start(workdir / "server", rtp_range=rtp_range,
                                 max_calls=int(rate * (args.call_seconds + 10)) + 100)
    sipp: SippLoad | None = None
    try:
        result["server_pid"] = server.pid
        result["uvloop"] = uses_uvloop(server.pid)
        result["rss_idle_mib"] = server.memory().get("VmRSS")
        metrics_before = scrape_metrics(server)
        drops0, system0, reaped0 = server.socket_drops(), system_cpu(), children_cpu()
        cpu0, t0 = server.cpu_seconds(), time.monotonic()
        sipp = SippLoad.start(
            workdir / "sipp", server, calls=calls, rate=rate, duration_s=args.call_seconds,
            timeout_s=1.5 * args.duration + args.call_seconds + 60, trace_rtt=True,
            scenario=SCENARIOS[args.media],
        )
        log(f"{rate:g} calls/s: {calls} calls, SIPp pid {sipp.pid}, server pid {server.pid}")
        peak = {"live": 0.0, "next": 0.0}

        def watch() -> None:
            now = time.monotonic()
            if now < peak["next"]:
                return
            peak["next"] = now + POLL_S
            with contextlib.suppress(OSError, ValueError):
                live = metric(scrape_metrics(server, timeout=5), "sipagent_active_calls")
                peak["live"] = max(peak["live"], live or 0.0)

        sipp.wait(poll=watch)
        cpu1, t1 = server.cpu_seconds(), time.monotonic()
        system1, sipp_cpu = system_cpu(), children_cpu() - reaped0
        # The last calls' BYE transactions and RTP endpoints close right after SIPp's last 200;
        # a call whose ACK or BYE never arrived ends by the server's timers (64 x T1 = 32 s).
        live_right_after = metric(scrape_metrics(server), "sipagent_active_calls")
        live_after: float | None = live_right_after
        drain_started = time.monotonic()
        while live_after and time.monotonic() - drain_started < DRAIN_LIMIT_S:
            time.sleep(1.0)
            live_after = metric(scrape_metrics(server), "sipagent_active_calls")
        drain_seconds = time.monotonic() - drain_started
        metrics_after = scrape_metrics(server)
        seconds = t1 - t0
        cpu = cpu1 - cpu0
        summary = sipp.summary()
        busy = system1[0] - system0[0]
        rtt_rows = read_rtt_rows(sipp.workdir)
        reached = achieved_rate(rtt_rows)
        result.update({
            "sipp": summary,
            "attempted": summary.get("created"),
            "successful": summary.get("successful"),
            "failed": summary.get("failed"),
            "failure_causes": summary.get("failures"),
            "unexpected_statuses": sipp_error_statuses(sipp.workdir),
            "retransmissions": summary.get("retransmissions"),
            "achieved_cps": round(reached, 1) if reached else None,
            "invite_to_200_ms": distribution([rtt for _, rtt in rtt_rows]),
            "run_seconds": round(seconds, 2),
            "server_cpu_seconds": round(cpu, 3),
            "server_cpu_pct": round(100 * cpu / seconds, 2),
            "server_cpu_ms_per_call": round(1000 * cpu / calls, 3),
            "sipp_cpu_pct": round(100 * sipp_cpu / seconds, 2),
            "other_cpu_pct": round(100 * (busy - cpu - sipp_cpu) / seconds, 2),
            "machine_busy_pct_of_all_cpus": round(
                100 * busy / max(system1[1] - system0[1], 1e-9), 2),
            "peak_live_calls": int(peak["live"]),
            "socket_drops": server.socket_drops() - drops0,
            "rss_end_mib": server.memory().get("VmRSS"),
            "rss_peak_mib": server.memory().get("VmHWM"),
            "live_calls_right_after": live_right_after,
            "drain_seconds": round(drain_seconds, 1),
            "live_calls_after": live_after,
            "left_on_server": [{"call_id": s["call_id"], "state": s["state"]}
                               for s in server.sessions()],
            "sip_before": sip_metrics(metrics_before),
            "sip_after": sip_metrics(metrics_after),
        })
        result["passed"] = (result["failed"] == 0 and result["successful"] == calls
                            and not result["left_on_server"])
    except Exception as exc:  # the level fails, the search goes on with what it knows
        log(f"{rate:g} calls/s: error {exc!r}")
        result.update({"error": repr(exc), "passed": False})
    finally:
        if sipp is not None and sipp.running():
            sipp.stop()
        result["server_exit"] = server.stop()
        result["server_log"] = server.log_problems()
    log(f"{rate:g} calls/s: {'pass' if result['passed'] else 'FAIL'} "
        f"({result.get('successful')}/{result.get('attempted')} ok, "
        f"{result.get('failed')} failed {result.get('failure_causes') or ''})")
    return result


def search(args: argparse.Namespace, run_root: Path) -> list[dict[str, Any]]:
    """Upward through ``args.rates`` until a rate fails, then bisect; every run is kept."""
    levels: list[dict[str, Any]] = []
    best: float | None = None
    failed: float | None = None
    for rate in args.rates:
        level = run_rate(rate, args, run_root)
        levels.append(level)
        if not level["passed"]:
            failed = rate
            break
        best = rate
    if best is None or failed is None:
        return levels
    low, high = best, failed
    for _ in range(args.bisect):
        if high - low <= max(5.0, 0.1 * low):
            break
        middle = float(round((low + high) / 2))
        level = run_rate(middle, args, run_root)
        levels.append(level)
        if level["passed"]:
            low = middle
        else:
            high = middle
    return levels


def ceiling(levels: list[dict[str, Any]]) -> float | None:
    """The highest rate that passed below the lowest rate that failed."""
    failed = [lvl["rate"] for lvl in levels if not lvl["passed"]]
    limit = min(failed) if failed else float("inf")
    passed = [lvl["rate"] for lvl in levels if lvl["passed"] and lvl["rate"] < limit]
    return max(passed) if passed else None


def print_table(levels: list[dict[str, Any]]) -> None:
    header = (f"{'cps':>5} {'reached':>7} {'calls':>6} {'ok':>6} {'fail':>5} {'retr':>5} "
              f"{'200 p50':>7} {'p99':>5} {'CPU%':>6} {'ms/call':>7} {'sipp%':>6} "
              f"{'other%':>6} {'peak':>5} {'drops':>5} {'lingr':>5} {'left':>4}  result")
    print(header)
    print("-" * len(header))
    for r in sorted(levels, key=lambda lvl: lvl["rate"]):
        if "error" in r:
            print(f"{r['rate']:>5g}  error: {r['error']}")
            continue
        rtt = r["invite_to_200_ms"]
        causes = ", ".join(f"{k} {v}" for k, v in (r["failure_causes"] or {}).items())
        statuses = ", ".join(f"{k}:{v}" for k, v in r["unexpected_statuses"].items())
        verdict = "pass" if r["passed"] else f"FAIL {causes} {statuses}".rstrip()
        print(f"{r['rate']:>5g} {r['achieved_cps'] or 0:>7.1f} {r['attempted'] or 0:>6} "
              f"{r['successful'] or 0:>6} {r['failed'] or 0:>5} {r['retransmissions'] or 0:>5} "
              f"{rtt.get('p50', 0):>7g} {rtt.get('p99', 0):>5g} {r['server_cpu_pct']:>6.1f} "
              f"{r['server_cpu_ms_per_call']:>7.2f} {r['sipp_cpu_pct']:>6.1f} "
              f"{r['other_cpu_pct']:>6.1f} {r['peak_live_calls']:>5} {r['socket_drops']:>5} "
              f"{int(r['live_calls_right_after'] or 0):>5} {len(r['left_on_server']):>4}  "
              f"{verdict}")
    print("\ncps = SIPp's target rate, reached = rate of SIPp's INVITEs (from -trace_rtt); "
          "retr = SIPp retransmissions;\n200 p50/p99 = INVITE → 200 OK ms (SIPp -trace_rtt, whole "
          "ms); CPU% = server, % of one core over the run;\nms/call = server CPU per call; peak "
          "= most live calls seen; drops = kernel drops on the server's sockets;\nlingr = calls "
          "still live on the server when SIPp ended (ACK/BYE lost: they end by its 32 s timers);"
          "\nleft = calls still live 40 s later.")


def parse_rates(text: str) -> list[float]:
    try:
        values = sorted({float(part) for part in text.split(",") if part.strip()})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text}") from exc
    if not values or any(v < 0.5 or v > 1000 for v in values):
        raise argparse.ArgumentTypeError("rates must be 0.5..1000 calls/s")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.callrate", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rates", type=parse_rates, default=list(DEFAULT_RATES),
                        help="rates to try upward, calls/s (default "
                             + ",".join(str(r) for r in DEFAULT_RATES) + ")")
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds SIPp places calls at each rate (default 60, the issue's)")
    parser.add_argument("--call-seconds", type=float, default=1.0,
                        help="length of each call, ACK to BYE (default 1)")
    parser.add_argument("--media", choices=sorted(SCENARIOS), default="stream",
                        help="stream: 20 ms PCMU from SIPp for the whole call (default); "
                             "none: no RTP from SIPp")
    parser.add_argument("--bisect", type=int, default=3,
                        help="bisection steps after the first failing rate (default 3)")
    parser.add_argument("--no-bisect", dest="bisect", action="store_const", const=0)
    add_output_option(parser, "callrate-<date>.json")
    args = parser.parse_args(argv)
    if not 2 <= args.duration <= 600:
        parser.error("--duration must be 2..600 s")
    if not 0.1 <= args.call_seconds <= 30:
        parser.error("--call-seconds must be 0.1..30")
    if not 0 <= args.bisect <= 6:
        parser.error("--bisect must be 0..6")
    if shutil.which("sipp") is None:
        parser.error("sipp is not installed (Debian package sip-tester)")

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_root = RESULTS / f"callrate-{stamp}"
    run_root.mkdir(parents=True, exist_ok=True)
    log(f"run directory {run_root}")
    machine = machine_facts()
    levels = search(args, run_root)
    if git_facts() != {k: machine.get(k) for k in ("git_commit", "git_changed_outside_bench")}:
        machine["tree_changed_during_run"] = git_facts()
    machine["uvloop"] = next((lvl["uvloop"] for lvl in levels if "uvloop" in lvl), None)
    machine["loadavg_at_end"] = list(os.getloadavg())
    best = ceiling(levels)
    passing = [lvl for lvl in levels if lvl["passed"]]
    report: dict[str, Any] = {
        "benchmark": "callrate",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "settings": {"rates": args.rates, "duration_s": args.duration,
                     "call_seconds": args.call_seconds, "media": args.media,
                     "scenario": str(SCENARIOS[args.media].relative_to(REPO)),
                     "bisect": args.bisect, "model": "echo",
                     "max_new_calls_per_second": 0},
        "levels": levels,
        "ceiling_cps": best,
        "target_cps": TARGET_CPS,
        "meets_target": best is not None and best >= TARGET_CPS,
        "median_other_cpu_pct": round(statistics.median(
            [lvl["other_cpu_pct"] for lvl in passing]), 1) if passing else None,
    }
    output = args.output or RESULTS / f"callrate-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nsipagent call rate, echo model — {machine['nproc']} CPUs ({machine['cpu_model']}), "
          f"Python {machine['python']}, uvloop {'on' if machine['uvloop'] else 'off'}, "
          f"{args.duration:g} s per rate, {args.call_seconds:g} s calls, media {args.media}\n")
    print_table(levels)
    print(f"\nceiling: {best if best is not None else 'none'} calls/s with zero failures "
          f"(target ≥ {TARGET_CPS}: {'met' if report['meets_target'] else 'NOT met'})")
    print(f"\nJSON: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
