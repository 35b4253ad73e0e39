"""Prometheus metrics of a running sipagent, in a registry of their own.

Each :class:`Metrics` owns a :class:`~prometheus_client.CollectorRegistry` (not the global
one), so tests and several servers in one process never collide. The server reports
calls with :meth:`Metrics.call_started` / :meth:`Metrics.call_ended` (or lets
:meth:`Metrics.track` do it from the call registry), and hands the user agent's SIP
``Counter`` to :meth:`Metrics.sip_counters`, which is read at scrape time: the UA keeps
the only count.

Everything a finished call contributes (outcome, RTP totals, turn latency, tool calls,
setup time) is read from its :class:`~sipagent.registry.CallRecord` once, when it ends.

``asyncio_tasks`` counts the tasks of the event loop that serves the scrape (the server's one
loop): a number that must come back to its idle value once the calls are gone (bench/soak.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric

from sipagent.registry import CallRecord, CallRegistry, ChangeKind

__all__ = [
    "CALL_OUTCOMES",
    "Metrics",
    "SipCounterSource",
    "call_outcome",
]

logger = logging.getLogger(__name__)

NAMESPACE: Final = "sipagent"

CALL_OUTCOMES: Final = frozenset(
    {
        "completed",
        "cancelled",
        "rejected",
        "admin",
        "transferred",
        "timeout",
        "failed",
        "shutdown",
        "other",
    }
)
"""Values of the ``outcome`` label of ``calls_total``: a bounded set, unlike ``end_reason``."""

# end_reason (its part before any ":") -> outcome. Free-text reasons such as
# "model-error: connection reset" must never become label values.
_OUTCOME_BY_REASON: Final[Mapping[str, str]] = {
    "bye": "completed",
    "remote-bye": "completed",
    "local-bye": "completed",
    "cancel": "cancelled",
    "cancelled": "cancelled",
    "rejected": "rejected",
    "admin": "admin",
    "admin-hangup": "admin",
    "transfer": "transferred",
    "transferred": "transferred",
    "refer": "transferred",
    "rtp-timeout": "timeout",
    "media-timeout": "timeout",
    "ack-timeout": "timeout",
    "max-duration": "timeout",
    "model-error": "failed",
    "model-unavailable": "failed",
    "bad-sdp-answer": "failed",
    "rtp-port-unavailable": "failed",
    "shutdown": "shutdown",
}

_MODEL_FAILURES: Final = ("model-error", "model-unavailable")

VOICE_LATENCY_BUCKETS_MS: Final = (100, 200, 300, 400, 500, 600, 800, 1000, 1500, 2000, 2500, 3000)
RTP_JITTER_BUCKETS_MS: Final = (1, 2, 5, 10, 20, 30, 50, 75, 100, 200)
TOOL_LATENCY_BUCKETS_S: Final = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
CALL_SETUP_BUCKETS_MS: Final = (50, 100, 250, 500, 1000, 2000, 3000, 5000, 10000, 30000)

SipCounterSource = Mapping[str, int] | Callable[[], Mapping[str, int]]
"""The UA's live counter (``rx_INVITE``, ``tx_200``...) or a callable returning it."""

_SIP_RESPONSE_KEY: Final = re.compile(r"(rx|tx)_([1-6][0-9]{2})")
_SIP_REQUEST_KEY: Final = re.compile(r"(rx|tx)_([A-Z]+|other)")
_SIP_OTHER_KEY: Final = re.compile(r"(rx|tx)_([a-z_]+)")


def call_outcome(record: CallRecord) -> str:
    """The bounded outcome label of an ended call, from its ``outcome`` or ``end_reason``."""
    declared = getattr(record, "outcome", None)
    if isinstance(declared, str) and declared in CALL_OUTCOMES:
        return declared
    reason = (record.end_reason or "").split(":", 1)[0].strip().lower()
    return _OUTCOME_BY_REASON.get(reason, "other")


def _running_loop_tasks() -> float:
    """Tasks alive in the running event loop; NaN when scraped outside one (nothing to count)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return math.nan
    return float(len(asyncio.all_tasks(loop)))


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class _SipCollector:
    """Turns the UA's counter into ``sip_*_total`` families at scrape time."""

    def __init__(self) -> None:
        self.source: SipCounterSource | None = None

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            f"{NAMESPACE}_sip_requests",
            "SIP requests received (rx) and sent (tx), by method.",
            labels=("direction", "method"),
        )
        responses = CounterMetricFamily(
            f"{NAMESPACE}_sip_responses",
            "SIP responses received (rx) and sent (tx), by status code.",
            labels=("direction", "code"),
        )
        dropped = CounterMetricFamily(
            f"{NAMESPACE}_sip_dropped",
            "SIP messages dropped or answered statelessly: invalid, unparseable, stray.",
            labels=("direction", "reason"),
        )
        for key, value in sorted(self._read().items()):
            if match := _SIP_RESPONSE_KEY.fullmatch(key):
                responses.add_metric(list(match.groups()), value)
            elif match := _SIP_REQUEST_KEY.fullmatch(key):
                direction, method = match.groups()
                requests.add_metric([direction, method.upper()], value)
            elif match := _SIP_OTHER_KEY.fullmatch(key):
                dropped.add_metric(list(match.groups()), value)
        return [requests, responses, dropped]

    def _read(self) -> Mapping[str, int]:
        source = self.source
        if source is None:
            return {}
        try:
            counts = source() if callable(source) else source
            # A snapshot: the UA may count while we format.
            return dict(counts)
        except Exception:
            # A scrape must not fail because of the UA; the families come out empty.
            logger.exception("reading the SIP counters failed")
            return {}


class Metrics:
    """The server's Prometheus metrics, in their own :attr:`registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        "Where every metric of this instance lives; what ``GET /metrics`` exposes."
        self.active_calls = Gauge(
            "active_calls", "Calls in progress.", namespace=NAMESPACE, registry=self.registry
        )
        self.calls_total = self._counter("calls", "Calls ended, by outcome.", ("outcome",))
        self.rtp_packets_total = self._counter(
            "rtp_packets", "RTP packets of ended calls, by direction (in, out).", ("direction",)
        )
        self.rtp_lost_total = self._counter("rtp_lost", "RTP packets lost in ended calls.")
        self.model_errors_total = self._counter(
            "model_errors", "Calls ended because the model failed or never became available."
        )
        self.tool_calls_total = self._counter(
            "tool_calls",
            "Tool invocations, by tool and outcome (ok, error, timeout).",
            ("tool", "outcome"),
        )
        self.rtp_jitter_ms = self._histogram(
            "rtp_jitter_ms",
            "Final interarrival jitter of each call, milliseconds.",
            RTP_JITTER_BUCKETS_MS,
        )
        self.voice_latency_ms = self._histogram(
            "voice_latency_ms",
            "Per turn: end of caller speech to first reply packet, milliseconds.",
            VOICE_LATENCY_BUCKETS_MS,
        )
        self.tool_latency_s = self._histogram(
            "tool_latency_s", "Tool invocation duration, seconds.", TOOL_LATENCY_BUCKETS_S
        )
        self.call_setup_ms = self._histogram(
            "call_setup_ms", "INVITE received to 200 OK sent, milliseconds.", CALL_SETUP_BUCKETS_MS
        )
        self.asyncio_tasks = Gauge(
            "asyncio_tasks",
            "asyncio tasks alive in the event loop serving the scrape (the server's loop).",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.asyncio_tasks.set_function(_running_loop_tasks)
        self._sip = _SipCollector()
        self.registry.register(self._sip)

    # -- what the server calls ----------------------------------------------------------------
    def call_started(self) -> None:
        """A call was registered."""
        self.active_calls.inc()

    def call_ended(self, record: CallRecord) -> None:
        """A call ended: count it and everything it measured, read from ``record``."""
        self.active_calls.dec()
        self.calls_total.labels(outcome=call_outcome(record)).inc()
        reason = record.end_reason or ""
        if reason.startswith(_MODEL_FAILURES):
            self.model_errors_total.inc()
        rtp = record.rtp
        self.rtp_packets_total.labels(direction="in").inc(max(rtp.packets_in, 0))
        self.rtp_packets_total.labels(direction="out").inc(max(rtp.packets_out, 0))
        self.rtp_lost_total.inc(max(rtp.lost, 0))
        if rtp.packets_in > 0:
            self.rtp_jitter_ms.observe(rtp.jitter_ms)
        if record.answered_at is not None:
            self.call_setup_ms.observe(max(record.answered_at - record.created_at, 0.0) * 1000)
        for turn in record.turns:
            latency_ms = _number(turn.get("latency_ms"))
            if latency_ms is not None:
                self.voice_latency_ms.observe(latency_ms)
        for tool_call in record.tool_calls:
            self._tool_call(tool_call)

    def sip_counters(self, source: SipCounterSource) -> None:
        """Expose the UA's counter (or a callable returning it) as ``sip_*_total``.

        It is read at every scrape; calling again replaces the source.
        """
        self._sip.source = source

    def track(self, registry: CallRegistry) -> Callable[[], None]:
        """Call :meth:`call_started`/:meth:`call_ended` on the registry's adds and removes.

        Use this *or* call them yourself, not both. Returns a function that stops tracking.
        """

        def on_change(kind: ChangeKind, record: CallRecord) -> None:
            if kind is ChangeKind.ADDED:
                self.call_started()
            elif kind is ChangeKind.REMOVED:
                self.call_ended(record)

        registry.subscribe(on_change)
        return lambda: registry.unsubscribe(on_change)

    # -- helpers ------------------------------------------------------------------------------
    def _counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(name, documentation, labels, namespace=NAMESPACE, registry=self.registry)

    def _histogram(self, name: str, documentation: str, buckets: Sequence[float]) -> Histogram:
        return Histogram(
            name, documentation, namespace=NAMESPACE, registry=self.registry, buckets=buckets
        )

    def _tool_call(self, tool_call: Mapping[str, object]) -> None:
        error = tool_call.get("error")
        error_type = str(error.get("type", "") if isinstance(error, dict) else error or "")
        name = tool_call.get("name")
        # The model picks the name: one it made up must not become a label value.
        known = isinstance(name, str) and name and error_type != "unknown_tool"
        tool = str(name) if known else "unknown"
        if not error:
            outcome = "ok"
        elif error_type == "timeout":
            outcome = "timeout"
        else:
            outcome = "error"
        self.tool_calls_total.labels(tool=tool, outcome=outcome).inc()
        duration_ms = _number(tool_call.get("duration_ms"))
        if duration_ms is not None:
            self.tool_latency_s.observe(duration_ms / 1000)
