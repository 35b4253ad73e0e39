"""sipagent registering with a real Kamailio registrar (Debian ``kamailio`` 5.6) on 127.0.0.1.

Each test writes a kamailio.cfg into its tmp_path: UDP and TCP on one free port, ``registrar`` +
``usrloc`` in memory (``db_mode`` 0), digest auth without a database (``pv_auth_check`` against
the password written into the cfg, ``auth_challenge`` with qop=auth; the ``auth`` module's
``algorithm`` parameter picks SHA-256 or MD5), and INVITEs to a registered user relayed to its
contact by ``lookup("location")`` with ``record_route``. Kamailio runs in the foreground
(``-DD -E``: no daemon, log to stderr, with its -w/-Y/-P directories under tmp_path) and is
stopped by its PID. Every request it routes is logged by ``xlog`` (``MARK ...`` lines on its
stderr), which is how the tests count REGISTERs and read their Authorization and Expires; its
location table is read with ``kamcmd ul.lookup`` over the ``ctl`` module's unix socket.
The server is the in-process one of tests/peers/harness.py; calls come from SIPp
(tests/sipp/uac_basic_rtp.xml, which plays a PCMU pcap: root only) through Kamailio.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from admin.app import create_app
from sipagent.registration import BACKOFF_BASE, RegState
from sipagent.server import Server
from tests.peers.harness import start_server, wait_for
from tests.peers.processes import stop_process
from tests.peers.sipp import LOCALHOST, free_port, run_sipp, sipp_available
from tests.peers.softphone import Softphone

pytestmark = pytest.mark.skipif(
    shutil.which("kamailio") is None or shutil.which("kamcmd") is None,
    reason="kamailio is not installed (Debian package kamailio; run bash .ci/setup as root)",
)
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_sipp_rtp = pytest.mark.skipif(
    not (IS_ROOT and sipp_available()),
    reason="SIPp (sip-tester) playing a pcap through a raw socket: needs sipp and root",
)

USER = "agent"
PASSWORD = "s3cret-kam"
MARK = "SIPAGENT-KAM"
#: RFC 3261 Timer F (64·T1): how long a REGISTER over TCP would wait without a transport error.
TIMER_F = 32.0
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0

CONFIG = """#!KAMAILIO
debug=2
log_stderror=yes
children=1
tcp_children=1
auto_aliases=no
listen=udp:{host}:{port}
listen=tcp:{host}:{port}
alias="{host}:{port}"

loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "auth.so"
loadmodule "ctl.so"

modparam("ctl", "binrpc", "unix:{ctl}")
modparam("usrloc", "db_mode", 0)
modparam("registrar", "min_expires", {min_expires})
modparam("registrar", "min_expires_mode", 1)
modparam("registrar", "max_expires", {max_expires})
modparam("auth", "algorithm", "{algorithm}")

request_route {{
    xlog("L_NOTICE", "{mark} $rm proto=$proto expires=$hdr(Expires) auth=$hdr(Authorization)\\n");
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (is_method("REGISTER")) {{
        if (!pv_auth_check("$td", "{password}", "0", "1")) {{
            auth_challenge("$td", "1");
            exit;
        }}
        consume_credentials();
        if (!save("location")) {{
            sl_reply_error();
        }}
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            t_relay();
        }} else if (is_method("ACK") && t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (!lookup("location")) {{
        sl_send_reply("404", "Not Found");
        exit;
    }}
    record_route();
    t_relay();
}}
"""


@dataclass
class Kamailio:
    """A kamailio process in the foreground, its port (UDP and TCP) and its logs."""

    process: subprocess.Popen[bytes]
    port: int
    workdir: Path
    ctl: Path

    @property
    def uri(self) -> str:
        return f"sip:{LOCALHOST}:{self.port}"

    def log(self) -> str:
        return (self.workdir / "stderr.txt").read_text(errors="replace")

    def requests(self, method: str) -> list[str]:
        """The xlog lines of the ``method`` requests Kamailio routed, in order."""
        return [line for line in self.log().splitlines() if f"{MARK} {method} " in line]

    def contacts(self, aor_user: str = USER) -> list[str]:
        """Contacts of ``aor_user`` in the location table with time left (kamcmd ul.lookup)."""
        done = subprocess.run(
            ["kamcmd", "-s", f"unix:{self.ctl}", "ul.lookup", "location", aor_user],
            capture_output=True, text=True, timeout=5.0, check=False,
        )
        if done.returncode != 0:  # "AOR not found"
            return []
        # One Contact block per binding: "Address: sip:...", then "Expires: <seconds left>".
        blocks = done.stdout.split("Contact:")[1:]
        found = []
        for block in blocks:
            address = re.search(r"Address:\s*(\S+)", block)
            expires = re.search(r"Expires:\s*(-?\d+)", block)
            if address and expires and int(expires.group(1)) > 0:
                found.append(address.group(1))
        return found

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM to the main process (it ends its children), SIGKILL if it lingers."""
        stop_process(
            self.process, ((signal.SIGTERM, _STOP_TIMEOUT), (signal.SIGKILL, _STOP_TIMEOUT))
        )


def _ctl_ready(ctl: Path) -> bool:
    done = subprocess.run(["kamcmd", "-s", f"unix:{ctl}", "core.version"],
                          capture_output=True, timeout=5.0, check=False)
    return done.returncode == 0


@contextlib.contextmanager
def kamailio(
    tmp_path: Path,
    *,
    algorithm: str = "SHA-256",
    password: str = PASSWORD,
    min_expires: int = 60,
    max_expires: int = 3600,
) -> Iterator[Kamailio]:
    """Write the cfg, start kamailio in the foreground, wait for its control socket; stop it."""
    workdir = tmp_path / "kamailio"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port(udp=True, tcp=True)
    ctl = workdir / "ctl.sock"
    config = workdir / "kamailio.cfg"
    config.write_text(CONFIG.format(
        host=LOCALHOST, port=port, ctl=ctl, mark=MARK, password=password,
        algorithm=algorithm, min_expires=min_expires, max_expires=max_expires,
    ))
    command = [
        "kamailio", "-DD", "-E", "-f", str(config), "-w", str(workdir), "-Y", str(workdir),
        "-P", str(workdir / "kamailio.pid"), "-m", "32", "-M", "8",
    ]
    with open(workdir / "stderr.txt", "wb") as stderr:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=stderr)
    instance = Kamailio(process=process, port=port, workdir=workdir, ctl=ctl)
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while not (ctl.exists() and _ctl_ready(ctl)):
            assert instance.running(), f"kamailio exited:\n{instance.log()[-3000:]}"
            assert time.monotonic() < deadline, f"kamailio not ready:\n{instance.log()[-3000:]}"
            time.sleep(0.05)
        yield instance
    finally:
        instance.stop()


@pytest.fixture
async def servers() -> AsyncIterator[list[Server]]:
    """Servers a test started; stopped (so un-REGISTERed) at its end if it did not."""
    started: list[Server] = []
    yield started
    for server in started:
        if not server.draining:
            await server.stop()


async def registered_server(servers: list[Server], registrar: str, **overrides: object) -> Server:
    server = await start_server(registrar=registrar, registrar_user=USER,
                                registrar_password=PASSWORD, registrar_expires=60, **overrides)
    servers.append(server)
    registration = server.registration
    assert registration is not None
    await wait_for(lambda: registration.state is RegState.REGISTERED, 10.0,
                   what=f"registered ({registration.status()})")
    return server


async def admin_registrations(server: Server) -> list[dict[str, object]]:
    """GET /registrations from the admin app."""
    app = create_app(server.registry, server)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        response = await client.get("/registrations")
    assert response.status_code == 200
    body: dict[str, list[dict[str, object]]] = response.json()
    return body["registrations"]


def our_contact(server: Server, transport: str = "udp") -> str:
    suffix = "" if transport == "udp" else f";transport={transport}"
    return f"sip:{USER}@{LOCALHOST}:{server.transport.port}{suffix}"


async def call_through(kam: Kamailio, tmp_path: Path, server: Server) -> None:
    """SIPp calls sip:agent@kamailio; Kamailio looks the contact up; the echo answers."""
    result = await asyncio.to_thread(
        run_sipp, "uac_basic_rtp.xml", remote=(LOCALHOST, kam.port), service=USER,
        timeout=20.0, workdir=tmp_path / "sipp",
    )
    assert result.ok, result.describe()
    assert "Record-Route:" in result.messages  # the call went through Kamailio
    await wait_for(lambda: not server.calls, 5.0, what="the call ended")
    [record] = server.registry.ended()
    assert record.end_reason == "remote-bye"
    assert record.codec == "PCMU"
    # ~150 packets of speech each way: what came in went back out (the echo model).
    assert record.rtp.packets_in >= 140, record.rtp
    assert record.rtp.packets_out >= 140, record.rtp


async def invite_status(kam: Kamailio) -> int:
    """The final status Kamailio gives an INVITE to sip:agent@kamailio."""
    phone = Softphone(server=(LOCALHOST, kam.port), user=USER)
    await phone.open()
    try:
        return (await phone.call()).status
    finally:
        await phone.close()


# ------------------------------------------------------------------------------ registration


@needs_sipp_rtp
async def test_sha256_registration_call_and_unregister(
    tmp_path: Path, servers: list[Server]
) -> None:
    with kamailio(tmp_path, algorithm="SHA-256") as kam:
        server = await registered_server(servers, kam.uri)
        [status] = await admin_registrations(server)
        assert status["state"] == "registered"
        assert status["registrar"] == kam.uri
        assert status["expires"] == 60 and status["last_status"] == 200
        assert isinstance(status["expires_in"], float) and 0 < status["expires_in"] <= 60
        assert status["contact"] == f"<{our_contact(server)}>"
        registers = kam.requests("REGISTER")
        assert len(registers) == 2, registers  # challenged once, then accepted
        assert "auth=<null>" in registers[0]
        assert "algorithm=SHA-256" in registers[1] and "qop=auth" in registers[1]
        assert kam.contacts() == [our_contact(server)]

        await call_through(kam, tmp_path, server)

        await server.stop()
        assert server.registrations()[0]["state"] == "unregistered"
        unregister = kam.requests("REGISTER")[-1]
        assert "expires=0" in unregister and "algorithm=SHA-256" in unregister
        assert kam.contacts() == []
        assert await invite_status(kam) == 404  # nobody there any more


async def test_md5_registration_over_tcp(tmp_path: Path, servers: list[Server]) -> None:
    with kamailio(tmp_path, algorithm="MD5") as kam:
        server = await registered_server(servers, f"{kam.uri};transport=tcp")
        registers = kam.requests("REGISTER")
        assert [line.count("proto=tcp") for line in registers] == [1, 1], registers
        assert "algorithm=MD5" in registers[1] and "qop=auth" in registers[1]
        assert kam.contacts() == [our_contact(server, "tcp")]
        await server.stop()
        assert kam.contacts() == []


@needs_sipp_rtp
async def test_call_reaches_a_tcp_contact(tmp_path: Path, servers: list[Server]) -> None:
    """SIPp over UDP to Kamailio, Kamailio over TCP to our ;transport=tcp contact."""
    with kamailio(tmp_path, algorithm="MD5") as kam:
        server = await registered_server(servers, f"{kam.uri};transport=tcp")
        await call_through(kam, tmp_path, server)
        assert kam.requests("INVITE")  # SIPp's went through Kamailio
        await server.stop()


async def test_wrong_password_fails_without_retrying(
    tmp_path: Path, servers: list[Server]
) -> None:
    with kamailio(tmp_path, password="not-" + PASSWORD) as kam:
        server = await start_server(registrar=kam.uri, registrar_user=USER,
                                    registrar_password=PASSWORD, registrar_expires=60)
        servers.append(server)
        registration = server.registration
        assert registration is not None
        await wait_for(lambda: registration.state is RegState.FAILED, 10.0,
                       what=f"failed ({registration.status()})")
        [status] = await admin_registrations(server)
        assert status["state"] == "failed"
        assert status["last_status"] == 401 and status["last_error"] == "bad credentials"
        assert status["next_attempt_at"] is None  # no retry until the credentials change
        assert server.ready()["ready"] is False
        # No loop: two REGISTERs (unauthenticated, then the rejected answer), and no more
        # while the server keeps running for several round trips' worth of time.
        seen = len(kam.requests("REGISTER"))
        await asyncio.sleep(2.0)
        assert seen == len(kam.requests("REGISTER")) == 2, kam.requests("REGISTER")
        assert kam.contacts() == []
        await server.stop()
        assert len(kam.requests("REGISTER")) == 2  # nothing bound: no un-REGISTER either


async def test_short_grant_is_refreshed_before_it_expires(
    tmp_path: Path, servers: list[Server]
) -> None:
    """Kamailio caps the binding at 4 s (max_expires): refreshed half-way, never lapsing."""
    grant = 4
    with kamailio(tmp_path, min_expires=1, max_expires=grant) as kam:
        server = await registered_server(servers, kam.uri)
        registration = server.registration
        assert registration is not None
        assert registration.granted == grant
        first_call_id = registration.call_id
        loop = asyncio.get_running_loop()
        # Three grants long: the binding would have lapsed twice over without refreshes.
        end = loop.time() + 3 * grant
        lapsed = []
        while loop.time() < end:
            if not kam.contacts():
                lapsed.append(loop.time())
            await asyncio.sleep(0.25)
        assert lapsed == []
        registers = kam.requests("REGISTER")
        # 2 to register, then one refresh per half grant: about 6; at least 4 leaves slack.
        assert len(registers) >= 2 + 4, registers
        assert all("auth=<null>" not in line for line in registers[1:])  # no new challenge
        assert registration.call_id == first_call_id  # one registration, CSeq growing
        assert registration.state is RegState.REGISTERED
        await server.stop()
        assert kam.contacts() == []


async def test_interval_too_brief_is_followed(tmp_path: Path, servers: list[Server]) -> None:
    """min_expires_mode 1: Kamailio answers 60 s with 423 Min-Expires 120; we ask 120."""
    with kamailio(tmp_path, min_expires=120) as kam:
        server = await registered_server(servers, kam.uri)
        registration = server.registration
        assert registration is not None
        assert registration.granted == 120 and registration.expires == 120
        registers = kam.requests("REGISTER")
        assert [re.search(r"expires=(\d+)", line).group(1)  # type: ignore[union-attr]
                for line in registers] == ["60", "60", "120"], registers
        assert kam.contacts() == [our_contact(server)]
        await server.stop()
        assert "expires=0" in kam.requests("REGISTER")[-1]


# ------------------------------------------------------------------------- transport errors


async def test_registrar_gone_refresh_over_tcp_fails_at_once(
    tmp_path: Path, servers: list[Server]
) -> None:
    """Kamailio stops: the refresh's TCP connect is refused and the backoff starts then."""
    grant = 12
    with kamailio(tmp_path, min_expires=1, max_expires=grant) as kam:
        server = await registered_server(servers, f"{kam.uri};transport=tcp")
        registration = server.registration
        assert registration is not None
        refresh_due = registration.status()["next_attempt_at"]
        assert isinstance(refresh_due, float)
        await asyncio.to_thread(kam.stop)  # the loop (and the server) keeps running
        loop = asyncio.get_running_loop()
        assert loop.time() < refresh_due, "kamailio took longer to stop than half a grant"
    await wait_for(lambda: registration.state is RegState.BACKOFF, grant + TIMER_F / 4,
                   what=f"backoff ({registration.status()})")
    noticed = loop.time()
    status = registration.status(noticed)
    assert isinstance(status["last_error"], str)
    assert "Connection refused" in status["last_error"], status
    assert status["failures"] == 1
    # Reported by the transport, not by the transaction's timeout: within a small fraction
    # of Timer F after the refresh was due.
    assert (noticed - refresh_due) / TIMER_F < 0.1, (noticed, refresh_due)
    # The retry is scheduled after the backoff (its base, jittered down to half at most).
    retry_at = status["next_attempt_at"]
    assert isinstance(retry_at, float) and retry_at - noticed >= 0.9 * BACKOFF_BASE / 2
    assert status["expires_at"] is not None  # the old binding still runs until it expires
