"""Token-bucket rate limits of the edge policy, sans-I/O (the caller passes ``now``).

:class:`TokenBucket` is one bucket; :class:`RateLimiter` keeps one per source (Kamailio
``pike``-like) in bounded memory, LRU-ordered, and says when a limited source is due a
notice (once per :data:`NOTICE_INTERVAL`); :class:`NewCallLimiter` caps new calls per
second across all sources. :mod:`sipagent.policy` decides what to do with their answers.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable

__all__ = [
    "NOTICE_INTERVAL",
    "NewCallLimiter",
    "RateLimiter",
    "TokenBucket",
]

#: A rate-limited source is told (503 + Retry-After) at most this often; the rest is dropped.
NOTICE_INTERVAL = 1.0


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; each request takes one.

    Sans-I/O: time is what the caller says (a clock going backwards refills nothing).
    """

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a positive number (got {rate})")
        if not (math.isfinite(burst) and burst >= 1):
            raise ValueError(f"burst must be at least 1 (got {burst})")
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp: float | None = None

    def _refill(self, now: float) -> None:
        if self.stamp is not None and now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        if self.stamp is None or now > self.stamp:
            self.stamp = now

    def allow(self, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens if there are enough; False (nothing taken) otherwise."""
        self._refill(now)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def retry_after(self, now: float) -> float:
        """Seconds until one token is available (0 when one is)."""
        self._refill(now)
        return max(0.0, (1.0 - self.tokens) / self.rate)

    def is_full(self, now: float) -> bool:
        """Refilled to ``burst``: the bucket is as good as a new one and can be forgotten."""
        if self.stamp is None:
            return True
        return self.tokens + max(0.0, now - self.stamp) * self.rate >= self.burst

    def __repr__(self) -> str:
        return f"<TokenBucket {self.tokens:.1f}/{self.burst:g} +{self.rate:g}/s>"


class _SourceBucket(TokenBucket):
    __slots__ = ("noticed_at",)

    def __init__(self, rate: float, burst: float) -> None:
        super().__init__(rate, burst)
        self.noticed_at: float | None = None


class RateLimiter:
    """One token bucket per source (Kamailio ``pike``-like), in bounded memory.

    Buckets live in LRU order: a bucket idle long enough to be full again is forgotten
    (as good as new), and past ``max_sources`` the least recently seen one is evicted —
    which only ever gives that source a fresh burst, never less. Every operation is
    amortised O(1).
    """

    def __init__(self, rate: float, burst: float, *, max_sources: int = 10_000) -> None:
        if max_sources < 1:
            raise ValueError(f"max_sources must be at least 1 (got {max_sources})")
        TokenBucket(rate, burst)  # validates
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: OrderedDict[Hashable, _SourceBucket] = OrderedDict()
        self.evicted = 0
        """Buckets dropped for the size cap while not yet full (a sign of a wide flood)."""

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, source: object) -> bool:
        return source in self._buckets

    def allow(self, source: Hashable, now: float) -> bool:
        """Take a token from ``source``'s bucket; False when it is empty."""
        buckets = self._buckets
        bucket = buckets.get(source)
        if bucket is None:
            bucket = buckets[source] = _SourceBucket(self.rate, self.burst)
            self._expire(now)
        else:
            buckets.move_to_end(source)
        return bucket.allow(now)

    def notice_due(self, source: Hashable, now: float) -> bool:
        """True (once per :data:`NOTICE_INTERVAL`) when a limited source should be told."""
        bucket = self._buckets.get(source)
        if bucket is None:
            return False
        if bucket.noticed_at is not None and 0 <= now - bucket.noticed_at < NOTICE_INTERVAL:
            return False
        bucket.noticed_at = now
        return True

    def retry_after(self, source: Hashable, now: float) -> float:
        bucket = self._buckets.get(source)
        return 0.0 if bucket is None else bucket.retry_after(now)

    def _expire(self, now: float) -> None:
        buckets = self._buckets
        # The head is the least recently seen; stop at the first one still draining.
        while len(buckets) > 1:
            head = next(iter(buckets.values()))
            if not head.is_full(now):
                break
            buckets.popitem(last=False)
        while len(buckets) > self.max_sources:
            buckets.popitem(last=False)
            self.evicted += 1


class NewCallLimiter:
    """New calls per second across all sources; ``calls_per_second <= 0`` means unlimited."""

    def __init__(self, calls_per_second: float, burst: float | None = None) -> None:
        self.calls_per_second = calls_per_second
        self._bucket: TokenBucket | None = None
        if calls_per_second > 0:
            size = burst if burst is not None else max(1.0, math.ceil(calls_per_second))
            self._bucket = TokenBucket(calls_per_second, size)

    def allow(self, now: float) -> bool:
        return self._bucket is None or self._bucket.allow(now)

    def retry_after(self, now: float) -> float:
        return 0.0 if self._bucket is None else self._bucket.retry_after(now)
