from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from sipagent.registry import (
    CallRecord,
    CallRegistry,
    CallState,
    ChangeKind,
    RtpSnapshot,
    iso_utc,
)

T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z

SUMMARY_KEYS = {
    "session_id",
    "call_id",
    "from",
    "to",
    "state",
    "codec",
    "created_at",
    "answered_at",
    "model",
    "rtp",
}
DETAIL_KEYS = SUMMARY_KEYS | {
    "ended_at",
    "end_reason",
    "remote_addr",
    "caller_number",
    "dtmf",
    "transcript",
    "tool_calls",
    "handoffs",
    "turns",
    "facts",
    "recording_path",
    "recording_truncated",
}


def make_record(n: int, **changes: object) -> CallRecord:
    record = CallRecord(
        session_id=f"sess{n:08x}",
        call_id=f"call-{n}@198.51.100.7",
        from_uri=f"sip:+1555000{n:04d}@trunk.example.com",
        to_uri="sip:agent@sipagent.example.com",
        created_at=T0 + n,
        model="echo",
    )
    for name, value in changes.items():
        setattr(record, name, value)
    return record


@dataclass(frozen=True)
class FakeRtpStats:
    packets_in: int = 500
    packets_out: int = 498
    bytes_in: int = 80_000
    bytes_out: int = 79_680
    lost: int = 2
    late: int = 1
    reordered: int = 3
    jitter_ms: float = 4.1234
    dropped_foreign: int = 7
    dropped_malformed: int = 0
    dropped_payload_type: int = 1
    dtmf_digits: int = 2


def end(registry: CallRegistry, record: CallRecord, at: float) -> None:
    record.state = CallState.ENDED
    record.ended_at = at
    record.end_reason = "bye"
    registry.touch(record)
    registry.remove(record.session_id)


def test_add_get_active_len() -> None:
    registry = CallRegistry()
    first, second = make_record(1), make_record(2)
    registry.add(first)
    registry.add(second)
    assert registry.get(first.session_id) is first
    assert registry.get("nope") is None
    assert registry.active() == [first, second]
    assert len(registry) == 2


def test_duplicate_session_id_rejected() -> None:
    registry = CallRegistry()
    registry.add(make_record(1))
    with pytest.raises(ValueError, match="already registered"):
        registry.add(make_record(1))


def test_ended_call_stays_readable_but_not_active() -> None:
    registry = CallRegistry()
    record = make_record(1)
    registry.add(record)
    end(registry, record, T0 + 30)
    assert registry.active() == []
    assert len(registry) == 0
    assert registry.get(record.session_id) is record
    assert registry.ended() == [record]
    assert registry.get(record.session_id).to_detail()["end_reason"] == "bye"  # type: ignore[union-attr]


def test_remove_marks_ended_and_unknown_remove_is_none() -> None:
    registry = CallRegistry()
    record = make_record(1, state=CallState.ANSWERED)
    registry.add(record)
    assert registry.remove(record.session_id) is record
    assert record.state == "ended"
    assert registry.remove(record.session_id) is None
    assert registry.remove("nope") is None


def test_state_ended_before_remove_is_not_active() -> None:
    registry = CallRegistry()
    record = make_record(1)
    registry.add(record)
    record.state = "ended"
    registry.touch(record)
    assert registry.active() == []
    assert len(registry) == 0
    assert registry.ended() == [record]


def test_ended_retention_is_bounded() -> None:
    registry = CallRegistry(keep_ended=100)
    records = [make_record(n) for n in range(130)]
    for record in records:
        registry.add(record)
        end(registry, record, record.created_at + 1)
    kept = registry.ended()
    assert len(kept) == 100
    assert kept == records[30:]
    assert registry.get(records[29].session_id) is None
    assert registry.get(records[30].session_id) is records[30]


def test_keep_no_ended_calls() -> None:
    registry = CallRegistry(keep_ended=0)
    record = make_record(1)
    registry.add(record)
    registry.remove(record.session_id)
    assert registry.get(record.session_id) is None
    with pytest.raises(ValueError):
        CallRegistry(keep_ended=-1)


def test_by_call_id_prefers_live_call() -> None:
    registry = CallRegistry()
    old = make_record(1)
    registry.add(old)
    end(registry, old, T0 + 5)
    assert registry.by_call_id(old.call_id) is old
    again = make_record(2, call_id=old.call_id)
    registry.add(again)
    assert registry.by_call_id(old.call_id) is again
    assert registry.by_call_id("unknown@host") is None


def test_subscribe_notifies_add_update_remove() -> None:
    registry = CallRegistry()
    seen: list[tuple[ChangeKind, str, str]] = []

    def listener(kind: ChangeKind, record: CallRecord) -> None:
        seen.append((kind, record.session_id, str(record.state)))

    registry.subscribe(listener)
    record = make_record(1)
    registry.add(record)
    record.state = CallState.ANSWERED
    record.answered_at = T0 + 3
    registry.touch(record)
    registry.remove(record.session_id)
    assert seen == [
        (ChangeKind.ADDED, record.session_id, "ringing"),
        (ChangeKind.UPDATED, record.session_id, "answered"),
        (ChangeKind.REMOVED, record.session_id, "ended"),
    ]
    registry.unsubscribe(listener)
    registry.unsubscribe(listener)  # unknown listeners are ignored
    registry.add(make_record(2))
    assert len(seen) == 3


def test_touch_of_unregistered_record_is_ignored() -> None:
    registry = CallRegistry()
    seen: list[ChangeKind] = []
    registry.subscribe(lambda kind, record: seen.append(kind))
    registry.touch(make_record(9))
    assert seen == []


def test_failing_listener_does_not_break_others() -> None:
    registry = CallRegistry()
    seen: list[ChangeKind] = []

    def broken(kind: ChangeKind, record: CallRecord) -> None:
        raise RuntimeError("dashboard bug")

    registry.subscribe(broken)
    registry.subscribe(lambda kind, record: seen.append(kind))
    registry.add(make_record(1))
    assert seen == [ChangeKind.ADDED]


def test_listener_may_unsubscribe_itself() -> None:
    registry = CallRegistry()
    calls: list[ChangeKind] = []

    def once(kind: ChangeKind, record: CallRecord) -> None:
        calls.append(kind)
        registry.unsubscribe(once)

    registry.subscribe(once)
    registry.add(make_record(1))
    registry.add(make_record(2))
    assert calls == [ChangeKind.ADDED]


def test_summary_keys_and_json() -> None:
    record = make_record(1, state=CallState.ANSWERED, codec="PCMU", answered_at=T0 + 2.5)
    record.rtp = RtpSnapshot.from_stats(FakeRtpStats())
    summary = record.to_summary()
    assert set(summary) == SUMMARY_KEYS
    assert summary["from"] == record.from_uri
    assert summary["to"] == record.to_uri
    assert summary["state"] == "answered"
    assert summary["created_at"] == "2024-05-01T12:00:01.000Z"
    assert summary["answered_at"] == "2024-05-01T12:00:02.500Z"
    assert summary["rtp"] == {
        "packets_in": 500,
        "packets_out": 498,
        "lost": 2,
        "jitter_ms": 4.123,
        "dropped_foreign": 7,
    }
    assert json.loads(json.dumps(summary)) == summary


def test_handoffs_are_the_successful_agent_transfers() -> None:
    record = make_record(1)
    record.tool_calls += [
        {"name": "get_hours", "arguments": {}, "result": {}, "error": None, "at": T0 + 1},
        {"name": "transfer_to_scheduling", "arguments": {"reason": "wants a booking"},
         "result": {"status": "transferred"}, "error": None, "at": T0 + 2},
        {"name": "transfer_to_banking", "arguments": {"reason": "x"}, "result": None,
         "error": {"type": "unknown_tool"}, "at": T0 + 3},
        {"name": "transfer_to_human", "arguments": {"reason": "asked for a person"},
         "result": {"status": "transferring"}, "error": None, "at": T0 + 4},
    ]
    assert record.to_detail()["handoffs"] == [
        {"to": "scheduling", "reason": "wants a booking", "at": T0 + 2}
    ]


def test_handoff_names_match_the_agents_package() -> None:
    from bridge.agents.registry import HANDOFF_PREFIX, HUMAN_TRANSFER_TOOL
    from sipagent import registry

    assert (registry.HANDOFF_PREFIX, registry.HUMAN_TRANSFER_TOOL) == (
        HANDOFF_PREFIX, HUMAN_TRANSFER_TOOL,
    )


def test_detail_keys_and_json() -> None:
    record = make_record(
        1,
        caller_number="+15550000001",
        remote_addr=("198.51.100.7", 5060),
        codec="PCMA",
    )
    record.rtp = RtpSnapshot.from_stats(FakeRtpStats())
    record.dtmf.extend(["1", "#"])
    record.transcript.append({"role": "caller", "text": "hello", "at": T0 + 4})
    record.tool_calls.append({"name": "lookup", "arguments": {"id": 3}, "ok": True})
    record.turns.append({"latency_ms": 640})
    record.state, record.ended_at, record.end_reason = CallState.ENDED, T0 + 60, "bye"
    detail = record.to_detail()
    assert set(detail) == DETAIL_KEYS
    assert detail["remote_addr"] == "198.51.100.7:5060"
    assert detail["answered_at"] is None
    assert detail["ended_at"] == "2024-05-01T12:01:00.000Z"
    assert detail["dtmf"] == ["1", "#"]
    assert detail["rtp"] == {
        "packets_in": 500,
        "packets_out": 498,
        "bytes_in": 80_000,
        "bytes_out": 79_680,
        "lost": 2,
        "late": 1,
        "reordered": 3,
        "jitter_ms": 4.1234,
        "dropped_foreign": 7,
        "dropped_malformed": 0,
        "dropped_payload_type": 1,
        "dtmf_digits": 2,
    }
    assert json.loads(json.dumps(detail)) == detail


def test_detail_is_a_copy() -> None:
    record = make_record(1)
    record.transcript.append({"role": "agent", "text": "hi"})
    detail = record.to_detail()
    detail["dtmf"].append("9")  # type: ignore[attr-defined]
    detail["transcript"][0]["text"] = "changed"  # type: ignore[index]
    assert record.dtmf == []
    assert record.transcript == [{"role": "agent", "text": "hi"}]


def test_new_record_defaults() -> None:
    record = make_record(1)
    assert record.state == CallState.RINGING
    assert not record.ended
    detail = record.to_detail()
    assert detail["codec"] is None
    assert detail["remote_addr"] is None
    assert (detail["recording_path"], detail["recording_truncated"]) == (None, False)
    assert detail["rtp"]["packets_in"] == 0  # type: ignore[index]


def test_ipv6_remote_addr_and_iso() -> None:
    record = make_record(1, remote_addr=("2001:db8::1", 5062))
    assert record.to_detail()["remote_addr"] == "[2001:db8::1]:5062"
    assert iso_utc(None) is None
    assert iso_utc(0.0) == "1970-01-01T00:00:00.000Z"
