"""sipagent.ratelimit with a fake clock: token buckets, the per-source and new-call limiters."""

from __future__ import annotations

import ast
import gc
import tracemalloc
from pathlib import Path

import pytest

from sipagent import ratelimit
from sipagent.ratelimit import NOTICE_INTERVAL, NewCallLimiter, RateLimiter, TokenBucket


# -- token bucket ------------------------------------------------------------------------------
def test_bucket_allows_the_burst_then_refuses() -> None:
    bucket = TokenBucket(rate=15, burst=30)
    assert all(bucket.allow(100.0) for _ in range(30))
    assert not bucket.allow(100.0)
    assert not bucket.allow(100.0)  # a refusal takes nothing


def test_bucket_refills_at_its_rate_and_never_above_burst() -> None:
    bucket = TokenBucket(rate=10, burst=5)
    for _ in range(5):
        bucket.allow(0.0)
    assert bucket.retry_after(0.0) == pytest.approx(0.1)
    assert not bucket.allow(0.05)  # half a token
    assert bucket.allow(0.1)
    assert not bucket.allow(0.1)
    # A long idle time refills to the burst, not beyond.
    assert bucket.is_full(100.0)
    assert sum(bucket.allow(100.0) for _ in range(10)) == 5


def test_bucket_ignores_a_clock_going_backwards() -> None:
    bucket = TokenBucket(rate=1, burst=1)
    assert bucket.allow(10.0)
    assert not bucket.allow(5.0)
    assert not bucket.allow(10.5)
    assert bucket.allow(11.0)


def test_bucket_retry_after_and_fullness() -> None:
    bucket = TokenBucket(rate=2, burst=2)
    assert bucket.is_full(0.0)  # never used
    assert bucket.retry_after(0.0) == 0.0
    bucket.allow(0.0)
    assert not bucket.is_full(0.0)
    assert bucket.is_full(0.5)
    assert "TokenBucket" in repr(bucket)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (float("inf"), 1), (1, 0.5)])
def test_bucket_rejects_bad_parameters(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)


# -- per-source limiter ------------------------------------------------------------------------
def test_limiter_isolates_sources() -> None:
    limiter = RateLimiter(rate=15, burst=30)
    assert sum(limiter.allow("198.51.100.1", 0.0) for _ in range(100)) == 30
    assert sum(limiter.allow("198.51.100.2", 0.0) for _ in range(100)) == 30
    assert not limiter.allow("198.51.100.1", 0.0)
    # 2 s later the first source has 30 tokens again (30 per 2 s).
    assert sum(limiter.allow("198.51.100.1", 2.0) for _ in range(100)) == 30


def test_limiter_forgets_sources_once_their_bucket_is_full_again() -> None:
    limiter = RateLimiter(rate=10, burst=10)
    limiter.allow("a", 0.0)
    limiter.allow("b", 0.0)
    assert len(limiter) == 2
    # 0.1 s refills one token: both are full again and are dropped when "c" arrives.
    limiter.allow("c", 0.1)
    assert len(limiter) == 1
    assert "c" in limiter and "a" not in limiter


def test_limiter_keeps_a_draining_source() -> None:
    limiter = RateLimiter(rate=1, burst=5)
    for _ in range(5):
        limiter.allow("flooder", 0.0)
    limiter.allow("other", 1.0)
    assert "flooder" in limiter  # 1 of 5 tokens back: still draining, still remembered
    assert limiter.allow("flooder", 1.0)
    assert not limiter.allow("flooder", 1.0)
    assert limiter.retry_after("flooder", 1.0) == pytest.approx(1.0)
    assert limiter.retry_after("unknown", 1.0) == 0.0


def test_limiter_memory_is_bounded_under_100k_sources() -> None:
    limiter = RateLimiter(rate=15, burst=30, max_sources=10_000)
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for n in range(100_000):
            # Each source spends one token at the same instant: none is full, so only
            # the size cap keeps the table small.
            assert limiter.allow(f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}", 0.0)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(limiter) == 10_000
    assert limiter.evicted == 90_000
    assert after - before < 8 * 1024 * 1024  # ~10k buckets, not 100k
    # The evicted ones only ever get a fresh burst back.
    assert limiter.allow("10.0.0.0", 0.0)


def test_limiter_notices_once_per_interval() -> None:
    limiter = RateLimiter(rate=1, burst=1)
    assert not limiter.notice_due("nobody", 0.0)
    limiter.allow("s", 0.0)
    assert limiter.notice_due("s", 0.0)
    assert not limiter.notice_due("s", NOTICE_INTERVAL / 2)
    assert limiter.notice_due("s", NOTICE_INTERVAL)


def test_limiter_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate=1, burst=1, max_sources=0)
    with pytest.raises(ValueError):
        RateLimiter(rate=0, burst=1)


def test_new_call_limiter() -> None:
    unlimited = NewCallLimiter(0)
    assert all(unlimited.allow(0.0) for _ in range(1000))
    assert unlimited.retry_after(0.0) == 0.0
    limiter = NewCallLimiter(2.5)  # burst rounds up to 3
    assert [limiter.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.retry_after(0.0) == pytest.approx(0.4)
    assert limiter.allow(0.4)
    assert NewCallLimiter(0.2).allow(0.0)  # a burst of at least one


# -- the core stays sans-I/O -------------------------------------------------------------------
def test_ratelimit_does_no_io_of_its_own() -> None:
    tree = ast.parse(Path(ratelimit.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"time", "socket", "random", "asyncio", "secrets"}
