"""Structured logs: the formatters, the call context, redaction, and the real process.

The unit tests log through :func:`sipagent.logs.configure_logging` into a StringIO (the root
logger is restored after each). The process tests run ``sipagent run`` (the console script) on
free 127.0.0.1 ports with the openai model against the fake Realtime server of the tests, a
SIPp registrar that demands Digest credentials, and a real SIPp call; then they read every
line the process wrote.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import os
import pty
import re
import secrets
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from admin.server import AdminStartupError, start_admin
from sipagent.logs import (
    CallLogAdapter,
    add_secret,
    call_context,
    configure_logging,
    context_for_call,
    detached_context,
    redact,
    sniff_call_id,
)
from tests.fakes.realtime_server import FakeRealtimeServer, Greeting, ReplyOnSpeech
from tests.peers.harness import RTP_SPAN, free_udp_range
from tests.peers.sipp import LOCALHOST, free_udp_port, run_sipp, sipp_available, start_sipp
from tests.peers.softphone import Softphone
from tests.test_sipagent_cli import REPO, Agent, console_script, spawn

WIRE_LOGGERS = ("websockets", "httpcore", "hpack", "aiosqlite", "openai")
JSON_TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+ "
)


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    """Where configure_logging writes in a test; the root logger is put back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    wire = {name: logging.getLogger(name).level for name in WIRE_LOGGERS}
    yield io.StringIO()
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name, wire_level in wire.items():
        logging.getLogger(name).setLevel(wire_level)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


log = logging.getLogger("sipagent.test_logs")


# -- the JSON formatter -------------------------------------------------------------------------


def test_json_line_has_the_fields(out: io.StringIO) -> None:
    configure_logging("DEBUG", "json", out)
    with call_context("a84b4c76e66710@pc33", "3f9a0c2e1b7d"):
        log.info("answered %s in %d ms", "alice", 12, extra={"codec": "PCMU", "port": 10000})
    log.warning("two\nlines")
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.exception("failed")
    first, second, third = json_lines(out)
    assert JSON_TS.match(first.pop("ts"))
    assert first == {
        "level": "INFO", "logger": "sipagent.test_logs", "msg": "answered alice in 12 ms",
        "call_id": "a84b4c76e66710@pc33", "session_id": "3f9a0c2e1b7d",
        "codec": "PCMU", "port": 10000,
    }
    assert second["msg"] == "two\nlines" and second["level"] == "WARNING"
    assert "call_id" not in second and "session_id" not in second
    assert third["exc"].startswith("Traceback") and "ZeroDivisionError" in third["exc"]


def test_extra_values_that_are_not_json_are_shown_safely(out: io.StringIO) -> None:
    configure_logging("INFO", "json", out)
    log.info("odd", extra={"payload": b"\xff" * 160, "peer": ("127.0.0.1", 5060), "obj": object()})
    [line] = json_lines(out)
    assert line["payload"] == "<160 bytes>"
    assert line["peer"] == ["127.0.0.1", 5060]
    assert line["obj"].startswith("<object object")


# -- the call context ---------------------------------------------------------------------------


async def test_context_reaches_the_tasks_and_callbacks_created_inside_only(
    out: io.StringIO,
) -> None:
    configure_logging("DEBUG", "json", out)
    loop = asyncio.get_running_loop()
    go = asyncio.Event()
    done = asyncio.Event()

    async def work(name: str) -> None:
        await go.wait()
        log.info(name)

    tasks = [loop.create_task(work("created before"))]
    with call_context("call-1@host", "s1"):
        tasks.append(loop.create_task(work("created inside")))
        loop.call_soon(log.info, "callback inside")
        loop.call_soon(log.info, "detached callback", context=detached_context())
    tasks.append(loop.create_task(work("created after")))
    tasks.append(loop.create_task(work("given the call"), context=context_for_call("call-2")))
    loop.call_soon(done.set)
    go.set()
    await asyncio.gather(*tasks)
    await asyncio.wait_for(done.wait(), 5.0)
    seen = {line["msg"]: (line.get("call_id"), line.get("session_id")) for line in json_lines(out)}
    assert seen == {
        "created before": (None, None),
        "created inside": ("call-1@host", "s1"),
        "callback inside": ("call-1@host", "s1"),
        "detached callback": (None, None),
        "created after": (None, None),
        "given the call": ("call-2", None),
    }


def test_a_record_naming_its_call_keeps_it(out: io.StringIO) -> None:
    configure_logging("DEBUG", "json", out)
    other = CallLogAdapter(log, {"call_id": "B@host", "session_id": "sB"})
    unknown = CallLogAdapter(log, {"call_id": "?"})
    with call_context("A@host", "sA"):
        other.info("about B", extra={"turn": 2})
        unknown.info("adapter without a call yet")
        log.info("plain", extra={"call_id": "B@host"})
    lines = {line["msg"]: line for line in json_lines(out)}
    assert lines["about B"]["call_id"] == "B@host" and lines["about B"]["session_id"] == "sB"
    assert lines["about B"]["turn"] == 2
    assert lines["adapter without a call yet"]["call_id"] == "A@host"
    assert lines["adapter without a call yet"]["session_id"] == "sA"
    # Named explicitly, another call's session is not borrowed from the context.
    assert lines["plain"]["call_id"] == "B@host" and "session_id" not in lines["plain"]


def test_call_context_is_undone_and_none_leaves_it(out: io.StringIO) -> None:
    configure_logging("DEBUG", "json", out)
    with call_context("outer@host"):
        with call_context(None):
            log.info("kept")
        with call_context("inner@host"):
            log.info("inner")
        log.info("outer again")
    log.info("none")
    assert [line.get("call_id") for line in json_lines(out)] == [
        "outer@host", "inner@host", "outer@host", None,
    ]


# -- the text formatter -------------------------------------------------------------------------


def test_text_lines_are_readable(out: io.StringIO) -> None:
    configure_logging("INFO", "text", out)
    with call_context("a84b4c76e66710@pc33"):
        log.info("answered %s", "alice")
        CallLogAdapter(log, {"call_id": "a84b4c76e66710@pc33"}).info("once")
    log.debug("hidden at INFO")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.error("no call", exc_info=True)
    text = out.getvalue().splitlines()
    assert TEXT_LINE.match(text[0])
    assert text[0].endswith(" INFO sipagent.test_logs [a84b4c76e66710@pc33] answered alice")
    assert text[1].endswith(" [a84b4c76e66710@pc33] once"), "one prefix, not two"
    assert text[2].endswith(" ERROR sipagent.test_logs no call")
    assert text[3] == "Traceback (most recent call last):" and text[-1] == "RuntimeError: boom"


def test_auto_is_text_on_a_terminal_and_json_elsewhere(out: io.StringIO) -> None:
    configure_logging("INFO", "auto", out)
    log.info("to a file")
    assert json_lines(out)[0]["msg"] == "to a file"
    controller, terminal = pty.openpty()
    try:
        with open(terminal, "w", closefd=False) as tty:
            configure_logging("INFO", "auto", tty)
            log.info("to a terminal")
            tty.flush()
        written = os.read(controller, 4096).decode()
    finally:
        os.close(controller)
        os.close(terminal)
    assert TEXT_LINE.match(written) and written.rstrip().endswith(" to a terminal")


def test_one_handler_and_wire_loggers_stay_at_info(out: io.StringIO) -> None:
    configure_logging("DEBUG", "json", out)
    configure_logging("DEBUG", "json", out)
    root = logging.getLogger()
    ours = [h for h in root.handlers if type(h).__module__ == "sipagent.logs"]
    assert len(ours) == 1
    logging.getLogger("websockets.client").debug("> Authorization: Bearer sk-abc")
    logging.getLogger("websockets.client").info("connection closed")
    log.debug("ours at debug")
    assert [line["msg"] for line in json_lines(out)] == ["connection closed", "ours at debug"]


# -- redaction ----------------------------------------------------------------------------------

DIGEST_RESPONSE = "6629fae49393a05397450978507c4ef1"
AUDIO_B64 = base64.b64encode(bytes(range(256)) * 2).decode()
WEBHOOK_SECRET = "whsec-" + secrets.token_hex(8)
SECRET_LINES = [
    pytest.param(
        f'Authorization: Digest username="alice", realm="sip.test", nonce="abc", '
        f'uri="sip:echo@127.0.0.1", response="{DIGEST_RESPONSE}", qop=auth, nc=00000001',
        DIGEST_RESPONSE, id="authorization",
    ),
    pytest.param(
        f"Proxy-Authorization: Digest username=bob, response={DIGEST_RESPONSE}, algorithm=MD5",
        DIGEST_RESPONSE, id="proxy-authorization",
    ),
    pytest.param(
        f'WWW-Authenticate: Digest realm="x", response="{DIGEST_RESPONSE}"',
        DIGEST_RESPONSE, id="www-authenticate",
    ),
    pytest.param("login with password=hunter2hunter2", "hunter2hunter2", id="password"),
    pytest.param("settings {'registrar_password': 'pa55-word'}", "pa55-word", id="repr"),
    pytest.param('{"password": "json-pass-123"}', "json-pass-123", id="json"),
    pytest.param("Authorization: Bearer adm-0123456789abcdef", "adm-0123456789abcdef",
                 id="bearer"),
    pytest.param("key sk-proj-AbCdEf0123456789xyz in use", "AbCdEf0123456789xyz", id="openai"),
    pytest.param("history at postgresql://agent:db-pass-42@db.example.com/calls",
                 "db-pass-42", id="url"),
    pytest.param("X-Sipagent-Signature: sha256=" + "ab" * 32, "ab" * 32, id="signature"),
    pytest.param(f"webhook keyed with {WEBHOOK_SECRET}", WEBHOOK_SECRET, id="literal"),
    pytest.param(f'{{"type": "input_audio_buffer.append", "audio": "{AUDIO_B64}"}}',
                 AUDIO_B64[:64], id="audio-base64"),
    pytest.param("payload " + repr(bytes(range(128, 192))), r"\x80\x81\x82\x83", id="bytes"),
]


@pytest.mark.parametrize(("line", "secret"), SECRET_LINES)
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_secrets_never_reach_the_output(
    out: io.StringIO, line: str, secret: str, fmt: str
) -> None:
    add_secret(WEBHOOK_SECRET)
    configure_logging("INFO", "json" if fmt == "json" else "text", out)
    log.info("%s", line)
    log.info("as an extra", extra={"detail": line})
    try:
        raise ValueError(line)
    except ValueError:
        log.exception("in a traceback")
    written = out.getvalue()
    assert secret not in written
    assert len(written.splitlines()) >= 3


def test_redaction_keeps_the_rest_of_the_line() -> None:
    line = SECRET_LINES[0].values[0]
    assert isinstance(line, str)
    assert redact(line) == (
        'Authorization: Digest username="alice", realm="sip.test", nonce="abc", '
        'uri="sip:echo@127.0.0.1", response="<redacted>", qop=auth, nc=00000001'
    )
    assert redact("INVITE from 127.0.0.1:5060 (new_token=1)") == (
        "INVITE from 127.0.0.1:5060 (new_token=1)"
    )


# -- the Call-ID of a raw message ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\nCall-ID: abc@host\r\n\r\n", "abc@host"),
        (b"SIP/2.0 200 OK\r\ncall-id:  lower@host \r\nCSeq: 1 X\r\n\r\n", "lower@host"),
        (b"BYE sip:a@b SIP/2.0\r\ni: compact@host\r\n\r\n", "compact@host"),
        (b"OPTIONS sip:a@b SIP/2.0\nCall-ID: lf-only\n\n", "lf-only"),
        (b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n\r\nCall-ID: in-body\r\n", None),
        (b"\x00\xff garbage", None),
    ],
)
def test_sniff_call_id(data: bytes, expected: str | None) -> None:
    assert sniff_call_id(data) == expected


# -- uvicorn ------------------------------------------------------------------------------------


async def test_uvicorn_lines_go_through_the_same_handler(out: io.StringIO) -> None:
    configure_logging("INFO", "json", out)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.failed", "message": "no database here"})

    with pytest.raises(AdminStartupError):
        await start_admin(app, LOCALHOST, 0)
    lines = [line for line in json_lines(out) if line["logger"].startswith("uvicorn")]
    assert any(line["msg"] == "no database here" for line in lines), out.getvalue()
    messages = [line["msg"] for line in lines]
    assert len(messages) == len(set(messages)), "a uvicorn line printed twice"
    assert all("color_message" not in line for line in lines)
    assert not logging.getLogger("uvicorn.error").handlers


# -- the real process ---------------------------------------------------------------------------

pytest_sipp = pytest.mark.skipif(not sipp_available(), reason="sipp (sip-tester) not installed")
REGISTRAR_PASSWORD = "s3cret"
"""What tests/sipp/uas_register_challenge.xml checks the Digest answer against (user agent)."""


@pytest.fixture
async def started() -> AsyncIterator[list[Agent]]:
    """Processes a test started; any still running at the end are killed by PID."""
    agents: list[Agent] = []
    yield agents
    for agent in agents:
        if agent.process.returncode is None:
            agent.process.kill()
            await agent.process.wait()


def script() -> Path:
    path = console_script()
    if path is None:
        pytest.skip("the sipagent console script is not installed")
    return path


async def wait_ready(agent: Agent, token: str, timeout: float = 15.0) -> None:
    """/ready says ready (so the registration went through)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=agent.admin_url, trust_env=False) as client:
        while (await client.get("/ready", headers=headers)).status_code != 200:
            assert loop.time() < deadline, f"never ready:\n{agent.stderr[-3000:]}"
            await asyncio.sleep(0.1)


async def wait_call_ended(agent: Agent, call_id: str, timeout: float = 10.0) -> None:
    """The process has logged the end of this call."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    ended = f'"msg": "call ended: remote-bye", "call_id": "{call_id}"'
    while ended not in agent.stderr:
        assert loop.time() < deadline, f"call {call_id} did not end:\n{agent.stderr[-3000:]}"
        await asyncio.sleep(0.05)


@pytest_sipp
async def test_process_logs_json_with_the_call_id_and_no_secret(
    tmp_path: Path, started: list[Agent]
) -> None:
    admin_token = "adm-" + secrets.token_hex(12)
    api_key = "sk-logtest-" + secrets.token_hex(12)
    auth_password = "alicepw-" + secrets.token_hex(8)
    phone_answer = secrets.token_hex(16)
    rtp = free_udp_range(20000, 40000, start=os.getpid())
    registrar_port = free_udp_port()
    registrar = start_sipp("uas_register_challenge.xml", local_port=registrar_port,
                           timeout=90.0, workdir=tmp_path / "registrar")
    scenarios = [Greeting(audio_ms=600), ReplyOnSpeech(after_ms=400, speech_ms=600)]
    try:
        assert registrar.wait_ready(), registrar.stop().describe()
        async with FakeRealtimeServer(scenarios=scenarios) as fake:
            agent = await spawn(
                tmp_path, script=script(),
                SIPAGENT_LOG_FORMAT="json", SIPAGENT_LOG_LEVEL="DEBUG",
                SIPAGENT_ADMIN_TOKEN=admin_token,
                SIPAGENT_MODEL="openai", OPENAI_API_KEY=api_key, OPENAI_BASE_URL=fake.base_url,
                SIPAGENT_AGENTS_PATH=str(REPO / "config" / "agents" / "echo_demo.yaml"),
                SIPAGENT_REGISTRAR=f"sip:{LOCALHOST}:{registrar_port}",
                SIPAGENT_REGISTRAR_USER="agent", SIPAGENT_REGISTRAR_PASSWORD=REGISTRAR_PASSWORD,
                SIPAGENT_AUTH_USERS=f"alice:{auth_password}",
                SIPAGENT_ALLOW_CIDRS=f"{LOCALHOST}/32",
                # Two calls one after the other: room for the second while the first closes.
                SIPAGENT_RTP_PORT_MIN=str(rtp), SIPAGENT_RTP_PORT_MAX=str(rtp + RTP_SPAN - 2),
            )
            started.append(agent)
            await agent.wait_healthy()
            await wait_ready(agent, admin_token)
            call = await asyncio.to_thread(
                run_sipp, "uac_basic_rtp.xml", remote=(LOCALHOST, agent.sip_port),
                service="echo", timeout=40.0, workdir=tmp_path / "uac",
            )
            assert call.ok, call.describe()
            call_id = re.search(r"^Call-ID: *(\S+)", call.messages, re.M)
            assert call_id is not None
            cid = call_id.group(1)
            await wait_call_ended(agent, cid)  # one call after the other
            # A softphone's call whose INVITE carries credentials (not checked: 127.0.0.1 is
            # trusted) and an unparseable P-Asserted-Identity the server logs about.
            phone = Softphone(server=(LOCALHOST, agent.sip_port))
            await phone.open()
            try:
                answered = await phone.call(extra=(
                    ("P-Asserted-Identity", "<not a uri"),
                    ("Authorization", f'Digest username="alice", realm="sipagent", nonce="n", '
                                      f'uri="sip:echo@{LOCALHOST}", response="{phone_answer}"'),
                ))
                assert answered.status == 200
                assert (await phone.hangup()).status == 200
            finally:
                await phone.close()
            async with httpx.AsyncClient(base_url=agent.admin_url, trust_env=False) as client:
                wrong = await client.get("/sessions", headers={"Authorization": "Bearer nope"})
                assert wrong.status_code == 401
                history = await client.get(
                    "/history", headers={"Authorization": f"Bearer {admin_token}"}
                )
            record = next(c for c in history.json()["calls"] if c["call_id"] == cid)
            agent.process.send_signal(signal.SIGTERM)
            assert await agent.wait_exit() == 0, agent.stderr[-3000:]
        registered = registrar.wait(timeout=10.0)
    finally:
        registrar.stop()
    assert registered.ok, registered.describe()

    output = agent.stderr
    lines = output.splitlines()
    assert len(lines) > 20
    entries = []
    for line in lines:
        entry = json.loads(line)  # every line is one JSON object
        assert isinstance(entry, dict) and JSON_TS.match(entry["ts"]), line
        entries.append(entry)

    # No secret anywhere: settings, Digest answers (ours to the registrar), audio.
    digest_answers = re.findall(r'response="?([0-9a-f]{32})', registered.messages)
    assert digest_answers, "the registrar saw our Digest answers"
    secrets_ = (admin_token, api_key, auth_password, REGISTRAR_PASSWORD, phone_answer,
                *digest_answers)
    for secret in secrets_:
        assert secret not in output
    assert not re.search(r"[A-Za-z0-9+/]{100,}", output), "audio (base64) in the logs"
    # The wire loggers (request headers with the key, Realtime frames) stay quiet at DEBUG.
    wire = [e for e in entries if e["logger"].split(".")[0] in WIRE_LOGGERS
            and e["level"] == "DEBUG"]
    assert not wire, wire[:3]

    session = record["session_id"]
    # The calls came one after the other: from the INVITE to "call ended", every line about
    # the call (naming it, or from the server, the call, the model bridge) carries its Call-ID.
    for one in (cid, phone.call_id):
        first = next(i for i, e in enumerate(entries) if one in e["msg"])
        last = next(i for i, e in enumerate(entries) if e["logger"] == "sipagent.call"
                    and e["msg"].startswith("call ended") and e.get("call_id") == one)
        about_the_call = [
            e for e in entries[first:last + 1]
            if one in e["msg"] or e["logger"] in ("sipagent.call", "sipagent.server")
            or e["logger"].startswith("bridge.")
        ]
        assert len(about_the_call) > 5
        wrong_call = [e for e in about_the_call if e.get("call_id") != one]
        assert not wrong_call, wrong_call
    loggers = {e["logger"] for e in entries if e.get("call_id") == cid}
    for expected in ("sipagent.dialog", "sipagent.transaction", "sipagent.call",
                     "bridge.openai_realtime", "sipagent.history"):
        assert expected in loggers, sorted(loggers)
    for e in entries:
        if e.get("call_id") == cid and e["logger"] in ("sipagent.call", "sipagent.history"):
            assert e.get("session_id") == session, e
    # A line of the server about the softphone's call names that call.
    [pai] = [e for e in entries if e["msg"].startswith("ignoring unparseable P-Asserted")]
    assert pai["logger"] == "sipagent.server" and pai["call_id"] == phone.call_id
    # The registration's lines are about the registration, never about the call.
    assert all(e.get("call_id") != cid for e in entries if e["logger"] == "sipagent.registration")


async def test_process_on_a_terminal_logs_text(tmp_path: Path, started: list[Agent]) -> None:
    controller, terminal = pty.openpty()
    written = bytearray()
    loop = asyncio.get_running_loop()
    eof = asyncio.Event()

    def readable() -> None:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the other side is closed
            chunk = b""
        if chunk:
            written.extend(chunk)
        else:
            loop.remove_reader(controller)
            eof.set()

    loop.add_reader(controller, readable)
    try:
        agent = await spawn(tmp_path, script=script(), stderr_fd=terminal)
        os.close(terminal)
        terminal = -1
        started.append(agent)
        await agent.wait_healthy()
        agent.process.send_signal(signal.SIGTERM)
        assert await agent.wait_exit() == 0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(eof.wait(), 5.0)
    finally:
        loop.remove_reader(controller)
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    lines = [line for line in written.decode().replace("\r", "").splitlines() if line]
    assert lines, "nothing written to the terminal"
    for line in lines:
        assert TEXT_LINE.match(line), line
    assert any(line.endswith(f"SIP listening on {LOCALHOST}:{agent.sip_port} (UDP, TCP), "
                             "model echo") for line in lines), lines
