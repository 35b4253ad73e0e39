"""The command line: configuration errors in-process, the real server as a subprocess.

The subprocess runs in an empty working directory (no ``.env``, no ``config/*.toml``) with
every ``SIPAGENT_*`` variable chosen by the test, on free loopback ports and a private RTP
range. It is stopped with SIGTERM and killed (by its PID) only if a test fails.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sipagent.cli import freeze_startup_heap, main
from sipagent.message import Response
from tests.peers.sipp import free_media_port, free_port, free_tcp_port
from tests.peers.softphone import Softphone

REPO = Path(__file__).resolve().parents[1]
LOCALHOST = "127.0.0.1"
START_TIMEOUT = 30.0
"""Bound on interpreter start-up + imports + binding, on a loaded machine."""
EXIT_TIMEOUT = 20.0


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No inherited settings: an empty working directory and no SIPAGENT_* variables."""
    for name in list(os.environ):
        if name.startswith("SIPAGENT_") or name == "OPENAI_API_KEY":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# -- configuration errors (in-process) --------------------------------------------------------


def test_invalid_setting_in_config_file(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = clean_env / "bad.toml"
    bad.write_text('sip_port = 70000\nlog_level = "INFO"\n')
    assert main(["run", "--config", str(bad)]) == 2
    captured = capsys.readouterr()
    lines = error_lines(captured.err)
    assert len(lines) == 1, captured.err
    assert "SIPAGENT_SIP_PORT" in lines[0] and "70000" in lines[0]
    assert lines[0].startswith("sipagent: configuration error:")
    assert captured.out == ""


def test_invalid_setting_in_the_environment(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SIPAGENT_SIP_PORT", "70000")
    assert main(["run"]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "SIPAGENT_SIP_PORT" in lines[0]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("sip_port = 5060\nsip_prot = 5061\n", "sip_prot"),
        ("sip_port = \n", "invalid TOML"),
        ('rtp_port_min = 20000\nrtp_port_max = 10000\n', "SIPAGENT_RTP_PORT_MAX"),
        ('model = "openai"\n', "OPENAI_API_KEY"),
        ('log_format = "xml"\n', "SIPAGENT_LOG_FORMAT"),
    ],
)
def test_config_file_errors_are_one_line(
    clean_env: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str
) -> None:
    bad = clean_env / "bad.toml"
    bad.write_text(content)
    assert main(["run", "--config", str(bad)]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and expected in lines[0], lines


def test_missing_config_file(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--config", str(clean_env / "nope.toml")]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "not found" in lines[0]


def test_usage_errors_exit_2(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    with pytest.raises(SystemExit) as exited:
        main(["serve"])
    assert exited.value.code == 2


# -- the real process -------------------------------------------------------------------------


@dataclass
class Agent:
    """A ``sipagent run`` subprocess and its ports."""

    process: asyncio.subprocess.Process
    sip_port: int
    admin_port: int
    stderr_path: Path

    @property
    def admin_url(self) -> str:
        return f"http://{LOCALHOST}:{self.admin_port}"

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout)

    async def wait_healthy(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        async with httpx.AsyncClient(base_url=self.admin_url, trust_env=False) as client:
            while True:
                if self.process.returncode is not None:
                    raise AssertionError(f"sipagent exited at start-up:\n{self.stderr}")
                try:
                    response = await client.get("/health", timeout=2.0)
                except httpx.TransportError:
                    response = None
                if response is not None and response.status_code == 200:
                    return
                if loop.time() > deadline:
                    raise AssertionError(f"sipagent not healthy in time:\n{self.stderr}")
                await asyncio.sleep(0.1)


def agent_env(sip_port: int, admin_port: int, **extra: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("SIPAGENT_") and name != "OPENAI_API_KEY"
    }
    rtp = free_media_port(count=4)
    env.update(
        SIPAGENT_SIP_HOST=LOCALHOST,
        SIPAGENT_SIP_PORT=str(sip_port),
        SIPAGENT_ADMIN_HOST=LOCALHOST,
        SIPAGENT_ADMIN_PORT=str(admin_port),
        SIPAGENT_RTP_PORT_MIN=str(rtp),
        SIPAGENT_RTP_PORT_MAX=str(rtp + 2),
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def console_script() -> Path | None:
    """The installed ``sipagent`` command next to this interpreter, if any."""
    script = Path(sys.executable).with_name("sipagent")
    return script if script.exists() else None


async def spawn(
    tmp_path: Path, *, sip_port: int | None = None, admin_port: int | None = None,
    module: str = "sipagent.cli", script: Path | None = None, stderr_fd: int | None = None,
    **extra: str,
) -> Agent:
    """Start ``python -m module run`` (or ``script run``); output goes to stderr.txt, or
    stderr alone to ``stderr_fd`` (a terminal, say) when given."""
    sip_port = sip_port or free_port(udp=True, tcp=True)
    admin_port = admin_port or free_tcp_port()
    stderr_path = tmp_path / "stderr.txt"
    command = [str(script)] if script is not None else [sys.executable, "-m", module]
    with stderr_path.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            *command, "run",
            cwd=tmp_path, env=agent_env(sip_port, admin_port, **extra),
            stdin=asyncio.subprocess.DEVNULL, stdout=output,
            stderr=output if stderr_fd is None else stderr_fd,
        )
    return Agent(process, sip_port, admin_port, stderr_path)


@pytest.fixture
async def agents() -> AsyncIterator[list[Agent]]:
    """Processes a test started; any still running at the end are killed by PID."""
    started: list[Agent] = []
    yield started
    for agent in started:
        if agent.process.returncode is None:
            agent.process.kill()
            await agent.process.wait()


async def healthy(tmp_path: Path, agents: list[Agent], **options: Any) -> Agent:
    """:func:`spawn` with ``options``, kept in ``agents``, once it answers ``/health``."""
    agent = await spawn(tmp_path, **options)
    agents.append(agent)
    await agent.wait_healthy()
    return agent


async def options(sip_port: int) -> Response:
    phone = Softphone(server=(LOCALHOST, sip_port))
    await phone.open()
    try:
        phone.send(phone.request("OPTIONS"))
        return await phone.final_response(timeout=5.0)
    finally:
        await phone.close()


async def test_starts_answers_and_stops_on_sigterm(
    tmp_path: Path, agents: list[Agent]
) -> None:
    agent = await healthy(tmp_path, agents)
    async with httpx.AsyncClient(base_url=agent.admin_url, trust_env=False) as client:
        ready = (await client.get("/ready")).json()
    assert ready["ready"] is True and ready["model"] == "echo"

    response = await options(agent.sip_port)
    assert response.status == 200
    assert "INVITE" in (response.headers.get("Allow") or "")

    agent.process.send_signal(signal.SIGTERM)
    assert await agent.wait_exit() == 0, agent.stderr
    stderr = agent.stderr
    assert "Traceback" not in stderr, stderr
    assert f"SIP listening on 127.0.0.1:{agent.sip_port}" in stderr
    # Both ports are free again.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((LOCALHOST, agent.sip_port))


async def test_the_start_up_heap_is_frozen_out_of_the_garbage_collector(
    tmp_path: Path, agents: list[Agent]
) -> None:
    agent = await healthy(tmp_path, agents, SIPAGENT_LOG_LEVEL="DEBUG", SIPAGENT_LOG_FORMAT="text")
    agent.process.send_signal(signal.SIGTERM)
    assert await agent.wait_exit() == 0, agent.stderr
    match = re.search(r"(\d+) start-up objects frozen out of the garbage collector", agent.stderr)
    assert match is not None, agent.stderr
    # Modules, the SDK's types, the app: far more than a call ever makes.
    assert int(match.group(1)) > 50_000


def test_freeze_startup_heap_reports_what_it_froze() -> None:
    try:
        frozen = freeze_startup_heap()
        assert frozen == gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0


async def test_sigterm_hangs_up_a_live_call_then_exits(
    tmp_path: Path, agents: list[Agent]
) -> None:
    agent = await healthy(tmp_path, agents, module="sipagent", SIPAGENT_DRAIN_TIMEOUT="0")
    phone = Softphone(server=(LOCALHOST, agent.sip_port))
    await phone.open()
    try:
        assert (await phone.call()).status == 200
        await phone.stream([b"\xff" * 160] * 5)
        agent.process.send_signal(signal.SIGTERM)
        bye = await phone.expect_bye(timeout=10.0)
        assert bye.method == "BYE"
    finally:
        await phone.close()
    assert await agent.wait_exit() == 0, agent.stderr
    assert "Traceback" not in agent.stderr


async def test_second_sigterm_stops_at_once(tmp_path: Path, agents: list[Agent]) -> None:
    agent = await healthy(tmp_path, agents, SIPAGENT_DRAIN_TIMEOUT="600")
    phone = Softphone(server=(LOCALHOST, agent.sip_port))
    await phone.open()
    try:
        assert (await phone.call()).status == 200
        agent.process.send_signal(signal.SIGTERM)
        async with httpx.AsyncClient(base_url=agent.admin_url, trust_env=False) as client:
            # Draining: still serving the live call, refusing new ones.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while (await client.get("/ready")).status_code != 503:
                assert loop.time() < deadline, "never started draining"
                await asyncio.sleep(0.05)
        agent.process.send_signal(signal.SIGTERM)
        await phone.expect_bye(timeout=10.0)  # the call is still hung up properly
        code = await agent.wait_exit()
    finally:
        await phone.close()
    assert code != 0, "an interrupted drain is not a clean exit"
    assert "Traceback" not in agent.stderr, agent.stderr


async def test_sip_port_in_use_is_one_line(tmp_path: Path, agents: list[Agent]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((LOCALHOST, 0))
        agent = await spawn(tmp_path, sip_port=taken.getsockname()[1], SIPAGENT_LOG_LEVEL="WARNING")
        agents.append(agent)
        code = await agent.wait_exit(START_TIMEOUT)
    assert code != 0
    lines = error_lines(agent.stderr)
    assert len(lines) == 1, agent.stderr
    assert lines[0].startswith("sipagent: cannot start:")


async def test_admin_port_in_use_is_one_line(tmp_path: Path, agents: list[Agent]) -> None:
    with socket.socket() as taken:
        taken.bind((LOCALHOST, 0))
        taken.listen()
        agent = await spawn(tmp_path, admin_port=taken.getsockname()[1],
                            SIPAGENT_LOG_LEVEL="WARNING")
        agents.append(agent)
        code = await agent.wait_exit(START_TIMEOUT)
    assert code != 0
    lines = error_lines(agent.stderr)
    assert len(lines) == 1, agent.stderr
    assert lines[0].startswith("sipagent: cannot start:") and "admin" in lines[0]


async def test_console_script_reports_config_errors(tmp_path: Path) -> None:
    script = console_script()
    if script is None:
        pytest.skip("the sipagent console script is not installed in this environment")
    env = agent_env(free_port(udp=True, tcp=True), free_tcp_port(), SIPAGENT_SIP_PORT="70000")
    process = await asyncio.create_subprocess_exec(
        str(script), "run", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(process.communicate(), START_TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 2
    lines = error_lines(err.decode())
    assert len(lines) == 1 and "SIPAGENT_SIP_PORT" in lines[0]


async def test_running_server_serves_metrics_history_and_requires_the_token(
    tmp_path: Path, agents: list[Agent]
) -> None:
    token = "t" * 20
    agent = await healthy(tmp_path, agents, SIPAGENT_ADMIN_TOKEN=token)
    async with httpx.AsyncClient(base_url=agent.admin_url, trust_env=False) as client:
        assert (await client.get("/sessions")).status_code == 401
        headers = {"Authorization": f"Bearer {token}"}
        metrics = await client.get("/metrics", headers=headers)
        assert metrics.status_code == 200 and "sipagent_active_calls" in metrics.text
        history = await client.get("/history", headers=headers)
        assert history.status_code == 200 and history.json()["total"] == 0
    assert (tmp_path / "data" / "sipagent.sqlite3").exists()
