"""RFC 4733 telephone-event receiver (sans-I/O).

A key press is sent as a series of packets sharing one RTP timestamp (the event's start), the
first normally carrying the marker bit, each with a growing duration, and finally three
copies of an end-of-event packet.  The receiver emits one :class:`DtmfDigit` per event:

* on the first end packet (the two repeats are ignored, as is any later straggler),
* when a packet with a new timestamp shows up while the previous event never ended (all end
  packets lost), or when ``poll()`` finds the event silent for :data:`END_TIMEOUT` seconds.

The marker bit is not relied upon — the timestamp identifies an event — so a lost first packet
still yields the digit.  Events above 15 (flash hook, tones) are ignored.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

__all__ = ["DTMF_DIGITS", "END_TIMEOUT", "DtmfDigit", "DtmfReceiver"]

DTMF_DIGITS: Final = "0123456789*#ABCD"
"""Digit for each RFC 4733 event code 0-15."""
END_TIMEOUT: Final = 0.4
"""Seconds without packets after which an event whose end was lost is emitted anyway."""
_RECENT_EVENTS: Final = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class DtmfDigit:
    """One completed DTMF key press."""

    digit: str
    """The key: one of ``0-9 * # A-D``."""
    duration_ms: int
    """Duration reported by the sender, in milliseconds."""
    volume: int
    """Power level reported by the sender, in -dBm0 (0-63; larger is quieter)."""


class DtmfReceiver:
    """Turns telephone-event payloads into digits; see the module docstring."""

    def __init__(self, clock_rate: int = 8000) -> None:
        self.clock_rate = clock_rate
        self.digits = 0
        """Digits emitted."""
        self.malformed = 0
        """Payloads shorter than the 4-byte event block."""
        self._timestamp: int | None = None
        self._event = 0
        self._duration = 0
        self._volume = 0
        self._ended = True
        self._last_packet_at = 0.0
        self._recent: deque[tuple[int, int]] = deque(maxlen=_RECENT_EVENTS)
        self._pending: DtmfDigit | None = None

    def reset(self) -> None:
        """Forget the event in progress (new stream); counters are kept."""
        self._timestamp = None
        self._ended = True
        self._recent.clear()
        self._pending = None

    def feed(self, payload: bytes, timestamp: int, marker: bool, now: float) -> DtmfDigit | None:
        """Process one telephone-event packet; return a digit when an event completes."""
        if len(payload) < 4:
            self.malformed += 1
            return None
        event = payload[0]
        end = bool(payload[1] & 0x80)
        volume = payload[1] & 0x3F
        duration = (payload[2] << 8) | payload[3]
        if timestamp == self._timestamp and event == self._event:
            self._last_packet_at = now
            if self._ended:
                return None  # repeated end packet
            self._duration = max(self._duration, duration)
            self._volume = volume
            return self._finish() if end else None
        if (timestamp, event) in self._recent:
            return None  # straggler of an event already reported
        previous = self._finish() if not self._ended else None
        self._timestamp = timestamp
        self._event = event
        self._duration = duration
        self._volume = volume
        self._ended = False
        self._last_packet_at = now
        if not end:
            return previous
        current = self._finish()
        if previous is None:
            return current
        self._pending = current
        return previous

    def poll(self, now: float) -> DtmfDigit | None:
        """Emit a digit held back by ``feed()`` or an event whose end packets were all lost."""
        if self._pending is not None:
            digit, self._pending = self._pending, None
            return digit
        if not self._ended and now - self._last_packet_at >= END_TIMEOUT:
            return self._finish()
        return None

    def _finish(self) -> DtmfDigit | None:
        self._ended = True
        assert self._timestamp is not None
        self._recent.append((self._timestamp, self._event))
        if self._event >= len(DTMF_DIGITS):
            return None
        self.digits += 1
        return DtmfDigit(
            digit=DTMF_DIGITS[self._event],
            duration_ms=self._duration * 1000 // self.clock_rate,
            volume=self._volume,
        )
