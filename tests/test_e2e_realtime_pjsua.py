"""The OpenAI Realtime bridge driven by a real PJSIP softphone (tests/peers/pjsua_peer.py).

The real sipagent :class:`~sipagent.server.Server` runs in-process with ``model = "openai"``; the
real openai SDK connects to the local :class:`~tests.fakes.realtime_server.FakeRealtimeServer`.
A PJSIP (pjsua2) caller subprocess, driven from a worker thread so the event loop keeps running,
calls the server on 127.0.0.1, plays the speech fixture and records what it hears. Every test
ends inside ``async with FakeRealtimeServer(...)``, which fails on any Realtime protocol
violation the fake recorded.

The fake "says" the speech fixture (``AudioSource.speech()``), so what PJSIP heard can be found in
its recording by cross-correlation with the fake's PCMU source decoded to PCM.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from sipagent.call import ModelLink
from sipagent.registry import CallRecord
from sipagent.server import Server
from tests.fakes.realtime_server import (
    AudioSource,
    BargeIn,
    FakeConnection,
    FakeRealtimeServer,
    Greeting,
    ReplyOnSpeech,
    Scenario,
    Speech,
)
from tests.peers.audio import (
    CorrelationResult,
    find_with_drift,
    is_silence,
    read_wav,
    ulaw_decode,
)
from tests.peers.harness import start_server, wait_for
from tests.peers.pjsua_peer import PeerResult, run_caller

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pjsua2") is None, reason="pjsua2-python not installed"
)

SPEECH = Path(__file__).parent / "fixtures" / "speech_8k.wav"
API_KEY = "sk-test-e2e-pjsua"
WAIT = 8.0
GREETING_MS = 1000
MIN_PEAK = 0.8
IN_AUDIO_TOLERANCE = 0.20
WINDOW_MS = 200
MAX_DRIFT_MS = 40.0


async def start_openai_server(fake: FakeRealtimeServer, **overrides: Any) -> Server:
    """sipagent with the openai model pointed at ``fake``; RTP ports below PJSIP's."""
    return await start_server(
        rtp_window=(10000, 16000),
        model="openai",
        openai_api_key=API_KEY,
        openai_base_url=fake.base_url,
        **overrides,
    )


def target(server: Server, user: str = "agent") -> str:
    return f"sip:{user}@127.0.0.1:{server.transport.port}"


async def pjsip_call(uri: str, workdir: Path, duration: float) -> tuple[PeerResult, Path]:
    """Run one PJSIP caller playing the speech fixture; (result, its recording)."""
    recording = workdir / "heard.wav"
    result = await asyncio.to_thread(
        run_caller, uri, play=SPEECH, record=recording, duration=duration, workdir=workdir
    )
    return result, recording


def assert_pjsip_call_ok(result: PeerResult) -> None:
    assert result.confirmed, result.describe()
    assert result.returncode == 0, result.describe()
    assert result.data["error"] is None, result.describe()
    assert result.data["codec"] == "PCMU/8000", result.describe()
    assert result.data["payload_type"] == 0, result.describe()
    assert result.data["hangup_by"] == "local", result.describe()


async def ended_record(server: Server) -> CallRecord:
    await wait_for(lambda: not server.calls and server.registry.ended(), WAIT, "the call to end")
    return server.registry.ended()[-1]


def find_in_recording(
    reference: Any, heard: Any, rate: int
) -> tuple[CorrelationResult, list[tuple[int, float, float]]]:
    """Find ``reference`` in ``heard`` (whole clip >= ``MIN_PEAK``, or per window when PJSIP's
    playout shifted mid-clip: tests.peers.audio.find_with_drift).
    Returns (whole-clip result, per-window (start ms, peak, lag ms))."""
    match = find_with_drift(reference, heard, sample_rate=rate, min_peak=MIN_PEAK,
                            window_ms=WINDOW_MS, max_drift_ms=MAX_DRIFT_MS, max_lag_ms=2000)
    return match.whole, match.windows


def fake_pcm(conn: FakeConnection, duration_ms: int) -> Any:
    """What the fake sent as ``duration_ms`` of PCMU from its source start, decoded to PCM."""
    return ulaw_decode(conn.server.audio.render("audio/pcmu", 0, duration_ms))


async def test_pjsip_hears_the_greeting_and_gets_a_reply(tmp_path: Path) -> None:
    scenarios: list[Scenario] = [
        Greeting(audio_ms=GREETING_MS),
        # The caller "speaks" after 1.5 s of its audio (the greeting is over by then, so this is
        # not a barge-in), for 0.8 s; then the reply.
        ReplyOnSpeech(after_ms=1500, speech_ms=800, reply=Speech("Sure, for what time?", 800)),
    ]
    async with FakeRealtimeServer(scenarios=scenarios, audio=AudioSource.speech()) as fake:
        server = await start_openai_server(fake)
        try:
            result, recording = await pjsip_call(target(server), tmp_path, duration=4.5)
            assert_pjsip_call_ok(result)
            record = await ended_record(server)
            assert record.end_reason == "remote-bye", record
            assert record.codec == "PCMU"
        finally:
            await server.stop()
        conn = await fake.wait_connection(0)

        # What PJSIP heard: not silence, and the fake's greeting audio, found by correlation.
        heard, rate = read_wav(recording)
        assert rate == 8000
        assert not is_silence(heard), result.describe()
        greeting = fake_pcm(conn, GREETING_MS)
        whole, windows = find_in_recording(greeting, heard, rate)
        print(
            f"greeting in PJSIP's recording: {whole}; per {WINDOW_MS} ms window "
            f"(start ms, peak, lag ms): {windows}"
        )
        # The greeting comes first; the reply (the same source from its start) only after the
        # caller's 2.3 s of audio.
        assert 0.0 <= whole.lag_ms < 1500.0, whole

        # The registry: the caller's transcript line and a measured turn.
        assert [r.status for r in conn.responses] == ["completed", "completed"]
        callers = [line for line in record.transcript if line["role"] == "caller"]
        assert [line["text"] for line in callers] == ["I would like to book a table for two."]
        assert len(record.turns) >= 1, record.turns
        latencies = [turn["latency_ms"] for turn in record.turns]
        assert all(isinstance(ms, (int, float)) and ms >= 0 for ms in latencies), record.turns
        print(f"turn latencies (speech stopped -> first reply RTP): {latencies} ms")

        # The fake got about as much caller audio as PJSIP sent (20 ms per RTP packet).
        sent_ms = 20.0 * result.data["tx_packets"]
        assert conn.input_format == "audio/pcmu"
        assert len(conn.audio_in) == round(conn.audio_in_ms * 8)
        print(f"caller audio: PJSIP sent {sent_ms:.0f} ms, the fake got {conn.audio_in_ms:.0f} ms")
        assert abs(conn.audio_in_ms - sent_ms) <= IN_AUDIO_TOLERANCE * sent_ms, (
            conn.audio_in_ms,
            sent_ms,
        )
        assert not is_silence(ulaw_decode(bytes(conn.audio_in))), "the caller's speech arrived"


async def test_pjsip_barge_in_truncates_and_the_call_goes_on(tmp_path: Path) -> None:
    scenarios: list[Scenario] = [
        Greeting(audio_ms=3000),
        BargeIn(after_ms=700, speech_ms=600, reply=Speech("Of course, go ahead.", 600)),
    ]
    async with FakeRealtimeServer(scenarios=scenarios, audio=AudioSource.speech()) as fake:
        server = await start_openai_server(fake)
        caller: asyncio.Task[tuple[PeerResult, Path]] | None = None
        try:
            caller = asyncio.create_task(pjsip_call(target(server), tmp_path, duration=5.0))
            conn = await fake.wait_connection(0, timeout=WAIT)
            await wait_for(lambda: len(conn.truncates) == 1, WAIT, "the truncate")
            [truncate] = conn.truncates
            greeting_item = conn.responses[0].item_ids[0]
            assert truncate.item_id == greeting_item
            sent_ms = conn.items[greeting_item].audio_ms_sent
            assert 0 < truncate.audio_end_ms <= sent_ms, (truncate.audio_end_ms, sent_ms)
            assert truncate.audio_end_ms < 3000, "cut short, not played to the end"
            # The call goes on: bridged, and the barge-in's reply comes.
            await wait_for(
                lambda: len(conn.responses) == 2 and conn.responses[1].status == "completed",
                WAIT,
                "the reply",
            )
            assert not caller.done(), "PJSIP is still in the call"
            [call] = server.calls.values()
            assert call.link is ModelLink.BRIDGED
            assert len(server.registry.active()) == 1
            result, recording = await asyncio.wait_for(caller, timeout=20.0)
            assert_pjsip_call_ok(result)
            record = await ended_record(server)
            assert record.end_reason == "remote-bye", record
        finally:
            if caller is not None and not caller.done():
                await asyncio.wait({caller}, timeout=20.0)  # the peer ends on its own timeout
            await server.stop()
        print(
            f"barge-in: truncate at {truncate.audio_end_ms} ms of {sent_ms} ms sent; "
            f"PJSIP call {result.data['duration_s']:.2f} s"
        )
        assert not is_silence(read_wav(recording)[0])
        callers = [line["text"] for line in record.transcript if line["role"] == "caller"]
        assert callers == ["Sorry, wait, stop."], record.transcript
