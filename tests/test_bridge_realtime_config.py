"""Realtime configuration and the session.update it becomes."""

from __future__ import annotations

import pytest
from openai.types.realtime.realtime_session_create_request import RealtimeSessionCreateRequest

from bridge.realtime_config import RealtimeConfig, session_config
from bridge.tools import function_schema

PCMU = {"type": "audio/pcmu"}


def test_defaults_forward_pcmu_with_server_vad() -> None:
    session = session_config(RealtimeConfig(), {"type": "audio/pcmu"}, [])
    RealtimeSessionCreateRequest.model_validate(session)
    assert session["type"] == "realtime"
    assert session["output_modalities"] == ["audio"]
    audio_in = session["audio"]["input"]
    assert audio_in == {
        "format": PCMU,
        "turn_detection": {"type": "server_vad"},
        "noise_reduction": {"type": "near_field"},
        "transcription": {"model": "gpt-4o-mini-transcribe"},
    }
    assert session["audio"]["output"] == {"format": PCMU, "voice": "marin"}
    assert session["tools"] == [] and session["tool_choice"] == "auto"


def test_semantic_vad_with_eagerness_and_no_extras() -> None:
    config = RealtimeConfig(
        turn_detection="semantic_vad",
        eagerness="high",
        noise_reduction=None,
        transcription_model=None,
        vad_silence_ms=300,  # server_vad only: ignored here
    )
    session = session_config(config, {"type": "audio/pcma"}, [function_schema("f", "d")])
    RealtimeSessionCreateRequest.model_validate(session)
    assert session["audio"]["input"] == {
        "format": {"type": "audio/pcma"},
        "turn_detection": {"type": "semantic_vad", "eagerness": "high"},
    }
    assert session["tools"] == [function_schema("f", "d")]


def test_server_vad_tuning_and_transcription_language() -> None:
    config = RealtimeConfig(vad_silence_ms=350, idle_timeout_ms=8000, transcription_language="de")
    audio_in = session_config(config, PCMU, [])["audio"]["input"]  # type: ignore[arg-type]
    assert audio_in["turn_detection"] == {
        "type": "server_vad",
        "silence_duration_ms": 350,
        "idle_timeout_ms": 8000,
    }
    assert audio_in["transcription"] == {"model": "gpt-4o-mini-transcribe", "language": "de"}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("append_ms", 30, "append_ms must be 20 or 40"),
        ("tool_timeout", 0.0, "tool_timeout must be a positive number"),
        ("dtmf_timeout", float("nan"), "dtmf_timeout must be a positive number"),
        ("audio_format", "opus", "audio_format must be 'g711' or 'pcm'"),
    ],
)
def test_bad_values_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RealtimeConfig(**{field: value})  # type: ignore[arg-type]
