"""Ending a process a test or the bench started: by PID, signal after signal, each wait bounded."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence

__all__ = ["TERM_THEN_KILL", "stop_process"]

Step = tuple[int | None, float]

TERM_THEN_KILL: tuple[Step, ...] = ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0))
"""SIGTERM, up to 5 s to exit, then SIGKILL and up to 5 s more."""


def stop_process(
    process: subprocess.Popen[bytes], steps: Sequence[Step] = TERM_THEN_KILL
) -> int | None:
    """Until ``process`` has exited, take each ``(signal, seconds)`` step in turn: send the
    signal to its PID (None: send nothing, only wait) and wait up to that long. Returns its exit
    status, None if it outlived every step."""
    for sig, seconds in steps:
        if process.poll() is not None:
            break
        if sig is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=seconds)
    return process.returncode
