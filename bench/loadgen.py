"""Load generator that also listens: N calls streaming 20 ms PCMU, the server's pacing measured.

    .venv/bin/python -m bench.loadgen --server 127.0.0.1:5060 --calls 100 --duration 20
    .venv/bin/python -m bench.loadgen --rtp-base 127.0.0.1:20200 --calls 100   # no SIP

A separate process (uvloop). With ``--server`` it sets up ``--calls`` calls over SIP with the
small UAC of bench/uac.py (one after another, at most ``--rate`` per second, before streaming
starts); with ``--rtp-base HOST:PORT`` it skips SIP and streams to PORT, PORT+2, … (the bare
relay of bench/relay_baseline.py). Then every call streams 20 ms PCMU (the payloads of
tests/fixtures/speech_pcmu.pcap) on absolute deadlines ``start_i + k · 20 ms``, the calls'
phases spread evenly over the 20 ms, sent by one timer that fires at most once a millisecond.

The calls share ``--sockets`` UDP sockets (default 8); each names its socket's port in its SDP
offer and the server's packets are told apart by their source address. Every socket has
``SO_TIMESTAMPNS``: each packet's arrival is the kernel's receive timestamp (ancillary data of
``recvmsg``), so the generator's own scheduling delay is not measured. Reads are batched (up to
256 datagrams per wake-up).

Pacing deviation (see :func:`stream_window`): for each stream, a packet's ideal arrival is
``offset + (RTP timestamp - first timestamp) / 8000``: positions come from the RTP timestamp,
so a frame the server skipped is a gap in the grid, not jitter. The slope is fixed at the
nominal 8 kHz clock (sender and receiver share the machine's clock) and the offset is the
best fit in the L1 sense, the median of ``arrival - position``, so neither a late first packet
nor an outlier moves the grid. A stream is cut into segments where its SSRC changes or its
timestamp and its arrival times disagree by more than :data:`RESYNC_S` (a restarted stream);
each segment gets its own fit. The deviations of all streams are pooled: p50/p99/max of
``|arrival - ideal|``.

Control (stdin, one command a line): ``stats T0 T1`` (Unix times) prints ``STATS {json}``: the
pacing over that window; ``stop`` ends the streaming early. Standard output carries only
``READY {json}``, ``STATS {json}`` and ``DONE``; progress goes to standard error. At the end
the calls get their BYE and the JSON report goes to ``--out``. Every loop is bounded in count
and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import statistics
import struct
import sys
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.capacity import percentile, speech_pcmu  # noqa: E402
from bench.uac import LOCALHOST, Dialog, Uac  # noqa: E402

__all__ = ["StreamWindow", "pool", "stream_window", "ts_delta"]

FRAME_S = 0.020
CLOCK_RATE = 8000
FRAME_SAMPLES = 160
RESYNC_S = 0.5
"""A jump between RTP time and arrival time larger than this starts a new grid segment."""
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
"""Linux: the kernel stamps each datagram (struct timespec, CLOCK_REALTIME) on arrival."""
TIMESPEC = struct.Struct("@qq")
ANCILLARY_SIZE = socket.CMSG_SPACE(TIMESPEC.size)
RTP_FIELDS = struct.Struct("!HHII")
RTP_HEADER = struct.Struct("!BBHII")
RECV_BUFFER = 4 << 20
READ_BATCH = 256
SEND_TICK_S = 0.001
"""The send timer fires at most this often; each firing sends every packet that is due."""
MAX_BEHIND_S = 0.200
"""Further behind than this, a stream skips the frames it missed (as the server's pacer does)."""
LATENESS_BUCKET_S = 0.0001
LATENESS_BUCKETS = 2000


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] loadgen: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------- pure computations


def ts_delta(later: int, earlier: int) -> int:
    """``later - earlier`` of two 32-bit RTP timestamps, wrap-around aware (signed)."""
    return ((later - earlier + 0x8000_0000) & 0xFFFF_FFFF) - 0x8000_0000


def seq_delta(later: int, earlier: int) -> int:
    """``later - earlier`` of two 16-bit sequence numbers (signed)."""
    return ((later - earlier + 0x8000) & 0xFFFF) - 0x8000


@dataclass
class StreamWindow:
    """One stream's packets inside a window, measured against its grid."""

    deviations_s: list[float] = field(default_factory=list)
    """Signed ``arrival - ideal`` of each packet, seconds (positive: late)."""
    offsets_s: list[float] = field(default_factory=list)
    """Arrival of each packet, seconds from the window's start (same order)."""
    received: int = 0
    lost: int = 0
    """Sequence numbers never seen between the first and the last packet."""
    skipped_frames: int = 0
    """Frames the sender skipped: timestamp steps of more than one frame with no sequence gap."""
    duplicates: int = 0
    segments: int = 0


def stream_window(arrivals_ns: Sequence[int], timestamps: Sequence[int], seqs: Sequence[int],
                  ssrcs: Sequence[int], t0_ns: int, t1_ns: int,
                  clock_rate: int = CLOCK_RATE, frame_samples: int = FRAME_SAMPLES,
                  ) -> StreamWindow:
    """Deviation of every packet arriving in ``[t0_ns, t1_ns)`` from its stream's grid.

    Packets are in arrival order. Positions are the RTP timestamps (unwrapped) over the clock
    rate; each segment's grid is ``median(arrival - position) + position``.
    """
    out = StreamWindow()
    segment_residuals: list[float] = []
    segment_offsets: list[float] = []

    def close_segment() -> None:
        if segment_residuals:
            offset = statistics.median(segment_residuals)
            out.deviations_s.extend(r - offset for r in segment_residuals)
            out.offsets_s.extend(segment_offsets)
            out.segments += 1
            segment_residuals.clear()
            segment_offsets.clear()

    prev: tuple[int, int, int, int] | None = None  # arrival, timestamp, seq, ssrc
    position = 0.0
    base_ns = t0_ns
    for arrival, ts, seq, ssrc in zip(arrivals_ns, timestamps, seqs, ssrcs, strict=True):
        if not t0_ns <= arrival < t1_ns:
            continue
        out.received += 1
        if prev is not None and ssrc == prev[3]:
            d_seq = seq_delta(seq, prev[2])
            d_ts = ts_delta(ts, prev[1])
            d_time = (arrival - prev[0]) / 1e9
            if abs(d_ts / clock_rate - d_time) > RESYNC_S or d_ts < 0:
                close_segment()
                position = 0.0
            elif d_seq <= 0:
                out.duplicates += 1
                out.received -= 1
                continue
            else:
                out.lost += d_seq - 1
                frames = round(d_ts / frame_samples)
                out.skipped_frames += max(0, frames - d_seq)
                position += d_ts / clock_rate
        else:
            close_segment()
            position = 0.0
        segment_residuals.append((arrival - base_ns) / 1e9 - position)
        segment_offsets.append((arrival - base_ns) / 1e9)
        prev = (arrival, ts, seq, ssrc)
    close_segment()
    return out


def pool(windows: Sequence[StreamWindow], seconds: float, streams: int) -> dict[str, Any]:
    """Pooled pacing over all streams: |deviation| percentiles (ms), packets vs expected."""
    magnitudes = [abs(d) * 1000 for w in windows for d in w.deviations_s]
    late = [d * 1000 for w in windows for d in w.deviations_s if d > 0]
    received = sum(w.received for w in windows)
    expected = round(streams * seconds / FRAME_S)

    def pct(values: list[float], fraction: float) -> float | None:
        value = percentile(values, fraction)
        return None if value is None else round(value, 3)

    # Where in the window the deviations are: p99 per second, and the worst 100 ms slots.
    by_second: dict[int, list[float]] = {}
    by_slot: dict[int, list[float]] = {}
    for w in windows:
        for offset, d in zip(w.offsets_s, w.deviations_s, strict=True):
            by_second.setdefault(int(offset), []).append(abs(d) * 1000)
            by_slot.setdefault(int(offset * 10), []).append(abs(d) * 1000)
    worst_slots = sorted(by_slot.items(), key=lambda kv: -statistics.fmean(kv[1]))[:5]
    return {
        "p99_by_second_ms": [pct(by_second[k], 0.99) for k in sorted(by_second)],
        "worst_100ms_slots": [{"at_s": k / 10, "mean_ms": round(statistics.fmean(v), 2),
                               "max_ms": round(max(v), 2)} for k, v in worst_slots],
        "grid": "per stream segment: RTP-timestamp positions, slope 8 kHz, offset = median "
                "residual (L1 fit); deviation = |arrival - ideal|, kernel receive timestamps",
        "window_seconds": round(seconds, 3),
        "streams": streams,
        "streams_with_packets": sum(1 for w in windows if w.received),
        "received": received,
        "expected": expected,
        "received_pct": round(100 * received / expected, 3) if expected else None,
        "lost": sum(w.lost for w in windows),
        "skipped_frames": sum(w.skipped_frames for w in windows),
        "duplicates": sum(w.duplicates for w in windows),
        "segments": sum(w.segments for w in windows),
        "pace_p50_ms": pct(magnitudes, 0.50),
        "pace_p90_ms": pct(magnitudes, 0.90),
        "pace_p99_ms": pct(magnitudes, 0.99),
        "pace_p999_ms": pct(magnitudes, 0.999),
        "pace_max_ms": round(max(magnitudes), 3) if magnitudes else None,
        "late_p99_ms": pct(late, 0.99),
    }


# ---------------------------------------------------------------------------------- streams


@dataclass(slots=True)
class Stream:
    """One call's media: what we send, and the log of what the server sent us."""

    index: int
    sock: socket.socket
    remote: tuple[str, int]
    ssrc: int
    seq: int
    ts: int
    due: float = 0.0
    frame: int = 0
    sent: int = 0
    dialog: Dialog | None = None
    arrivals_ns: array[int] = field(default_factory=lambda: array("q"))
    timestamps: array[int] = field(default_factory=lambda: array("I"))
    seqs: array[int] = field(default_factory=lambda: array("H"))
    ssrcs: array[int] = field(default_factory=lambda: array("I"))


class LoadGenerator:
    """The streaming phase: one send timer for all streams, batched kernel-stamped reads."""

    def __init__(self, streams: list[Stream], sockets: list[socket.socket], payload: bytes,
                 duration: float) -> None:
        self.streams = streams
        self.sockets = sockets
        self.payload = payload
        self.frames = len(payload) // FRAME_SAMPLES
        self.duration = duration
        self.by_source = {s.remote: s for s in streams}
        self.lateness = [0] * LATENESS_BUCKETS
        self.lateness_max = 0.0
        self.gen_skipped = 0
        self.send_errors = 0
        self.unknown_source = 0
        self.no_kernel_stamp = 0
        self.short_packets = 0
        self.reads = 0
        self.wakeups = 0
        self.next_stream = 0
        self.started_wall = 0.0
        self.stopped = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self._stdin = b""

    # -- sending --------------------------------------------------------------------------
    def start(self) -> None:
        now = self.loop.time()
        self.started_wall = time.time()
        n = len(self.streams)
        for stream in self.streams:  # phases spread evenly over one frame
            stream.due = now + 0.005 + FRAME_S * stream.index / n
        for sock in self.sockets:
            self.loop.add_reader(sock.fileno(), self._on_readable, sock)
        self.loop.call_at(self.streams[0].due, self._tick)
        self.loop.call_at(now + self.duration, self.stopped.set)

    def _tick(self) -> None:
        if self.stopped.is_set():
            return
        now = self.loop.time()
        streams, n = self.streams, len(self.streams)
        i = self.next_stream
        payload, frames = self.payload, self.frames
        for _ in range(3 * n):  # bounded: each stream at most ~3 frames per tick
            stream = streams[i]
            late = now - stream.due
            if late < 0:
                break
            if late > MAX_BEHIND_S:
                missed = int(late / FRAME_S)
                stream.due += missed * FRAME_S
                stream.ts = (stream.ts + missed * FRAME_SAMPLES) & 0xFFFF_FFFF
                stream.frame = (stream.frame + missed) % frames
                self.gen_skipped += missed
                late = now - stream.due
            bucket = int(late / LATENESS_BUCKET_S)
            self.lateness[min(bucket, LATENESS_BUCKETS - 1)] += 1
            self.lateness_max = max(self.lateness_max, late)
            offset = stream.frame * FRAME_SAMPLES
            packet = RTP_HEADER.pack(0x80, 0x80 if stream.sent == 0 else 0, stream.seq,
                                     stream.ts, stream.ssrc) + payload[offset:offset + 160]
            try:
                stream.sock.sendto(packet, stream.remote)
            except OSError:
                self.send_errors += 1
            stream.sent += 1
            stream.seq = (stream.seq + 1) & 0xFFFF
            stream.ts = (stream.ts + FRAME_SAMPLES) & 0xFFFF_FFFF
            stream.frame = (stream.frame + 1) % frames
            stream.due += FRAME_S
            i = (i + 1) % n
        self.next_stream = i
        self.loop.call_at(max(streams[i].due, now + SEND_TICK_S), self._tick)

    # -- receiving ------------------------------------------------------------------------
    def _on_readable(self, sock: socket.socket) -> None:
        self.wakeups += 1
        recvmsg, by_source = sock.recvmsg, self.by_source
        for _ in range(READ_BATCH):
            try:
                data, ancillary, _flags, source = recvmsg(2048, ANCILLARY_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # e.g. ECONNREFUSED from an earlier send: the next read goes on
            self.reads += 1
            stream = by_source.get(source)
            if stream is None:
                self.unknown_source += 1
                continue
            if len(data) < 12:
                self.short_packets += 1
                continue
            if ancillary:
                seconds, nanoseconds = TIMESPEC.unpack_from(ancillary[0][2])
                arrival = seconds * 1_000_000_000 + nanoseconds
            else:
                arrival = time.time_ns()
                self.no_kernel_stamp += 1
            _, seq, ts, ssrc = RTP_FIELDS.unpack_from(data)
            stream.arrivals_ns.append(arrival)
            stream.timestamps.append(ts)
            stream.seqs.append(seq)
            stream.ssrcs.append(ssrc)

    # -- control --------------------------------------------------------------------------
    def watch_stdin(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            os.set_blocking(sys.stdin.fileno(), False)
            self.loop.add_reader(sys.stdin.fileno(), self._on_stdin)

    def _on_stdin(self) -> None:
        try:
            chunk = os.read(sys.stdin.fileno(), 4096)
        except BlockingIOError:
            return
        if not chunk:  # EOF: nobody will send commands
            self.loop.remove_reader(sys.stdin.fileno())
            return
        self._stdin += chunk
        while b"\n" in self._stdin:
            line, self._stdin = self._stdin.split(b"\n", 1)
            words = line.decode(errors="replace").split()
            if words[:1] == ["stop"]:
                self.stopped.set()
            elif words[:1] == ["stats"] and len(words) >= 3:
                try:
                    result = self.pacing(float(words[1]), float(words[2]))
                except ValueError as exc:
                    result = {"error": repr(exc)}
                print("STATS " + json.dumps(result), flush=True)

    def pacing(self, t0: float, t1: float) -> dict[str, Any]:
        """Pooled pacing of every stream over the wall-clock window [t0, t1)."""
        t0_ns, t1_ns = int(t0 * 1e9), int(t1 * 1e9)
        windows = [stream_window(s.arrivals_ns, s.timestamps, s.seqs, s.ssrcs, t0_ns, t1_ns)
                   for s in self.streams]
        return pool(windows, t1 - t0, len(self.streams))

    def stop(self) -> None:
        for sock in self.sockets:
            self.loop.remove_reader(sock.fileno())
        with contextlib.suppress(OSError, ValueError):
            self.loop.remove_reader(sys.stdin.fileno())

    def send_report(self) -> dict[str, Any]:
        total = sum(self.lateness)

        def lateness_pct(fraction: float) -> float | None:
            if not total:
                return None
            rank, seen = fraction * total, 0
            for bucket, count in enumerate(self.lateness):
                seen += count
                if seen >= rank:
                    return round((bucket + 1) * LATENESS_BUCKET_S * 1000, 2)
            return None

        return {
            "packets_sent": sum(s.sent for s in self.streams),
            "send_errors": self.send_errors,
            "generator_skipped_frames": self.gen_skipped,
            "send_lateness_ms_p50": lateness_pct(0.50),
            "send_lateness_ms_p99": lateness_pct(0.99),
            "send_lateness_ms_max": round(self.lateness_max * 1000, 3),
            "datagrams_read": self.reads,
            "read_wakeups": self.wakeups,
            "unknown_source": self.unknown_source,
            "no_kernel_timestamp": self.no_kernel_stamp,
            "short_packets": self.short_packets,
        }


# ------------------------------------------------------------------------------------ set-up


def open_sockets(count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, RECV_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.bind((LOCALHOST, 0))
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


def drain(sockets: list[socket.socket]) -> int:
    dropped = 0
    for sock in sockets:
        with contextlib.suppress(BlockingIOError):
            for _ in range(100_000):
                sock.recv(2048)
                dropped += 1
    return dropped


def socket_drops(sockets: list[socket.socket]) -> int:
    """The kernel's drop counters of our sockets (/proc/net/udp)."""
    ports = {s.getsockname()[1] for s in sockets}
    total = 0
    with contextlib.suppress(OSError), open("/proc/net/udp") as table:
        next(table)
        for line in table:
            cols = line.split()
            if int(cols[1].rsplit(":", 1)[1], 16) in ports:
                total += int(cols[-1])
    return total


def new_stream(index: int, sock: socket.socket, remote: tuple[str, int], frames: int) -> Stream:
    rand = int.from_bytes(os.urandom(10), "big")
    return Stream(index=index, sock=sock, remote=remote, ssrc=rand & 0xFFFF_FFFF,
                  seq=(rand >> 32) & 0xFFFF, ts=(rand >> 48) & 0xFFFF_FFFF,
                  frame=(index * 37) % frames)


def set_up_calls(args: argparse.Namespace, sockets: list[socket.socket], frames: int,
                 report: dict[str, Any]) -> tuple[list[Stream], Uac | None]:
    """SIP mode: INVITE every call (bounded in time); no-SIP mode: fixed ports."""
    streams: list[Stream] = []
    if args.rtp_base is not None:
        host, base = args.rtp_base
        for i in range(args.calls):
            streams.append(new_stream(i, sockets[i % len(sockets)], (host, base + 2 * i), frames))
        return streams, None
    uac = Uac(args.server, user_agent="sipagent-bench-loadgen")
    statuses: Counter[str] = Counter()
    setup_ms: list[float] = []
    failures: list[dict[str, Any]] = []
    started = time.monotonic()
    limit = started + args.setup_timeout
    for i in range(args.calls):
        if time.monotonic() > limit:
            log(f"set-up time limit reached after {i} calls")
            statuses["not attempted (time limit)"] += args.calls - i
            break
        pause = started + i / args.rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        sock = sockets[i % len(sockets)]
        timing = uac.invite(i, sock.getsockname()[1])
        statuses[str(timing.status) if timing.status else (timing.error or "?")] += 1
        dialog = timing.dialog
        if dialog is None or dialog.remote_rtp is None:
            if len(failures) < 10:
                failures.append({"index": i, "status": timing.status, "error": timing.error})
            continue
        if timing.ok_ms is not None:
            setup_ms.append(timing.ok_ms)
        stream = new_stream(len(streams), sock, dialog.remote_rtp, frames)
        stream.dialog = dialog
        streams.append(stream)
    report["setup"] = {
        "seconds": round(time.monotonic() - started, 3),
        "final_statuses": dict(statuses),
        "failures_first": failures,
        "invite_to_200_ms_p50": percentile(setup_ms, 0.5),
        "invite_to_200_ms_p99": percentile(setup_ms, 0.99),
    }
    return streams, uac


def hang_up(uac: Uac, streams: list[Stream], limit_s: float) -> dict[str, Any]:
    ok = failed = skipped = 0
    deadline = time.monotonic() + limit_s
    for stream in streams:
        if stream.dialog is None:
            continue
        if time.monotonic() > deadline:
            skipped += 1
            continue
        if uac.bye(stream.dialog):
            ok += 1
        else:
            failed += 1
    return {"bye_ok": ok, "bye_failed": failed, "bye_not_sent": skipped}


# -------------------------------------------------------------------------------------- main


async def stream_phase(args: argparse.Namespace, streams: list[Stream],
                       sockets: list[socket.socket], report: dict[str, Any]) -> None:
    generator = LoadGenerator(streams, sockets, speech_pcmu(), args.duration)
    drops_before = socket_drops(sockets)
    report["drained_before_streaming"] = drain(sockets)
    cpu0, wall0 = time.process_time(), time.monotonic()
    generator.start()
    generator.watch_stdin()
    print("READY " + json.dumps({"streams": len(streams), "streaming_at": generator.started_wall}),
          flush=True)
    log(f"{len(streams)} streams on {len(sockets)} sockets for {args.duration:g} s")
    await generator.stopped.wait()
    generator.stop()
    seconds = time.monotonic() - wall0
    cpu = time.process_time() - cpu0
    report["streaming_seconds"] = round(seconds, 3)
    report["streaming_cpu_pct"] = round(100 * cpu / seconds, 2)
    report["streaming_cpu_ms_per_call_second"] = (
        round(1000 * cpu / (len(streams) * seconds), 4) if streams else None)
    report["socket_drops"] = socket_drops(sockets) - drops_before
    report.update(generator.send_report())
    # The whole run, minus the first second (streams starting) and the last 0.2 s.
    t0 = generator.started_wall + 1.0
    t1 = generator.started_wall + seconds - 0.2
    report["pacing_whole_run"] = generator.pacing(t0, t1) if t1 > t0 else None


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadgen", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--server", type=parse_address, help="SIP server HOST:PORT (UDP)")
    target.add_argument("--rtp-base", type=parse_address,
                        help="no SIP: stream to HOST:PORT, PORT+2, … (bench/relay_baseline.py)")
    parser.add_argument("--calls", type=int, default=100, help="calls / streams (default 100)")
    parser.add_argument("--duration", type=float, default=20.0,
                        help="seconds of streaming once every call is set up (default 20)")
    parser.add_argument("--rate", type=float, default=200.0,
                        help="at most this many new calls per second (default 200)")
    parser.add_argument("--sockets", type=int, default=8,
                        help="UDP sockets shared by the calls (default 8; --calls for one each)")
    parser.add_argument("--setup-timeout", type=float, default=None,
                        help="seconds allowed for the set-up (default 30 + calls / rate)")
    parser.add_argument("--out", type=Path, default=None, help="JSON report file")
    args = parser.parse_args(argv)
    if not 1 <= args.calls <= 2000:
        parser.error("--calls must be 1..2000")
    if not 1 <= args.duration <= 3600:
        parser.error("--duration must be 1..3600 s")
    if not 0.5 <= args.rate <= 10_000:
        parser.error("--rate must be 0.5..10000")
    args.sockets = max(1, min(args.sockets, args.calls))
    if args.setup_timeout is None:
        args.setup_timeout = 30 + args.calls / args.rate

    report: dict[str, Any] = {"calls": args.calls, "mode": "sip" if args.server else "rtp",
                              "sockets": args.sockets, "duration_s": args.duration}
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        report["uvloop"] = True
    except ImportError:
        loop = asyncio.new_event_loop()
        report["uvloop"] = False
        log("uvloop not installed: default asyncio loop")
    sockets = open_sockets(args.sockets)
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    streams, uac = set_up_calls(args, sockets, len(speech_pcmu()) // FRAME_SAMPLES, report)
    report["established"] = len(streams)
    try:
        if streams:
            loop.run_until_complete(stream_phase(args, streams, sockets, report))
        else:
            log("no call established")
    finally:
        loop.close()
        if uac is not None:
            report["teardown"] = hang_up(uac, streams, limit_s=30 + len(streams) * 0.05)
            uac.close()
        for sock in sockets:
            sock.close()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        report["cpu_seconds_total"] = round(
            usage.ru_utime + usage.ru_stime - usage0.ru_utime - usage0.ru_stime, 3)
        report["max_rss_mib"] = round(usage.ru_maxrss / 1024, 1)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2) + "\n")
        print("DONE", flush=True)
    return 0 if streams and len(streams) == args.calls else 1


if __name__ == "__main__":
    sys.exit(main())
