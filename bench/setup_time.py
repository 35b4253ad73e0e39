"""Call set-up time: INVITE → 200 OK and INVITE → first RTP packet, echo model.

    .venv/bin/python -m bench.setup_time                  # 200 calls, idle server
    .venv/bin/python -m bench.setup_time --load 100       # the same while 100 calls stream

A fresh ``sipagent run`` (echo model, INFO logs, private ports) is started as a subprocess.

1. The small Python UAC of bench/uac.py places ``--calls`` calls one after another (at most
   ``--rate`` new calls per second) over UDP and timestamps, with ``time.perf_counter()``
   right after the INVITE leaves and right after each datagram arrives: INVITE → 100 Trying,
   INVITE → 200 OK, INVITE → first RTP packet from the server on the port its SDP offered.
   Then it ACKs, sends a short PCMU burst (``--probe-frames`` packets, 20 ms apart) and notes
   when the first of them comes back (echo round trip through the server: jitter buffer +
   20 ms tick), sends BYE and waits for its 200.
2. SIPp cross-check: ``--sipp-calls`` calls of bench/sipp/uac_stream.xml (1 s each, at
   ``--rate`` calls/s) with ``-trace_rtt``: SIPp's own INVITE → 200 OK response time per
   call (whole milliseconds: SIPp's clock ticks in ms) and its repartition.

With ``--load N`` SIPp first puts N streaming calls on the server (as bench/capacity.py
does) and both measurements run while they stream.

A table is printed and JSON written to bench/results/setup-<date>.json. Every loop is bounded
in count and time; the processes started here are stopped here by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import select
import shutil
import socket
import statistics
import struct
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
    ServerProcess,
    SippLoad,
    log,
    machine_facts,
    percentile,
    pick_rtp_range,
    uses_uvloop,
)
from bench.uac import CallTiming, Uac  # noqa: E402
from tests.peers.sipp import LOCALHOST  # noqa: E402

ECHO_TIMEOUT = 1.0
PROBE_PAYLOAD = bytes([0x5A]) * 160
"""A PCMU frame that the server's own silence (0xFF) can never be mistaken for."""


# ------------------------------------------------------------------------------ probe calls


def probe_call(uac: Uac, index: int, probe_frames: int) -> CallTiming:
    """One call on a fresh RTP socket: INVITE (first RTP timed), echo probe, BYE."""
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind((LOCALHOST, 0))
    rtp.setblocking(False)
    try:
        timing = uac.invite(index, rtp.getsockname()[1], rtp)
        dialog = timing.dialog
        if dialog is not None and dialog.remote_rtp is not None and probe_frames > 0:
            timing.echo_ms = echo_probe(rtp, dialog.remote_rtp, probe_frames)
        if dialog is not None:
            timing.bye_ok = uac.bye(dialog)
    finally:
        rtp.close()
    return timing


def echo_probe(rtp: socket.socket, remote: tuple[str, int], frames: int) -> float | None:
    """Send ``frames`` PCMU frames 20 ms apart; ms from the first sent to the first echoed."""
    ssrc, seq, ts = secrets.randbits(32), secrets.randbits(16), secrets.randbits(32)
    first_sent: float | None = None
    deadline = time.perf_counter() + frames * 0.020 + ECHO_TIMEOUT
    next_send = time.perf_counter()
    sent = 0
    while time.perf_counter() < deadline:
        now = time.perf_counter()
        if sent < frames and now >= next_send:
            packet = struct.pack("!BBHII", 0x80, 0x80 if sent == 0 else 0x00,
                                 (seq + sent) & 0xFFFF, (ts + 160 * sent) & 0xFFFFFFFF, ssrc)
            rtp.sendto(packet + PROBE_PAYLOAD, remote)
            if first_sent is None:
                first_sent = time.perf_counter()
            sent += 1
            next_send += 0.020
        wait = max(0.0, (next_send if sent < frames else deadline) - time.perf_counter())
        readable, _, _ = select.select([rtp], [], [], wait)
        if readable:
            with contextlib.suppress(BlockingIOError):
                data = rtp.recv(2048)
                if first_sent is not None and data[12:] == PROBE_PAYLOAD:
                    return (time.perf_counter() - first_sent) * 1000
    return None


# -------------------------------------------------------------------------------- measuring


def distribution(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(percentile(values, 0.50) or 0.0, 3),
        "p90": round(percentile(values, 0.90) or 0.0, 3),
        "p99": round(percentile(values, 0.99) or 0.0, 3),
        "max": round(max(values), 3),
        "mean": round(statistics.fmean(values), 3),
        "min": round(min(values), 3),
    }


def run_probes(server: ServerProcess, calls: int, rate: float, probe_frames: int,
               time_limit: float) -> dict[str, Any]:
    uac = Uac((LOCALHOST, server.sip_port), user_agent="sipagent-bench-probe")
    timings: list[CallTiming] = []
    started = time.monotonic()
    try:
        next_start = started
        for index in range(calls):
            now = time.monotonic()
            if now - started > time_limit:
                log(f"probe time limit ({time_limit:.0f} s) reached after {index} calls")
                break
            if next_start > now:
                time.sleep(next_start - now)
            next_start = time.monotonic() + 1.0 / rate
            timings.append(probe_call(uac, index, probe_frames))
    finally:
        uac.close()
    ok = [t for t in timings if t.ok_ms is not None]
    return {
        "calls": len(timings),
        "answered": len(ok),
        "failed": [{"index": t.index, "error": t.error, "status": t.status}
                   for t in timings if t.error],
        "invite_retransmissions": sum(t.invite_retransmissions for t in timings),
        "bye_not_confirmed": sum(1 for t in ok if not t.bye_ok),
        "rtp_before_200": sum(
            1 for t in ok
            if t.first_rtp_ms is not None and t.ok_ms is not None and t.first_rtp_ms < t.ok_ms
        ),
        "invite_to_100_ms": distribution([t.trying_ms for t in timings if t.trying_ms is not None]),
        "invite_to_200_ms": distribution([t.ok_ms for t in ok if t.ok_ms is not None]),
        "invite_to_first_rtp_ms": distribution(
            [t.first_rtp_ms for t in ok if t.first_rtp_ms is not None]),
        "echo_round_trip_ms": distribution([t.echo_ms for t in ok if t.echo_ms is not None]),
        "seconds": round(time.monotonic() - started, 2),
        "per_call": [
            {"i": t.index, "at": round(t.started_at, 3),
             "100": _r(t.trying_ms), "200": _r(t.ok_ms), "rtp": _r(t.first_rtp_ms),
             "echo": _r(t.echo_ms), "error": t.error}
            for t in timings
        ],
    }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def run_sipp_check(server: ServerProcess, workdir: Path, calls: int, rate: float) -> dict[str, Any]:
    sipp = SippLoad.start(workdir, server, calls=calls, rate=rate, duration_s=1.0,
                          timeout_s=calls / rate + 30, trace_rtt=True)
    sipp.wait()
    summary = sipp.summary()
    values: list[float] = []
    for path in workdir.glob("*_rtt.csv"):
        for line in path.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 3 and parts[2] == "setup":
                with contextlib.suppress(ValueError):
                    values.append(float(parts[1]))
    stats = sipp.stats()
    buckets = {k.removeprefix("ResponseTimeRepartitionsetup_"): int(v)
               for k, v in stats.items()
               if k.startswith("ResponseTimeRepartitionsetup_") and v.isdigit()}
    return {**summary, "invite_to_200_ms": distribution(values), "repartition": buckets}


def print_table(report: dict[str, Any]) -> None:
    probes = report["probe_uac"]
    rows = [
        ("INVITE → 100 Trying", probes["invite_to_100_ms"]),
        ("INVITE → 200 OK", probes["invite_to_200_ms"]),
        ("INVITE → first RTP", probes["invite_to_first_rtp_ms"]),
        ("echo round trip", probes["echo_round_trip_ms"]),
    ]
    sipp = report.get("sipp")
    if sipp:
        rows.append(("SIPp INVITE → 200 (1 ms res.)", sipp["invite_to_200_ms"]))
    print(f"{'ms':<30} {'n':>5} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8} {'mean':>8}")
    print("-" * 80)
    for name, d in rows:
        if not d.get("n"):
            print(f"{name:<30} {0:>5}")
            continue
        print(f"{name:<30} {d['n']:>5} {d['p50']:>8.3f} {d['p90']:>8.3f} {d['p99']:>8.3f} "
              f"{d['max']:>8.3f} {d['mean']:>8.3f}")
    print(f"\nprobe UAC: {probes['answered']}/{probes['calls']} answered, "
          f"{len(probes['failed'])} failed, {probes['invite_retransmissions']} INVITE "
          f"retransmissions, first RTP before the 200 OK in {probes['rtp_before_200']} calls")
    if sipp:
        print(f"SIPp: {sipp['successful']}/{sipp['created']} successful, {sipp['failed']} failed; "
              f"repartition {sipp['repartition']}")
    if report.get("load"):
        load = report["load"]
        print(f"background load: {load['calls']} streaming calls "
              f"({load.get('answered_with_media', '?')} with media at the start)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.setup_time", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--calls", type=int, default=200, help="probe UAC calls (default 200)")
    parser.add_argument("--rate", type=float, default=5.0,
                        help="at most this many new calls per second (default 5)")
    parser.add_argument("--probe-frames", type=int, default=5,
                        help="PCMU frames sent after the ACK for the echo round trip (0: none)")
    parser.add_argument("--sipp-calls", type=int, default=200,
                        help="SIPp cross-check calls (0: skip; default 200)")
    parser.add_argument("--load", type=int, default=0,
                        help="streaming SIPp calls kept on the server meanwhile (default 0)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default bench/results/setup-<date>.json)")
    args = parser.parse_args(argv)
    if not 1 <= args.calls <= 5000 or not 0 <= args.sipp_calls <= 5000:
        parser.error("--calls / --sipp-calls out of range")
    if not 0.1 <= args.rate <= 100:
        parser.error("--rate must be 0.1..100")
    if not 0 <= args.load <= 1000:
        parser.error("--load must be 0..1000")
    if not 0 <= args.probe_frames <= 50:
        parser.error("--probe-frames must be 0..50")
    if (args.sipp_calls or args.load) and shutil.which("sipp") is None:
        parser.error("sipp is not installed (Debian package sip-tester)")

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_root = RESULTS / f"setup-{stamp}"
    rtp_range = pick_rtp_range()
    server = ServerProcess.start(run_root / "server",
                                 max_calls=args.load + max(20, int(args.rate) * 2 + 20),
                                 rtp_range=rtp_range)
    load: SippLoad | None = None
    report: dict[str, Any] = {"benchmark": "setup_time"}
    try:
        probe_budget = args.calls * max(1.0 / args.rate, 0.05 + args.probe_frames * 0.02) + 10
        sipp_budget = (args.sipp_calls / args.rate + 5) if args.sipp_calls else 0
        if args.load:
            hold = probe_budget + sipp_budget + 15
            load = SippLoad.start(run_root / "load", server, calls=args.load, rate=50,
                                  duration_s=hold, timeout_s=args.load / 50 + hold + 60)
            deadline = time.monotonic() + args.load / 50 + 15
            flowing = 0
            while time.monotonic() < deadline and load.running():
                flowing = sum(1 for s in server.sessions()
                              if s["state"] == "answered" and s["rtp"]["packets_in"] > 0)
                if flowing >= args.load:
                    break
                time.sleep(0.5)
            time.sleep(2.0)
            report["load"] = {"calls": args.load, "answered_with_media": flowing}
            log(f"background load: {flowing}/{args.load} calls streaming")
        log(f"probe UAC: {args.calls} calls at <= {args.rate:g}/s (server pid {server.pid})")
        report["probe_uac"] = run_probes(server, args.calls, args.rate, args.probe_frames,
                                         time_limit=probe_budget)
        if args.sipp_calls:
            log(f"SIPp cross-check: {args.sipp_calls} calls at {args.rate:g}/s")
            report["sipp"] = run_sipp_check(server, run_root / "sipp", args.sipp_calls,
                                            args.rate)
        if load is not None:
            report["load"]["server_sessions_at_end"] = len(server.sessions())
            load.stop()  # its calls would otherwise run out their hold time
            report["load"]["sipp"] = load.summary()
        machine = machine_facts()
        machine["uvloop"] = uses_uvloop(server.pid)
        report.update({
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine,
            "settings": {"calls": args.calls, "rate_cps": args.rate,
                         "probe_frames": args.probe_frames, "sipp_calls": args.sipp_calls,
                         "load_calls": args.load, "model": "echo", "log_level": "INFO",
                         "rtp_range": rtp_range},
            "workdir": str(run_root),
        })
    finally:
        if load is not None and load.running():
            load.stop()
        report["server_exit"] = server.stop()
        report["server_log"] = server.log_problems()
    output = args.output or RESULTS / f"setup-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    m = report["machine"]
    print(f"\nsipagent call set-up, echo model — {m['nproc']} CPUs ({m['cpu_model']}), "
          f"Python {m['python']}, uvloop {'on' if m['uvloop'] else 'off'}"
          + (f", {args.load} streaming calls meanwhile" if args.load else ", idle server")
          + "\n")
    print_table(report)
    print(f"\nJSON: {output}")
    return 0 if not report["probe_uac"]["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
