"""Configuration of the OpenAI Realtime bridge and the ``session.update`` it becomes.

One :class:`RealtimeConfig` serves every call of a deployment; the lead's settings build it
(see :func:`bridge.openai_realtime.config_from_settings`). :func:`session_config` turns it into
the GA ``session`` object, typed with the SDK's ``RealtimeSessionCreateRequestParam``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from openai.types.realtime.realtime_audio_config_input_param import (
    RealtimeAudioConfigInputParam,
)
from openai.types.realtime.realtime_audio_formats_param import RealtimeAudioFormatsParam
from openai.types.realtime.realtime_audio_input_turn_detection_param import (
    RealtimeAudioInputTurnDetectionParam,
)
from openai.types.realtime.realtime_session_create_request_param import (
    RealtimeSessionCreateRequestParam,
)

from .realtime_audio import AudioFormat
from .tools import ToolSchema

__all__ = [
    "DEFAULT_GREETING",
    "DEFAULT_INSTRUCTIONS",
    "Eagerness",
    "NoiseReduction",
    "RealtimeConfig",
    "TurnDetection",
    "session_config",
]

DEFAULT_INSTRUCTIONS: Final = (
    "You are a friendly voice assistant answering a phone call. Keep your answers short and "
    "conversational; the caller can only hear you."
)
DEFAULT_GREETING: Final = "Greet the caller in one short sentence and ask how you can help."

TurnDetection = Literal["server_vad", "semantic_vad"]
Eagerness = Literal["low", "medium", "high", "auto"]
NoiseReduction = Literal["near_field", "far_field"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RealtimeConfig:
    """How a Realtime session is configured; one per deployment, shared by its calls."""

    model: str = "gpt-realtime"
    "The Realtime model, given in the connection URL."

    voice: str = "marin"
    "The voice the model speaks with."

    instructions: str = DEFAULT_INSTRUCTIONS
    "The session's system instructions."

    greeting: str | None = DEFAULT_GREETING
    "Instructions for the first response, so the model speaks first; None: wait for the caller."

    greet_on: Literal["ready", "media"] = "media"
    "Ask for the greeting at ``session.updated`` or at the first inbound frame (media flows)."

    turn_detection: TurnDetection = "server_vad"
    "The server's turn detection: volume-based ``server_vad`` or model-based ``semantic_vad``."

    eagerness: Eagerness = "auto"
    "How quickly ``semantic_vad`` ends the caller's turn."

    vad_silence_ms: int | None = None
    "Silence that ends a turn with ``server_vad`` (None: the server default, 500 ms)."

    idle_timeout_ms: int | None = None
    "With ``server_vad``: prompt the caller after this much silence (None: never)."

    noise_reduction: NoiseReduction | None = "near_field"
    "Input noise reduction (``near_field`` suits handsets), or None for none."

    transcription_model: str | None = "gpt-4o-mini-transcribe"
    "Model transcribing the caller for the call record, or None for no caller transcripts."

    transcription_language: str | None = None
    "ISO-639-1 language hint for the caller's transcription."

    audio_format: AudioFormat = "g711"
    "``g711``: the call's PCMU/PCMA on the wire, untouched; ``pcm``: 24 kHz PCM, resampled."

    append_ms: Literal[20, 40] = 40
    """Inbound audio per ``input_audio_buffer.append``. 40 halves the messages (the costliest
    part of a bridged call's CPU) and delays caller audio by 10 ms on average, 20 at most; 20
    for the lowest input latency."""

    tool_timeout: float = 5.0
    "Seconds a tool may run before the model gets a timeout error instead."

    dtmf_timeout: float = 1.5
    "Seconds after the last keypad digit until the digits go to the model (``#``: at once)."

    def __post_init__(self) -> None:
        if self.append_ms not in (20, 40):
            raise ValueError(f"append_ms must be 20 or 40 (got {self.append_ms})")
        for name in ("tool_timeout", "dtmf_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds (got {value})")
        if self.audio_format not in ("g711", "pcm"):
            raise ValueError(f"audio_format must be 'g711' or 'pcm' (got {self.audio_format!r})")


def session_config(
    config: RealtimeConfig, audio_format: RealtimeAudioFormatsParam, tools: Sequence[ToolSchema]
) -> RealtimeSessionCreateRequestParam:
    """The ``session`` of the first ``session.update``: audio, voice, turn detection, tools."""
    detection: RealtimeAudioInputTurnDetectionParam
    if config.turn_detection == "semantic_vad":
        detection = {"type": "semantic_vad", "eagerness": config.eagerness}
    else:
        detection = {"type": "server_vad"}
        if config.vad_silence_ms is not None:
            detection["silence_duration_ms"] = config.vad_silence_ms
        if config.idle_timeout_ms is not None:
            detection["idle_timeout_ms"] = config.idle_timeout_ms
    audio_in: RealtimeAudioConfigInputParam = {
        "format": audio_format,
        "turn_detection": detection,
    }
    if config.noise_reduction is not None:
        audio_in["noise_reduction"] = {"type": config.noise_reduction}
    if config.transcription_model is not None:
        audio_in["transcription"] = {"model": config.transcription_model}
        if config.transcription_language is not None:
            audio_in["transcription"]["language"] = config.transcription_language
    return {
        "type": "realtime",
        "output_modalities": ["audio"],
        "instructions": config.instructions,
        "audio": {
            "input": audio_in,
            "output": {"format": audio_format, "voice": config.voice},
        },
        "tools": list(tools),
        "tool_choice": "auto",
    }
