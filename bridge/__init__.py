"""Speech model backends behind one small interface, and a factory to pick one by name.

Backends register a factory in :data:`MODEL_FACTORIES` (``register_model``); calls
only ever use :func:`create_model` and the :class:`ModelSession` interface.
"""

from __future__ import annotations

from collections.abc import Callable

from .base import (
    AudioOut,
    CallContext,
    FunctionCallRequested,
    ModelClosed,
    ModelError,
    ModelEvent,
    ModelSession,
    ModelSink,
    SpeechStarted,
    SpeechStopped,
    Transcript,
)
from .echo import EchoModel

__all__ = [
    "MODEL_FACTORIES",
    "AudioOut",
    "CallContext",
    "EchoModel",
    "FunctionCallRequested",
    "ModelClosed",
    "ModelError",
    "ModelEvent",
    "ModelFactory",
    "ModelSession",
    "ModelSink",
    "SpeechStarted",
    "SpeechStopped",
    "Transcript",
    "create_model",
    "register_model",
]

ModelFactory = Callable[[object | None], ModelSession]
"""Builds a new session from the application settings (``None`` when there are none)."""


def _create_echo(settings: object | None) -> ModelSession:
    return EchoModel()


def _create_openai(settings: object | None) -> ModelSession:
    # Imported on first use: the openai SDK is a heavy import the echo model does not need.
    from .openai_realtime import create_openai_model

    return create_openai_model(settings)


MODEL_FACTORIES: dict[str, ModelFactory] = {"echo": _create_echo, "openai": _create_openai}
"""Known backends by name."""


def register_model(name: str, factory: ModelFactory) -> None:
    """Make ``factory`` available to :func:`create_model` as ``name``, replacing any previous."""
    MODEL_FACTORIES[name] = factory


def create_model(name: str, settings: object | None = None) -> ModelSession:
    """Return a new, unopened session of the backend called ``name``.

    Raises :class:`ValueError` naming the known backends when ``name`` is unknown.
    """
    try:
        factory = MODEL_FACTORIES[name]
    except KeyError:
        known = ", ".join(sorted(MODEL_FACTORIES))
        raise ValueError(f"unknown model {name!r} (known models: {known})") from None
    return factory(settings)
