"""RFC 4733 telephone-event reception."""

from __future__ import annotations

import struct

import pytest

from rtp.dtmf import DTMF_DIGITS, END_TIMEOUT, DtmfDigit, DtmfReceiver


def event(code: int, *, end: bool = False, volume: int = 10, duration: int = 0) -> bytes:
    return struct.pack("!BBH", code, (0x80 if end else 0) | volume, duration)


def press(
    rx: DtmfReceiver,
    code: int,
    timestamp: int,
    now: float,
    *,
    updates: int = 4,
    ends: int = 3,
    first: int = 0,
) -> list[DtmfDigit]:
    """Send one key press the way a phone does; return the digits the receiver emitted."""
    out = []
    for n in range(first, updates):
        digit = rx.feed(event(code, duration=400 * (n + 1)), timestamp, n == 0, now + n * 0.05)
        out.append(digit)
    for n in range(ends):
        payload = event(code, end=True, duration=400 * (updates + 1))
        out.append(rx.feed(payload, timestamp, False, now + (updates + n) * 0.05))
    return [d for d in out if d is not None]


def test_one_digit_per_event_despite_three_end_packets() -> None:
    rx = DtmfReceiver()
    digits = press(rx, 5, timestamp=1000, now=0.0)
    assert digits == [DtmfDigit(digit="5", duration_ms=250, volume=10)]
    assert rx.digits == 1


def test_every_event_code_maps_to_its_digit() -> None:
    rx = DtmfReceiver()
    got = []
    for code in range(16):
        got += press(rx, code, timestamp=1000 + code * 8000, now=code * 1.0)
    assert "".join(d.digit for d in got) == "0123456789*#ABCD" == DTMF_DIGITS


def test_missing_marker_packet_still_detected() -> None:
    rx = DtmfReceiver()
    assert [d.digit for d in press(rx, 9, timestamp=500, now=0.0, first=1)] == ["9"]


def test_only_end_packets_received() -> None:
    rx = DtmfReceiver()
    assert [d.digit for d in press(rx, 0, timestamp=500, now=0.0, updates=0)] == ["0"]


def test_lost_end_packets_emit_on_the_next_event() -> None:
    rx = DtmfReceiver()
    assert press(rx, 1, timestamp=1000, now=0.0, ends=0) == []
    digits = press(rx, 2, timestamp=5000, now=0.3)
    assert [d.digit for d in digits] == ["1", "2"]
    assert digits[0].duration_ms == 200  # the last duration seen for "1"


def test_lost_end_packets_emit_after_a_silent_timeout() -> None:
    rx = DtmfReceiver()
    press(rx, 7, timestamp=1000, now=0.0, ends=0)  # last packet at 0.15 s
    assert rx.poll(0.15 + END_TIMEOUT / 2) is None
    digit = rx.poll(0.15 + END_TIMEOUT)
    assert digit is not None and digit.digit == "7"
    assert rx.poll(5.0) is None  # only once


def test_new_event_that_is_already_over_is_not_lost() -> None:
    rx = DtmfReceiver()
    press(rx, 3, timestamp=1000, now=0.0, ends=0)
    first = rx.feed(event(4, end=True, duration=800), 9000, True, 1.0)
    assert first is not None and first.digit == "3"
    second = rx.poll(1.0)
    assert second is not None and second.digit == "4"
    assert rx.digits == 2


def test_same_digit_twice_is_two_events() -> None:
    rx = DtmfReceiver()
    digits = press(rx, 8, timestamp=1000, now=0.0) + press(rx, 8, timestamp=4000, now=0.5)
    assert [d.digit for d in digits] == ["8", "8"]


def test_straggler_of_a_finished_event_is_ignored() -> None:
    rx = DtmfReceiver()
    press(rx, 1, timestamp=1000, now=0.0)
    press(rx, 2, timestamp=3000, now=0.4, ends=1)
    assert rx.feed(event(1, end=True, duration=2000), 1000, False, 0.5) is None
    assert rx.digits == 2


def test_volume_and_duration_are_parsed() -> None:
    rx = DtmfReceiver()
    rx.feed(event(11, volume=3, duration=160), 100, True, 0.0)
    digit = rx.feed(event(11, end=True, volume=6, duration=1600), 100, False, 0.1)
    assert digit == DtmfDigit(digit="#", duration_ms=200, volume=6)


def test_timestamp_wrap_between_events() -> None:
    rx = DtmfReceiver()
    digits = press(rx, 1, timestamp=0xFFFFFF00, now=0.0) + press(rx, 2, timestamp=0x100, now=0.5)
    assert [d.digit for d in digits] == ["1", "2"]


def test_non_dtmf_events_are_ignored() -> None:
    rx = DtmfReceiver()
    assert press(rx, 16, timestamp=1000, now=0.0) == []  # flash hook
    assert rx.digits == 0


def test_short_payload_is_counted_as_malformed() -> None:
    rx = DtmfReceiver()
    assert rx.feed(b"\x01\x80\x00", 1, True, 0.0) is None
    assert rx.malformed == 1


def test_reset_forgets_the_event_in_progress() -> None:
    rx = DtmfReceiver()
    press(rx, 1, timestamp=1000, now=0.0, ends=0)
    rx.reset()
    assert rx.poll(10.0) is None


def test_digit_is_frozen() -> None:
    digit = DtmfDigit(digit="1", duration_ms=100, volume=10)
    with pytest.raises(AttributeError):
        digit.digit = "2"  # type: ignore[misc]
