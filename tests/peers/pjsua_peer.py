"""A PJSIP (pjsua2) softphone peer, run as a subprocess so that a hang or a crash never takes the
test process with it.

Caller (plays a WAV into the call, records what comes back, hangs up, writes a JSON result):

    python -m tests.peers.pjsua_peer --target sip:echo@127.0.0.1:5060 \\
        --play in.wav --record out.wav --duration 4 --json result.json

Echo server (answers, connects each call's audio back to itself, like ``pjsua --auto-loop``):

    python -m tests.peers.pjsua_peer --serve-echo --port 5070 --max-calls 1 --serve-seconds 60

SDES-SRTP caller: ``--srtp mandatory`` offers RTP/SAVP only (``optional``: RTP/AVP with
``a=crypto``), over plain UDP signalling (``srtpSecureSignaling = 0``); ``--srtp-crypto
AES_CM_128_HMAC_SHA1_32`` restricts the offered suites (PJSIP's default order otherwise). The
JSON then carries the offer PJSIP sent (``local_sdp``) and the SDP of the final response
(``remote_sdp``).

From Python use :func:`run_caller` and :func:`start_echo_server`. Everything binds 127.0.0.1, the
audio device is PJSIP's null device (no sound card: it only provides the 20 ms clock), the
conference bridge runs at 8 kHz, VAD and echo cancellation are off, PCMU (or PCMA) only.
Every wait is bounded and ``--timeout`` (SIGALRM) ends a stuck process after writing its JSON.
The pjsua2-python wheel caps one process at 4 calls.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.peers.processes import stop_process

__all__ = [
    "SRTP_USE",
    "EchoServer",
    "PeerResult",
    "main",
    "run_caller",
    "start_echo_server",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCALHOST = "127.0.0.1"
POLL_MS = 10
MAX_CALLS = 4
#: ``--srtp`` values, for PJSIP's ``mediaConfig.srtpUse``.
SRTP_USE = ("off", "optional", "mandatory")


# ---------------------------------------------------------------- driving it from the test process


@dataclass
class PeerResult:
    """What a caller run reported (its JSON), plus the process outcome."""

    returncode: int | None
    """Exit code of the peer process (0: call confirmed and ended normally); None if killed."""
    data: dict[str, Any]
    """The JSON the peer wrote (empty if it wrote none)."""
    log: str
    """The peer's stdout/stderr (and PJSIP log lines at --log-level)."""

    @property
    def confirmed(self) -> bool:
        """The call reached CONFIRMED."""
        return bool(self.data.get("confirmed"))

    def describe(self) -> str:
        """Summary for assertion messages."""
        result = json.dumps(self.data)
        return f"pjsua peer exit={self.returncode} result={result}\n{self.log[-4000:]}"


def _peer_command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "tests.peers.pjsua_peer", *args]


def _peer_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def _kill(process: subprocess.Popen[bytes]) -> None:
    stop_process(process, ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)))


def run_caller(
    target: str,
    *,
    play: str | Path,
    record: str | Path,
    duration: float = 4.0,
    codec: str = "PCMU",
    dtmf: str = "",
    dtmf_delay: float = 1.0,
    setup_timeout: float = 10.0,
    timeout: float | None = None,
    workdir: str | Path | None = None,
    log_level: int = 3,
    srtp: str = "off",
    srtp_cryptos: Sequence[str] = (),
) -> PeerResult:
    """Call ``target`` in a subprocess, play ``play``, record to ``record``; return the result.

    The call lasts ``duration`` seconds from CONFIRMED (less if the far end hangs up: then
    ``data["hangup_by"] == "remote"``). ``dtmf`` digits are sent ``dtmf_delay`` seconds after the
    media starts. The subprocess has its own hard timeout; this waits a few seconds longer and
    kills it by PID. ``data`` keys: confirmed, setup_ms (INVITE sent -> CONFIRMED), codec
    ("PCMU/8000"), payload_type, status_code, reason, state, hangup_by, duration_s, rx_packets,
    tx_packets, rx_lost, rx_jitter_ms, remote_rtp, local_port, dtmf_sent, error, local_sdp
    (the offer) and remote_sdp (the final response's SDP, if any).

    ``srtp`` is ``off``, ``optional`` or ``mandatory`` (SDES over UDP signalling);
    ``srtp_cryptos`` restricts the offered suites, in order.
    """
    work = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="pjsua-"))
    work.mkdir(parents=True, exist_ok=True)
    result_path = work / "result.json"
    log_path = work / "peer.log"
    hard_timeout = timeout if timeout is not None else setup_timeout + duration + 15.0
    args = ["--target", target, "--play", str(play), "--record", str(record),
            "--duration", f"{duration:g}", "--json", str(result_path), "--codec", codec,
            "--setup-timeout", f"{setup_timeout:g}", "--timeout", f"{hard_timeout:g}",
            "--log-level", str(log_level)]
    if dtmf:
        args += ["--dtmf", dtmf, "--dtmf-delay", f"{dtmf_delay:g}"]
    if srtp != "off":
        args += ["--srtp", srtp]
    if srtp_cryptos:
        args += ["--srtp-crypto", ",".join(srtp_cryptos)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(_peer_command(args), cwd=REPO_ROOT, env=_peer_env(),
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            process.wait(timeout=hard_timeout + 10.0)
        except subprocess.TimeoutExpired:
            _kill(process)
    data: dict[str, Any] = {}
    with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
        data = json.loads(result_path.read_text())
    returncode = process.returncode if process.returncode is not None and \
        process.returncode >= 0 else None
    return PeerResult(returncode=returncode, data=data,
                      log=log_path.read_text(errors="replace"))


@dataclass
class EchoServer:
    """A running PJSIP echo server subprocess."""

    process: subprocess.Popen[bytes]
    """The server process."""
    port: int
    """The SIP UDP port it listens on (127.0.0.1)."""
    log_path: Path
    """Its stdout/stderr."""
    summary_path: Path
    """JSON it writes when it exits: calls answered, codecs, per-call states."""
    _stopped: bool = field(default=False, repr=False)

    @property
    def uri(self) -> str:
        """SIP URI to call."""
        return f"sip:echo@{LOCALHOST}:{self.port}"

    def stop(self) -> dict[str, Any]:
        """Ask it to exit (SIGTERM: hangs up, writes its summary), kill if needed; the summary."""
        if not self._stopped:
            self._stopped = True
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.process.pid, signal.SIGTERM)
                try:
                    self.process.wait(timeout=8)
                except subprocess.TimeoutExpired:
                    _kill(self.process)
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            return dict(json.loads(self.summary_path.read_text()))
        return {}

    def log(self) -> str:
        """What it printed so far."""
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> EchoServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_echo_server(
    port: int,
    *,
    max_calls: int = MAX_CALLS,
    serve_seconds: float = 60.0,
    answer_delay_ms: int = 0,
    workdir: str | Path | None = None,
    ready_timeout: float = 15.0,
    log_level: int = 3,
) -> EchoServer:
    """Start the echo server on 127.0.0.1:``port`` and wait until it is ready to take calls."""
    work = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="pjsua-echo-"))
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / "echo.log"
    summary_path = work / "echo.json"
    args = ["--serve-echo", "--port", str(port), "--max-calls", str(max_calls),
            "--serve-seconds", f"{serve_seconds:g}", "--answer-delay-ms", str(answer_delay_ms),
            "--json", str(summary_path), "--log-level", str(log_level)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(_peer_command(args), cwd=REPO_ROOT, env=_peer_env(),
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = EchoServer(process=process, port=port, log_path=log_path, summary_path=summary_path)
    deadline = time.monotonic() + ready_timeout
    while b"READY " not in log_path.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"PJSIP echo server did not start:\n{server.log()[-3000:]}")
        time.sleep(0.05)
    return server


# ------------------------------------------------------------------------- inside the subprocess


_CODEC_IDS = {"PCMU": "PCMU/8000", "PCMA": "PCMA/8000"}


def _make_endpoint(pj: Any, *, log_level: int, codecs: Sequence[str]) -> Any:
    """Endpoint with the null sound device, 8 kHz bridge, only ``codecs`` enabled (in order)."""
    endpoint = pj.Endpoint()
    endpoint.libCreate()
    config = pj.EpConfig()
    config.uaConfig.threadCnt = 0  # callbacks run in our main thread, from libHandleEvents()
    config.uaConfig.mainThreadOnly = False
    config.uaConfig.maxCalls = MAX_CALLS
    config.uaConfig.userAgent = "sipagent-tests-pjsua"
    config.logConfig.level = log_level
    config.logConfig.consoleLevel = log_level
    config.logConfig.msgLogging = 1 if log_level >= 4 else 0
    config.medConfig.clockRate = 8000
    config.medConfig.sndClockRate = 8000
    config.medConfig.channelCount = 1
    config.medConfig.noVad = True
    config.medConfig.ecTailLen = 0
    config.medConfig.ptime = 20
    endpoint.libInit(config)
    endpoint.audDevManager().setNullDev()
    priorities = {_CODEC_IDS[name]: 255 - rank for rank, name in enumerate(codecs)}
    for info in endpoint.codecEnum2():
        priority = next((p for prefix, p in priorities.items()
                         if info.codecId.startswith(prefix)), 0)
        endpoint.codecSetPriority(info.codecId, priority)
    return endpoint


def _configure_srtp(pj: Any, media_config: Any, use: str, cryptos: Sequence[str]) -> None:
    """SDES-SRTP as ``use`` says, keyed in plain SDP (no TLS or sips: required)."""
    media_config.srtpUse = {
        "off": pj.PJMEDIA_SRTP_DISABLED,
        "optional": pj.PJMEDIA_SRTP_OPTIONAL,
        "mandatory": pj.PJMEDIA_SRTP_MANDATORY,
    }[use]
    media_config.srtpSecureSignaling = 0
    if use == "off":
        return
    media_config.srtpOpt.keyings.clear()
    media_config.srtpOpt.keyings.append(pj.PJMEDIA_SRTP_KEYING_SDES)
    for name in cryptos:
        crypto = pj.SrtpCrypto()
        crypto.name = name  # an empty key: PJSIP generates one
        media_config.srtpOpt.cryptos.append(crypto)


def _make_account(
    pj: Any,
    endpoint: Any,
    port: int,
    user: str,
    account_class: Any,
    *,
    srtp: str = "off",
    srtp_cryptos: Sequence[str] = (),
) -> Any:
    transport_config = pj.TransportConfig()
    transport_config.port = port
    transport_config.boundAddress = LOCALHOST
    transport_config.publicAddress = LOCALHOST
    transport_id = endpoint.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport_config)
    endpoint.libStart()
    local_port = endpoint.transportGetInfo(transport_id).localName.rsplit(":", 1)[1]
    account_config = pj.AccountConfig()
    account_config.idUri = f"sip:{user}@{LOCALHOST}:{local_port}"
    account_config.sipConfig.transportId = transport_id
    account_config.mediaConfig.transportConfig.boundAddress = LOCALHOST
    account_config.mediaConfig.transportConfig.publicAddress = LOCALHOST
    account_config.mediaConfig.transportConfig.port = 0
    _configure_srtp(pj, account_config.mediaConfig, srtp, srtp_cryptos)
    account = account_class()
    account.create(account_config)
    return account, int(local_port)


def _audio_media(pj: Any, call: Any) -> Any | None:
    info = call.getInfo()
    for media in info.media:
        if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
            return call.getAudioMedia(media.index)
    return None


def _stream_facts(call: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        info = call.getStreamInfo(0)
        facts["codec"] = f"{info.codecName}/{info.codecClockRate}"
        facts["payload_type"] = int(info.txPt)
        facts["remote_rtp"] = str(info.remoteRtpAddress)
    with contextlib.suppress(Exception):
        stat = call.getStreamStat(0)
        facts["rx_packets"] = int(stat.rtcp.rxStat.pkt)
        facts["tx_packets"] = int(stat.rtcp.txStat.pkt)
        facts["rx_lost"] = int(stat.rtcp.rxStat.loss)
        facts["rx_jitter_ms"] = round(stat.rtcp.rxStat.jitterUsec.mean / 1000.0, 3)
    return facts


def _write_json(path: str | None, data: dict[str, Any]) -> None:
    if path:
        tmp = Path(path).with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        tmp.replace(path)


def _install_alarm(seconds: float, json_path: str | None, state: dict[str, Any]) -> None:
    def on_alarm(_signum: int, _frame: object) -> None:
        state["error"] = f"hard timeout after {seconds:g} s"
        _write_json(json_path, state)
        os._exit(3)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def _caller_main(args: argparse.Namespace) -> int:
    import pjsua2 as pj

    state: dict[str, Any] = {"role": "caller", "target": args.target, "confirmed": False,
                             "setup_ms": None, "state": "NULL", "error": None}
    _install_alarm(args.timeout, args.json, state)
    endpoint = _make_endpoint(pj, log_level=args.log_level, codecs=[args.codec])
    events: dict[str, float] = {}

    class CallerCall(pj.Call):  # type: ignore[misc]
        def onCallState(self, prm: Any) -> None:
            info = self.getInfo()
            state["state"] = info.stateText
            state["status_code"] = int(info.lastStatusCode)
            state["reason"] = info.lastReason
            if info.state == pj.PJSIP_INV_STATE_CONFIRMED and "confirmed" not in events:
                events["confirmed"] = time.monotonic()
            if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                events["disconnected"] = time.monotonic()

        def onCallMediaState(self, prm: Any) -> None:
            if _audio_media(pj, self) is not None:
                events.setdefault("media", time.monotonic())

        def onCallSdpCreated(self, prm: Any) -> None:
            state.setdefault("local_sdp", prm.sdp.wholeSdp)

        def onCallTsxState(self, prm: Any) -> None:
            # The final response to our INVITE, whatever its status: keep its SDP.
            with contextlib.suppress(Exception):
                event = prm.e
                if event.type != pj.PJSIP_EVENT_TSX_STATE:
                    return
                tsx = event.body.tsxState.tsx
                if tsx.method != "INVITE" or tsx.statusCode < 200:
                    return
                message = event.body.tsxState.src.rdata.wholeMsg
                if message.startswith("SIP/2.0") and "\r\n\r\n" in message:
                    body = message.split("\r\n\r\n", 1)[1]
                    if body:
                        state["remote_sdp"] = body

    # SRTP options only when asked for: tests swap _make_account for their own (TLS) factory.
    srtp_options: dict[str, Any] = (
        {"srtp": args.srtp, "srtp_cryptos": args.srtp_crypto} if args.srtp != "off" else {}
    )
    account, local_port = _make_account(pj, endpoint, args.port, "peer", pj.Account,
                                        **srtp_options)
    state["local_port"] = local_port
    call = CallerCall(account)
    player = recorder = None
    exit_code = 1
    try:
        parameters = pj.CallOpParam(True)
        parameters.opt.audioCount = 1
        parameters.opt.videoCount = 0
        invite_sent = time.monotonic()
        call.makeCall(args.target, parameters)
        setup_deadline = invite_sent + args.setup_timeout
        while "disconnected" not in events and time.monotonic() < setup_deadline:
            if "confirmed" in events and "media" in events:
                break
            endpoint.libHandleEvents(POLL_MS)
        if "confirmed" in events:
            state["confirmed"] = True
            state["setup_ms"] = round((events["confirmed"] - invite_sent) * 1000.0, 1)
        ready = "confirmed" in events and "media" in events and "disconnected" not in events
        audio = _audio_media(pj, call) if ready else None
        if audio is not None:
            if args.record:
                recorder = pj.AudioMediaRecorder()
                recorder.createRecorder(args.record)
                audio.startTransmit(recorder)
            if args.play:
                player = pj.AudioMediaPlayer()
                player.createPlayer(args.play, pj.PJMEDIA_FILE_NO_LOOP)
                player.startTransmit(audio)
            media_started = time.monotonic()
            dtmf_due = media_started + args.dtmf_delay if args.dtmf else None
            next_stats = media_started
            while "disconnected" not in events and time.monotonic() < media_started + args.duration:
                endpoint.libHandleEvents(POLL_MS)
                now = time.monotonic()
                if dtmf_due is not None and now >= dtmf_due:
                    dtmf_due = None
                    call.dialDtmf(args.dtmf)  # RFC 4733 when negotiated (PJSIP's default)
                    state["dtmf_sent"] = args.dtmf
                if now >= next_stats and "disconnected" not in events:
                    next_stats = now + 0.2  # the counters vanish with the stream: sample them
                    state.update(_stream_facts(call))
        elif "disconnected" not in events:
            state["error"] = state["error"] or "call not established in time"
        state["hangup_by"] = "remote" if "disconnected" in events else "local"
        if "disconnected" not in events:
            with contextlib.suppress(Exception):
                call.hangup(pj.CallOpParam())
            hangup_deadline = time.monotonic() + 5.0
            while "disconnected" not in events and time.monotonic() < hangup_deadline:
                endpoint.libHandleEvents(POLL_MS)
        if "confirmed" in events:
            state["duration_s"] = round(events.get("disconnected", time.monotonic())
                                        - events["confirmed"], 3)
        exit_code = 0 if state["confirmed"] and "disconnected" in events else 1
    except Exception as exc:  # report whatever PJSIP raised instead of dying silently
        info = getattr(exc, "info", None)  # pjsua2.Error carries its text in info()
        detail = info() if callable(info) else str(exc)
        state["error"] = f"{type(exc).__name__}: {detail}"
    finally:
        # Destroying the recorder writes the WAV header: before the library goes away.
        del player, recorder
        state["recorded"] = args.record
        state["played"] = args.play
        _write_json(args.json, state)
    # pjsua2 objects must go before the library: a Call finalized afterwards asserts and aborts.
    del call, account
    with contextlib.suppress(Exception):
        endpoint.libDestroy()
    return exit_code


def _echo_main(args: argparse.Namespace) -> int:
    import pjsua2 as pj

    summary: dict[str, Any] = {"role": "echo", "calls": [], "error": None}
    stopping = {"now": False}
    calls: list[Any] = []
    pending_answers: list[tuple[float, Any]] = []

    def on_term(_signum: int, _frame: object) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    _install_alarm(args.serve_seconds + 15.0, args.json, summary)
    # the server takes both G.711 laws, preferring --codec
    codecs = [args.codec, *(name for name in _CODEC_IDS if name != args.codec)]
    endpoint = _make_endpoint(pj, log_level=args.log_level, codecs=codecs)

    class EchoCall(pj.Call):  # type: ignore[misc]
        def __init__(self, account: Any, call_id: int) -> None:
            super().__init__(account, call_id)
            self.record: dict[str, Any] = {"state": "INCOMING", "looped": False, "dtmf": ""}
            self.done = False

        def onCallState(self, prm: Any) -> None:
            info = self.getInfo()
            self.record["state"] = info.stateText
            self.record["call_id"] = info.callIdString
            if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                self.done = True

        def onDtmfDigit(self, prm: Any) -> None:
            self.record["dtmf"] += prm.digit

        def onCallMediaState(self, prm: Any) -> None:
            audio = _audio_media(pj, self)
            if audio is not None:
                audio.startTransmit(audio)  # the call's audio goes straight back to it
                self.record["looped"] = True
                self.record.update(_stream_facts(self))

    class EchoAccount(pj.Account):  # type: ignore[misc]
        def onIncomingCall(self, prm: Any) -> None:
            call = EchoCall(self, prm.callId)
            calls.append(call)
            if len(calls) > args.max_calls:
                answer = pj.CallOpParam()
                answer.statusCode = 486
                call.answer(answer)
                return
            ringing = pj.CallOpParam()
            ringing.statusCode = 180
            call.answer(ringing)
            pending_answers.append((time.monotonic() + args.answer_delay_ms / 1000.0, call))

    account, local_port = _make_account(pj, endpoint, args.port, "echo", EchoAccount)
    print(f"READY sip:echo@{LOCALHOST}:{local_port}", flush=True)
    deadline = time.monotonic() + args.serve_seconds
    next_stats = 0.0
    try:
        while not stopping["now"] and time.monotonic() < deadline:
            endpoint.libHandleEvents(POLL_MS)
            now = time.monotonic()
            if now >= next_stats:  # stream counters vanish with the call: sample them meanwhile
                next_stats = now + 0.2
                for call in calls:
                    if call.record["looped"] and not call.done:
                        call.record.update(_stream_facts(call))
            for due, call in [item for item in pending_answers if item[0] <= now]:
                pending_answers.remove((due, call))
                if not call.done:
                    answer = pj.CallOpParam()
                    answer.statusCode = 200
                    call.answer(answer)
            finished = [c for c in calls[: args.max_calls] if c.done]
            if len(finished) >= args.max_calls:
                break
        for call in calls:
            if not call.done:
                with contextlib.suppress(Exception):
                    call.hangup(pj.CallOpParam())
        hangup_deadline = time.monotonic() + 3.0
        while any(not c.done for c in calls) and time.monotonic() < hangup_deadline:
            endpoint.libHandleEvents(POLL_MS)
    except Exception as exc:
        summary["error"] = f"{type(exc).__name__}: {exc}"
    summary["calls"] = [c.record for c in calls]
    summary["answered"] = sum(1 for c in calls if c.record.get("looped"))
    _write_json(args.json, summary)
    calls.clear()
    del account
    with contextlib.suppress(Exception):
        endpoint.libDestroy()
    return 0 if summary["error"] is None else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.peers.pjsua_peer",
                                     description="PJSIP test peer: caller or echo server")
    parser.add_argument("--target", help="SIP URI to call (caller mode)")
    parser.add_argument("--play", help="8 kHz mono 16-bit WAV to play into the call")
    parser.add_argument("--record", help="WAV file for the audio received from the call")
    parser.add_argument("--duration", type=float, default=4.0,
                        help="seconds from CONFIRMED to hangup")
    parser.add_argument("--json", help="write the result / summary here")
    parser.add_argument("--dtmf", default="", help="caller: digits to send (RFC 4733)")
    parser.add_argument("--dtmf-delay", type=float, default=1.0,
                        help="caller: seconds after the media starts to send --dtmf")
    parser.add_argument("--codec", choices=tuple(_CODEC_IDS), default="PCMU",
                        help="caller: the only codec offered; echo server: the preferred one")
    parser.add_argument("--port", type=int, default=0, help="local SIP UDP port (0: any)")
    parser.add_argument("--setup-timeout", type=float, default=10.0,
                        help="seconds to wait for CONFIRMED")
    parser.add_argument("--timeout", type=float, default=None,
                        help="hard limit for the whole process (default: setup + duration + 15)")
    parser.add_argument("--serve-echo", action="store_true", help="run the echo server")
    parser.add_argument("--max-calls", type=int, default=MAX_CALLS,
                        help="echo server: exit after this many calls ended (at most 4)")
    parser.add_argument("--serve-seconds", type=float, default=60.0,
                        help="echo server: exit after this long")
    parser.add_argument("--answer-delay-ms", type=int, default=0,
                        help="echo server: ring this long before answering")
    parser.add_argument("--log-level", type=int, default=3, help="PJSIP log level (0-6)")
    parser.add_argument("--srtp", choices=SRTP_USE, default="off",
                        help="caller: SDES-SRTP use (mandatory: RTP/SAVP offers only)")
    parser.add_argument("--srtp-crypto", type=lambda text: [n for n in text.split(",") if n],
                        default=[], help="caller: comma-separated SDES suites to offer, in order")
    args = parser.parse_args(argv)
    args.max_calls = max(1, min(args.max_calls, MAX_CALLS))
    if args.serve_echo:
        code = _echo_main(args)
    else:
        if not args.target:
            parser.error("--target is required unless --serve-echo")
        if args.timeout is None:
            args.timeout = args.setup_timeout + args.duration + 15.0
        code = _caller_main(args)
    sys.stdout.flush()
    # pjsua2's SWIG objects can crash in their finalizers after libDestroy(): leave at once.
    os._exit(code)


if __name__ == "__main__":
    main()
