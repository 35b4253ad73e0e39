"""Jitter buffer: ordering, loss, lateness, bursts, wrap-around and resynchronisation.

Everything runs on a fake clock: ticks every 20 ms at t = k * 0.020, packets arrive at the
times each test chooses (by default 5 ms after a tick, one every 20 ms).
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from rtp import g711
from rtp.jitter import ADAPT_WINDOW, LATE_DECAY_TICKS, Frame, JitterBuffer

PTIME = 0.020
SAMPLES = 160

Arrival = tuple[float, int, int, bytes, bool]


def payload(n: int) -> bytes:
    """A recognisable frame that is never μ-law silence."""
    return bytes([n % 250 + 1]) * SAMPLES


def stream(
    count: int,
    *,
    seq0: int = 0,
    ts0: int = 0,
    t0: float = 0.005,
    marker_first: bool = True,
) -> list[Arrival]:
    return [
        (
            t0 + i * PTIME,
            (seq0 + i) & 0xFFFF,
            (ts0 + i * SAMPLES) & 0xFFFFFFFF,
            payload(i),
            marker_first and i == 0,
        )
        for i in range(count)
    ]


def simulate(
    jb: JitterBuffer, arrivals: Iterable[Arrival], ticks: int, first_tick: int = 0
) -> list[tuple[float, Frame | None]]:
    """Feed arrivals in time order and pop once per tick; returns (tick time, frame)."""
    pending = sorted(arrivals, key=lambda a: a[0])
    out: list[tuple[float, Frame | None]] = []
    i = 0
    for k in range(first_tick, first_tick + ticks):
        now = k * PTIME
        while i < len(pending) and pending[i][0] <= now:
            t, seq, ts, data, marker = pending[i]
            jb.put(seq, ts, data, marker, t)
            i += 1
        out.append((now, jb.pop(now)))
    return out


def sequences(out: list[tuple[float, Frame | None]]) -> list[int]:
    """Sequence numbers played, -1 for concealment; ticks before playout are skipped."""
    return [frame.sequence for _, frame in out if frame is not None]


def test_nothing_is_released_before_first_packet_plus_target() -> None:
    jb = JitterBuffer()
    out = simulate(jb, stream(3), ticks=4)
    assert [frame for _, frame in out[:2]] == [None, None]  # t=0 no packet; t=20 ms < 5+20
    first = out[2][1]
    assert first is not None
    assert (first.sequence, first.payload, first.marker) == (0, payload(0), True)
    assert not first.concealed


def test_in_order_stream_plays_every_frame_once_in_order() -> None:
    jb = JitterBuffer()
    out = simulate(jb, stream(50), ticks=52)
    assert sequences(out) == list(range(50))
    assert (jb.received, jb.lost, jb.late, jb.concealed, jb.duplicates) == (50, 0, 0, 0, 0)


def test_single_loss_is_concealed_in_its_slot_with_the_faded_previous_frame() -> None:
    jb = JitterBuffer()
    arrivals = [a for a in stream(30) if a[1] != 10]
    out = simulate(jb, arrivals, ticks=32)
    played = [frame for _, frame in out if frame is not None]
    assert [f.sequence for f in played] == [*range(10), -1, *range(11, 30)]
    assert played[10].concealed
    assert played[10].payload == g711.attenuate(payload(9), g711.PT_PCMU)
    assert played[10].timestamp == 10 * SAMPLES
    assert (jb.lost, jb.concealed, jb.late) == (1, 1, 0)


def test_long_loss_fades_out_then_plays_silence() -> None:
    jb = JitterBuffer()
    arrivals = [a for a in stream(30) if not 10 <= a[1] < 16]
    out = simulate(jb, arrivals, ticks=32)
    played = [frame for _, frame in out if frame is not None]
    assert [f.sequence for f in played] == [*range(10), *[-1] * 6, *range(16, 30)]
    fade = [played[10 + i].payload for i in range(6)]
    assert fade[:3] == [g711.attenuate(payload(9), g711.PT_PCMU, steps) for steps in (1, 2, 3)]
    assert fade[3:] == [g711.silence(g711.PT_PCMU)] * 3
    assert (jb.lost, jb.concealed) == (6, 6)


def test_packets_reordered_within_the_window_play_in_order() -> None:
    jb = JitterBuffer()
    arrivals = stream(30)
    late_ten = arrivals[10]
    arrivals[10] = (arrivals[11][0] + 0.001, *late_ten[1:])  # 10 arrives just after 11
    out = simulate(jb, arrivals, ticks=32)
    assert sequences(out) == list(range(30))
    assert (jb.reordered, jb.lost, jb.late, jb.concealed) == (1, 0, 0, 0)


def test_first_packets_swapped_before_playout_starts() -> None:
    jb = JitterBuffer()
    arrivals = stream(10)
    arrivals[0], arrivals[1] = (0.006, *arrivals[0][1:]), (0.005, *arrivals[1][1:])
    out = simulate(jb, arrivals, ticks=12)
    assert sequences(out) == list(range(10))
    assert (jb.reordered, jb.late) == (1, 0)


def test_duplicates_are_dropped_whether_buffered_or_already_played() -> None:
    jb = JitterBuffer()
    arrivals = stream(30)
    arrivals.append((arrivals[5][0] + 0.001, *arrivals[5][1:]))  # while still buffered
    arrivals.append((0.5, *arrivals[3][1:]))  # long after it was played
    out = simulate(jb, arrivals, ticks=32)
    assert sequences(out) == list(range(30))
    assert (jb.duplicates, jb.late, jb.received) == (2, 0, 30)


def test_late_packet_is_dropped_counted_and_grows_the_delay() -> None:
    jb = JitterBuffer()
    arrivals = stream(30)
    arrivals[10] = (0.27, *arrivals[10][1:])  # its slot is the tick at 0.24
    out = simulate(jb, arrivals, ticks=34)
    # Slot 10 is concealed; when 10 turns up late the buffer stretches by one frame.
    assert sequences(out)[:14] == [*range(10), -1, 11, -1, 12]
    assert sequences(out)[14:32] == [*range(13, 30), -1]
    assert (jb.late, jb.lost) == (1, 1)
    assert jb.target_ms == 40


def test_late_headroom_is_given_back_after_a_quiet_period() -> None:
    jb = JitterBuffer()
    arrivals = stream(30 + LATE_DECAY_TICKS + 2 * ADAPT_WINDOW)
    arrivals[10] = (0.27, *arrivals[10][1:])
    first = simulate(jb, arrivals[:29], ticks=30)  # up to t = 580 ms
    assert jb.target_ms == 40
    rest = simulate(jb, arrivals[29:], ticks=len(arrivals) - 25, first_tick=30)
    assert jb.target_ms == 20
    played = [s for s in sequences(first + rest) if s != -1]
    assert played == sorted(played)
    # Besides late 10, exactly one frame was dropped to give the extra delay back.
    assert jb.dropped == 1
    assert len(played) == len(arrivals) - 2


@pytest.mark.parametrize("clock_ratio", [0.99, 0.995])
def test_slower_sender_clock_is_absorbed_without_losing_packets(clock_ratio: float) -> None:
    jb = JitterBuffer()
    interval = PTIME / clock_ratio  # the sender's 20 ms are longer than ours
    arrivals = [(0.005 + i * interval, i, i * SAMPLES, payload(i), False) for i in range(2000)]
    out = simulate(jb, arrivals, ticks=int(2000 * interval / PTIME) + 5)
    assert [s for s in sequences(out) if s != -1] == list(range(2000))
    assert (jb.lost, jb.late, jb.dropped) == (0, 0, 0)
    assert jb.realigned >= 5  # one inserted frame every time 20 ms of drift accumulated


def test_faster_sender_clock_keeps_the_delay_bounded() -> None:
    jb = JitterBuffer()
    interval = PTIME / 1.01
    arrivals = [(0.005 + i * interval, i, i * SAMPLES, payload(i), False) for i in range(2000)]
    arrival_time = {seq: t for t, seq, *_ in arrivals}
    delays = [
        now - arrival_time[frame.sequence]
        for now, frame in simulate(jb, arrivals, ticks=2000)
        if frame is not None and not frame.concealed
    ]
    assert max(delays[-500:]) < 0.060  # without shrinking it would grow to 400 ms
    assert jb.dropped >= 10 and (jb.lost, jb.late) == (0, 0)


def test_burst_is_bounded_by_dropping_the_oldest() -> None:
    jb = JitterBuffer(max_ms=120)
    for _, seq, ts, data, marker in stream(30):
        jb.put(seq, ts, data, marker, 0.005)  # the sender dumped 600 ms at once
        assert jb.buffered <= 6  # never more than max_ms buffered
    assert jb.dropped == 24
    played = [jb.pop(k * PTIME) for k in range(2, 10)]
    real = [f.sequence for f in played if f is not None and not f.concealed]
    assert real == list(range(24, 30))  # the newest 120 ms, in order


@pytest.mark.parametrize(("seq0", "ts0"), [(65530, 0), (0, 2**32 - 800), (65533, 2**32 - 320)])
def test_sequence_and_timestamp_wrap_play_through(seq0: int, ts0: int) -> None:
    jb = JitterBuffer()
    out = simulate(jb, stream(20, seq0=seq0, ts0=ts0), ticks=22)
    played = [frame for _, frame in out if frame is not None]
    assert [f.sequence for f in played] == [(seq0 + i) & 0xFFFF for i in range(20)]
    assert [f.timestamp for f in played] == [(ts0 + i * SAMPLES) & 0xFFFFFFFF for i in range(20)]
    assert (jb.lost, jb.concealed, jb.late, jb.resyncs) == (0, 0, 0, 0)


def test_sequence_restart_is_confirmed_by_the_next_packet_then_resynchronises() -> None:
    jb = JitterBuffer()
    first = stream(20)
    second = stream(20, seq0=40000, ts0=20 * SAMPLES, t0=0.005 + 20 * PTIME, marker_first=False)
    out = simulate(jb, first + second, ticks=45)
    played = sequences(out)
    assert played[:20] == list(range(20))
    rest = [s for s in played[20:] if s != -1]
    assert rest == list(range(40001, 40020))  # 40000 was the unconfirmed probe
    assert jb.resyncs == 1
    assert all(frame is not None for _, frame in out[2:])  # audio never stops once started


def test_single_wild_sequence_number_is_ignored() -> None:
    jb = JitterBuffer()
    arrivals = stream(30)
    arrivals.insert(15, (arrivals[14][0] + 0.001, 30000, 0, payload(99), False))
    out = simulate(jb, arrivals, ticks=32)
    assert sequences(out) == list(range(30))
    assert (jb.resyncs, jb.dropped) == (0, 1)


def test_timestamp_jump_re_anchors_playout() -> None:
    jb = JitterBuffer()
    first = stream(20)
    jumped = stream(20, seq0=20, ts0=123_456_789, t0=0.005 + 20 * PTIME)
    out = simulate(jb, first + jumped, ticks=45)
    played = sequences(out)
    assert [s for s in played if s != -1][:40] == list(range(40))
    assert jb.resyncs == 1
    assert jb.lost == 0


def test_silence_suppression_gap_is_concealed_but_not_counted_as_loss() -> None:
    jb = JitterBuffer()
    talk = stream(10)
    # One second of silence: sequence numbers stay contiguous, the timestamp jumps.
    gap = 50
    talk2 = stream(10, seq0=10, ts0=(10 + gap) * SAMPLES, t0=0.005 + (10 + gap) * PTIME)
    out = simulate(jb, talk + talk2, ticks=75)
    played = sequences(out)
    assert [s for s in played if s != -1] == list(range(20))
    assert played.index(10) - played.index(9) == gap + 1  # the silence keeps its length
    assert (jb.lost, jb.resyncs, jb.late) == (0, 0, 0)


def test_talkspurt_without_timestamp_advance_is_rebased_on_its_marker() -> None:
    jb = JitterBuffer()
    talk = stream(10)
    # Sender resumes after 1 s but continues the timestamp as if there had been no gap.
    talk2 = stream(10, seq0=10, ts0=10 * SAMPLES, t0=0.005 + 60 * PTIME)
    out = simulate(jb, talk + talk2, ticks=75)
    assert [s for s in sequences(out) if s != -1] == list(range(20))
    assert (jb.late, jb.resyncs) == (0, 1)


def test_reset_for_a_new_source_keeps_audio_flowing() -> None:
    jb = JitterBuffer()
    out = simulate(jb, stream(10), ticks=12)
    jb.reset()
    assert not jb.started
    # The new source's first packet arrives 5 ms into the next tick interval.
    out2 = []
    for k in range(12, 30):
        now = k * PTIME
        if k == 14:
            jb.put(5000, 777, payload(1), True, now - 0.015)
        if k == 15:
            jb.put(5001, 777 + SAMPLES, payload(2), False, now - 0.015)
        out2.append(jb.pop(now))
    assert sequences(out) == list(range(10))
    assert all(frame is not None for frame in out2)
    assert [f.sequence for f in out2 if f is not None and not f.concealed] == [5000, 5001]


def test_delay_shrinks_to_the_minimum_on_a_clean_link() -> None:
    jb = JitterBuffer(target_ms=80)
    arrivals = stream(400)
    release_delay: dict[int, float] = {}
    arrival_time = {seq: t for t, seq, *_ in arrivals}
    for now, frame in simulate(jb, arrivals, ticks=400):
        if frame is not None and not frame.concealed:
            release_delay[frame.sequence] = now - arrival_time[frame.sequence]
    assert release_delay[0] >= 0.080
    assert jb.target_ms == 20
    assert release_delay[399 - 5] < 0.040
    assert jb.dropped >= 3  # one frame per adaptation window given back
    assert ADAPT_WINDOW * 3 < 400


def test_target_grows_with_jitter_and_stays_within_max() -> None:
    jb = JitterBuffer(max_ms=120)
    arrivals = [
        (t + (0.015 if seq % 2 else 0.0), seq, ts, data, marker)
        for t, seq, ts, data, marker in stream(300)
    ]
    simulate(jb, arrivals, ticks=305)
    assert jb.jitter_ms > 10
    assert 40 <= jb.target_ms <= 120
    assert jb.late <= 3  # a few at the start, then the delay covers the jitter


def test_concealment_for_other_codecs_is_empty() -> None:
    jb = JitterBuffer(payload_type=96)
    out = simulate(jb, [a for a in stream(5) if a[1] != 2], ticks=7)
    frames = [frame for _, frame in out if frame is not None]
    assert frames[2].concealed and frames[2].payload == b""


def test_rejects_inconsistent_limits() -> None:
    with pytest.raises(ValueError):
        JitterBuffer(min_ms=60, max_ms=40)
