from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Mapping

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from admin.metrics import CALL_OUTCOMES, Metrics, call_outcome
from sipagent.registry import CallRecord, CallRegistry, RtpSnapshot

T0 = 1_714_564_800.0

METRIC_NAMES = [
    "sipagent_active_calls",
    "sipagent_calls_total",
    "sipagent_sip_requests_total",
    "sipagent_sip_responses_total",
    "sipagent_rtp_packets_total",
    "sipagent_rtp_lost_total",
    "sipagent_model_errors_total",
    "sipagent_tool_calls_total",
    "sipagent_rtp_jitter_ms",
    "sipagent_voice_latency_ms",
    "sipagent_tool_latency_s",
    "sipagent_call_setup_ms",
    "sipagent_asyncio_tasks",
]
"""Every family a :class:`Metrics` exposes; ``test_admin_app`` checks ``GET /metrics`` for them."""


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition, keyed by name and labels."""
    text = generate_latest(metrics.registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics).get((name, frozenset(labels.items())), 0.0)


def finished_call(end_reason: str = "remote-bye") -> CallRecord:
    record = CallRecord(
        session_id="s1",
        call_id="c1@host",
        from_uri="sip:alice@a",
        to_uri="sip:agent@b",
        created_at=T0,
        model="openai",
        state="ended",
        codec="PCMU",
        answered_at=T0 + 0.75,
        ended_at=T0 + 30,
        end_reason=end_reason,
        rtp=RtpSnapshot(packets_in=1500, packets_out=1400, lost=7, jitter_ms=12.5),
    )
    record.turns.extend(
        [{"latency_ms": 450.0, "item_id": "i1"}, {"latency_ms": 1800.0, "item_id": "i2"}]
    )
    record.tool_calls.extend(
        [
            {"name": "lookup_order", "error": None, "duration_ms": 120.0},
            {"name": "lookup_order", "error": {"type": "tool_error"}, "duration_ms": 80.0},
            {"name": "book", "error": {"type": "timeout"}, "duration_ms": 10_000.0},
            {"name": "made_up_by_model", "error": {"type": "unknown_tool"}, "duration_ms": 1.0},
        ]
    )
    return record


def test_exposes_every_metric_name() -> None:
    text = generate_latest(Metrics().registry).decode()
    for name in METRIC_NAMES:
        assert f"# TYPE {name} " in text


def test_instances_have_their_own_registry() -> None:
    first, second = Metrics(), Metrics()  # no "Duplicated timeseries" error
    first.call_started()
    assert value(first, "sipagent_active_calls") == 1
    assert value(second, "sipagent_active_calls") == 0
    assert REGISTRY.get_sample_value("sipagent_active_calls") is None


def test_call_started_and_ended() -> None:
    metrics = Metrics()
    metrics.call_started()
    metrics.call_started()
    assert value(metrics, "sipagent_active_calls") == 2

    metrics.call_ended(finished_call())

    assert value(metrics, "sipagent_active_calls") == 1
    assert value(metrics, "sipagent_calls_total", outcome="completed") == 1
    assert value(metrics, "sipagent_rtp_packets_total", direction="in") == 1500
    assert value(metrics, "sipagent_rtp_packets_total", direction="out") == 1400
    assert value(metrics, "sipagent_rtp_lost_total") == 7
    assert value(metrics, "sipagent_model_errors_total") == 0
    assert value(metrics, "sipagent_rtp_jitter_ms_count") == 1
    assert value(metrics, "sipagent_rtp_jitter_ms_bucket", le="10.0") == 0
    assert value(metrics, "sipagent_rtp_jitter_ms_bucket", le="20.0") == 1
    assert value(metrics, "sipagent_call_setup_ms_sum") == pytest.approx(750.0)
    assert value(metrics, "sipagent_voice_latency_ms_count") == 2
    assert value(metrics, "sipagent_voice_latency_ms_sum") == 2250.0
    assert value(metrics, "sipagent_voice_latency_ms_bucket", le="500.0") == 1
    assert value(metrics, "sipagent_voice_latency_ms_bucket", le="2000.0") == 2
    assert value(metrics, "sipagent_tool_calls_total", tool="lookup_order", outcome="ok") == 1
    assert value(metrics, "sipagent_tool_calls_total", tool="lookup_order", outcome="error") == 1
    assert value(metrics, "sipagent_tool_calls_total", tool="book", outcome="timeout") == 1
    # A tool name the model made up never becomes a label value.
    assert value(metrics, "sipagent_tool_calls_total", tool="unknown", outcome="error") == 1
    assert value(metrics, "sipagent_tool_latency_s_count") == 4
    assert value(metrics, "sipagent_tool_latency_s_sum") == pytest.approx(10.201)


def test_unanswered_call_without_media() -> None:
    metrics = Metrics()
    metrics.call_started()
    record = finished_call("cancelled")
    record.answered_at = None
    record.rtp = RtpSnapshot()
    record.turns.clear()
    record.tool_calls.clear()
    metrics.call_ended(record)
    assert value(metrics, "sipagent_calls_total", outcome="cancelled") == 1
    assert value(metrics, "sipagent_call_setup_ms_count") == 0
    assert value(metrics, "sipagent_rtp_jitter_ms_count") == 0
    assert value(metrics, "sipagent_voice_latency_ms_count") == 0


def test_model_failures_are_counted() -> None:
    metrics = Metrics()
    for reason in ("model-error: connection reset", "model-unavailable: refused", "remote-bye"):
        metrics.call_started()
        metrics.call_ended(finished_call(reason))
    assert value(metrics, "sipagent_model_errors_total") == 2
    assert value(metrics, "sipagent_calls_total", outcome="failed") == 2


def test_malformed_turns_and_tool_calls_are_skipped() -> None:
    metrics = Metrics()
    record = finished_call()
    record.turns[:] = [{"latency_ms": "soon"}, {"latency_ms": True}, {}]
    record.tool_calls[:] = [{"error": "boom"}, {"name": "", "duration_ms": None}]
    metrics.call_ended(record)
    assert value(metrics, "sipagent_voice_latency_ms_count") == 0
    assert value(metrics, "sipagent_tool_calls_total", tool="unknown", outcome="error") == 1
    assert value(metrics, "sipagent_tool_calls_total", tool="unknown", outcome="ok") == 1
    assert value(metrics, "sipagent_tool_latency_s_count") == 0


@pytest.mark.parametrize(
    ("end_reason", "outcome"),
    [
        ("remote-bye", "completed"),
        ("local-bye", "completed"),
        ("cancelled", "cancelled"),
        ("rejected", "rejected"),
        ("admin-hangup", "admin"),
        ("rtp-timeout", "timeout"),
        ("ack-timeout", "timeout"),
        ("model-error: upstream said no", "failed"),
        ("model-unavailable: timeout", "failed"),
        ("bad-sdp-answer", "failed"),
        ("shutdown", "shutdown"),
        ("Something New", "other"),
        (None, "other"),
    ],
)
def test_call_outcome(end_reason: str | None, outcome: str) -> None:
    record = finished_call()
    record.end_reason = end_reason
    assert call_outcome(record) == outcome
    assert outcome in CALL_OUTCOMES


def test_call_outcome_prefers_a_declared_outcome() -> None:
    class WithOutcome(CallRecord):
        outcome = "transferred"

    record = WithOutcome(
        session_id="s", call_id="c", from_uri="f", to_uri="t", created_at=T0, model="echo"
    )
    record.end_reason = "remote-bye"
    assert call_outcome(record) == "transferred"


def test_sip_counters_are_read_at_scrape_time() -> None:
    metrics = Metrics()
    counters: Counter[str] = Counter(
        {"rx_INVITE": 3, "tx_200": 2, "rx_200": 1, "tx_BYE": 1, "rx_other": 1, "rx_invalid": 4}
    )
    metrics.sip_counters(counters)
    requests = "sipagent_sip_requests_total"
    responses = "sipagent_sip_responses_total"
    assert value(metrics, requests, direction="rx", method="INVITE") == 3
    assert value(metrics, requests, direction="tx", method="BYE") == 1
    assert value(metrics, requests, direction="rx", method="OTHER") == 1
    assert value(metrics, responses, direction="tx", code="200") == 2
    assert value(metrics, responses, direction="rx", code="200") == 1
    assert value(metrics, "sipagent_sip_dropped_total", direction="rx", reason="invalid") == 4
    # No second bookkeeping: the UA's counter is the count.
    counters["rx_INVITE"] += 1
    counters["tx_486"] += 1
    assert value(metrics, requests, direction="rx", method="INVITE") == 4
    assert value(metrics, responses, direction="tx", code="486") == 1


def test_sip_counters_from_a_callable_and_a_failing_one() -> None:
    metrics = Metrics()
    metrics.sip_counters(lambda: {"rx_OPTIONS": 5})
    assert value(metrics, "sipagent_sip_requests_total", direction="rx", method="OPTIONS") == 5

    def broken() -> Mapping[str, int]:
        raise RuntimeError("UA gone")

    metrics.sip_counters(broken)
    text = generate_latest(metrics.registry).decode()  # the scrape still works
    assert "# TYPE sipagent_sip_requests_total counter" in text
    assert "OPTIONS" not in text


def test_track_follows_the_registry() -> None:
    metrics = Metrics()
    registry = CallRegistry()
    stop = metrics.track(registry)
    record = finished_call()
    record.state = "answered"
    registry.add(record)
    assert value(metrics, "sipagent_active_calls") == 1
    registry.touch(record)
    assert value(metrics, "sipagent_active_calls") == 1
    registry.remove(record.session_id)
    assert value(metrics, "sipagent_active_calls") == 0
    assert value(metrics, "sipagent_calls_total", outcome="completed") == 1
    stop()
    other = finished_call()
    other.session_id = "s2"
    registry.add(other)
    assert value(metrics, "sipagent_active_calls") == 0


def test_asyncio_tasks_counts_the_tasks_of_the_loop_serving_the_scrape() -> None:
    metrics = Metrics()
    assert math.isnan(value(metrics, "sipagent_asyncio_tasks"))  # no running loop, no count

    async def scrape_around_three_tasks() -> tuple[float, float, float]:
        before = value(metrics, "sipagent_asyncio_tasks")
        release = asyncio.Event()
        waiting = [asyncio.create_task(release.wait()) for _ in range(3)]
        during = value(metrics, "sipagent_asyncio_tasks")
        release.set()
        await asyncio.gather(*waiting)
        return before, during, value(metrics, "sipagent_asyncio_tasks")

    before, during, after = asyncio.run(scrape_around_three_tasks())
    assert before >= 1  # the coroutine doing the scrape is a task itself
    assert during == before + 3
    assert after == before
