"""The Call object over real RTP sockets on 127.0.0.1, with real models and a real registry.

The SIP side is a Dialog built from a literal INVITE; the caller's media is a plain asyncio
UDP socket that sends RTP and records what comes back. Models are the real EchoModel and a
small scripted ModelSession written here that lets a test emit model events.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import socket
import time
import uuid
import wave
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from aiortc.rtp import RtpPacket

from bridge.base import (
    AudioOut,
    CallContext,
    ModelClosed,
    ModelError,
    ModelSession,
    ModelSink,
    SpeechStarted,
    SpeechStopped,
    Transcript,
)
from bridge.echo import EchoModel
from bridge.fallback import FALLBACK_TEXT, fallback_frames
from bridge.realtime import ToolCallFinished
from rtp.endpoint import PortAllocator, TickGroups
from sipagent.call import Call, ModelLink, ObservationHandler, WatchedPlayout
from sipagent.dialog import Dialog
from sipagent.message import Request, parse_message
from sipagent.offer_answer import Negotiated, negotiate
from sipagent.recording import RecordingOptions
from sipagent.registry import CallRecord, CallRegistry
from sipagent.sdp import Direction, SessionDescription
from sipagent.transaction import Destination
from tests.peers.sipp import free_media_port

LOCALHOST = "127.0.0.1"
WAIT = 5.0
PCMU_SILENCE = b"\xff" * 160

OFFER = (
    "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na={direction}\r\n"
)

INVITE = (
    "INVITE sip:echo@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKcalltest;rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: \"Alice\" <sip:+15551234567@127.0.0.1:5099>;tag=caller1\r\n"
    "To: <sip:echo@127.0.0.1:5060>\r\n"
    "Call-ID: call-test-1@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:alice@127.0.0.1:5099>\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {length}\r\n\r\n{body}"
)


# -- peers ------------------------------------------------------------------------------------


class MediaPeer(asyncio.DatagramProtocol):
    """The caller's RTP socket: sends packets, keeps every RTP packet that comes back."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.received: list[RtpPacket] = []
        self.seq = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) >= 2 and 200 <= data[1] <= 204:
            return  # RTCP
        self.received.append(RtpPacket.parse(data))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def payloads(self) -> list[bytes]:
        return [bytes(p.payload) for p in self.received if p.payload_type == 0]

    def send(self, to: tuple[str, int], payload: bytes, *, payload_type: int = 0,
             timestamp: int | None = None, marker: bool = False) -> None:
        assert self.transport is not None
        packet = RtpPacket(payload_type=payload_type, marker=int(marker),
                           sequence_number=self.seq, ssrc=0x5EED,
                           timestamp=self.seq * 160 if timestamp is None else timestamp,
                           payload=payload)
        self.seq += 1
        self.transport.sendto(packet.serialize(), to)

    async def stream(self, to: tuple[str, int], payloads: list[bytes]) -> None:
        """One payload per 20 ms on an absolute grid."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for index, payload in enumerate(payloads):
            self.send(to, payload, marker=index == 0)
            delay = start + (index + 1) * 0.020 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)

    async def send_dtmf(self, to: tuple[str, int], digit: str) -> None:
        """One RFC 4733 event (payload type 101): 3 packets, then the end packet 3 times."""
        event = "0123456789*#ABCD".index(digit)
        timestamp = self.seq * 160
        for index in range(6):
            end = index >= 3
            duration = min(index + 1, 4) * 160
            payload = bytes([event, (0x80 if end else 0) | 10]) + duration.to_bytes(2, "big")
            self.send(to, payload, payload_type=101, timestamp=timestamp, marker=index == 0)
            await asyncio.sleep(0.020)


@dataclass
class ScriptedModel(ModelSession):
    """A model whose events the test emits through ``sink``; records what the call asks."""

    name = "scripted"
    context: CallContext | None = None
    sink: ModelSink | None = None
    pushed: int = 0
    dtmf: list[str] = field(default_factory=list)
    interrupted: list[tuple[str | None, int]] = field(default_factory=list)
    closes: int = 0
    fail_close: bool = False
    gate: asyncio.Event | None = None
    fail_open: Exception | None = None
    observer: ObservationHandler | None = None

    async def open(self, context: CallContext, sink: ModelSink) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_open is not None:
            raise self.fail_open
        self.context = context
        self.sink = sink

    def push_audio(self, payload: bytes) -> None:
        self.pushed += 1

    def send_dtmf(self, digit: str) -> None:
        self.dtmf.append(digit)

    def audio_interrupted(self, item_id: str | None, played_ms: int) -> None:
        self.interrupted.append((item_id, played_ms))

    async def close(self) -> None:
        self.closes += 1
        self.sink = None
        if self.fail_close:
            raise RuntimeError("model close exploded")

    def emit(self, *events: object) -> None:
        assert self.sink is not None, "model not open"
        for event in events:
            self.sink(event)  # type: ignore[arg-type]


# -- helpers ----------------------------------------------------------------------------------


async def wait_for(condition: object, timeout: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def invite_for(media_port: int, direction: str = "sendrecv") -> Request:
    body = OFFER.format(port=media_port, direction=direction)
    message = parse_message(INVITE.format(length=len(body), body=body).encode())
    assert isinstance(message, Request)
    return message


@dataclass
class Harness:
    """A registry, a one-pair port range, the caller's media socket and the hangups seen."""

    registry: CallRegistry
    ports: PortAllocator
    peer: MediaPeer
    hangups: list[str] = field(default_factory=list)
    transfers: list[tuple[str, str]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    models: list[ScriptedModel] = field(default_factory=list)
    """Sessions made by :meth:`factory`, in order."""

    def factory(self, *, fail_open: Exception | None = None) -> Callable[..., ModelSession]:
        """A model factory making ScriptedModels (failing to open when told to)."""

        def make(observer: ObservationHandler) -> ModelSession:
            model = ScriptedModel(fail_open=fail_open, observer=observer)
            self.models.append(model)
            return model

        return make

    def call(self, model: ModelSession | None = None, *, inactivity: float = 30.0,
             hold_inactivity: float = 3600.0,
             model_factory: Callable[..., ModelSession] | None = None,
             max_reconnects: int = 0, transfer_target: str | None = None,
             recordings: RecordingOptions | None = None,
             ticks: TickGroups | None = None) -> Call:
        invite = invite_for(self.peer.port)
        dialog = Dialog(invite, local_tag="agent1", transport="udp",
                        source=Destination("udp", LOCALHOST, 5099),
                        contact="<sip:agent@127.0.0.1:5060>")
        record = CallRecord(
            session_id=uuid.uuid4().hex[:12],
            call_id=dialog.call_id,
            from_uri=str(invite.from_.uri),
            to_uri=str(invite.to.uri),
            caller_number=invite.from_.uri.user,
            created_at=time.time(),
            model="scripted" if model is None else model.name,
        )
        self.registry.add(record)
        call = Call(
            dialog=dialog, record=record, registry=self.registry, model=model,
            model_factory=model_factory, local_host=LOCALHOST,
            rtp_port=self.ports.allocate(), ports=self.ports,
            inactivity_timeout=inactivity, hold_inactivity_timeout=hold_inactivity,
            on_hangup=lambda _call, reason: self.hangups.append(reason),
            open_timeout=2.0, max_reconnects=max_reconnects, transfer_target=transfer_target,
            on_transfer=lambda _call, target, reason: self.transfers.append((target, reason)),
            recordings=recordings, ticks=ticks,
        )
        self.calls.append(call)
        return call

    def negotiate(self, call: Call, direction: str = "sendrecv") -> Negotiated:
        call.sdp_version += 1
        return negotiate(
            SessionDescription.parse(invite_for(self.peer.port, direction).body),
            local_host=LOCALHOST, local_port=call.rtp_port,
            session_id=call.sdp_session_id, version=call.sdp_version,
        )

    async def answered(self, call: Call, direction: str = "sendrecv") -> tuple[str, int]:
        """Open the model, start media, mark answered; return our RTP address."""
        await call.open_model()
        await call.start_media(self.negotiate(call, direction))
        call.mark_answered()
        return (LOCALHOST, call.rtp_port)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(MediaPeer, local_addr=(LOCALHOST, 0))
    base = free_media_port(count=2)
    harness = Harness(CallRegistry(), PortAllocator(base, base + 2), peer)
    yield harness
    for call in harness.calls:
        await call.close("test-teardown")
    assert peer.transport is not None
    peer.transport.close()


def port_is_free(port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((LOCALHOST, port))
    except OSError:
        return False
    return True


# -- media ------------------------------------------------------------------------------------


async def test_rtp_is_echoed_back_by_the_echo_model(harness: Harness) -> None:
    model = EchoModel()
    call = harness.call(model)
    ours = await harness.answered(call)
    assert model.context is not None
    assert model.context.call_id == "call-test-1@127.0.0.1"
    assert model.context.caller == "+15551234567" and model.context.codec == "PCMU"
    assert call.endpoint is not None and call.endpoint.port == call.rtp_port
    record = call.record
    assert record.state == "answered" and record.codec == "PCMU"
    assert record.remote_addr == (LOCALHOST, harness.peer.port)

    sent = [bytes([0x10 + i]) * 160 for i in range(40)]
    await harness.peer.stream(ours, sent)
    await wait_for(lambda: sent[-1] in harness.peer.payloads())
    echoed = [p for p in harness.peer.payloads() if p in sent]
    assert echoed == sent, "every frame comes back once, in order"

    call.refresh_stats()
    assert record.rtp.packets_in == len(sent)
    assert record.rtp.packets_out >= len(sent)
    assert harness.registry.active() == [record]


async def test_the_call_ticks_in_the_phase_it_was_given_and_gives_it_back(
    harness: Harness,
) -> None:
    ticks = TickGroups()
    busy = [ticks.place(0.0) for _ in range(19)]  # every phase but 19 ms is taken
    call = harness.call(EchoModel(), ticks=ticks)
    ours = await harness.answered(call)
    assert ticks.phases.counts == (1,) * 20
    assert call.endpoint is not None
    assert round((call.endpoint.session.tick_start % 0.020) * 1000) % 20 == 19
    assert ticks.members() == 1

    sent = [bytes([0x40 + i]) * 160 for i in range(10)]
    await harness.peer.stream(ours, sent)
    await wait_for(lambda: sent[-1] in harness.peer.payloads())
    assert [p for p in harness.peer.payloads() if p in sent] == sent

    await call.close("test")
    assert ticks.phases.counts == (1,) * 19 + (0,)
    assert ticks.members() == 0
    await call.close("again")  # idempotent: the phase is given back once
    for start in busy:
        ticks.release(start)
    assert ticks.phases.counts == (0,) * 20


@pytest.mark.parametrize("kind", ["echo", "scripted-from-factory"])
async def test_an_ended_call_is_freed_without_the_cycle_collector(
    harness: Harness, kind: str
) -> None:
    # The model keeps its sink and observer, the endpoint its event handler, the playout its
    # report: none may hold the call, or every ended call waits for a full collection.
    if kind == "echo":
        call = harness.call(EchoModel(), ticks=TickGroups())
    else:
        call = harness.call(None, model_factory=harness.factory(), ticks=TickGroups())
    ours = await harness.answered(call)
    sent = [bytes([0x60 + i]) * 160 for i in range(10)]
    await harness.peer.stream(ours, sent)
    if kind == "echo":
        await wait_for(lambda: sent[-1] in harness.peer.payloads())
    else:  # a model frame through the sink and the watched playout
        harness.models[0].emit(AudioOut(payload=b"\x77" * 160, item_id="r1"))
        await wait_for(lambda: b"\x77" * 160 in harness.peer.payloads())
    await call.close("test")
    harness.calls.remove(call)
    ref = weakref.ref(call)
    model_ref = weakref.ref(call.model)
    harness.models.clear()
    await asyncio.sleep(0.05)  # the sockets' close callbacks have run
    gc.disable()
    try:
        del call
        assert ref() is None, [type(r).__name__ for r in gc.get_referrers(ref())]
        assert model_ref() is None
    finally:
        gc.enable()


async def test_dtmf_over_rtp_and_receive_dtmf_land_in_the_record(harness: Harness) -> None:
    model = ScriptedModel()
    call = harness.call(model)
    ours = await harness.answered(call)
    await harness.peer.stream(ours, [PCMU_SILENCE] * 3)
    await harness.peer.send_dtmf(ours, "7")
    await wait_for(lambda: call.record.dtmf == ["7"])
    call.receive_dtmf("#")
    assert call.record.dtmf == ["7", "#"]
    assert model.dtmf == ["7", "#"], "the model hears the digits too"


async def test_dtmf_with_the_echo_model_becomes_a_transcript_line(harness: Harness) -> None:
    call = harness.call(EchoModel())
    call.receive_dtmf("3")  # before the model is open: recorded, not forwarded
    await harness.answered(call)
    call.receive_dtmf("5")
    assert call.record.dtmf == ["3", "5"]
    assert [line["text"] for line in call.record.transcript] == ["DTMF 5"]
    assert call.record.transcript[0]["role"] == "caller"


async def test_final_transcripts_are_kept_and_deltas_are_not(harness: Harness) -> None:
    model = ScriptedModel()
    call = harness.call(model)
    await call.open_model()
    model.emit(
        Transcript(role="agent", text="Hel", final=False),
        Transcript(role="agent", text="Hello!", final=True),
        SpeechStopped(),
    )
    assert [(t["role"], t["text"]) for t in call.record.transcript] == [("agent", "Hello!")]
    assert not harness.hangups


# -- barge-in ---------------------------------------------------------------------------------


def frames_of(peer: MediaPeer, payload: bytes) -> int:
    return sum(1 for p in peer.payloads() if p == payload)


async def test_barge_in_flushes_playout_and_reports_the_played_amount(
    harness: Harness,
) -> None:
    model = ScriptedModel()
    call = harness.call(model)
    await harness.answered(call)
    assert call.endpoint is not None
    playout = call.endpoint.session.playout
    speech = b"\x11" * 160
    model.emit(*[AudioOut(payload=speech, item_id="resp-1") for _ in range(100)])
    await wait_for(lambda: frames_of(harness.peer, speech) >= 5)

    model.emit(SpeechStarted())
    assert len(playout) == 0, "the queue is flushed at once"
    assert len(model.interrupted) == 1
    item, played_ms = model.interrupted[0]
    assert item == "resp-1"
    assert 100 <= played_ms < 100 * 20
    # Silence follows the flush, and what reached the caller is exactly what was reported.
    count = len(harness.peer.received)
    await wait_for(lambda: PCMU_SILENCE in harness.peer.payloads()[count:])
    assert frames_of(harness.peer, speech) * 20 == played_ms


async def test_barge_in_before_any_frame_played_names_the_queued_item(harness: Harness) -> None:
    model = ScriptedModel()
    call = harness.call(model)
    await harness.answered(call)
    speech = b"\x22" * 160
    model.emit(*[AudioOut(payload=speech, item_id="resp-2") for _ in range(3)], SpeechStarted())
    assert model.interrupted == [("resp-2", 0)]
    count = len(harness.peer.received)
    await wait_for(lambda: len(harness.peer.received) >= count + 3)
    assert frames_of(harness.peer, speech) == 0


async def test_barge_in_names_the_item_being_played_not_the_finished_one(
    harness: Harness,
) -> None:
    model = ScriptedModel()
    call = harness.call(model)
    await harness.answered(call)
    first, second = b"\x33" * 160, b"\x44" * 160
    model.emit(*[AudioOut(payload=first, item_id="a") for _ in range(2)])
    model.emit(*[AudioOut(payload=second, item_id="b") for _ in range(100)])
    await wait_for(lambda: frames_of(harness.peer, second) >= 3)
    model.emit(SpeechStarted())
    item, played_ms = model.interrupted[0]
    assert item == "b" and 60 <= played_ms < 2000
    # A second barge-in right after: nothing is playing any more.
    model.emit(SpeechStarted())
    assert model.interrupted[1] == (None, 0)


async def test_barge_in_after_the_queue_ran_dry_reports_the_item_in_full(
    harness: Harness,
) -> None:
    model = ScriptedModel()
    call = harness.call(model)
    await harness.answered(call)
    speech = b"\x55" * 160
    model.emit(*[AudioOut(payload=speech, item_id="c") for _ in range(3)])
    await wait_for(lambda: frames_of(harness.peer, speech) == 3)
    # The model may still be generating "c": it is truncated where the caller stopped hearing.
    model.emit(SpeechStarted())
    assert model.interrupted == [("c", 60)]


# -- model failures ---------------------------------------------------------------------------

SHORT_PROMPT = tuple(bytes([0x60 + i]) * 160 for i in range(5))


@pytest.fixture
def short_prompt(monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, ...]:
    """A 100 ms fallback prompt, so failure tests do not sit through the real 4.5 s one."""
    monkeypatch.setattr("sipagent.call.fallback_frames", lambda codec: SHORT_PROMPT)
    return SHORT_PROMPT


def system_lines(call: Call) -> list[tuple[object, object]]:
    return [(line["event"], line["text"]) for line in call.record.transcript
            if line["role"] == "system"]


def test_fallback_prompt_assets_are_whole_frames_of_both_codecs() -> None:
    ulaw, alaw = fallback_frames("PCMU"), fallback_frames("pcma")
    assert len(ulaw) == len(alaw) and 150 <= len(ulaw) <= 300  # 3 to 6 s
    assert all(len(frame) == 160 for frame in ulaw + alaw)
    assert ulaw != alaw
    assert sum(1 for frame in ulaw if frame != PCMU_SILENCE) > len(ulaw) // 2
    assert fallback_frames("G722") == ()
    assert "unavailable" in FALLBACK_TEXT


async def test_fatal_model_error_without_media_hangs_up_at_once(harness: Harness) -> None:
    model = ScriptedModel()
    call = harness.call(model)
    await call.open_model()
    model.emit(ModelError(message="rate limited, retrying", fatal=False))
    await asyncio.sleep(0.05)
    assert harness.hangups == [] and call.link is ModelLink.BRIDGED
    model.emit(ModelError(message="invalid api key", fatal=True))
    await wait_for(lambda: harness.hangups)
    assert harness.hangups == ["model-error: invalid api key"]
    assert system_lines(call) == [("model-lost", "invalid api key")]
    assert model.closes == 1, "the failed session is closed at once"


async def test_model_closed_plays_the_whole_prompt_then_hangs_up(harness: Harness) -> None:
    model = ScriptedModel()
    call = harness.call(model)
    ours = await harness.answered(call)
    streaming = asyncio.get_running_loop().create_task(
        harness.peer.stream(ours, [PCMU_SILENCE] * 300))
    try:
        model.emit(*[AudioOut(payload=b"\x11" * 160, item_id="r") for _ in range(200)])
        await wait_for(lambda: frames_of(harness.peer, b"\x11" * 160) >= 3)
        model.emit(ModelClosed(reason="Realtime connection closed (code 1006)"))
        pushed = model.pushed
        prompt = fallback_frames("PCMU")
        await wait_for(lambda: harness.hangups, timeout=10)
        assert harness.hangups == ["model-error: Realtime connection closed (code 1006)"]
        payloads = harness.peer.payloads()
        start = payloads.index(prompt[0])
        assert payloads[start:start + len(prompt)] == list(prompt), "the prompt, in full"
        assert b"\x11" * 160 not in payloads[start:], "the lost model's audio is dropped"
        assert model.pushed == pushed, "the failed model hears nothing more"
    finally:
        streaming.cancel()


async def test_model_closed_rebridges_to_a_new_session(
    harness: Harness, short_prompt: tuple[bytes, ...]
) -> None:
    call = harness.call(model_factory=harness.factory(), max_reconnects=1)
    ours = await harness.answered(call)
    first = harness.models[0]
    stale = first.sink
    assert stale is not None
    first.emit(ModelClosed(reason="session expired"))
    await wait_for(lambda: call.link is ModelLink.BRIDGED and len(harness.models) == 2)
    second = harness.models[1]
    assert call.model is second and second.context is not None
    assert second.observer is not None, "the new session reports to the call too"
    assert first.closes == 1 and call.reconnects == 1
    assert system_lines(call) == [("model-lost", "session expired"),
                                  ("rebridged", "session expired")]
    assert frames_of(harness.peer, short_prompt[-1]) == 1
    await harness.peer.stream(ours, [PCMU_SILENCE] * 5)
    await wait_for(lambda: second.pushed > 0)
    stale(Transcript(role="agent", text="from the grave", final=True))
    assert "from the grave" not in [line["text"] for line in call.record.transcript]
    assert harness.hangups == []


async def test_events_of_the_new_session_wait_for_the_prompt(
    harness: Harness, short_prompt: tuple[bytes, ...]
) -> None:
    call = harness.call(model_factory=harness.factory(), max_reconnects=1)
    await harness.answered(call)
    harness.models[0].emit(ModelClosed(reason="drop"))
    await wait_for(lambda: len(harness.models) == 2 and harness.models[1].sink is not None)
    greeting = b"\x77" * 160
    harness.models[1].emit(AudioOut(payload=greeting, item_id="g"),
                           Transcript(role="agent", text="Hi again", final=True))
    assert call.link is ModelLink.FALLBACK
    await wait_for(lambda: frames_of(harness.peer, greeting) == 1)
    payloads = harness.peer.payloads()
    assert payloads.index(short_prompt[-1]) < payloads.index(greeting), "prompt first"
    assert call.record.transcript[-1]["text"] == "Hi again"


async def test_reconnect_failure_ends_the_call(
    harness: Harness, short_prompt: tuple[bytes, ...]
) -> None:
    call = harness.call(ScriptedModel(), max_reconnects=1,
                        model_factory=harness.factory(fail_open=ConnectionError("refused")))
    await harness.answered(call)
    assert isinstance(call.model, ScriptedModel) and call.model.sink is not None
    call.model.emit(ModelError(message="server_error: boom", fatal=True))
    await wait_for(lambda: harness.hangups)
    assert harness.hangups == ["model-error: server_error: boom"]
    assert [event for event, _ in system_lines(call)] == ["model-lost", "rebridge-failed"]
    assert frames_of(harness.peer, short_prompt[-1]) == 1


async def test_reconnects_are_bounded_per_call(
    harness: Harness, short_prompt: tuple[bytes, ...]
) -> None:
    call = harness.call(model_factory=harness.factory(), max_reconnects=1)
    await harness.answered(call)
    harness.models[0].emit(ModelClosed(reason="first drop"))
    await wait_for(lambda: call.link is ModelLink.BRIDGED and len(harness.models) == 2)
    harness.models[1].emit(ModelClosed(reason="second drop"))
    await wait_for(lambda: harness.hangups)
    assert harness.hangups == ["model-error: second drop"]
    assert len(harness.models) == 2


async def test_model_unavailable_plays_the_prompt_then_transfers(
    harness: Harness, short_prompt: tuple[bytes, ...]
) -> None:
    call = harness.call(ScriptedModel(fail_open=ConnectionError("nobody home")),
                        transfer_target="sip:operator@127.0.0.1")
    with pytest.raises(ConnectionError):
        await call.open_model()
    await call.start_media(harness.negotiate(call))
    call.mark_answered()
    call.model_unavailable("refused", "nobody home")
    call.model_unavailable("refused", "twice")  # ignored: already falling back
    await wait_for(lambda: harness.transfers)
    assert harness.transfers == [("sip:operator@127.0.0.1", "model-unavailable: refused")]
    assert harness.hangups == []
    assert system_lines(call) == [("model-unavailable", "refused: nobody home")]
    assert [p for p in harness.peer.payloads() if p in short_prompt] == list(short_prompt)


async def test_model_unavailable_waits_for_late_media(
    harness: Harness, short_prompt: tuple[bytes, ...]
) -> None:
    call = harness.call(ScriptedModel())
    call.pending_offer = b"v=0"  # late offer: media starts with the ACK
    call.model_unavailable("timeout", "no answer")
    await asyncio.sleep(0.1)
    assert harness.hangups == []
    await call.start_media(harness.negotiate(call))
    await wait_for(lambda: harness.hangups)
    assert harness.hangups == ["model-unavailable: timeout"]
    assert frames_of(harness.peer, short_prompt[0]) == 1


async def test_close_during_the_prompt_stops_everything(
    harness: Harness, short_prompt: tuple[bytes, ...]
) -> None:
    call = harness.call(model_factory=harness.factory(), max_reconnects=1)
    await harness.answered(call)
    harness.models[0].emit(ModelClosed(reason="drop"))
    await asyncio.sleep(0)
    await call.close("remote-bye")
    await asyncio.sleep(0.3)
    assert harness.hangups == [] and call.link is ModelLink.CLOSED
    assert all(model.closes >= 1 for model in harness.models)
    assert harness.ports.in_use == 0


# -- records ----------------------------------------------------------------------------------


async def test_turn_latency_runs_to_the_first_packet_of_the_reply(harness: Harness) -> None:
    model = ScriptedModel()
    call = harness.call(model)
    await harness.answered(call)
    earlier, reply = b"\x31" * 160, b"\x32" * 160
    model.emit(*[AudioOut(payload=earlier, item_id="greeting") for _ in range(3)])
    before = time.time()
    model.emit(SpeechStopped())
    model.emit(AudioOut(payload=earlier, item_id="greeting"))  # the old item: not the reply
    await asyncio.sleep(0.15)
    model.emit(*[AudioOut(payload=reply, item_id="reply") for _ in range(3)])
    await wait_for(lambda: call.record.turns)
    (turn,) = call.record.turns
    assert turn["item_id"] == "reply"
    assert 150 <= turn["latency_ms"] <= 150 + 80  # type: ignore[operator]
    assert before <= turn["speech_stopped_at"] < turn["first_audio_at"] <= time.time()  # type: ignore[operator]
    latency = (turn["first_audio_at"] - turn["speech_stopped_at"]) * 1000  # type: ignore[operator]
    assert abs(latency - turn["latency_ms"]) < 1  # type: ignore[operator]


async def test_barge_in_before_the_reply_is_heard_times_no_turn(harness: Harness) -> None:
    model = ScriptedModel()
    call = harness.call(model)
    await harness.answered(call)
    model.emit(SpeechStopped(), SpeechStarted())
    model.emit(*[AudioOut(payload=b"\x41" * 160, item_id="late") for _ in range(3)])
    await wait_for(lambda: frames_of(harness.peer, b"\x41" * 160) == 3)
    assert call.record.turns == []


async def test_finished_tool_calls_are_recorded(harness: Harness) -> None:
    call = harness.call(ScriptedModel())
    call.observe(ToolCallFinished(call_id="c1", name="get_weather", arguments='{"city": "Oslo"}',
                                  output='{"sky": "grey"}', error_type=None, duration_ms=12.34))
    call.observe(ToolCallFinished(
        call_id="c2", name="slow", arguments="not json",
        output='{"error": {"type": "timeout", "message": "too slow"}}', error_type="timeout",
        duration_ms=5000.0))
    first, second = call.record.tool_calls
    assert first["name"] == "get_weather" and first["arguments"] == {"city": "Oslo"}
    assert first["result"] == {"sky": "grey"} and first["error"] is None
    assert first["duration_ms"] == 12.3
    assert second["arguments"] == "not json" and second["result"] is None
    assert second["error"] == {"type": "timeout", "message": "too slow"}


def test_watched_playout_reports_each_tagged_frame_sent() -> None:
    sent: list[tuple[str, int]] = []
    playout = WatchedPlayout(20, lambda item, played: sent.append((item, played)))
    playout.push(b"a", "x")
    playout.push(b"b", None)
    playout.push(b"c", "x")
    assert [playout.pop() for _ in range(4)] == [b"a", b"b", b"c", None]
    assert sent == [("x", 20), ("x", 40)]
    frames: list[bytes] = []
    playout.on_audio = frames.append  # the recording hears every frame that leaves
    playout.push(b"d", None)
    playout.push(b"e", "y")
    assert [playout.pop() for _ in range(3)] == [b"d", b"e", None]
    assert frames == [b"d", b"e"]


# -- recording --------------------------------------------------------------------------------


def channel_levels(path: Path) -> np.ndarray:
    """Peak level of (left, right) per 20 ms of a stereo WAV."""
    with wave.open(str(path), "rb") as wav:
        audio = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    whole = audio[: audio.shape[0] // 160 * 160].reshape(-1, 160, 2)
    return np.abs(whole.astype(np.int32)).max(axis=1)


async def test_recording_follows_the_call_and_skips_what_hold_keeps_unheard(
    harness: Harness, tmp_path: Path
) -> None:
    options = RecordingOptions(directory=tmp_path, max_bytes=10**7)
    call = harness.call(EchoModel(), recordings=options)
    ours = await harness.answered(call)
    assert call.recording is not None
    path = Path(call.record.recording_path or "")
    assert path == call.recording.path and path.name == f"{call.session_id}.wav"
    loud = b"\x80" * 160  # μ-law full scale, negative
    await harness.peer.stream(ours, [loud] * 25)
    call.apply_negotiation(harness.negotiate(call, "sendonly"))  # the caller holds us
    assert not call.recording.sending
    await harness.peer.stream(ours, [loud] * 25)
    call.apply_negotiation(harness.negotiate(call, "sendrecv"))
    assert call.recording.sending
    await harness.peer.stream(ours, [loud] * 25)
    await asyncio.sleep(0.2)
    await call.close("bye")
    assert not call.record.recording_truncated

    levels = channel_levels(path)
    left, right = levels[:, 0] > 10000, levels[:, 1] > 10000
    print(f"frames: {len(levels)}, caller loud {left.sum()}, agent loud {right.sum()}")
    # The caller is recorded all along, hold or not; our echo only while it reaches the
    # caller (25 of the 75 frames are held): one long stretch of caller without agent.
    assert left.sum() >= 60 and right.sum() >= 35
    unheard = [len(list(run)) for loud, run in itertools.groupby(left & ~right) if loud]
    assert max(unheard) >= 15, unheard


async def test_a_recording_that_cannot_start_costs_the_recording_only(
    harness: Harness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    options = RecordingOptions(directory=blocker, max_bytes=10**6)
    call = harness.call(EchoModel(), recordings=options)
    ours = await harness.answered(call)
    assert call.recording is None and call.record.recording_path is None
    assert any("cannot record the call" in r.getMessage() for r in caplog.records)
    sent = [bytes([0x10 + i]) * 160 for i in range(10)]
    await harness.peer.stream(ours, sent)
    await wait_for(lambda: sent[-1] in harness.peer.payloads())


# -- hold -------------------------------------------------------------------------------------


async def test_hold_by_sendonly_offer_raises_the_inactivity_timeout(harness: Harness) -> None:
    call = harness.call(ScriptedModel(), inactivity=0.25, hold_inactivity=3600)
    await harness.answered(call)
    # No await between answering and holding: the 0.25 s timeout cannot fire first.
    hold = harness.negotiate(call, "sendonly")
    assert hold.direction == Direction.RECVONLY
    call.apply_negotiation(hold)
    assert call.record.state == "held"
    await asyncio.sleep(1.0)  # four times the active-call timeout, with no RTP at all
    assert harness.hangups == [], "a held call is not hung up for silence"

    call.apply_negotiation(harness.negotiate(call, "sendrecv"))
    assert call.record.state == "answered"
    await wait_for(lambda: harness.hangups == ["rtp-timeout"])


async def test_call_answered_on_hold_is_marked_held(harness: Harness) -> None:
    call = harness.call(ScriptedModel())
    await harness.answered(call, "inactive")
    assert call.record.state == "held"


async def test_rtp_inactivity_hangs_up_once(harness: Harness) -> None:
    call = harness.call(ScriptedModel(), inactivity=0.2)
    ours = await harness.answered(call)
    await harness.peer.stream(ours, [PCMU_SILENCE] * 3)
    await wait_for(lambda: harness.hangups)
    await asyncio.sleep(0.5)
    assert harness.hangups == ["rtp-timeout"]


# -- teardown ---------------------------------------------------------------------------------


async def test_close_releases_everything(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    model = EchoModel()
    call = harness.call(model)
    await harness.answered(call)
    port = call.rtp_port
    assert harness.ports.in_use == 1
    record = call.record
    with caplog.at_level(logging.INFO, logger="sipagent.call"):
        await call.close("remote-bye")
    assert harness.ports.in_use == 0
    assert port_is_free(port) and port_is_free(port + 1)
    assert model.closed
    assert record.end_reason == "remote-bye" and record.ended_at is not None
    assert record.state == "ended"
    assert harness.registry.active() == []
    assert harness.registry.get(record.session_id) is record
    assert [getattr(r, "call_id", None) for r in caplog.records
            if r.getMessage() == "call ended: remote-bye"] == ["call-test-1@127.0.0.1"]

    ended_at = record.ended_at
    await call.close("again")  # harmless
    assert record.end_reason == "remote-bye" and record.ended_at == ended_at
    assert harness.ports.in_use == 0


async def test_close_keeps_a_reason_set_before(harness: Harness) -> None:
    call = harness.call(EchoModel())
    await harness.answered(call)
    call.record.end_reason = "admin-hangup"
    await call.close("remote-bye")
    assert call.record.end_reason == "admin-hangup"


async def test_close_before_start_media_releases_the_port(harness: Harness) -> None:
    model = EchoModel()
    call = harness.call(model)
    assert harness.ports.in_use == 1
    await call.close("cancelled")
    assert harness.ports.in_use == 0 and model.closed
    assert harness.registry.active() == []
    # A start_media that arrives late must not bind the port it no longer owns.
    await call.start_media(harness.negotiate(call))
    assert call.endpoint is None and harness.ports.in_use == 0


async def test_close_while_media_is_starting_releases_the_port(harness: Harness) -> None:
    call = harness.call(EchoModel())
    starting = asyncio.get_running_loop().create_task(call.start_media(harness.negotiate(call)))
    await asyncio.sleep(0)  # start_media is now binding the sockets
    await call.close("cancelled")
    await starting
    assert call.endpoint is None or call.endpoint.closed
    await wait_for(lambda: harness.ports.in_use == 0)
    assert port_is_free(call.rtp_port)


async def test_close_when_the_model_fails_to_close(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    model = ScriptedModel(fail_close=True)
    call = harness.call(model)
    await harness.answered(call)
    await call.close("remote-bye")
    assert model.closes == 1
    assert harness.ports.in_use == 0
    assert call.record.ended_at is not None and harness.registry.active() == []
    assert "model close failed" in caplog.text


async def test_model_that_opens_after_the_call_ended_is_closed(harness: Harness) -> None:
    model = ScriptedModel(gate=asyncio.Event())
    call = harness.call(model)
    opening = asyncio.get_running_loop().create_task(call.open_model())
    await asyncio.sleep(0)
    await call.close("cancelled")
    assert model.gate is not None
    model.gate.set()
    await asyncio.wait_for(opening, WAIT)
    assert model.closes == 2, "closed by close(), then again once its open() returned"
    call.receive_dtmf("1")
    assert model.dtmf == [], "a closed model gets nothing"
