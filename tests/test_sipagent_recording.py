"""Stereo call recordings: the sans-I/O timeline, the WAV writer, the asyncio shell, a real call.

The core is driven with a fake clock and frames whose samples are known, encoded and decoded
with the tests' own G.711 (tests/peers/audio.py), so positions are checked sample for sample.
Files are read back with the stdlib ``wave`` module (while still being written, too) and with
``sox --i``. The last part places real calls through the server with the scripted softphone:
the echo model plays the speech fixture back, and the WAV's left channel must hold what the
phone sent, the right channel what it heard.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from admin.app import create_app
from sipagent.cli import HistoryPages
from sipagent.history import HistoryRecorder, HistoryStore, open_history
from sipagent.recording import (
    HEADER_BYTES,
    CallRecording,
    RecordingOptions,
    Side,
    StereoRecorder,
    WavWriter,
    recording_path,
)
from sipagent.registry import CallRegistry
from sipagent.server import Server
from sipagent.settings import ConfigError, load_settings
from tests.peers.audio import (
    alaw_decode,
    alaw_encode,
    cross_correlate,
    is_silence,
    ulaw_decode,
    ulaw_encode,
)
from tests.peers.harness import start_server, wait_for
from tests.peers.pcap import read_rtp, rtp_payloads
from tests.peers.softphone import Softphone

FIXTURES = Path(__file__).parent / "fixtures"
T0 = 1000.0
FRAME = 0.020
TOKEN = "recordings-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Samples = npt.NDArray[np.int16]

_ENCODE: dict[str, Callable[[npt.ArrayLike], bytes]] = {"PCMU": ulaw_encode, "PCMA": alaw_encode}
_DECODE: dict[str, Callable[[bytes], Samples]] = {"PCMU": ulaw_decode, "PCMA": alaw_decode}


def tone(value: int, codec: str = "PCMU") -> bytes:
    """One 20 ms frame whose every sample is ``value`` (as G.711 can say it)."""
    return _ENCODE[codec](np.full(160, value, dtype=np.int16))


def heard(payload: bytes, codec: str = "PCMU") -> Samples:
    return _DECODE[codec](payload)


def stereo(data: bytes) -> Samples:
    return np.frombuffer(data, dtype="<i2").reshape(-1, 2)


# --- the timeline ------------------------------------------------------------------------------


def test_sides_are_aligned_on_one_timeline_with_silence_where_one_said_nothing() -> None:
    recorder = StereoRecorder(T0)
    caller = [tone(100 * (k + 1)) for k in range(100)]  # 2 s, every frame different
    agent = [tone(-200 * (k + 1)) for k in range(25)]  # 0.5 s of reply, from 1.04 s
    for k in range(100):
        late = 0.003 * (k % 4)  # the tick fires a little late, never early
        recorder.push(Side.CALLER, caller[k], "PCMU", T0 + k * FRAME + late)
        if 52 <= k < 77:
            recorder.push(Side.AGENT, agent[k - 52], "PCMU", T0 + k * FRAME + late)
    audio = stereo(recorder.finish(T0 + 2.0))

    assert audio.shape == (16000, 2)
    assert np.array_equal(audio[:, 0], np.concatenate([heard(frame) for frame in caller]))
    right = audio[:, 1]
    assert not right[:8320].any() and not right[12320:].any()
    assert np.array_equal(right[8320:12320], np.concatenate([heard(frame) for frame in agent]))


def test_lost_frames_and_hold_become_silence_and_the_side_resumes_in_place() -> None:
    recorder = StereoRecorder(T0)
    sent = {k: tone(1000 + k) for k in [*range(0, 50), *range(75, 100)]}  # 0.5 s missing
    for k, frame in sent.items():
        recorder.push(Side.CALLER, frame, "PCMU", T0 + k * FRAME)
    left = stereo(recorder.finish(T0 + 2.0))[:, 0]

    assert left.size == 16000
    assert not left[8000:12000].any()
    for k, frame in sent.items():
        assert np.array_equal(left[k * 160 : (k + 1) * 160], heard(frame)), k


def test_a_catch_up_burst_lands_before_its_arrival_not_after() -> None:
    # The loop stalled 60 ms: frames 10-12 leave together at the time of frame 12.
    recorder = StereoRecorder(T0)
    frames = [tone(200 * (k + 1)) for k in range(20)]
    for k, frame in enumerate(frames):
        at = T0 + (12 if 10 <= k <= 12 else k) * FRAME + 0.001
        recorder.push(Side.AGENT, frame, "PCMU", at)
    right = stereo(recorder.finish(T0 + 20 * FRAME))[:, 1]
    # No silence inserted, nothing pushed later: every frame in its own slot.
    assert np.array_equal(right, np.concatenate([heard(frame) for frame in frames]))


def test_both_codecs_and_a_codec_change_mid_call() -> None:
    recorder = StereoRecorder(T0)
    values = [-20000, -700, 0, 5, 640, 31000]
    frames = [(codec, tone(value, codec)) for value in values for codec in ("PCMU", "PCMA")]
    for k, (codec, frame) in enumerate(frames):
        recorder.push(Side.CALLER, frame, codec, T0 + k * FRAME)
        recorder.push(Side.AGENT, frame, codec, T0 + k * FRAME)
    with pytest.raises(ValueError, match="G722"):
        recorder.push(Side.CALLER, b"\x00" * 160, "G722", T0 + 1.0)
    audio = stereo(recorder.finish(T0 + len(frames) * FRAME))
    expected = np.concatenate([heard(frame, codec) for codec, frame in frames])
    assert np.array_equal(audio[:, 0], expected) and np.array_equal(audio[:, 1], expected)
    # The first two frames, μ-law then A-law, both say about -20000.
    assert abs(int(audio[0, 0]) + 20000) < 1000 and abs(int(audio[160, 0]) + 20000) < 1000


def test_drain_hands_out_what_is_complete_and_pads_a_silent_side() -> None:
    recorder = StereoRecorder(T0, latency=0.2, drain_interval=1.0)
    once = StereoRecorder(T0, latency=0.2, drain_interval=1.0)
    assert recorder.get_timer() == T0 + 1.0
    drained: list[bytes] = []
    for k in range(150):  # 3 s of caller audio; the agent never speaks
        now = T0 + k * FRAME
        for target in (recorder, once):
            target.push(Side.CALLER, tone(50 * k), "PCMU", now)
        timer = recorder.get_timer()
        if timer is not None and now >= timer:
            drained.append(recorder.drain(now))
    # One drain per second, each up to 200 ms before its now, despite the silent right side.
    assert [len(chunk) // 4 for chunk in drained] == [8000 - 1600, 8000]
    assert recorder.get_timer() == T0 + 3.0
    drained.append(recorder.finish(T0 + 3.0))
    assert b"".join(drained) == once.finish(T0 + 3.0)
    assert recorder.stopped and recorder.get_timer() is None
    assert recorder.drain(T0 + 4.0) == b"" and recorder.finish(T0 + 4.0) == b""


def test_drain_with_nothing_new_is_empty() -> None:
    recorder = StereoRecorder(T0, latency=0.2)
    assert recorder.drain(T0 + 0.1) == b""  # still inside the latency
    assert len(recorder.drain(T0 + 1.0)) == 6400 * 4
    assert recorder.drain(T0 + 1.0) == b""
    assert recorder.get_timer() == T0 + 2.0
    recorder.drain(T0 + 5.5)  # a stalled loop missed deadlines: the next one is on the grid
    assert recorder.get_timer() == T0 + 6.0


def test_size_cap_stops_the_recording_at_a_whole_stereo_sample() -> None:
    recorder = StereoRecorder(T0, max_bytes=HEADER_BYTES + 4 * 1000 + 3)
    for k in range(100):
        recorder.push(Side.CALLER, tone(900), "PCMU", T0 + k * FRAME)
    data = recorder.drain(T0 + 1.0)
    assert len(data) == 4000 and recorder.truncated and recorder.stopped
    assert recorder.bytes_out == 4000 and recorder.get_timer() is None
    recorder.push(Side.CALLER, tone(900), "PCMU", T0 + 2.0)  # ignored
    assert recorder.drain(T0 + 3.0) == b"" and recorder.finish(T0 + 3.0) == b""


def test_bad_recorder_parameters() -> None:
    with pytest.raises(ValueError, match="drain_interval"):
        StereoRecorder(T0, drain_interval=0)


# --- the file ----------------------------------------------------------------------------------


def sox_info(path: Path) -> dict[str, str]:
    sox = shutil.which("sox")
    if sox is None:
        pytest.skip("sox is not installed (Debian package 'sox')")
    fields = {"channels": "-c", "rate": "-r", "samples": "-s", "bits": "-b", "encoding": "-e"}
    return {
        name: subprocess.run(
            [sox, "--i", flag, str(path)], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        for name, flag in fields.items()
    }


def read_stereo(path: Path) -> tuple[Samples, tuple[int, int, int]]:
    """The samples, and (channels, rate, sample width) as the header says."""
    with wave.open(str(path), "rb") as wav:
        frames = wav.readframes(wav.getnframes())
        return stereo(frames), (wav.getnchannels(), wav.getframerate(), wav.getsampwidth())


def test_writer_header_is_valid_after_every_write(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    writer = WavWriter(path)
    audio, params = read_stereo(path)  # nothing written yet: an empty, valid file
    assert params == (2, 8000, 2)
    assert audio.shape == (0, 2)
    recorder = StereoRecorder(T0)
    for k in range(100):
        recorder.push(Side.CALLER, tone(4000), "PCMU", T0 + k * FRAME)
    writer.write(recorder.drain(T0 + 1.0))
    audio, _ = read_stereo(path)  # the writer still holds the file open
    assert audio.shape == (8000 - 1600, 2)
    assert sox_info(path) == {
        "channels": "2", "rate": "8000", "samples": "6400", "bits": "16",
        "encoding": "Signed Integer PCM",
    }
    writer.write(recorder.finish(T0 + 2.0))
    writer.write(b"")
    writer.close()
    writer.close()  # idempotent
    audio, _ = read_stereo(path)
    assert audio.shape == (16000, 2)
    assert path.stat().st_size == HEADER_BYTES + 16000 * 4
    assert sox_info(path)["samples"] == "16000"
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"\x00" * 4)


def test_truncated_file_is_valid_and_as_large_as_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "capped.wav"
    writer = WavWriter(path)
    cap = 20_000
    recorder = StereoRecorder(T0, max_bytes=cap)
    for k in range(150):
        recorder.push(Side.AGENT, tone(-1234), "PCMA", T0 + k * FRAME)
        timer = recorder.get_timer()
        if timer is not None and T0 + k * FRAME >= timer:
            writer.write(recorder.drain(T0 + k * FRAME))
    writer.write(recorder.finish(T0 + 3.0))
    writer.close()
    assert recorder.truncated
    assert path.stat().st_size == HEADER_BYTES + (cap - HEADER_BYTES) // 4 * 4
    audio, _ = read_stereo(path)
    assert audio.shape[0] == (cap - HEADER_BYTES) // 4
    assert int(sox_info(path)["samples"]) == audio.shape[0]


def test_recording_path_is_per_utc_day_and_session() -> None:
    path = recording_path(Path("/rec"), "0123abcd4567", 1_714_607_999.0)  # 23:59:59 UTC
    assert path == Path("/rec/20240501/0123abcd4567.wav")


# --- settings and options ----------------------------------------------------------------------


def test_recording_is_off_by_default_and_empty_means_off() -> None:
    assert load_settings().recordings_dir is None
    assert load_settings(recordings_dir="").recordings_dir is None
    assert RecordingOptions.from_settings(load_settings()) is None


def test_options_create_the_directory(tmp_path: Path) -> None:
    settings = load_settings(recordings_dir=str(tmp_path / "a" / "b"), recording_max_mb=0.5)
    options = RecordingOptions.from_settings(settings)
    assert options is not None
    assert options.directory == tmp_path / "a" / "b" and options.directory.is_dir()
    assert options.max_bytes == 500_000
    assert list(options.directory.iterdir()) == []  # the write check left nothing behind


def test_unusable_directory_is_a_one_line_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    settings = load_settings(recordings_dir=str(blocker / "rec"))
    with pytest.raises(ConfigError) as caught:
        RecordingOptions.from_settings(settings)
    message = str(caught.value)
    assert message.startswith("SIPAGENT_RECORDINGS_DIR: cannot write recordings to ")
    assert "\n" not in message and caught.value.setting == "SIPAGENT_RECORDINGS_DIR"


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf")])
def test_recording_max_mb_must_be_positive(value: float) -> None:
    with pytest.raises(ConfigError, match=r"^SIPAGENT_RECORDING_MAX_MB: must be a number"):
        load_settings(recording_max_mb=value)


# --- the asyncio shell -------------------------------------------------------------------------


async def feed(recording: CallRecording, seconds: float, agent_every: int = 2) -> None:
    """Caller frames every 20 ms, agent frames every ``agent_every``-th tick, for ``seconds``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for k in range(round(seconds / FRAME)):
        recording.caller(tone(3000))
        if k % agent_every == 0:
            recording.agent(tone(-3000))
        await asyncio.sleep(max(0.0, start + (k + 1) * FRAME - loop.time()))


async def test_shell_writes_as_the_call_runs(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    stops: list[str] = []
    began = loop.time()
    recording = CallRecording(
        WavWriter(tmp_path / "live.wav"),
        StereoRecorder(began, drain_interval=0.1, latency=0.05),
        loop,
        codec="PCMU",
        on_stopped=stops.append,
    )
    await feed(recording, 0.6)
    audio, _ = read_stereo(recording.path)  # mid-call, through the header alone
    assert audio.shape[0] > 0 and np.any(audio[:, 0])
    recording.sending = False  # on hold: what we send is not heard
    await feed(recording, 0.4)
    recording.close()
    elapsed = loop.time() - began
    recording.close()  # idempotent
    audio, _ = read_stereo(recording.path)
    assert 0.9 < audio.shape[0] / 8000 / elapsed <= 1.0
    assert stops == []
    half = audio.shape[0] // 2
    assert np.any(audio[: half // 2, 1]) and not np.any(audio[-800:, 1])


async def test_shell_stops_at_the_cap_once(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    stops: list[str] = []
    cap = HEADER_BYTES + 4 * 2000  # a quarter of a second
    recording = CallRecording(
        WavWriter(tmp_path / "capped.wav"),
        StereoRecorder(loop.time(), max_bytes=cap, drain_interval=0.1, latency=0.05),
        loop,
        codec="PCMA",
        on_stopped=stops.append,
    )
    await feed(recording, 0.6)
    recording.close()
    assert len(stops) == 1 and "size cap" in stops[0]
    assert recording.path.stat().st_size == cap
    audio, _ = read_stereo(recording.path)
    assert audio.shape[0] == 2000


async def test_shell_reports_the_cap_reached_by_the_last_write(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    stops: list[str] = []
    cap = HEADER_BYTES + 4 * 800  # 0.1 s; no drain before the call ends
    recording = CallRecording(
        WavWriter(tmp_path / "short.wav"),
        StereoRecorder(loop.time(), max_bytes=cap, drain_interval=60.0),
        loop,
        codec="PCMU",
        on_stopped=stops.append,
    )
    await feed(recording, 0.3)
    recording.close()
    recording.close()
    assert len(stops) == 1 and "size cap" in stops[0]
    assert read_stereo(recording.path)[0].shape[0] == 800


async def test_a_full_disk_stops_the_recording_with_a_valid_file(tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    with pytest.raises(OSError):
        WavWriter(Path("/dev/full"))  # not even the header fits
    loop = asyncio.get_running_loop()
    stops: list[str] = []
    writer = WavWriter(tmp_path / "full.wav")
    recording = CallRecording(
        writer, StereoRecorder(loop.time(), drain_interval=0.1, latency=0.05), loop,
        codec="PCMU", on_stopped=stops.append,
    )
    await feed(recording, 0.3)
    written = writer.data_bytes
    assert written > 0
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        os.dup2(full, writer._fd)  # type: ignore[arg-type]  # the disk fills up
    finally:
        os.close(full)
    await feed(recording, 0.3)
    recording.close()
    assert len(stops) == 1 and "write failed" in stops[0] and recording.recorder.truncated
    assert writer.closed and writer.data_bytes == written
    audio, _ = read_stereo(tmp_path / "full.wav")  # what was written before stays playable
    assert audio.size * 2 == written


# --- real calls through the server -------------------------------------------------------------


def speech_payloads() -> list[bytes]:
    return rtp_payloads(read_rtp(FIXTURES / "speech_pcmu.pcap"))


@pytest.fixture
async def history(tmp_path: Path) -> AsyncIterator[HistoryStore]:
    store = await open_history(f"sqlite:///{tmp_path}/history.sqlite3")
    yield store
    await store.close()


async def recorded_call(
    server: Server, history: HistoryStore, *, recording: bool = True
) -> tuple[str, Softphone, float]:
    """Call the echo model, stream the speech fixture, hang up; (session id, phone, seconds)."""
    recorder = HistoryRecorder(history, server.registry)
    phone = Softphone(server=("127.0.0.1", server.transport.port))
    await phone.open()
    loop = asyncio.get_running_loop()
    try:
        assert (await phone.call()).status == 200
        began = loop.time()
        await phone.stream(speech_payloads())
        await asyncio.sleep(0.6)  # the echo's tail
        (record,) = server.registry.active()
        if recording:
            assert record.recording_path is not None
            live, _ = read_stereo(Path(record.recording_path))  # written while the call runs
            assert live.shape[0] > 8000
        else:
            assert record.recording_path is None
        assert (await phone.hangup()).status == 200
        elapsed = loop.time() - began
        await wait_for(lambda: not server.calls, what="the call to end")
    finally:
        await phone.close()
        await recorder.close()
    return record.session_id, phone, elapsed


async def test_a_call_is_recorded_caller_left_agent_right(
    tmp_path: Path, history: HistoryStore
) -> None:
    recordings = tmp_path / "recordings"
    server = await start_server(recordings_dir=str(recordings))
    try:
        session_id, phone, elapsed = await recorded_call(server, history)
    finally:
        await server.stop()
    record = server.registry.get(session_id)
    assert record is not None and record.recording_path is not None
    path = Path(record.recording_path)
    assert path.parent.parent == recordings and path.name == f"{session_id}.wav"
    assert not record.recording_truncated

    audio, params = read_stereo(path)
    assert params == (2, 8000, 2)
    duration = audio.shape[0] / 8000
    print(f"recording {duration:.2f} s for a call of {elapsed:.2f} s")
    assert 0.85 < duration / elapsed < 1.15
    assert sox_info(path)["samples"] == str(audio.shape[0])

    sent = ulaw_decode(b"".join(speech_payloads()))
    left = cross_correlate(sent, audio[:, 0], max_lag_ms=1000)
    right = cross_correlate(sent, audio[:, 1], max_lag_ms=1000)
    echo = ulaw_decode(b"".join(r.packet.payload for r in phone.received
                                if r.packet.payload_type == 0))
    right_is_echo = cross_correlate(echo, audio[:, 1], max_lag_ms=1000)
    print(f"left~speech {left}, right~speech {right}, right~echo heard {right_is_echo}")
    assert left.peak >= 0.9 and right.peak >= 0.9 and right_is_echo.peak >= 0.9
    # The echo model replies in the tick the frame leaves the jitter buffer: never before it.
    assert right.lag_samples >= left.lag_samples
    assert not is_silence(audio[:, 0]) and not is_silence(audio[:, 1])

    row = await history.get(session_id)
    assert row is not None
    assert (row["recording_path"], row["recording_truncated"]) == (str(path), False)

    app = create_app(server.registry, server, token=TOKEN, history=HistoryPages(history),
                     recordings_dir=recordings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        download = await client.get(f"/sessions/{session_id}/recording", headers=AUTH)
        assert download.status_code == 200, download.text
        assert download.headers["content-type"] == "audio/wav"
        assert download.content == path.read_bytes()
        refused = await client.get(f"/sessions/{session_id}/recording")
        assert refused.status_code == 401
        page = (await client.get("/history", headers=AUTH)).json()
        (listed,) = page["calls"]
        assert listed["recording_url"] == f"/sessions/{session_id}/recording"
        assert listed["recording_path"] == str(path)
        detail = (await client.get(f"/sessions/{session_id}", headers=AUTH)).json()
        assert detail["recording_url"] == f"/sessions/{session_id}/recording"
    # Once the registry has forgotten the call, the history store answers.
    app = create_app(CallRegistry(), server, token=TOKEN, history=HistoryPages(history),
                     recordings_dir=recordings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://admin"
    ) as client:
        again = await client.get(f"/sessions/{session_id}/recording", headers=AUTH)
        assert again.status_code == 200 and again.content == path.read_bytes()


async def test_the_size_cap_ends_the_recording_not_the_call(
    tmp_path: Path, history: HistoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    server = await start_server(recordings_dir=str(tmp_path), recording_max_mb=0.04)
    try:
        session_id, phone, elapsed = await recorded_call(server, history)
    finally:
        await server.stop()
    record = server.registry.get(session_id)
    assert record is not None and record.recording_truncated
    assert record.end_reason == "remote-bye"
    path = Path(record.recording_path or "")
    assert path.stat().st_size == HEADER_BYTES + (40_000 - HEADER_BYTES) // 4 * 4
    audio, _ = read_stereo(path)
    assert audio.shape[0] / 8000 < elapsed / 2
    # The call went on: the echo kept coming after the recording stopped.
    assert len(phone.received) / 50 > 0.9 * elapsed
    warnings = [r for r in caplog.records if "recording stopped" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    row = await history.get(session_id)
    assert row is not None and row["recording_truncated"] is True


async def test_without_recordings_dir_nothing_is_recorded(
    tmp_path: Path, history: HistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    server = await start_server()
    try:
        session_id, _, _ = await recorded_call(server, history, recording=False)
    finally:
        await server.stop()
    assert list(tmp_path.rglob("*.wav")) == []
    row = await history.get(session_id)
    assert row is not None and row["recording_path"] is None
