"""bench/loadgen.py: the pacing arithmetic (grid fit, skipped frames, loss) and kernel stamps."""

from __future__ import annotations

import socket
import time

import pytest

from bench.loadgen import (
    ANCILLARY_SIZE,
    TIMESPEC,
    open_sockets,
    pool,
    stream_window,
    ts_delta,
)

MS = 1_000_000  # ns
T0 = 1_700_000_000 * 1_000_000_000


def stream(frames: list[int], *, delay_ns: int = 7 * MS, ts0: int = 1000, seq0: int = 100,
           ssrc: int = 0xABC, late: dict[int, int] | None = None,
           seq_of: dict[int, int] | None = None) -> tuple[list[int], ...]:
    """Packets of grid frames ``frames`` (index k sent at T0 + k·20 ms, seen ``delay_ns`` later)."""
    late = late or {}
    seq_of = seq_of or {}
    arrivals = [T0 + k * 20 * MS + delay_ns + late.get(k, 0) for k in frames]
    timestamps = [(ts0 + 160 * k) & 0xFFFF_FFFF for k in frames]
    seqs = [(seq0 + seq_of.get(k, i)) & 0xFFFF for i, k in enumerate(frames)]
    return arrivals, timestamps, seqs, [ssrc] * len(frames)


def window(packets: tuple[list[int], ...], t0: int = T0, t1: int = T0 + 10**12):
    return stream_window(*packets, t0, t1)


def test_a_perfect_stream_deviates_by_nothing_whatever_its_constant_delay() -> None:
    result = window(stream(list(range(50)), delay_ns=13 * MS))
    assert result.received == 50
    assert max(abs(d) for d in result.deviations_s) < 1e-9
    assert (result.lost, result.skipped_frames, result.segments) == (0, 0, 1)


def test_a_frame_the_sender_skipped_is_a_gap_in_the_grid_not_jitter() -> None:
    frames = [k for k in range(20) if k != 7]  # timestamp jumps 320, sequence stays contiguous
    result = window(stream(frames))
    assert result.skipped_frames == 1
    assert result.lost == 0
    assert max(abs(d) for d in result.deviations_s) < 1e-9


def test_a_lost_packet_is_a_sequence_gap_not_a_skip() -> None:
    frames = [k for k in range(20) if k != 7]
    result = window(stream(frames, seq_of={k: k for k in frames}))
    assert (result.lost, result.skipped_frames) == (1, 0)
    assert max(abs(d) for d in result.deviations_s) < 1e-9


def test_the_grid_is_fitted_so_a_late_first_packet_does_not_shift_every_other() -> None:
    result = window(stream(list(range(30)), late={0: 5 * MS, 12: 3 * MS}))
    deviations_ms = sorted(round(d * 1000, 6) for d in result.deviations_s)
    assert deviations_ms[-2:] == [3.0, 5.0]
    assert deviations_ms[:-2] == [0.0] * 28


def test_timestamps_wrap_around() -> None:
    result = window(stream(list(range(20)), ts0=0xFFFF_FFFF - 3 * 160, seq0=0xFFFE))
    assert ts_delta(5, 0xFFFF_FFFF) == 6
    assert (result.received, result.lost, result.segments) == (20, 0, 1)
    assert max(abs(d) for d in result.deviations_s) < 1e-9


def test_a_restarted_stream_gets_its_own_grid() -> None:
    first = stream(list(range(10)))
    # A new SSRC, 4.5 frames later than the old grid: a fit across both would see 10 ms.
    second = stream(list(range(15, 25)), ssrc=0xDEF, delay_ns=17 * MS, ts0=5)
    packets = tuple(a + b for a, b in zip(first, second, strict=True))
    result = window(packets)
    assert result.segments == 2
    assert max(abs(d) for d in result.deviations_s) < 1e-9


def test_a_timestamp_jump_without_the_time_to_match_starts_a_segment() -> None:
    arrivals, timestamps, seqs, ssrcs = stream(list(range(20)))
    timestamps = timestamps[:10] + [(t + 80_000) & 0xFFFF_FFFF for t in timestamps[10:]]
    result = window((arrivals, timestamps, seqs, ssrcs))
    assert result.segments == 2
    assert result.skipped_frames == 0


def test_only_the_window_counts_and_duplicates_are_not_received_twice() -> None:
    arrivals, timestamps, seqs, ssrcs = stream(list(range(100)))
    arrivals.insert(51, arrivals[50] + MS)
    timestamps.insert(51, timestamps[50])
    seqs.insert(51, seqs[50])
    ssrcs.insert(51, ssrcs[50])
    t0, t1 = T0 + 500 * MS, T0 + 1500 * MS  # frames 25..74 (arrivals +7 ms)
    result = window((arrivals, timestamps, seqs, ssrcs), t0, t1)
    assert result.received == 50
    assert result.duplicates == 1
    stats = pool([result, window(stream([]), t0, t1)], seconds=1.0, streams=2)
    assert stats["expected"] == 100
    assert stats["received"] == 50
    assert stats["streams_with_packets"] == 1
    assert stats["pace_max_ms"] == pytest.approx(0.0, abs=1e-6)


def test_pooled_percentiles_are_of_the_magnitudes_over_all_streams() -> None:
    calm = window(stream(list(range(100))))
    shaky = window(stream(list(range(100)), late={k: 2 * MS for k in range(0, 100, 10)}))
    stats = pool([calm, shaky], seconds=2.0, streams=2)
    assert stats["pace_p50_ms"] == pytest.approx(0.0, abs=1e-6)
    assert stats["pace_max_ms"] == pytest.approx(2.0)
    assert stats["pace_p99_ms"] == pytest.approx(2.0)  # 10 of 200 packets are 2 ms late
    assert stats["p99_by_second_ms"] == [pytest.approx(2.0), pytest.approx(2.0)]
    assert stats["received_pct"] == 100.0


def test_sockets_deliver_the_kernel_receive_timestamp() -> None:
    (receiver,) = open_sockets(1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        before = time.time_ns()
        sender.sendto(b"\x80" + bytes(171), receiver.getsockname())
        receiver.setblocking(True)
        receiver.settimeout(2.0)
        data, ancillary, _flags, _source = receiver.recvmsg(2048, ANCILLARY_SIZE)
        after = time.time_ns()
    receiver.close()
    assert len(data) == 172
    assert len(ancillary) == 1
    seconds, nanoseconds = TIMESPEC.unpack_from(ancillary[0][2])
    assert before <= seconds * 1_000_000_000 + nanoseconds <= after
