"""sipagent against baresip (Debian package), headless: tests/peers/baresip_peer.py.

baresip dials the in-process server (echo model) and plays the speech fixture with the aufile
module; its sndfile filter dumps the audio it received, which must correlate with the speech.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from sipagent.server import Server
from tests.peers.audio import cross_correlate, is_silence, read_wav, write_wav
from tests.peers.baresip_peer import Baresip, baresip_available
from tests.peers.harness import start_server, wait_for

pytestmark = pytest.mark.skipif(
    not baresip_available(),
    reason="baresip or its g711/aufile/aubridge/sndfile/menu/ctrl_tcp modules not installed",
)

SPEECH = Path(__file__).parent / "fixtures" / "speech_8k.wav"
SPEECH_SECONDS = 3.0


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    # RTP ports below the ephemeral range and away from the other modules' servers; baresip's
    # own RTP ports are 18000-19999.
    server = await start_server(rtp_window=(16000, 18000))
    yield server
    await server.stop()


@pytest.fixture
def padded_speech(tmp_path: Path) -> Path:
    """The speech then 5 s of silence: baresip's aufile ends the call at the end of its file,
    and these tests hang up themselves."""
    speech, rate = read_wav(SPEECH)
    path = tmp_path / "speech_padded.wav"
    write_wav(path, np.concatenate([speech, np.zeros(5 * rate, dtype=np.int16)]), rate)
    return path


def target(server: Server) -> str:
    return f"sip:echo@127.0.0.1:{server.transport.port}"


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
async def test_baresip_call_is_answered_and_echoed(
    server: Server, tmp_path: Path, padded_speech: Path, codec: str
) -> None:
    codecs = "PCMU,PCMA" if codec == "PCMU" else "PCMA"  # PCMA: a PCMA-only offer
    async with Baresip(tmp_path / "baresip", play=padded_speech, codecs=codecs) as phone:
        dialed = await phone.command("dial", target(server))
        assert dialed["ok"], dialed
        established = await phone.wait_event("CALL_ESTABLISHED")
        await wait_for(lambda: bool(server.registry.active()), timeout=5.0)
        [record] = server.registry.active()
        assert record.state == "answered" and record.codec == codec, record
        assert record.call_id == established["id"]
        assert record.from_uri == phone.aor
        await asyncio.sleep(SPEECH_SECONDS + 0.6)  # the speech and its echo
        hung_up = await phone.command("hangup")
        assert hung_up["ok"], hung_up
        closed = await phone.wait_event("CALL_CLOSED")
        await wait_for(lambda: not server.calls, timeout=5.0)
    log = phone.log()  # complete once baresip has quit (the RTP summary comes last)
    assert closed["id"] == record.call_id
    assert record.end_reason == "remote-bye", record
    assert record.rtp.packets_in > 150 and record.rtp.packets_out > 150, record.rtp
    assert record.rtp.lost == 0 and record.rtp.dropped_payload_type == 0, record.rtp
    payload_type = {"PCMU": 0, "PCMA": 8}[codec]
    assert re.search(rf"m=audio \d+ RTP/AVP {payload_type} 101\r?\n", log), log  # our answer
    assert f"audio: Set audio encoder: {codec} 8000Hz" in log, log
    assert f"audio: Set audio decoder: {codec} 8000Hz" in log, log
    packets = phone.rtp_packets()
    assert packets is not None, log[-3000:]
    sent, received = packets
    assert sent > 150 and received > 150, packets

    reference, _ = read_wav(SPEECH)
    heard, rate = read_wav(phone.received_wav())
    assert rate == 8000
    assert not is_silence(heard)
    correlation = cross_correlate(reference, heard, sample_rate=rate, max_lag_ms=1000)
    print(
        f"baresip {codec}: echo peak {correlation.peak:.3f}, lag {correlation.lag_ms:.1f} ms"
        f" (from baresip's first received packet), RTP sent/received {packets},"
        f" server in/out {record.rtp.packets_in}/{record.rtp.packets_out}"
    )
    assert correlation.peak >= 0.9, correlation
    assert correlation.lag_ms >= 0.0, correlation


async def test_server_hangup_ends_the_baresip_call(
    server: Server, tmp_path: Path, padded_speech: Path
) -> None:
    async with Baresip(tmp_path / "baresip", play=padded_speech) as phone:
        await phone.command("dial", target(server))
        await phone.wait_event("CALL_ESTABLISHED")
        await wait_for(lambda: bool(server.registry.active()), timeout=5.0)
        [record] = server.registry.active()
        await asyncio.sleep(0.5)
        assert await server.hangup(record.session_id)
        closed = await phone.wait_event("CALL_CLOSED", timeout=5.0)
        await wait_for(lambda: not server.calls, timeout=5.0)
    log = phone.log()  # complete once baresip has quit
    assert closed["id"] == record.call_id
    assert record.end_reason == "admin-hangup"
    assert "BYE sip:baresip" in log, log[-3000:]
    assert "session closed: Connection reset by peer" in log, log[-3000:]  # the remote BYE
    # ... which baresip answered: a 200 OK whose CSeq is the BYE's
    assert re.search(r"SIP/2.0 200 OK\n(?:[^\n]+\n)*?CSeq: \d+ BYE", log.replace("\r", "")), log
