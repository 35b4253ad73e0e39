"""Pacer on an absolute grid and the playout queue's accounting."""

from __future__ import annotations

import pytest

from rtp.pacer import MAX_BEHIND, Pacer, PlayoutQueue, TickPhases

START = 1000.0
PTIME = 0.020


def test_first_frame_is_due_at_start_and_deadlines_follow_the_grid() -> None:
    pacer = Pacer(START)
    assert pacer.next_deadline() == START
    assert pacer.due(START) == 1
    assert pacer.next_deadline() == pytest.approx(START + PTIME)
    assert pacer.due(START + 0.010) == 0
    assert pacer.due(START + 0.020) == 1
    assert pacer.index == 2


def test_timer_firing_slightly_early_still_sends() -> None:
    pacer = Pacer(START)
    pacer.due(START)
    assert pacer.due(START + PTIME - 0.0015) == 1  # uvloop fires up to ~1.4 ms early
    assert pacer.next_deadline() == pytest.approx(START + 2 * PTIME)


def test_timer_firing_far_too_early_sends_nothing_and_keeps_the_deadline() -> None:
    pacer = Pacer(START)
    pacer.due(START)
    assert pacer.due(START + PTIME - 0.005) == 0
    assert pacer.next_deadline() == pytest.approx(START + PTIME)


def test_late_timer_catches_up_with_back_to_back_frames() -> None:
    pacer = Pacer(START)
    pacer.due(START)
    assert pacer.due(START + 0.065) == 3  # frames of 20, 40 and 60 ms
    assert pacer.next_deadline() == pytest.approx(START + 0.080)


def test_more_than_max_behind_skips_ahead() -> None:
    pacer = Pacer(START)
    pacer.due(START)
    assert pacer.due(START + MAX_BEHIND) == 10  # exactly 200 ms: still caught up
    assert pacer.skipped == 0
    assert pacer.due(START + 1.2) == 1  # a 1 s stall: send one, drop the rest
    assert pacer.skipped == 49
    assert pacer.index == 61  # media time still advanced by every frame
    assert pacer.next_deadline() == pytest.approx(START + 1.22)


def test_jittery_timers_never_drift_from_the_grid() -> None:
    pacer = Pacer(START)
    offsets = [0.0, -0.0014, 0.0009, 0.003, -0.0008, 0.0011, 0.0, 0.0016]
    sent = 0
    for n in range(1000):
        sent += pacer.due(pacer.next_deadline() + offsets[n % len(offsets)])
    # Exactly as many frames as grid points up to the last deadline consumed.
    assert sent == pacer.index
    assert pacer.next_deadline() == pytest.approx(START + pacer.index * PTIME)
    assert pacer.skipped == 0


def test_rejects_non_positive_ptime() -> None:
    with pytest.raises(ValueError):
        Pacer(START, ptime=0)


def test_playout_queue_is_fifo_and_reports_pending_time() -> None:
    queue = PlayoutQueue()
    assert queue.pop() is None
    for n in range(3):
        queue.push(bytes([n]) * 160, item_id="a")
    assert (len(queue), queue.pending_ms) == (3, 60)
    assert [queue.pop() for _ in range(4)] == [b"\x00" * 160, b"\x01" * 160, b"\x02" * 160, None]
    assert queue.frames_played == 3


def test_marker_flags_the_first_frame_of_each_talkspurt() -> None:
    queue = PlayoutQueue()

    def tick() -> tuple[bytes | None, bool]:
        payload = queue.pop()
        return payload, queue.marker

    queue.push(b"a")
    queue.push(b"b")
    assert [tick(), tick()] == [(b"a", True), (b"b", False)]
    assert tick() == (None, False)  # ran dry: silence is sent, the talkspurt is over
    queue.push(b"c")
    assert tick() == (b"c", True)
    queue.push(b"d")  # topped up before the next tick: same talkspurt
    assert tick() == (b"d", False)


def test_flush_drops_pending_frames_and_played_ms_counts_only_what_was_sent() -> None:
    queue = PlayoutQueue()
    for _ in range(10):
        queue.push(b"a", item_id="item-1")
    for _ in range(3):
        queue.pop()
    assert queue.current_item == "item-1"
    assert queue.flush() == 7
    assert queue.played_ms("item-1") == 60
    assert queue.pending_ms == 0
    assert queue.current_item is None
    queue.push(b"b", item_id="item-2")
    assert queue.pop() == b"b"
    assert queue.marker  # a flush ends the talkspurt
    assert (queue.played_ms("item-1"), queue.played_ms("item-2"), queue.played_ms("x")) == (
        60,
        20,
        0,
    )


def test_untagged_frames_are_not_accounted_to_an_item() -> None:
    queue = PlayoutQueue()
    queue.push(b"a")
    queue.pop()
    assert queue.current_item is None
    assert queue.frames_played == 1


def test_played_accounting_keeps_a_bounded_number_of_items() -> None:
    queue = PlayoutQueue()
    for n in range(300):
        queue.push(b"a", item_id=f"item-{n}")
        queue.pop()
    assert queue.played_ms("item-0") == 0  # evicted
    assert queue.played_ms("item-299") == 20


def _phase_ms(start: float) -> int:
    return round((start % PTIME) * 1000) % 20


def test_calls_set_up_one_frame_apart_get_every_phase_once_before_any_twice() -> None:
    # 50 calls/s: every call arrives at the same point of the frame. Without spreading, all
    # their timers would fire in the same millisecond.
    phases = TickPhases()
    now = START + 0.0123
    starts = [phases.place(now + k * PTIME) for k in range(40)]
    assert sorted(_phase_ms(s) for s in starts[:20]) == list(range(20))
    assert phases.counts == (2,) * 20
    for k, start in enumerate(starts):
        assert now + k * PTIME - 1e-9 <= start < now + (k + 1) * PTIME


def test_the_first_placement_is_the_next_millisecond_boundary() -> None:
    phases = TickPhases()
    assert phases.place(START + 0.0123) == pytest.approx(START + 0.013)
    assert phases.place(START + 0.0123) == pytest.approx(START + 0.014)  # 13 is taken now
    assert phases.place(START + 0.0195) == pytest.approx(START + 0.020)  # wraps to phase 0


def test_a_start_on_a_boundary_is_not_delayed() -> None:
    phases = TickPhases()
    assert phases.place(START + 0.005) == pytest.approx(START + 0.005)


def test_released_phases_are_taken_again_first() -> None:
    phases = TickPhases()
    starts = [phases.place(START) for _ in range(20)]
    before = phases.counts
    phases.release(starts[7])
    phases.release(starts[7])  # a second release of the same phase does not go negative
    after = phases.counts
    assert before == (1,) * 20
    assert after[_phase_ms(starts[7])] == 0 and sum(after) == 19
    again = phases.place(START + 3.0)
    assert _phase_ms(again) == _phase_ms(starts[7])
    assert phases.counts == (1,) * 20


def test_phases_reject_a_non_positive_frame() -> None:
    with pytest.raises(ValueError, match="ptime"):
        TickPhases(ptime=0)
