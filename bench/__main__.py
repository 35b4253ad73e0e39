"""The whole benchmark harness in one command.

    .venv/bin/python -m bench --quick                      # every part, small: a few minutes
    .venv/bin/python -m bench                              # the full profile (about 45 minutes)
    .venv/bin/python -m bench --only callrate,loss         # some parts
    .venv/bin/python -m bench --quick --only soak -- --minutes 3   # extra options for one part

Runs, in order: capacity (echo), bridged (fake Realtime), setup_time, callrate, loss, flood,
soak. Each part is a module of this package with ``main(argv) -> int``; the runner calls it in
this process with the profile's options plus ``--output <run dir>/<part>.json`` and reads that
JSON back. A part whose module is missing (bench/flood.py may not exist yet) is skipped with a
line saying so; one that raises or exits is recorded and the others still run. At the end one
summary table is printed and bench/results/summary-<date>.json is written: the profile, the
machine (CPUs, kernel, Python, uvloop, SIPp, load average, commit) and every part's JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.capacity import RESULTS, git_facts, log, machine_facts  # noqa: E402

Report = dict[str, Any]


def _fmt(value: Any, spec: str = "g") -> str:
    return "?" if value is None else format(value, spec)


def _median(entry: dict[str, Any], key: str) -> Any:
    value = entry.get(key)
    return value.get("median") if isinstance(value, dict) else value


def capacity_line(r: Report) -> str:
    parts = []
    for calls, e in (r.get("summary") or {}).items():
        parts.append(f"{calls} calls {_fmt(_median(e, 'ms_per_call_second'), '.2f')} ms/call-s "
                     f"CPU {_fmt(_median(e, 'server_cpu_pct'), '.0f')}% lost {e.get('lost')} "
                     f"fail {e.get('sipp_failed')}")
    return "; ".join(parts)


def bridged_line(r: Report) -> str:
    parts = []
    for calls, e in (r.get("summary") or {}).items():
        ratio = e.get("ratio_ms_per_call_second_vs_echo")
        parts.append(f"{calls} calls {_fmt(_median(e, 'ms_per_call_second'), '.2f')} ms/call-s"
                     + (f" ({_fmt(ratio, '.1f')}x echo)" if ratio is not None else ""))
    return "; ".join(parts)


def setup_line(r: Report) -> str:
    ok = (r.get("probe_uac") or {}).get("invite_to_200_ms") or {}
    sipp = (r.get("sipp") or {}).get("invite_to_200_ms") or {}
    return (f"INVITE→200 p50 {_fmt(ok.get('p50'), '.2f')} / p99 {_fmt(ok.get('p99'), '.2f')} ms"
            f" (SIPp p50 {_fmt(sipp.get('p50'))} ms)")


def callrate_line(r: Report) -> str:
    best = r.get("ceiling_cps")
    top: Report = next((lvl for lvl in r.get("levels", []) if lvl.get("rate") == best), {})
    rtt = top.get("invite_to_200_ms") or {}
    return (f"ceiling {_fmt(best)} calls/s with 0 failures (target ≥{r.get('target_cps')}: "
            f"{'met' if r.get('meets_target') else 'NOT met'}); there 200 p50/p99 "
            f"{_fmt(rtt.get('p50'))}/{_fmt(rtt.get('p99'))} ms, CPU "
            f"{_fmt(top.get('server_cpu_pct'), '.0f')}%")


def loss_line(r: Report) -> str:
    rtp = r.get("rtp") or {}
    return (f"{r.get('successful')}/{r.get('attempted')} ok with -lost "
            f"{(r.get('settings') or {}).get('sipp_lost_pct')}, {r.get('sipp_retransmissions')} "
            f"SIPp retrans, RTP loss seen {rtp.get('loss_pct')}%, left "
            f"{len(r.get('left_on_server', []))}: {'pass' if r.get('passed') else 'FAIL'}")


def soak_line(r: Report) -> str:
    back = r.get("back_at_baseline") or {}
    return (f"RSS {_fmt(r.get('rss_warm_mib'), '.1f')}→{_fmt(r.get('rss_end_mib'), '.1f')} MiB "
            f"({_fmt(r.get('rss_growth_pct'), '+.2f')}%), fds/udp/tasks back: "
            f"{all(back.values()) if back else '?'}, SIPp failed "
            f"{(r.get('sipp') or {}).get('failed')}")


def flood_line(r: Report) -> str:
    windows = r.get("windows") or {}

    def p99(window: str) -> str:
        return _fmt(((windows.get(window) or {}).get("pacing") or {}).get("pace_p99_ms"), ".2f")

    flood = r.get("flood") or {}
    return (f"pacing p99 before {p99('before')} / flood {p99('flood')} / after {p99('after')} ms;"
            f" {flood.get('sent')} INVITEs, finals {flood.get('final_by_status')}, "
            f"{flood.get('no_final_answer')} unanswered")


@dataclass(frozen=True, slots=True, kw_only=True)
class Part:
    """One benchmark of the harness."""

    name: str
    """What ``--only`` calls it."""
    module: str
    """``bench.<module>``, exposing ``main(argv) -> int``."""
    quick: tuple[str, ...]
    """Options of the quick profile."""
    full: tuple[str, ...]
    """Options of the full profile."""
    headline: Callable[[Report], str]
    """One line of the summary table from the part's JSON."""


PARTS: tuple[Part, ...] = (
    Part(name="capacity", module="capacity",
         quick=("--calls", "20", "--duration", "8"),
         full=("--calls", "50,100,200", "--repeat", "3"), headline=capacity_line),
    Part(name="bridged", module="bridged",
         quick=("--calls", "10", "--window", "5", "--no-echo"),
         full=("--calls", "25,50,100"), headline=bridged_line),
    Part(name="setup_time", module="setup_time",
         quick=("--calls", "20", "--sipp-calls", "20", "--rate", "10"),
         full=(), headline=setup_line),
    Part(name="callrate", module="callrate",
         quick=("--rates", "25,50,100", "--duration", "10", "--no-bisect"),
         full=(), headline=callrate_line),
    Part(name="loss", module="loss",
         quick=("--calls", "20"), full=(), headline=loss_line),
    Part(name="flood", module="flood",
         quick=("--calls", "30", "--flood-seconds", "5", "--before", "4", "--after", "3"),
         full=(), headline=flood_line),
    Part(name="soak", module="soak",
         quick=("--minutes", "2", "--calls", "30", "--call-seconds", "30",
                "--sample-seconds", "5"),
         full=(), headline=soak_line),
)
BY_NAME = {part.name: part for part in PARTS}


def run_part(part: Part, argv: list[str], output: Path) -> dict[str, Any]:
    """Import and run one part; never raises (a failing part is recorded, the rest go on)."""
    entry: dict[str, Any] = {"module": f"bench.{part.module}", "argv": argv,
                             "json_path": str(output)}
    try:
        module = importlib.import_module(f"bench.{part.module}")
    except ModuleNotFoundError as exc:
        if exc.name != f"bench.{part.module}":
            raise
        log(f"{part.name}: skipped, bench/{part.module}.py does not exist")
        return {**entry, "status": "skipped", "reason": f"bench/{part.module}.py not found"}
    main = getattr(module, "main", None)
    if not callable(main):
        return {**entry, "status": "skipped", "reason": f"bench.{part.module} has no main()"}
    log(f"{part.name}: python -m bench.{part.module} {' '.join(argv)}")
    started = time.monotonic()
    returncode: object
    try:
        returncode = main(argv)
    except SystemExit as exc:  # argparse errors, sys.exit() inside a part
        returncode = exc.code
    except Exception as exc:  # one broken part must not stop the harness
        log(f"{part.name}: raised {exc!r}")
        entry["error"] = repr(exc)
        returncode = None
    entry["seconds"] = round(time.monotonic() - started, 1)
    entry["returncode"] = returncode
    report: Report | None = None
    with contextlib.suppress(OSError, ValueError):
        report = json.loads(output.read_text())
    entry["report"] = report
    if report is None:
        entry["status"] = "error" if "error" in entry else f"no JSON (exit {returncode})"
    else:
        entry["status"] = "ok" if returncode == 0 else f"exit {returncode}"
        try:
            entry["headline"] = part.headline(report)
        except Exception as exc:  # a report of an unexpected shape
            entry["headline"] = f"(summary line failed: {exc!r})"
    return entry


def print_summary(results: dict[str, dict[str, Any]], profile: str, machine: dict[str, Any],
                  path: Path) -> None:
    print(f"\n{'=' * 100}\nsipagent benchmarks, {profile} profile — {machine.get('nproc')} CPUs "
          f"({machine.get('cpu_model')}), Python {machine.get('python')}, {machine.get('sipp')}, "
          f"load average at start {machine.get('loadavg_at_start')}, at end "
          f"{machine.get('loadavg_at_end')}\n")
    print(f"{'part':<11} {'status':<10} {'time':>7}  result")
    print("-" * 100)
    for name, entry in results.items():
        seconds = entry.get("seconds")
        detail = entry.get("headline") or entry.get("reason") or entry.get("error") or ""
        print(f"{name:<11} {entry['status']:<10} "
              f"{(f'{seconds:.0f} s' if seconds is not None else '-'):>7}  {detail}")
    print(f"\nsummary JSON: {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="parts: " + ", ".join(p.name for p in PARTS),
    )
    parser.add_argument("--quick", action="store_true",
                        help="small N and short durations: a few minutes in all")
    parser.add_argument("--only", default=None,
                        help="comma-separated parts to run, in the harness' order")
    parser.add_argument("--output", type=Path, default=None,
                        help="summary JSON (default bench/results/summary-<date>.json)")
    parser.add_argument("extra", nargs="*",
                        help="after --: more options for the part (with --only and one part)")
    args = parser.parse_args(argv)
    names = [p.name for p in PARTS]
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in BY_NAME]
        if unknown:
            parser.error(f"unknown part(s) {', '.join(unknown)}; parts: {', '.join(names)}")
        names = [n for n in names if n in wanted]
    if args.extra and len(names) != 1:
        parser.error("extra options go to one part: use them with --only <part>")
    profile = "quick" if args.quick else "full"

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_root = RESULTS / f"summary-{stamp}"
    run_root.mkdir(parents=True, exist_ok=True)
    log(f"{profile} profile: {', '.join(names)}; part reports in {run_root}")
    machine = machine_facts()
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        part = BY_NAME[name]
        part_argv = [*(part.quick if args.quick else part.full), *args.extra,
                     "--output", str(run_root / f"{name}.json")]
        results[name] = run_part(part, part_argv, run_root / f"{name}.json")
    machine["loadavg_at_end"] = list(os.getloadavg())
    if git_facts() != {k: machine.get(k) for k in ("git_commit", "git_changed_outside_bench")}:
        machine["tree_changed_during_run"] = git_facts()
    summary = {
        "benchmark": "summary",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "profile": profile,
        "machine": machine,
        "parts": results,
    }
    output = args.output or RESULTS / f"summary-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(results, profile, machine, output)
    return 0 if all(e["status"] in ("ok", "skipped") for e in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
