"""A multi-agent phone call, end to end: SIP + RTP in, the fake Realtime API, seed tools, REFER out.

The real sipagent :class:`~sipagent.server.Server` runs with ``model = "openai"`` pointed at the
local :class:`~tests.fakes.realtime_server.FakeRealtimeServer` and with the agents of
config/agents, so every call gets its own :class:`~bridge.agents.MultiAgentAdapter`, and
``transfer_to_human`` becomes a SIP REFER to ``transfer_target``. Ana (+5511987654321, the seed
bank's demo customer) calls the Banco Sinal number (config/agents/banking.yaml); the seed
tools use a fresh SQLite file (``$SIPAGENT_SEED_DB`` in ``tmp_path``).

The caller is the scripted softphone (tests/peers/softphone.py; RFC 4733 keypad digits, and it
answers REFER itself) or SIPp (tests/sipp/uac_refer_accept.xml). The model is a :class:`Script`:
what it says and which tools it calls, response after response. Every test leaves the
``async with FakeRealtimeServer(...)`` block, which fails on any Realtime protocol violation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from bridge.agents.seed.store import SEED_DB_ENV, get_store, set_store
from sipagent.call import ModelLink
from sipagent.dialog import DialogState
from sipagent.message import Request, make_response
from sipagent.registry import CallRecord
from sipagent.server import Server
from tests.fakes.realtime_server import (
    Event,
    FakeConnection,
    FakeRealtimeServer,
    Output,
    ResponseRequest,
    Scenario,
    Speech,
    ToolCall,
)
from tests.peers.harness import start_server, wait_for
from tests.peers.sipp import LOCALHOST, free_port, run_sipp, sipp_available
from tests.peers.softphone import Softphone

AGENTS = Path(__file__).resolve().parents[1] / "config" / "agents"
API_KEY = "sk-test-e2e-agents"
ANA = "+5511987654321"
BANK_DID = "+551155550100"  # config/agents/banking.yaml numbers
CHECKING, SAVINGS = "48213-7", "48213-8"
PIN = "2468"
SILENCE = b"\xff" * 160
WAIT = 8.0

TRANSFER = {"from_account": CHECKING, "to_account": SAVINGS, "amount": "150.00",
            "idempotency_key": "t1-4821"}
HUMAN = {"reason": "the caller asked for a person"}


# -- the scripted model -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One response of the script: what triggers it, and what the model outputs.

    ``greeting``: the first client ``response.create``; ``speech``: the end of the caller's
    turn ``said`` (server VAD); ``outputs``: the client's ``response.create`` once every tool
    call of the previous step has its output; ``keypad``: the client's ``response.create``
    after the session passed on keypad digits as a user message.
    """

    on: Literal["greeting", "speech", "outputs", "keypad"]
    outputs: tuple[Output, ...]
    said: str = ""


@dataclass(kw_only=True)
class Script(Scenario):
    """A model that answers response after response with ``steps``, in order.

    The caller "speaks" (input_audio_buffer.speech_started/stopped, like the fake's VAD) when
    the next step is a ``speech`` one: on the audio clock, ``after_ms`` of input audio after the
    last ``response.done`` (``auto_speech``), or when the test awaits :meth:`say`. A response
    no step matches is noted in ``unplanned`` (and gets the fake's default reply).
    """

    steps: Sequence[Step] = ()
    after_ms: int = 500
    speech_ms: int = 400
    auto_speech: bool = True
    done: int = field(default=0, init=False)
    """Steps answered so far."""
    tool_calls: list[tuple[str, str]] = field(default_factory=list, init=False)
    """(tool name, call_id) of every call made, in order."""
    step_responses: list[int] = field(default_factory=list, init=False)
    """The response index that answered each step."""
    unplanned: list[int] = field(default_factory=list, init=False)
    keypad: list[str] = field(default_factory=list, init=False)
    """The keypad messages the session sent, as the model read them."""
    _step_call_ids: list[list[str]] = field(default_factory=list, init=False)
    _armed_at: float | None = field(default=0.0, init=False)
    _speaking_since: float | None = field(default=None, init=False)
    _heard: bool = field(default=False, init=False)

    @property
    def next_step(self) -> Step | None:
        return self.steps[self.done] if self.done < len(self.steps) else None

    def call_ids(self, name: str) -> list[str]:
        return [call_id for tool, call_id in self.tool_calls if tool == name]

    def plan_response(self, conn: FakeConnection, request: ResponseRequest
                      ) -> Sequence[Output] | None:
        step = self.next_step
        if step is None or not self._due(conn, request, step):
            self.unplanned.append(request.index)
            return None
        declared = conn.declared_tools(request)
        outputs: list[Output] = []
        call_ids: list[str] = []
        for output in step.outputs:
            if isinstance(output, ToolCall):
                if output.name not in declared:
                    conn.violation("semantic", None, "tool_not_declared", "session.tools",
                                   f"Tool {output.name!r} is not declared ({sorted(declared)})")
                call_id = conn.new_id("call", 16)
                output = ToolCall(output.name, output.arguments, call_id)
                call_ids.append(call_id)
                self.tool_calls.append((output.name, call_id))
            outputs.append(output)
        self._step_call_ids.append(call_ids)
        self.step_responses.append(request.index)
        self.done += 1
        return outputs

    def _due(self, conn: FakeConnection, request: ResponseRequest, step: Step) -> bool:
        if step.on == "speech":
            heard, self._heard = self._heard, False
            return request.trigger == "vad" and heard
        if request.trigger != "client":
            return False
        if step.on == "greeting":
            return request.index == 0
        if step.on == "outputs":
            previous = self._step_call_ids[-1] if self._step_call_ids else []
            return bool(previous) and all(c in conn.function_outputs for c in previous)
        keypad = [text for text in _user_texts(conn) if "keypad" in text]
        if len(keypad) > len(self.keypad):
            self.keypad = keypad
            return True
        return False

    async def on_audio(self, conn: FakeConnection) -> None:
        step = self.next_step
        if not self.auto_speech or step is None or step.on != "speech" or not conn.vad_enabled:
            return
        if self._speaking_since is None:
            if (self._armed_at is not None and conn.active_response is None
                    and conn.audio_in_ms >= self._armed_at + self.after_ms):
                self._speaking_since = conn.audio_in_ms
                await conn.user_speech_started()
        elif conn.audio_in_ms >= self._speaking_since + self.speech_ms:
            self._speaking_since, self._armed_at, self._heard = None, None, True
            await conn.user_speech_stopped(step.said)

    async def on_sent(self, conn: FakeConnection, event: Event) -> None:
        if event["type"] == "response.done" and self._speaking_since is None:
            self._armed_at = conn.audio_in_ms

    async def say(self, conn: FakeConnection) -> None:
        """The caller says the next step's words now (for a caller that sends no audio)."""
        step = self.next_step
        assert step is not None and step.on == "speech", step
        await conn.user_speech_started()
        await asyncio.sleep(self.speech_ms / 1000)
        self._heard = True
        await conn.user_speech_stopped(step.said)


def _user_texts(conn: FakeConnection) -> list[str]:
    """Text of the user messages the client created (conversation.item.create)."""
    return [part.get("text", "") for record in conn.items.values()
            if record.type == "message" and record.role == "user"
            for part in record.item.get("content") or [] if part.get("type") == "input_text"]


def the_script(conn: FakeConnection) -> Script:
    script = conn.scenarios[0]
    assert isinstance(script, Script)
    return script


def output_of(conn: FakeConnection, call_id: str) -> Any:
    return json.loads(conn.function_outputs[call_id])


def answered(conn: FakeConnection, script: Script, steps: int) -> bool:
    """The first ``steps`` steps were answered and their responses are complete."""
    return (script.done >= steps
            and conn.responses[script.step_responses[steps - 1]].status == "completed")


# -- the call ---------------------------------------------------------------------------------


@dataclass
class Caller(Softphone):
    """The softphone, calling from ``number`` (its From user) to ``user`` (the DID)."""

    number: str = ANA

    def request(self, method: str, body: str = "", *, cseq: int | None = None,
                branch: str | None = None, extra: tuple[tuple[str, str], ...] = (),
                content_type: str = "application/sdp") -> Request:
        request = super().request(method, body, cseq=cseq, branch=branch, extra=extra,
                                  content_type=content_type)
        request.headers.set("From", f"<sip:{self.number}@127.0.0.1:{self.sip_port}>"
                                    f";tag={self.tag}")
        return request


class Line:
    """The caller's side of a live call: silence streamed until paused for keypad digits."""

    def __init__(self, server: Server, phone: Caller) -> None:
        self.server = server
        self.phone = phone
        self._audio: asyncio.Task[None] | None = None

    def talk(self) -> None:
        self._audio = asyncio.get_running_loop().create_task(self.phone.stream([SILENCE] * 1500))

    async def hush(self) -> None:
        if self._audio is not None:
            self._audio.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._audio
            self._audio = None

    async def press(self, keys: str) -> None:
        """RFC 4733 digits, with the audio stopped (the softphone sends them on another SSRC)."""
        await self.hush()
        for key in keys:
            await self.phone.send_dtmf(key)
        self.talk()

    @property
    def record(self) -> CallRecord:
        [record] = self.server.registry.active()
        return record


@pytest.fixture
def seed_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh seed SQLite file for the banking tools (``$SIPAGENT_SEED_DB``)."""
    path = tmp_path / "seed.sqlite3"
    monkeypatch.setenv(SEED_DB_ENV, str(path))
    set_store(None)
    try:
        yield path
    finally:
        store = get_store()
        set_store(None)
        store.close()
        assert store.path == path


async def agents_server(fake: FakeRealtimeServer, transfer_target: str) -> Server:
    return await start_server(
        model="openai", openai_api_key=API_KEY, openai_base_url=fake.base_url,
        agents_path=str(AGENTS), transfer_target=transfer_target,
    )


def human_target() -> str:
    return f"sip:human@127.0.0.1:{free_port()}"


@contextlib.asynccontextmanager
async def bank_call(fake: FakeRealtimeServer, transfer_target: str
                    ) -> AsyncIterator[Line]:
    """Ana calling the bank's number, answered and streaming silence."""
    server = await agents_server(fake, transfer_target)
    phone = Caller(server=("127.0.0.1", server.transport.port), user=BANK_DID)
    await phone.open()
    line = Line(server, phone)
    try:
        ok = await phone.call()
        assert ok.status == 200, ok.status
        line.talk()
        yield line
    finally:
        await line.hush()
        await phone.close()
        await server.stop()


async def expect_request(phone: Softphone, method: str, timeout: float = WAIT) -> Request:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        message = await phone.next_message(max(0.01, deadline - loop.time()))
        if isinstance(message, Request) and message.method == method:
            return message


async def expect_bye(phone: Softphone) -> Request:
    return await phone.expect_bye(timeout=WAIT)


async def notify(phone: Softphone, sipfrag: str, state: str) -> int:
    """Report the transfer's progress (RFC 3515 NOTIFY); the server's answer status."""
    phone.send(phone.request("NOTIFY", sipfrag, content_type="message/sipfrag",
                             extra=(("Event", "refer"), ("Subscription-State", state))))
    return (await phone.final_response()).status


async def call_ended(server: Server, record: CallRecord) -> None:
    """The call is gone and its record closed (media and model torn down)."""
    await wait_for(lambda: not server.calls and record.ended_at is not None, WAIT,
                   "the call to end")


def system_events(record: CallRecord) -> list[object]:
    return [line["event"] for line in record.transcript if line["role"] == "system"]


def balances(path: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {number: cents for number, cents
                in db.execute("SELECT number, balance_cents FROM bank_accounts")}


def transfers(path: Path) -> list[tuple[str, str, int, str]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return list(db.execute("SELECT from_account, to_account, amount_cents, idempotency_key"
                               " FROM bank_transfers"))


# -- tests ------------------------------------------------------------------------------------


async def test_balance_pin_transfer_then_human_by_refer(seed_db: Path) -> None:
    """Balance, a transfer that asks for the PIN typed as RFC 4733 digits, then a human."""
    steps = [
        Step("greeting", (Speech("Banco Sinal, bom dia! How can I help?", 300),)),
        Step("speech", (ToolCall("get_account_balance", {"account": CHECKING}),),
             said="What is the balance of 48213-7? Then move 150 reais to my savings, 48213-8."),
        Step("outputs", (Speech("You have R$ 8.450,75. Moving R$ 150,00 to 48213-8.", 300),
                         ToolCall("transfer_money", TRANSFER))),
        Step("outputs", (Speech("Please enter your 4-digit PIN followed by #.", 300),)),
        Step("keypad", (ToolCall("transfer_money", TRANSFER),)),
        Step("outputs", (Speech("Done: R$ 150,00 went to 48213-8.", 300),)),
        Step("speech", (Speech("I am transferring you to a colleague.", 300),
                        ToolCall("transfer_to_human", HUMAN)),
             said="Thanks. Can I talk to a person, please?"),
        Step("outputs", (Speech("Connecting you now. Goodbye!", 300),)),
    ]
    target = human_target()
    async with FakeRealtimeServer(scenarios=[Script(steps=steps)]) as fake, \
            bank_call(fake, target) as line:
        conn = await fake.wait_connection(0)
        script = the_script(conn)
        record = line.record
        assert record.caller_number == ANA
        assert conn.session["instructions"].startswith(
            "You are the phone banking assistant of Banco Sinal")
        assert sorted(tool["name"] for tool in conn.session["tools"]) == [
            "get_account_balance", "pix_transfer", "transfer_money", "transfer_to_concierge",
            "transfer_to_human"]

        # The balance, then the transfer asks for the PIN.
        await wait_for(lambda: answered(conn, script, 4), WAIT, "the PIN prompt")
        [balance_id] = script.call_ids("get_account_balance")
        balance = output_of(conn, balance_id)
        assert (balance["status"], balance["account"], balance["holder"], balance["balance"]) \
            == ("ok", CHECKING, "Ana Beatriz Souza", "R$ 8.450,75")
        first_id = script.call_ids("transfer_money")[0]
        pin_required = output_of(conn, first_id)
        assert pin_required["status"] == "pin_required"
        assert pin_required["transfer"] == {"amount": "R$ 150,00",
                                            "recipient": "Ana Beatriz Souza",
                                            "recipient_bank": "Banco Sinal"}

        # The PIN on the keypad: the session passes it on and the model retries the transfer.
        await line.press(PIN + "#")
        await wait_for(lambda: answered(conn, script, 6), WAIT, "the transfer's confirmation")
        assert script.keypad == [
            f"[The caller pressed these keys on the phone keypad: {PIN}#]"]
        second_id = script.call_ids("transfer_money")[1]
        moved = output_of(conn, second_id)
        assert (moved["status"], moved["amount"], moved["to_account"], moved["new_balance"]) \
            == ("ok", "R$ 150,00", SAVINGS, "R$ 8.300,75")

        # A person: REFER to the transfer target, accepted, then the transfer succeeds.
        refer = await expect_request(line.phone, "REFER")
        assert refer.headers.get("Refer-To") == f"<{target}>"
        assert refer.call_id == line.phone.call_id
        line.phone.send(make_response(refer, 202))
        await wait_for(lambda: answered(conn, script, 8), WAIT, "the goodbye")
        [human_id] = script.call_ids("transfer_to_human")
        assert output_of(conn, human_id)["status"] == "transferring"
        assert await notify(line.phone, "SIP/2.0 200 OK\r\n",
                            "terminated;reason=noresource") == 200
        bye = await expect_bye(line.phone)
        assert bye.call_id == line.phone.call_id
        await call_ended(line.server, record)

        assert record.end_reason == "transferred-to-human"
        assert record.dtmf == list(PIN + "#")
        assert [(call["name"], call["call_id"]) for call in record.tool_calls] \
            == script.tool_calls
        results = [call["result"] for call in record.tool_calls]
        assert results == [output_of(conn, call_id) for _, call_id in script.tool_calls]
        assert all(call["error"] is None for call in record.tool_calls)
        assert [result["status"] for result in results] == [  # type: ignore[index]
            "ok", "pin_required", "ok", "transferring"]
        assert record.tool_calls[1]["arguments"] == record.tool_calls[2]["arguments"] == TRANSFER
        assert system_events(record) == [
            "transfer-requested", "transfer-accepted", "transferred"]
        requested = next(line for line in record.transcript
                         if line.get("event") == "transfer-requested")
        assert requested["text"] == f"REFER to {target}"
        assert script.unplanned == []
    # The money moved once, from checking to savings.
    assert transfers(seed_db) == [("482137", "482138", 15000, "t1-4821")]
    assert balances(seed_db)["482137"] == 845075 - 15000
    assert balances(seed_db)["482138"] == 3210000 + 15000


@pytest.mark.skipif(not sipp_available(), reason="sipp (sip-tester) not installed")
async def test_sipp_caller_is_referred_to_a_human(seed_db: Path, tmp_path: Path) -> None:
    """SIPp accepts the REFER, reports the transfer's success by NOTIFY, takes the BYE."""
    steps = [
        Step("speech", (ToolCall("transfer_to_human", HUMAN),), said="Get me a human."),
        Step("outputs", (Speech("Connecting you now.", 300),)),
    ]
    target = human_target()
    async with FakeRealtimeServer(scenarios=[Script(steps=steps, auto_speech=False)]) as fake:
        server = await agents_server(fake, target)
        try:
            sipp = asyncio.get_running_loop().create_task(asyncio.to_thread(
                run_sipp, "uac_refer_accept.xml", remote=(LOCALHOST, server.transport.port),
                service=BANK_DID, timeout=20.0, workdir=tmp_path / "sipp"))
            await wait_for(lambda: sipp.done() or any(
                dialog.state is DialogState.CONFIRMED for dialog in server.calls), WAIT,
                "SIPp's call to be confirmed")
            assert not sipp.done(), (await sipp).describe()
            [record] = server.registry.active()
            conn = await fake.wait_connection(0)
            script = the_script(conn)
            await script.say(conn)  # SIPp sends no audio: the caller's turn, told by the test
            result = await sipp
            assert result.ok, result.describe()
            await call_ended(server, record)
        finally:
            await server.stop()
    assert record.caller_number == ANA
    assert record.end_reason == "transferred-to-human"
    assert result.count("REFER sip:") == 1
    assert f"Refer-To: <{target}>" in result.messages
    assert result.count("SIP/2.0 202 Accepted") == 1
    assert result.count("NOTIFY sip:") == 1 and result.count("BYE sip:") == 1
    assert system_events(record) == ["transfer-requested", "transfer-accepted", "transferred"]
    [human_id] = script.call_ids("transfer_to_human")
    assert output_of(conn, human_id)["status"] == "transferring"
    assert [call["name"] for call in record.tool_calls] == ["transfer_to_human"]
    assert script.done == 2 and script.unplanned == []


async def test_refused_refer_tells_the_model_and_the_call_goes_on(seed_db: Path) -> None:
    """603 to the REFER: the model hears "failed" and carries on; a later transfer works."""
    steps = [
        Step("greeting", (Speech("Banco Sinal, bom dia! How can I help?", 300),)),
        Step("speech", (ToolCall("transfer_to_human", HUMAN),),
             said="I want to talk to a person."),
        Step("outputs", (Speech("Sorry, nobody can take your call right now.", 300),)),
        Step("speech", (ToolCall("transfer_to_human", {"reason": "second try"}),),
             said="Please try again."),
        Step("outputs", (Speech("Connecting you now.", 300),)),
    ]
    target = human_target()
    async with FakeRealtimeServer(scenarios=[Script(steps=steps)]) as fake, \
            bank_call(fake, target) as line:
        conn = await fake.wait_connection(0)
        script = the_script(conn)
        record = line.record
        refer = await expect_request(line.phone, "REFER")
        assert refer.headers.get("Refer-To") == f"<{target}>"
        line.phone.send(make_response(refer, 603))
        await wait_for(lambda: answered(conn, script, 3), WAIT, "the apology")
        refused_id = script.call_ids("transfer_to_human")[0]
        refused = output_of(conn, refused_id)
        assert refused["status"] == "failed", refused
        assert refused["reason"] == "the transfer was refused"
        assert system_events(record) == ["transfer-requested", "transfer-rejected"]
        [rejected] = [entry for entry in record.transcript
                      if entry.get("event") == "transfer-rejected"]
        assert str(rejected["text"]).startswith(f"{target}: 603")
        call = next(iter(line.server.calls.values()))
        assert call.link is ModelLink.BRIDGED and record.end_reason is None
        assert record.tool_calls[0]["result"] == refused

        # The call went on: asked again, the transfer goes through.
        refer = await expect_request(line.phone, "REFER")
        line.phone.send(make_response(refer, 202))
        await wait_for(lambda: answered(conn, script, 5), WAIT, "the second transfer")
        assert output_of(conn, script.call_ids("transfer_to_human")[1])["status"] \
            == "transferring"
        assert await notify(line.phone, "SIP/2.0 200 OK\r\n", "terminated") == 200
        await expect_bye(line.phone)
        await call_ended(line.server, record)
        assert record.end_reason == "transferred-to-human"
        assert system_events(record) == [
            "transfer-requested", "transfer-rejected",
            "transfer-requested", "transfer-accepted", "transferred"]
        assert script.unplanned == []


async def test_transfer_failed_after_202_can_be_tried_again(seed_db: Path) -> None:
    """202, then NOTIFY 486: the caller stays with the agent, who may transfer again."""
    steps = [
        Step("greeting", (Speech("Banco Sinal, bom dia! How can I help?", 300),)),
        Step("speech", (ToolCall("transfer_to_human", HUMAN),), said="A person, please."),
        Step("outputs", (Speech("Connecting you now.", 300),)),
        Step("speech", (ToolCall("transfer_to_human", {"reason": "second try"}),),
             said="Hello? Nobody answered. Please try again."),
        Step("outputs", (Speech("Trying again.", 300),)),
    ]
    target = human_target()
    async with FakeRealtimeServer(scenarios=[Script(steps=steps)]) as fake, \
            bank_call(fake, target) as line:
        conn = await fake.wait_connection(0)
        script = the_script(conn)
        record = line.record
        refer = await expect_request(line.phone, "REFER")
        line.phone.send(make_response(refer, 202))
        await wait_for(lambda: answered(conn, script, 3), WAIT, "the first transfer")
        assert await notify(line.phone, "SIP/2.0 486 Busy Here\r\n", "terminated") == 200
        await wait_for(lambda: answered(conn, script, 5), WAIT, "the second transfer_to_human")
        assert line.server.calls and record.end_reason is None
        retry = output_of(conn, script.call_ids("transfer_to_human")[1])
        assert system_events(record) == [
            "transfer-requested", "transfer-accepted", "transfer-failed",
            "transfer-requested"], retry
        refer = await expect_request(line.phone, "REFER")
        assert refer.headers.get("Refer-To") == f"<{target}>"
