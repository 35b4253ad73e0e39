"""Loss: calls through 10 % SIP message loss (SIPp ``-lost``) and 10 % RTP loss complete.

    .venv/bin/python -m bench.loss                            # 50 calls, -lost 10, RTP loss 10 %
    .venv/bin/python -m bench.loss --calls 100 --lost 20 --rtp-loss 0

A fresh ``sipagent run`` (echo model) is started and SIPp places ``--calls`` calls at
``--rate`` calls/s with ``-lost --lost``: SIPp drops that percentage of the SIP messages it
would send or receive, at random, so INVITEs, 100/200s, ACKs, BYEs and their 200s go missing
and only retransmissions (SIPp's own every 500 ms, the server's 2xx retransmissions until the
ACK and its transaction layer answering retransmitted requests) can complete the calls.

SIPp's ``-lost`` touches SIP only and 3.6.1's ``rtp_stream`` has no loss option, so the RTP
loss is made here instead: ``lossy.pcap`` is tests/fixtures/speech_pcmu.pcap (2.98 s of
20 ms PCMU) with ``--rtp-loss`` % of its RTP packets removed at random (``--seed``), played by
each call with ``play_pcap_audio`` (bench/sipp/uac_lossy.xml; a raw socket, so root is needed:
without it the calls carry no RTP from SIPp and the RTP part is skipped). The server sees the
gaps in the sequence numbers as RFC 3550 loss, which is checked against what was removed.

Reported: SIPp's successful / failed calls (and causes), its retransmissions, INVITE → 200
p50/p99 (``-trace_rtt``), the server's SIP counters before and after (``/metrics``: requests
received by method, so retransmissions that got through; responses sent by code), calls by
outcome, the RTP loss the server measured per call against the pcap's, and the calls left on
the server afterwards (must be none). JSON goes to bench/results/loss-<date>.json.

Every loop is bounded in count and time; SIPp and the server are started and stopped here by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
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

from bench.callrate import SHORT_SCENARIO  # noqa: E402
from bench.capacity import (  # noqa: E402
    BENCH,
    RESULTS,
    SPEECH_PCAP,
    ServerProcess,
    SippLoad,
    git_facts,
    log,
    machine_facts,
    pick_rtp_range,
    uses_uvloop,
)
from bench.common import (  # noqa: E402
    add_output_option,
    metric,
    metric_sum,
    read_rtt,
    scrape_metrics,
    sip_metrics,
    sipp_error_statuses,
)
from bench.setup_time import distribution  # noqa: E402

LOSSY_SCENARIO = BENCH / "sipp" / "uac_lossy.xml"
LOSSY_PCAP = "lossy.pcap"
"""Written into SIPp's working directory; uac_lossy.xml plays it."""
PCAP_HEADER = 24
RECORD_HEADER = 16
ETHERNET = 14


def rtp_sequence(frame: bytes) -> int | None:
    """The RTP sequence number of an Ethernet/IPv4/UDP/RTP frame (None if it is not one)."""
    if len(frame) < ETHERNET + 20 or frame[12:14] != b"\x08\x00":
        return None
    ihl = (frame[ETHERNET] & 0x0F) * 4
    rtp = frame[ETHERNET + ihl + 8:]
    if len(rtp) < 12 or rtp[0] >> 6 != 2:
        return None
    return int(struct.unpack("!H", rtp[2:4])[0])


def write_lossy_pcap(destination: Path, loss_pct: float, seed: int) -> dict[str, Any]:
    """SPEECH_PCAP without ``loss_pct`` % of its RTP packets (never the first or the last).

    Returns how many packets were kept and removed, and how many of the removed ones lie
    between the first and the last kept sequence number: the loss a receiver can count.
    """
    data = SPEECH_PCAP.read_bytes()
    if struct.unpack("<I", data[:4])[0] != 0xA1B2C3D4:
        raise RuntimeError(f"{SPEECH_PCAP}: not a little-endian classic pcap")
    records: list[tuple[bytes, int | None]] = []
    offset = PCAP_HEADER
    while offset + RECORD_HEADER <= len(data):
        incl = struct.unpack("<I", data[offset + 8:offset + 12])[0]
        record = data[offset:offset + RECORD_HEADER + incl]
        offset += RECORD_HEADER + incl
        records.append((record, rtp_sequence(record[RECORD_HEADER:])))
    rtp_indexes = [i for i, (_, seq) in enumerate(records) if seq is not None]
    if len(rtp_indexes) < 10:
        raise RuntimeError(f"{SPEECH_PCAP}: too few RTP packets ({len(rtp_indexes)})")
    rng = random.Random(seed)
    inner = rtp_indexes[1:-1]
    removed = set(rng.sample(inner, round(len(rtp_indexes) * loss_pct / 100)))
    out = bytearray(data[:PCAP_HEADER])
    for i, (record, _) in enumerate(records):
        if i not in removed:
            out += record
    destination.write_bytes(bytes(out))
    return {
        "rtp_packets": len(rtp_indexes),
        "removed": len(removed),
        "kept": len(rtp_indexes) - len(removed),
        "removed_pct": round(100 * len(removed) / len(rtp_indexes), 2),
        "countable_loss_per_call": len(removed),  # first and last are kept: every gap counts
        "seed": seed,
    }


def rtp_check(ended: list[dict[str, Any]], pcap: dict[str, Any] | None) -> dict[str, Any]:
    """The server's RFC 3550 loss of each ended call against what the pcap lacks."""
    if not ended:
        return {"calls": 0}
    lost = [int(s["rtp"]["lost"]) for s in ended]
    received = [int(s["rtp"]["packets_in"]) for s in ended]
    out: dict[str, Any] = {
        "calls": len(ended),
        "lost_total": sum(lost),
        "packets_in_total": sum(received),
        "loss_pct": round(100 * sum(lost) / max(sum(lost) + sum(received), 1), 2),
        "lost_per_call": {"median": statistics.median(lost), "min": min(lost),
                          "max": max(lost)},
        "packets_in_per_call": {"median": statistics.median(received), "min": min(received),
                                "max": max(received)},
    }
    if pcap is not None:
        expected = pcap["countable_loss_per_call"]
        out["expected_lost_per_call"] = expected
        out["expected_packets_in_per_call"] = pcap["kept"]
        out["calls_with_expected_loss"] = sum(1 for n in lost if n == expected)
        out["calls_with_all_packets"] = sum(1 for n in received if n == pcap["kept"])
    return out


def run_loss(args: argparse.Namespace, run_root: Path) -> dict[str, Any]:
    rtp_range = pick_rtp_range()
    server = ServerProcess.start(run_root / "server", max_calls=args.calls + 50,
                                 rtp_range=rtp_range)
    result: dict[str, Any] = {"rtp_range": rtp_range, "server_pid": server.pid,
                              "uvloop": uses_uvloop(server.pid)}
    sipp: SippLoad | None = None
    try:
        sipp_dir = run_root / "sipp"
        sipp_dir.mkdir(parents=True, exist_ok=True)
        pcap: dict[str, Any] | None = None
        if args.rtp_loss is not None:
            pcap = write_lossy_pcap(sipp_dir / LOSSY_PCAP, args.rtp_loss, args.seed)
        result["pcap"] = pcap
        before = scrape_metrics(server)
        sipp = SippLoad.start(
            sipp_dir, server, calls=args.calls, rate=args.rate, duration_s=args.call_seconds,
            timeout_s=args.calls / args.rate + args.call_seconds + 120, trace_rtt=True,
            scenario=LOSSY_SCENARIO if pcap is not None else SHORT_SCENARIO,
            extra_args=["-lost", f"{args.lost:g}"],
        )
        log(f"loss: {args.calls} calls at {args.rate:g}/s, SIPp -lost {args.lost:g}, RTP loss "
            f"{'off' if pcap is None else str(pcap['removed_pct']) + ' %'}; SIPp pid "
            f"{sipp.pid}, server pid {server.pid}")
        ended: dict[str, dict[str, Any]] = {}

        def collect_ended() -> None:  # the admin keeps the last 100 ended calls only
            with contextlib.suppress(OSError, ValueError):
                for s in server.sessions("ended"):
                    ended[s["session_id"]] = s

        sipp.wait(poll=collect_ended)
        live: float | None = None
        for _ in range(40):  # the server's last transactions and calls close
            live = metric(scrape_metrics(server), "sipagent_active_calls")
            if not live:
                break
            time.sleep(0.5)
        collect_ended()
        after = scrape_metrics(server)
        summary = sipp.summary()
        result.update({
            "sipp": summary,
            "attempted": summary.get("created"),
            "successful": summary.get("successful"),
            "failed": summary.get("failed"),
            "failure_causes": summary.get("failures"),
            "unexpected_statuses": sipp_error_statuses(sipp.workdir),
            "sipp_retransmissions": summary.get("retransmissions"),
            "invite_to_200_ms": distribution(read_rtt(sipp.workdir)),
            "sip_before": sip_metrics(before),
            "sip_after": sip_metrics(after),
            "calls_by_outcome": {
                dict(labels)["outcome"]: int(value) for (name, labels), value in after.items()
                if name == "sipagent_calls_total" and "outcome" in dict(labels)},
            "server_rtp_lost_total": metric_sum(after, "sipagent_rtp_lost_total")
            - metric_sum(before, "sipagent_rtp_lost_total"),
            "rtp": rtp_check(list(ended.values()), pcap),
            "live_calls_after": live,
            "left_on_server": [{"call_id": s["call_id"], "state": s["state"]}
                               for s in server.sessions()],
        })
        result["passed"] = (result["failed"] == 0 and result["successful"] == args.calls
                            and not result["left_on_server"] and not live)
    finally:
        if sipp is not None and sipp.running():
            sipp.stop()
        result["server_exit"] = server.stop()
        result["server_log"] = server.log_problems()
    return result


def retransmitted(result: dict[str, Any], calls: int) -> dict[str, int]:
    """What the server's counters show beyond one message of each kind per call."""
    rx = result["sip_after"].get("rx_requests", {})
    tx = result["sip_after"].get("tx_responses", {})
    return {
        "INVITEs received beyond one per call": rx.get("INVITE", 0) - calls,
        "ACKs received beyond one per call": rx.get("ACK", 0) - calls,
        "BYEs received beyond one per call": rx.get("BYE", 0) - calls,
        "200s sent beyond two per call": tx.get("200", 0) - 2 * calls,
    }


def print_report(report: dict[str, Any]) -> None:
    calls = report["settings"]["calls"]
    rtt = report["invite_to_200_ms"]
    print(f"SIPp: {report['successful']}/{report['attempted']} successful, {report['failed']} "
          f"failed {report['failure_causes'] or ''} {report['unexpected_statuses'] or ''}; "
          f"{report['sipp_retransmissions']} retransmissions by SIPp")
    print(f"INVITE → 200 OK ms (SIPp, whole ms): p50 {rtt.get('p50')} p90 {rtt.get('p90')} "
          f"p99 {rtt.get('p99')} max {rtt.get('max')}")
    print(f"server SIP counters: {report['sip_after']}")
    for name, value in retransmitted(report, calls).items():
        print(f"  {name}: {value}")
    print(f"calls by outcome: {report['calls_by_outcome']}")
    rtp = report["rtp"]
    if report.get("pcap"):
        print(f"RTP: pcap has {report['pcap']['rtp_packets']} packets, {report['pcap']['removed']}"
              f" removed ({report['pcap']['removed_pct']} %); server over {rtp['calls']} calls: "
              f"lost {rtp.get('lost_total')} ({rtp.get('loss_pct')} %), per call median "
              f"{rtp.get('lost_per_call', {}).get('median')} (expected "
              f"{rtp.get('expected_lost_per_call')}: {rtp.get('calls_with_expected_loss')} calls "
              f"exactly), packets in per call median "
              f"{rtp.get('packets_in_per_call', {}).get('median')} "
              f"(sent {rtp.get('expected_packets_in_per_call')})")
    else:
        print("RTP: no RTP loss (not root, or --rtp-loss off)")
    print(f"left on the server: {len(report['left_on_server'])} (live calls after: "
          f"{report['live_calls_after']}); verdict: {'pass' if report['passed'] else 'FAIL'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loss", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--calls", type=int, default=50, help="calls to place (default 50)")
    parser.add_argument("--rate", type=float, default=5.0, help="new calls/s (default 5)")
    parser.add_argument("--lost", type=float, default=10.0,
                        help="SIPp -lost: percent of SIP messages dropped (default 10)")
    parser.add_argument("--rtp-loss", type=float, default=10.0,
                        help="percent of the RTP packets removed from the played pcap "
                             "(default 10; 0 plays it whole)")
    parser.add_argument("--no-rtp", dest="rtp_loss", action="store_const", const=None,
                        help="no RTP from SIPp (bench/sipp/uac_short.xml)")
    parser.add_argument("--call-seconds", type=float, default=4.0,
                        help="ACK to BYE (default 4: the 2.98 s pcap and the echo's tail)")
    parser.add_argument("--seed", type=int, default=7, help="which RTP packets go (default 7)")
    add_output_option(parser, "loss-<date>.json")
    args = parser.parse_args(argv)
    if not 1 <= args.calls <= 2000 or not 0.1 <= args.rate <= 100:
        parser.error("--calls must be 1..2000 and --rate 0.1..100")
    if not 0 <= args.lost <= 50:
        parser.error("--lost must be 0..50")
    if args.rtp_loss is not None and not 0 <= args.rtp_loss <= 50:
        parser.error("--rtp-loss must be 0..50")
    if not 1 <= args.call_seconds <= 60:
        parser.error("--call-seconds must be 1..60")
    if shutil.which("sipp") is None:
        parser.error("sipp is not installed (Debian package sip-tester)")
    rtp_note = None
    if args.rtp_loss is not None and os.geteuid() != 0:
        rtp_note = "not root: play_pcap_audio needs a raw socket, so no RTP loss was played"
        log(rtp_note)
        args.rtp_loss = None

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_root = RESULTS / f"loss-{stamp}"
    run_root.mkdir(parents=True, exist_ok=True)
    log(f"run directory {run_root}")
    machine = machine_facts()
    try:
        result = run_loss(args, run_root)
    except Exception as exc:
        log(f"loss failed: {exc!r}")
        result = {"error": repr(exc), "passed": False}
    if git_facts() != {k: machine.get(k) for k in ("git_commit", "git_changed_outside_bench")}:
        machine["tree_changed_during_run"] = git_facts()
    machine["uvloop"] = result.get("uvloop")
    machine["loadavg_at_end"] = list(os.getloadavg())
    report: dict[str, Any] = {
        "benchmark": "loss",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "settings": {"calls": args.calls, "rate_cps": args.rate, "sipp_lost_pct": args.lost,
                     "rtp_loss_pct": args.rtp_loss, "rtp_note": rtp_note,
                     "call_seconds": args.call_seconds, "seed": args.seed, "model": "echo",
                     "workdir": str(run_root)},
        **result,
    }
    output = args.output or RESULTS / f"loss-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nsipagent under loss, echo model — {args.calls} calls at {args.rate:g}/s, SIPp -lost "
          f"{args.lost:g}, RTP loss {args.rtp_loss if args.rtp_loss is not None else 'off'}\n")
    if "error" in result:
        print(f"error: {result['error']}")
    else:
        print_report(report)
    print(f"\nJSON: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
