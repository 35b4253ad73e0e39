"""The interface between a call and a speech model.

A :class:`ModelSession` is opened once per call with a :class:`CallContext` and a
*sink*: a plain callable that receives :data:`ModelEvent` objects. The call pushes
one inbound 20 ms frame at a time with :meth:`ModelSession.push_audio` and plays the
:class:`AudioOut` frames it receives. All audio is in the call's codec (PCMU or PCMA
payload bytes, 160 bytes per 20 ms frame), so a backend that speaks G.711 natively
never decodes anything.

Barge-in: the model emits :class:`SpeechStarted` when the caller starts talking; the
call flushes its playout queue and reports how much of the interrupted item was
actually heard with :meth:`ModelSession.audio_interrupted`.

The sink is called synchronously from the model's task and must not block.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "AudioOut",
    "CallContext",
    "FunctionCallRequested",
    "ModelClosed",
    "ModelError",
    "ModelEvent",
    "ModelSession",
    "ModelSink",
    "SpeechStarted",
    "SpeechStopped",
    "Transcript",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioOut:
    """The model produced one frame of audio for the caller."""

    payload: bytes
    "One 20 ms frame in the call's codec (160 bytes of PCMU or PCMA)."

    item_id: str | None = None
    "The model's id for the response item this frame belongs to, used for barge-in truncation."


@dataclass(frozen=True, slots=True, kw_only=True)
class SpeechStarted:
    """The caller started speaking: the call should flush its playout queue (barge-in)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SpeechStopped:
    """The caller stopped speaking; per-turn latency is measured from here."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Transcript:
    """Text of what the caller said or what the agent said."""

    role: Literal["caller", "agent"]
    "Who spoke."

    text: str
    "The transcribed text (a delta when ``final`` is false)."

    final: bool
    "True when the text is the complete utterance, false for a partial delta."


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionCallRequested:
    """The model asks the call to run a tool."""

    call_id: str
    "The model's id for this function call, echoed back with the result."

    name: str
    "The tool name."

    arguments: str
    "The arguments as a JSON object encoded as text, exactly as the model produced them."


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelError:
    """The model reported an error."""

    message: str
    "A human-readable description of the error."

    fatal: bool
    "True when the session cannot continue and the call should end."


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelClosed:
    """The session ended on the model's side (not emitted after :meth:`ModelSession.close`)."""

    reason: str
    "Why the session ended."


ModelEvent = (
    AudioOut
    | SpeechStarted
    | SpeechStopped
    | Transcript
    | FunctionCallRequested
    | ModelError
    | ModelClosed
)
"""Everything a model session can deliver to its sink."""

ModelSink = Callable[[ModelEvent], None]
"""Receives model events; called synchronously, must not block."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallContext:
    """What a model session knows about the call it serves."""

    call_id: str
    "The SIP Call-ID."

    session_id: str
    "The registry's session id (also used in the admin API)."

    caller: str
    "The caller (From URI or number)."

    callee: str
    "The dialed party (To URI or number)."

    codec: str
    "The negotiated codec name, ``PCMU`` or ``PCMA``; every audio payload in and out uses it."


class ModelSession(abc.ABC):
    """One conversation with a speech model, for the lifetime of one call."""

    name: str = "abstract"
    "The backend name, as given to :func:`bridge.create_model`."

    @abc.abstractmethod
    async def open(self, context: CallContext, sink: ModelSink) -> None:
        """Connect to the model; return once it is ready to receive audio.

        Raises an exception when the model cannot be reached; the call then rejects or
        ends. Events are delivered to ``sink`` from now until :meth:`close`.
        """

    @abc.abstractmethod
    def push_audio(self, payload: bytes) -> None:
        """Hand over one inbound 20 ms frame (codec payload). A no-op after close."""

    @abc.abstractmethod
    def send_dtmf(self, digit: str) -> None:
        """Tell the model the caller pressed a key (``0-9``, ``*``, ``#``, ``A-D``)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """End the session. Idempotent; no events reach the sink once it returns."""

    def audio_interrupted(self, item_id: str | None, played_ms: int) -> None:  # noqa: B027
        """The caller barged in: only ``played_ms`` of ``item_id`` was heard.

        Called by the call after it flushed its playout queue on :class:`SpeechStarted`.
        Backends that keep a conversation history truncate it here; the default does nothing.
        """

    def send_note(self, text: str) -> None:  # noqa: B027
        """Tell the model something that happened on the call (not the caller's words),
        e.g. that a transfer failed; it answers the caller if it should. Default: ignored."""

    def send_function_result(self, call_id: str, output: str) -> None:
        """Return the result of a :class:`FunctionCallRequested` (``output`` is JSON text).

        The default logs and drops it: only backends that request tools receive results.
        """
        logger.warning("%s model ignores the result of function call %s", self.name, call_id)
