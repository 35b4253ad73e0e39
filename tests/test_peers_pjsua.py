"""tests.peers.pjsua_peer: the PJSIP caller against its own echo server and against SIPp.

The echo path is checked the way the integration tests check sipagent: the recorded audio must
correlate with what was played (>= 0.9, per window if the playout shifted) at a plausible lag."""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

import pytest

from tests.peers.audio import find_with_drift, is_silence, read_wav
from tests.peers.pjsua_peer import PeerResult, run_caller, start_echo_server
from tests.peers.sipp import free_udp_port, sipp_available, start_sipp

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pjsua2") is None,
                                reason="pjsua2-python not installed")

SPEECH = Path(__file__).parent / "fixtures" / "speech_8k.wav"


def assert_echoed(result: PeerResult, recording: Path, *, max_lag_ms: float = 300.0) -> float:
    """The call worked and the recording holds the speech, a little late; return the lag."""
    assert result.returncode == 0, result.describe()
    assert result.confirmed, result.describe()
    assert result.data["state"] == "DISCONNECTED"
    assert result.data["error"] is None
    reference, _ = read_wav(SPEECH)
    received, rate = read_wav(recording)
    assert rate == 8000
    assert not is_silence(received)
    # PJSIP's jitter buffers (both ends here) may shift the playout by a frame mid-call.
    correlation = find_with_drift(reference, received, sample_rate=rate).whole
    assert 0.0 <= correlation.lag_ms <= max_lag_ms, correlation
    return correlation.lag_ms


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_call_to_the_pjsip_echo_server(tmp_path: Path, codec: str) -> None:
    with start_echo_server(free_udp_port(), max_calls=1, serve_seconds=40.0,
                           workdir=tmp_path / "echo") as echo:
        result = run_caller(echo.uri, play=SPEECH, record=tmp_path / "heard.wav", duration=4.0,
                            codec=codec, workdir=tmp_path / "caller")
        summary = echo.stop()
    assert_echoed(result, tmp_path / "heard.wav")
    assert result.data["codec"] == f"{codec}/8000"
    assert result.data["payload_type"] == {"PCMU": 0, "PCMA": 8}[codec]
    assert result.data["status_code"] == 200
    assert result.data["setup_ms"] > 0.0
    assert result.data["rx_packets"] > 100
    assert result.data["tx_packets"] > 100
    assert summary["error"] is None
    assert summary["answered"] == 1
    [call] = summary["calls"]
    assert call["looped"] and call["state"] == "DISCONNECTED"
    assert call["codec"] == f"{codec}/8000"


def test_setup_time_includes_the_ringing(tmp_path: Path) -> None:
    with start_echo_server(free_udp_port(), max_calls=1, answer_delay_ms=600,
                           workdir=tmp_path / "echo") as echo:
        result = run_caller(echo.uri, play=SPEECH, record=tmp_path / "heard.wav", duration=1.0,
                            workdir=tmp_path / "caller")
    assert result.returncode == 0, result.describe()
    assert result.data["setup_ms"] >= 600.0  # a lower bound only: never flaky


def test_dtmf_reaches_the_echo_server(tmp_path: Path) -> None:
    with start_echo_server(free_udp_port(), max_calls=1, workdir=tmp_path / "echo") as echo:
        result = run_caller(echo.uri, play=SPEECH, record=tmp_path / "heard.wav", duration=2.5,
                            dtmf="1234#", dtmf_delay=0.5, workdir=tmp_path / "caller")
        summary = echo.stop()
    assert result.returncode == 0, result.describe()
    assert result.data["dtmf_sent"] == "1234#"
    assert result.data["hangup_by"] == "local"
    assert summary["calls"][0]["dtmf"] == "1234#"


def test_far_end_hangup_ends_the_call_early(tmp_path: Path) -> None:
    with start_echo_server(free_udp_port(), max_calls=1, workdir=tmp_path / "echo") as echo:
        hang_up = threading.Timer(2.5, echo.stop)  # SIGTERM: the server sends BYE
        hang_up.start()
        try:
            result = run_caller(echo.uri, play=SPEECH, record=tmp_path / "heard.wav",
                                duration=20.0, workdir=tmp_path / "caller")
        finally:
            hang_up.cancel()
    assert result.returncode == 0, result.describe()
    assert result.data["hangup_by"] == "remote"
    assert result.data["duration_s"] < 20.0


def test_nobody_there_fails_within_the_setup_timeout(tmp_path: Path) -> None:
    result = run_caller(f"sip:echo@127.0.0.1:{free_udp_port()}", play=SPEECH,
                        record=tmp_path / "heard.wav", duration=1.0, setup_timeout=3.0,
                        workdir=tmp_path / "caller")
    assert result.returncode == 1
    assert result.data["confirmed"] is False
    assert result.data["setup_ms"] is None


@pytest.mark.skipif(not sipp_available(), reason="sipp not installed")
def test_call_to_a_sipp_echo(tmp_path: Path) -> None:
    # Another stack on the far end, answering like sipagent and echoing RTP (-rtp_echo).
    with start_sipp("uas_basic.xml", timeout=30.0, rtp_echo=True,
                    workdir=tmp_path / "uas") as server:
        assert server.wait_ready()
        result = run_caller(f"sip:echo@127.0.0.1:{server.local_port}", play=SPEECH,
                            record=tmp_path / "heard.wav", duration=4.0,
                            workdir=tmp_path / "caller")
        served = server.wait(timeout=10.0)
    assert_echoed(result, tmp_path / "heard.wav")
    assert served.ok, served.describe()
    assert result.data["codec"] == "PCMU/8000"


@pytest.mark.skipif(os.environ.get("PJSUA_LAG_RUNS") is None,
                    reason="set PJSUA_LAG_RUNS=N to measure the PJSIP echo lag")
def test_measure_pjsip_echo_lag(tmp_path: Path) -> None:
    lags = []
    with start_echo_server(free_udp_port(), max_calls=4, serve_seconds=300.0,
                           workdir=tmp_path / "echo") as echo:
        for run in range(int(os.environ["PJSUA_LAG_RUNS"])):
            if run and run % 4 == 0:  # the wheel allows 4 calls per process
                echo.stop()
                echo = start_echo_server(free_udp_port(), max_calls=4, serve_seconds=300.0,
                                         workdir=tmp_path / f"echo{run}")
            recording = tmp_path / f"heard{run}.wav"
            result = run_caller(echo.uri, play=SPEECH, record=recording, duration=4.0,
                                workdir=tmp_path / f"caller{run}")
            lags.append(assert_echoed(result, recording))
        echo.stop()
    print(f"PJSIP->PJSIP echo lag over {len(lags)} calls: {sorted(lags)} ms")
