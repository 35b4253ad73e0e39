"""Bridged-call benchmark: server CPU per call with every call bridged to a Realtime WebSocket.

    .venv/bin/python -m bench.bridged                               # 25, 50, 100 calls, 20 s
    .venv/bin/python -m bench.bridged --calls 25,50,100 --repeat 3  # medians over 3 runs

The same load and measurement as bench/capacity.py (SIPp streams 20 ms PCMU into every call;
CPU, RSS, RTP counters over a steady window aligned on the server's counter refresh), but the
server runs ``SIPAGENT_MODEL=openai`` against the fake Realtime server of the tests, started
here in its own process (``python -m bench.fake_realtime``): a greeting, then caller turns
answered with replies paced in real time, so each call has model audio flowing most of the
time. Each call's WebSocket carries 50 ``input_audio_buffer.append`` per second toward the fake
and an audio delta per ``--chunk-ms`` (plus transcript and turn events) back.

Per call count N, interleaved in each repeat: a fresh fake and a fresh server for the bridged
level, then (unless ``--no-echo``) bench.capacity's echo level with the same N, call length and
rate, for the bridged/echo ratio. Reported besides bench.capacity's columns: WebSocket messages
per second (the fake's counters over the same window), the fake's own CPU (a separate process),
calls whose model failed (``model unavailable``/``lost`` in the server log, SIPp failures),
protocol violations the fake caught, and the turn latency the server records (model
``speech_stopped`` → first RTP packet of the reply, which the fake sends right after it: an
upper bound of model audio delta → RTP).

Every loop is bounded; the fake, SIPp and the server are started here and stopped by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.capacity import (  # noqa: E402
    RESULTS,
    RTP_BLOCK,
    STREAM_SCENARIO,
    ChildProcess,
    LevelHooks,
    Sample,
    ServerProcess,
    git_facts,
    log,
    machine_facts,
    pace_cells,
    parse_calls,
    percentile,
    pick_rtp_range,
    pinning_label,
    popen_pinned,
    proc_cpu_seconds,
    proc_memory,
    run_level,
    server_command,
)
from tests.peers.processes import stop_process  # noqa: E402
from tests.peers.sipp import LOCALHOST, free_tcp_port  # noqa: E402

AGENT_FILE = REPO / "config" / "agents" / "echo_demo.yaml"
"""One agent, no tools, answers the number ``echo`` that uac_stream.xml dials."""
DUMMY_KEY = "sk-bench-not-a-real-key"
MODEL_PROBLEM = re.compile(r" (WARNING|INFO) .*?(model unavailable \((\w+)\)|model lost|"
                           r"model error|no new model session|model re-bridged)")


# ------------------------------------------------------------------------------ the fake process


class FakeProcess(ChildProcess):
    """``python -m bench.fake_realtime`` on a private port, with its stats endpoint."""

    def __init__(self, workdir: Path, args: argparse.Namespace) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = free_tcp_port()
        self.stats_file = workdir / "fake-final.json"
        self.command = [
            sys.executable, "-m", "bench.fake_realtime", "--port", str(self.port),
            "--chunk-ms", str(args.chunk_ms), "--pace", str(args.pace),
            "--greeting-ms", str(args.greeting_ms), "--reply-ms", str(args.reply_ms),
            "--speech-ms", str(args.speech_ms), "--gap-ms", str(args.gap_ms),
            "--max-seconds", "1800", "--stats-file", str(self.stats_file),
        ]
        with open(workdir / "fake.stdout", "wb") as out, open(workdir / "fake.log", "wb") as err:
            self.process = popen_pinned(
                "harness", self.command, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fake exited ({self.process.returncode}): "
                                   f"{(workdir / 'fake.log').read_text()[-2000:]}")
            with contextlib.suppress(OSError, ValueError):
                self.stats()
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"fake Realtime server not answering; see {workdir}")

    @property
    def base_url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}/v1"

    def stats(self) -> dict[str, Any]:
        url = f"http://{LOCALHOST}:{self.port}/bench/stats"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def probe(self) -> dict[str, Any]:
        """Counters and CPU of the fake, read together (a window boundary)."""
        try:
            stats = self.stats()
        except (OSError, ValueError) as exc:
            return {"error": repr(exc), "mono": time.monotonic()}
        return {"mono": time.monotonic(), "cpu": proc_cpu_seconds(self.pid),
                "memory": proc_memory(self.pid), "stats": stats}

    def stop(self) -> dict[str, Any]:
        """SIGTERM (it prints its summary and writes the final counters), then SIGKILL."""
        stop_process(self.process, ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)))
        final: dict[str, Any] = {"exit": self.process.returncode}
        with contextlib.suppress(OSError, ValueError):
            final["stats"] = json.loads(self.stats_file.read_text())
        with contextlib.suppress(OSError):
            final["summary"] = (self.workdir / "fake.stdout").read_text()[-3000:]
        return final


# -------------------------------------------------------------------------------- measurements


def fake_window(start: Sample, end: Sample, live_calls: int) -> dict[str, Any]:
    """The fake's CPU and message rates between the two window samples."""
    a, b = start.extra, end.extra
    if "stats" not in a or "stats" not in b:
        return {"fake_error": a.get("error") or b.get("error")}
    seconds = float(b["mono"] - a["mono"])
    sa, sb = a["stats"], b["stats"]
    rx = sb["received_total"] - sa["received_total"]  # client → fake (the bridge's sends)
    tx = sb["sent_total"] - sa["sent_total"]  # fake → client

    def rate(side: str, kind: str) -> float:
        return float(sb[side].get(kind, 0) - sa[side].get(kind, 0)) / seconds

    n = max(1, live_calls)
    return {
        "fake_window_seconds": round(seconds, 3),
        "fake_cpu_pct": round(100 * (b["cpu"] - a["cpu"]) / seconds, 2),
        "fake_rss_mib": b["memory"].get("VmRSS"),
        "fake_open_connections_at_start": sa["connections"]["open"],
        "fake_open_connections_at_end": sb["connections"]["open"],
        "ws_msgs_per_s": round((rx + tx) / seconds, 1),
        "ws_msgs_per_s_to_model": round(rx / seconds, 1),
        "ws_msgs_per_s_from_model": round(tx / seconds, 1),
        "ws_msgs_per_call_s": round((rx + tx) / seconds / n, 2),
        "appends_per_call_s": round(rate("received", "input_audio_buffer.append") / n, 2),
        "audio_deltas_per_call_s": round(rate("sent", "response.output_audio.delta") / n, 2),
        "responses_in_window": (sb["responses"] - sa["responses"]),
        "fake_received_by_type": {k: v - sa["received"].get(k, 0)
                                  for k, v in sb["received"].items()},
        "fake_sent_by_type": {k: v - sa["sent"].get(k, 0) for k, v in sb["sent"].items()},
    }


def turn_latencies(server: ServerProcess, end: Sample) -> dict[str, Any]:
    """speech_stopped → first RTP of the reply, every turn of the live calls (admin detail)."""
    values: list[float] = []
    models: Counter[str] = Counter()
    for session in end.sessions:
        with contextlib.suppress(OSError, ValueError, KeyError):
            detail = server.get(f"/sessions/{session['session_id']}")
            models[str(detail.get("model"))] += 1
            values += [float(t["latency_ms"]) for t in detail.get("turns", [])
                       if t.get("latency_ms") is not None]
    return {
        "turns": len(values),
        "turn_latency_ms_p50": percentile(values, 0.5),
        "turn_latency_ms_p90": percentile(values, 0.9),
        "turn_latency_ms_p99": percentile(values, 0.99),
        "turn_latency_ms_max": max(values) if values else None,
        "session_models": dict(models),
    }


def model_problems(log_path: Path) -> dict[str, Any]:
    """Calls whose model failed, from the server log: reasons and the first lines."""
    kinds: Counter[str] = Counter()
    first: list[str] = []
    with contextlib.suppress(OSError):
        for line in log_path.read_text(errors="replace").splitlines():
            match = MODEL_PROBLEM.search(line)
            if match:
                kind = f"unavailable:{match.group(3)}" if match.group(3) else match.group(2)
                kinds[kind] += 1
                if len(first) < 5:
                    first.append(line[:300])
    failed = sum(v for k, v in kinds.items() if k.startswith("unavailable") or k == "model lost")
    return {"model_failures": failed, "model_problem_kinds": dict(kinds),
            "model_problem_first": first}


def bridged_level(calls: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    workdir = root / f"n{calls}"
    fake = FakeProcess(workdir / "fake", args)
    result: dict[str, Any] = {}
    try:
        env = {
            "SIPAGENT_MODEL": "openai",
            "OPENAI_API_KEY": DUMMY_KEY,
            "OPENAI_BASE_URL": fake.base_url,
            "SIPAGENT_AGENTS_PATH": str(AGENT_FILE),
            "SIPAGENT_REALTIME_APPEND_MS": str(args.append_ms),
        }

        def after_window(server: ServerProcess, start: Sample, end: Sample) -> dict[str, Any]:
            live = len({s["session_id"] for s in start.sessions}
                       & {s["session_id"] for s in end.sessions})
            out = fake_window(start, end, live)
            out.update(turn_latencies(server, end))
            return out

        hooks = LevelHooks(server_env=env, probe=fake.probe, after_window=after_window)
        log(f"{calls} bridged calls: fake pid {fake.pid} on port {fake.port}")
        result = run_level(calls, args, root, rtp_range=pick_rtp_range(args.rtp_block),
                           hooks=hooks)
    finally:
        result["fake"] = fake.stop()
        result["fake_pid"] = fake.pid
        result["fake_command"] = fake.command
    server_log = Path(result.get("workdir", workdir)) / "server" / "server.log"
    result.update(model_problems(server_log))
    stats = result["fake"].get("stats") or {}
    result["violations"] = stats.get("violations")
    result["violations_first"] = stats.get("violations_first")
    result["fake_connections_total"] = (stats.get("connections") or {}).get("total")
    result["fake_errors_sent"] = stats.get("error_codes")
    sipp_failed = (result.get("sipp") or {}).get("failed") or 0
    result["failed_calls"] = sipp_failed + result["model_failures"]
    if result.get("other_cpu_pct") is not None and result.get("fake_cpu_pct") is not None:
        # bench.capacity's other% counts the fake too: what is left is the neighbours.
        result["neighbours_cpu_pct"] = round(result["other_cpu_pct"] - result["fake_cpu_pct"], 2)
    return result


# ------------------------------------------------------------------------------------ output


def fmt(value: Any, spec: str = ".1f", width: int = 6) -> str:
    if value is None:
        return f"{'-':>{width}}"
    return f"{value:>{width}{spec}}"


def print_table(rows: list[dict[str, Any]]) -> None:
    paced = any("pacing" in r for r in rows)
    header = (f"{'calls':>5} {'model':>7} {'ok/fail':>8} {'mfail':>5} {'window':>6} {'CPU%':>6} "
              f"{'ms/c-s':>6} {'RSS':>6} {'in pps':>6} {'outpps':>6} {'loss%':>6} {'drops':>5} "
              f"{'WS/s':>6} {'WS/c-s':>6} {'fake%':>6} {'turn50':>6} {'load%':>5} "
              f"{'neigh%':>6} {'viol':>4}" + (f" {'pace p50/p99/max ms':>20} {'rx%':>6}"
                                              if paced else ""))
    print(header)
    print("-" * len(header))
    for r in rows:
        model = r.get("model", "?")
        if "error" in r:
            print(f"{r['calls']:>5} {model:>7}  error: {r['error']}")
            continue
        s = r.get("sipp", {})
        ok_fail = f"{s.get('successful')}/{s.get('failed')}"
        print(
            f"{r['calls']:>5} {model:>7} {ok_fail:>8} "
            f"{fmt(r.get('model_failures'), 'd', 5)} {r['window_seconds']:>6.1f} "
            f"{r['server_cpu_pct']:>6.1f} {r['ms_per_call_second']:>6.2f} {r['rss_mib']:>6.1f} "
            f"{r['in_pps_per_call']:>6.2f} {r['out_pps_per_call']:>6.2f} {r['loss_pct']:>6.3f} "
            f"{r['socket_drops']:>5} {fmt(r.get('ws_msgs_per_s'), '.0f')} "
            f"{fmt(r.get('ws_msgs_per_call_s'), '.1f')} {fmt(r.get('fake_cpu_pct'))} "
            f"{fmt(r.get('turn_latency_ms_p50'), '.0f')} {r['sipp_cpu_pct']:>5.1f} "
            f"{r.get('neighbours_cpu_pct', r['other_cpu_pct']):>6.1f} "
            f"{fmt(r.get('violations'), 'd', 4)}"
            + (" " + pace_cells(r.get("pacing")) if paced else "")
        )
    print("\nCPU% = sipagent process, % of one core over the steady window; ms/c-s = its CPU ms "
          "per call-second;\nmfail = calls whose model failed (server log); WS/s, WS/c-s = "
          "WebSocket messages per second, all calls / per call\n(both directions, the fake's "
          "counters); fake% = the fake Realtime server's own CPU (a separate process);\nturn50 = "
          "median ms from the model's speech_stopped to the reply's first RTP packet; neigh% = "
          "CPU of every\nother process (not the server, SIPp or the fake); viol = protocol "
          "violations the fake caught.")


SUMMARY_KEYS = ("server_cpu_pct", "ms_per_call_second", "rss_mib", "in_pps_per_call",
                "out_pps_per_call", "loss_pct", "ws_msgs_per_s", "ws_msgs_per_call_s",
                "fake_cpu_pct", "fake_rss_mib", "turn_latency_ms_p50", "turn_latency_ms_p90",
                "sipp_cpu_pct", "other_cpu_pct", "neighbours_cpu_pct", "window_seconds",
                "appends_per_call_s", "audio_deltas_per_call_s")


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in ("openai", "echo"):
        for calls in sorted({r["calls"] for r in rows if r.get("model") == model}):
            runs = [r for r in rows if r.get("model") == model and r["calls"] == calls
                    and "error" not in r]
            entry: dict[str, Any] = {"runs": len(runs)}
            for key in SUMMARY_KEYS:
                values = [float(r[key]) for r in runs if r.get(key) is not None]
                if values:
                    entry[key] = {"median": round(statistics.median(values), 3),
                                  "min": round(min(values), 3), "max": round(max(values), 3)}
            entry["sipp_failed"] = sum((r.get("sipp") or {}).get("failed") or 0 for r in runs)
            entry["model_failures"] = sum(r.get("model_failures") or 0 for r in runs)
            entry["violations"] = sum(r.get("violations") or 0 for r in runs)
            entry["lost"] = sum(r.get("lost") or 0 for r in runs)
            entry["socket_drops"] = sum(r.get("socket_drops") or 0 for r in runs)
            entry["left_on_server"] = sum(len(r.get("left_on_server", [])) for r in runs)
            out[f"{model}/{calls}"] = entry
    for key, entry in list(out.items()):
        model, calls = key.split("/")
        echo = out.get(f"echo/{calls}")
        if model == "openai" and echo:
            for metric in ("ms_per_call_second", "server_cpu_pct", "rss_mib"):
                if metric in entry and metric in echo and echo[metric]["median"]:
                    entry[f"ratio_{metric}_vs_echo"] = round(
                        entry[metric]["median"] / echo[metric]["median"], 2)
    return out


def med(entry: dict[str, Any], key: str, spec: str = ".1f", width: int = 6) -> str:
    value = (entry.get(key) or {}).get("median")
    return fmt(value, spec, width)


def print_summary(summary: dict[str, Any]) -> None:
    print("\nmedians over repeats:")
    header = (f"{'calls':>5} {'CPU% br':>7} {'echo':>6} {'ms/c-s br':>9} {'echo':>6} {'ratio':>5} "
              f"{'RSS br':>6} {'echo':>6} {'in pps':>6} {'outpps':>6} {'loss%':>6} "
              f"{'WS/s':>6} {'fake%':>6} {'turn50':>6} {'turn90':>6} {'fail':>4} {'viol':>4} "
              f"{'runs':>4}")
    print(header)
    print("-" * len(header))
    for key, e in summary.items():
        model, calls = key.split("/")
        if model != "openai" or not e["runs"]:
            continue
        echo = summary.get(f"echo/{calls}", {})
        print(f"{calls:>5} {med(e, 'server_cpu_pct', '.1f', 7)} {med(echo, 'server_cpu_pct')} "
              f"{med(e, 'ms_per_call_second', '.2f', 9)} {med(echo, 'ms_per_call_second', '.2f')} "
              f"{fmt(e.get('ratio_ms_per_call_second_vs_echo'), '.1f', 5)} "
              f"{med(e, 'rss_mib')} {med(echo, 'rss_mib')} {med(e, 'in_pps_per_call', '.2f')} "
              f"{med(e, 'out_pps_per_call', '.2f')} {med(e, 'loss_pct', '.3f')} "
              f"{med(e, 'ws_msgs_per_s', '.0f')} {med(e, 'fake_cpu_pct')} "
              f"{med(e, 'turn_latency_ms_p50', '.0f')} {med(e, 'turn_latency_ms_p90', '.0f')} "
              f"{e['sipp_failed'] + e['model_failures']:>4} {e['violations']:>4} {e['runs']:>4}")


# -------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bridged", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--calls", type=parse_calls, default=[25, 50, 100],
                        help="concurrent call counts, e.g. 25,50,100 (the default)")
    parser.add_argument("--window", type=float, default=20.0,
                        help="steady window to aim for, seconds (default 20); each call lasts "
                             "window + ramp + settle + 4.5 s")
    parser.add_argument("--duration", type=float, default=None,
                        help="call length instead of the one derived from --window")
    parser.add_argument("--rate", type=float, default=15.0,
                        help="new calls per second (default 15: below the server's "
                             "max_new_calls_per_second of 20)")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds after the last answer before the window (default 2)")
    parser.add_argument("--idle-seconds", type=float, default=2.0,
                        help="seconds of idle-server CPU baseline (default 2)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the sweep this many times; medians are reported (1..10)")
    parser.add_argument("--echo", action=argparse.BooleanOptionalAction, default=True,
                        help="also run bench.capacity's echo level at each N (default on)")
    parser.add_argument("--append-ms", type=int, choices=(20, 40), default=40,
                        help="SIPAGENT_REALTIME_APPEND_MS of the server (default 40, the default)")
    parser.add_argument("--chunk-ms", type=int, default=100,
                        help="fake: audio per output delta (default 100)")
    parser.add_argument("--pace", type=float, default=1.0,
                        help="fake: output audio at this fraction of real time (default 1.0)")
    parser.add_argument("--greeting-ms", type=int, default=3000, help="fake: greeting length")
    parser.add_argument("--reply-ms", type=int, default=4000, help="fake: reply length")
    parser.add_argument("--speech-ms", type=int, default=300, help="fake: caller turn length")
    parser.add_argument("--gap-ms", type=int, default=100,
                        help="fake: caller audio between a reply and the next turn")
    parser.add_argument("--driver", choices=("sipp", "loadgen"), default="sipp",
                        help="who places and streams the calls: SIPp (default) or bench.loadgen, "
                             "which also measures the server's outbound pacing (pace columns)")
    parser.add_argument("--sockets", type=int, default=8,
                        help="loadgen: UDP sockets shared by the calls (default 8)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default bench/results/bridged-<date>.json)")
    args = parser.parse_args(argv)
    if not 5 <= args.window <= 300:
        parser.error("--window must be 5..300 s")
    if args.duration is not None and not 5 <= args.duration <= 600:
        parser.error("--duration must be 5..600 s")
    if not 0.5 <= args.rate <= 500:
        parser.error("--rate must be 0.5..500 calls/s")
    if not 1 <= args.repeat <= 10:
        parser.error("--repeat must be 1..10")
    if args.driver == "sipp" and shutil.which("sipp") is None:
        parser.error("sipp is not installed (Debian package sip-tester)")
    args.rtp_block = max(RTP_BLOCK, 4 * max(args.calls) + 40)

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_root = RESULTS / f"bridged-{stamp}"
    run_root.mkdir(parents=True, exist_ok=True)
    log(f"run directory {run_root}")
    machine = machine_facts()
    rows: list[dict[str, Any]] = []
    for repeat in range(args.repeat):
        for calls in args.calls:
            level_args = copy.copy(args)
            level_args.duration = args.duration or round(
                args.window + calls / args.rate + args.settle + 4.5, 1)
            plan = [("openai", run_root / f"r{repeat + 1}" / "bridged")]
            if args.echo:
                plan.append(("echo", run_root / f"r{repeat + 1}" / "echo"))
            for model, root in plan:
                commit = git_facts()
                try:
                    if model == "openai":
                        row = bridged_level(calls, level_args, root)
                    else:
                        row = run_level(calls, level_args, root,
                                        rtp_range=pick_rtp_range(args.rtp_block))
                except Exception as exc:  # keep the other levels
                    log(f"{model} {calls} calls failed: {exc!r}")
                    row = {"calls": calls, "error": repr(exc)}
                row.update({"model": model, "repeat": repeat + 1,
                            "duration_s": level_args.duration, "git": commit})
                rows.append(row)
                log(f"{model} {calls}: CPU {row.get('server_cpu_pct')}%, "
                    f"{row.get('ms_per_call_second')} ms/call-s, fake {row.get('fake_cpu_pct')}%")
    if git_facts() != {k: machine.get(k) for k in ("git_commit", "git_changed_outside_bench")}:
        machine["tree_changed_during_run"] = git_facts()
        log("warning: the working tree changed during the run (see machine.tree_changed...)")
    machine["uvloop"] = next((r["uvloop"] for r in rows if "uvloop" in r), None)
    summary = summarize(rows)
    report = {
        "benchmark": "bridged",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "settings": {
            "calls": args.calls, "window_s": args.window, "duration_s": args.duration,
            "rate_cps": args.rate, "settle_s": args.settle, "append_ms": args.append_ms,
            "fake": {"chunk_ms": args.chunk_ms, "pace": args.pace,
                     "greeting_ms": args.greeting_ms, "reply_ms": args.reply_ms,
                     "speech_ms": args.speech_ms, "gap_ms": args.gap_ms},
            "agent_file": str(AGENT_FILE.relative_to(REPO)), "log_level": "INFO",
            "rtp_block": args.rtp_block, "scenario": str(STREAM_SCENARIO.relative_to(REPO)),
            "server_command": server_command(), "echo": args.echo, "driver": args.driver,
        },
        "levels": rows,
        "summary": summary,
    }
    output = args.output or RESULTS / f"bridged-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nsipagent bridged calls (openai model → fake Realtime server, pace {args.pace:g}, "
          f"{args.chunk_ms} ms deltas, {args.append_ms} ms appends) — {machine['nproc']} CPUs "
          f"({machine['cpu_model']}), Python {machine['python']}, uvloop "
          f"{'on' if machine['uvloop'] else 'off'}, {pinning_label()}\n")
    print_table(rows)
    print_summary(summary)
    print(f"\nJSON: {output}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
