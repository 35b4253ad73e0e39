"""Helpers shared by bench/callrate.py, bench/loss.py, bench/soak.py and the runner.

What the older scripts already offer (the server subprocess, SIPp, /proc CPU and memory,
machine facts) stays in bench/capacity.py and is imported from there; this module adds what
they did not need: the server's Prometheus metrics, its file descriptors and sockets, SIPp's
response-time trace and the status codes in its error log, and the ``--output`` option.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.capacity import ServerProcess
from tests.peers.sipp import LOCALHOST

__all__ = [
    "MetricSamples",
    "add_output_option",
    "metric",
    "metric_sum",
    "process_sockets",
    "first_lines",
    "read_rtt",
    "read_rtt_rows",
    "scrape_metrics",
    "sip_metrics",
    "sipp_error_statuses",
    "summarize_series",
]

MetricSamples = dict[tuple[str, frozenset[tuple[str, str]]], float]
"""Every sample of one ``GET /metrics``, keyed by sample name and its labels."""


def add_output_option(parser: argparse.ArgumentParser, default: str) -> None:
    """``--output PATH`` (alias ``--json``): where the JSON report goes; the runner passes it."""
    parser.add_argument("--output", "--json", dest="output", type=Path, default=None,
                        help=f"JSON file (default bench/results/{default})")


def scrape_metrics(server: ServerProcess, timeout: float = 10.0) -> MetricSamples:
    url = f"http://{LOCALHOST}:{server.admin_port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(samples: MetricSamples, name: str, **labels: str) -> float | None:
    """The sample with exactly these labels (None when the server has not exposed it yet)."""
    return samples.get((name, frozenset(labels.items())))


def metric_sum(samples: MetricSamples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and wanted <= lab)


def sip_metrics(samples: MetricSamples) -> dict[str, dict[str, int]]:
    """``sipagent_sip_*_total`` as {"rx_requests": {"INVITE": n}, "tx_responses": {"200": n}...}."""
    out: dict[str, dict[str, int]] = {}
    for (name, labels), value in sorted(samples.items(), key=lambda kv: (kv[0][0],
                                                                          sorted(kv[0][1]))):
        lab = dict(labels)
        kind = {"sipagent_sip_requests_total": ("requests", "method"),
                "sipagent_sip_responses_total": ("responses", "code"),
                "sipagent_sip_dropped_total": ("dropped", "reason")}.get(name)
        if kind is None or "direction" not in lab:
            continue
        out.setdefault(f"{lab['direction']}_{kind[0]}", {})[lab.get(kind[1], "?")] = int(value)
    return out


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        with contextlib.suppress(OSError):  # an fd closed meanwhile
            target = os.readlink(f"{fd_dir}/{fd}")
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def _table_inodes(path: str) -> set[int]:
    """Inodes of the sockets listed in a /proc/net table (udp, udp6, tcp, tcp6)."""
    inodes: set[int] = set()
    with contextlib.suppress(OSError), open(path) as table:
        next(table)
        for line in table:
            cols = line.split()
            if len(cols) > 9:
                inodes.add(int(cols[9]))
    return inodes


def process_sockets(pid: int) -> dict[str, int]:
    """Open fds of a process, and how many of them are UDP / TCP / other sockets."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    mine = _socket_inodes(pid)
    # The process' own network namespace view; the tables list every socket of the namespace.
    udp = mine & (_table_inodes(f"/proc/{pid}/net/udp") | _table_inodes(f"/proc/{pid}/net/udp6"))
    tcp = mine & (_table_inodes(f"/proc/{pid}/net/tcp") | _table_inodes(f"/proc/{pid}/net/tcp6"))
    return {"fds": fds, "sockets": len(mine), "udp_sockets": len(udp), "tcp_sockets": len(tcp)}


def read_rtt_rows(workdir: Path, rtd: str = "setup") -> list[tuple[float, float]]:
    """SIPp's ``-trace_rtt`` rows of the timer ``rtd``: (ms since SIPp started when the
    response came, response time ms), from every *_rtt.csv of ``workdir``."""
    rows: list[tuple[float, float]] = []
    for path in sorted(workdir.glob("*_rtt.csv")):
        for line in path.read_text(errors="replace").splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 3 and parts[2] == rtd:
                with contextlib.suppress(ValueError):
                    rows.append((float(parts[0]), float(parts[1])))
    return rows


def read_rtt(workdir: Path, rtd: str = "setup") -> list[float]:
    """SIPp's ``-trace_rtt`` response times (ms) of the timer ``rtd``."""
    return [rtt for _, rtt in read_rtt_rows(workdir, rtd)]


_STATUS_LINE = re.compile(r"received '\s*SIP/2\.0 (\d{3}) ")
"""SIPp's "Aborting call on unexpected message ... received 'SIP/2.0 503 ..." lines."""


def sipp_error_statuses(workdir: Path) -> dict[str, int]:
    """Status codes of the unexpected responses in SIPp's ``-trace_err`` log (errors.log)."""
    try:
        text = (workdir / "errors.log").read_text(errors="replace")
    except OSError:
        return {}
    return dict(Counter(_STATUS_LINE.findall(text)).most_common())


def first_lines(path: Path, count: int = 5) -> list[str]:
    """The first non-empty lines of a text file (SIPp's errors), for the report."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return []
    return [line for line in lines if line][:count]


def summarize_series(values: list[float]) -> dict[str, Any]:
    """min / max / first / last of a sampled series."""
    if not values:
        return {"n": 0}
    return {"n": len(values), "first": values[0], "last": values[-1],
            "min": min(values), "max": max(values)}
