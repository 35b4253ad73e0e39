"""RTP media for sipagent: sans-I/O protocol cores plus one thin asyncio shell.

Cores (no I/O, driven by ``now``): :mod:`rtp.g711`, :mod:`rtp.jitter`, :mod:`rtp.dtmf`,
:mod:`rtp.pacer`, :mod:`rtp.stats`, :mod:`rtp.session`, all re-exported here.  The asyncio
shell is imported explicitly (``from rtp.endpoint import RtpEndpoint, PortAllocator``) so that
importing the cores never pulls in an event loop, as with ``aioquic.asyncio``.
"""

from .dtmf import DtmfDigit, DtmfReceiver
from .g711 import (
    ALAW_SILENCE,
    PT_PCMA,
    PT_PCMU,
    ULAW_SILENCE,
    alaw_decode,
    alaw_encode,
    silence,
    ulaw_decode,
    ulaw_encode,
)
from .jitter import Frame, JitterBuffer
from .pacer import Pacer, PlayoutQueue
from .session import (
    AudioReceived,
    DtmfReceived,
    MediaTimeout,
    RemoteLatched,
    RtpEvent,
    RtpSession,
    RtpStats,
)
from .stats import ReceiverStats

__all__ = [
    "ALAW_SILENCE",
    "PT_PCMA",
    "PT_PCMU",
    "ULAW_SILENCE",
    "AudioReceived",
    "DtmfDigit",
    "DtmfReceived",
    "DtmfReceiver",
    "Frame",
    "JitterBuffer",
    "MediaTimeout",
    "Pacer",
    "PlayoutQueue",
    "ReceiverStats",
    "RemoteLatched",
    "RtpEvent",
    "RtpSession",
    "RtpStats",
    "alaw_decode",
    "alaw_encode",
    "silence",
    "ulaw_decode",
    "ulaw_encode",
]
