"""``sipagent twilio setup`` against a local server playing Twilio's REST API.

The SDK builds absolute URLs (``https://trunking.twilio.com/v1/Trunks``); the tests give the
command an HTTP client that sends ``https://<domain>.twilio.com/<path>`` to
``http://127.0.0.1:<port>/<domain>/<path>`` instead. The fake keeps its resources in memory and
records every request: method, the URL as the SDK built it, the form fields in order, and the
basic-auth user.
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from twilio.http.http_client import TwilioHttpClient  # type: ignore[import-untyped]
from twilio.http.response import Response  # type: ignore[import-untyped]

from sipagent import twilio_setup
from sipagent.cli import main
from sipagent.twilio_setup import ApiCall, CheckedHttpClient, TwilioApiError

ACCOUNT = "AC" + "0" * 31 + "1"
TOKEN = "test-auth-token"
PUBLIC_HOST = "203.0.113.10"
TRUNKING = "https://trunking.twilio.com/v1"
SIP = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/SIP"

# -- the fake Twilio ---------------------------------------------------------------------------

# Collection name -> (SID prefix, list key, form field naming the associated resource).
COLLECTIONS: dict[str, tuple[str, str, str | None]] = {
    "Trunks": ("TK", "trunks", None),
    "OriginationUrls": ("OU", "origination_urls", None),
    "IpAccessControlLists": ("AL", "ip_access_control_lists", "IpAccessControlListSid"),
    "CredentialLists": ("CL", "credential_lists", "CredentialListSid"),
    "IpAddresses": ("IP", "ip_addresses", None),
    "Credentials": ("CR", "credentials", None),
}
REQUIRED = {
    "OriginationUrls": ("Weight", "Priority", "Enabled", "FriendlyName", "SipUrl"),
    "IpAddresses": ("FriendlyName", "IpAddress"),
    "Credentials": ("Username", "Password"),
}
INTEGERS = {"Priority", "Weight", "CidrPrefixLength"}
SID = re.compile(r"[A-Z]{2}[0-9a-f]{32}\Z")


@dataclass(frozen=True)
class Recorded:
    method: str
    url: str
    """As the SDK built it: https://<domain>.twilio.com/<path>."""
    form: tuple[tuple[str, str], ...]
    query: tuple[tuple[str, str], ...]
    user: str | None

    @property
    def call(self) -> tuple[str, str, tuple[tuple[str, str], ...]]:
        return self.method, self.url, self.form


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class FakeTwilio:
    """In-memory Trunking v1 and Api 2010 SIP resources, just what the command uses."""

    def __init__(self, account: str = ACCOUNT, token: str = TOKEN) -> None:
        self.account = account
        self.token = token
        self.requests: list[Recorded] = []
        self.collections: dict[str, dict[str, dict[str, Any]]] = {}
        """Collection URL (https://…, without .json) -> SID -> record."""
        self.base_url = ""
        """Where the fake listens, once started: http://127.0.0.1:<port>."""
        self.passwords: dict[str, str] = {}
        """Credential SID -> password (Twilio never returns it)."""
        self._sids = itertools.count(1)
        self._lock = threading.Lock()

    # The store, for seeding and asserting.

    def records(self, collection_url: str) -> list[dict[str, Any]]:
        return list(self.collections.get(collection_url.removesuffix(".json"), {}).values())

    def add(self, collection_url: str, **fields: Any) -> dict[str, Any]:
        name = collection_url.removesuffix(".json").rsplit("/", 1)[-1]
        sid = fields.pop("sid", None) or f"{COLLECTIONS[name][0]}{next(self._sids):032x}"
        record = {"sid": sid, "account_sid": self.account, **fields}
        self.collections.setdefault(collection_url.removesuffix(".json"), {})[sid] = record
        return record

    # HTTP.

    def handle(
        self, method: str, url: str, form: list[tuple[str, str]], user: str | None, pw: str | None
    ) -> tuple[int, dict[str, Any]]:
        if (user, pw) != (self.account, self.token):
            return 401, {"code": 20003, "message": "Authenticate", "status": 401}
        path = urlsplit(url).path
        api_2010 = path.endswith(".json")
        base = url.split("?", 1)[0].removesuffix(".json")
        head, _, last = base.rpartition("/")
        if last in COLLECTIONS:
            parent_head, _, parent_sid = head.rpartition("/")
            if SID.match(parent_sid) and parent_sid not in self.collections.get(parent_head, {}):
                return self.not_found(url)
            if method == "GET":
                return 200, self.page(base, url, api_2010)
            if method == "POST":
                return self.create(base, last, dict(form))
        elif SID.match(last) and head.rsplit("/", 1)[-1] in COLLECTIONS:
            record = self.collections.get(head, {}).get(last)
            if record is None:
                return self.not_found(url)
            if method == "GET":
                return 200, record
            if method == "POST":
                self.update(record, dict(form))
                return 200, record
        return self.not_found(url)

    def not_found(self, url: str) -> tuple[int, dict[str, Any]]:
        return 404, {"code": 20404, "message": f"The requested resource {url} was not found"}

    def page(self, base: str, url: str, api_2010: bool) -> dict[str, Any]:
        key = COLLECTIONS[base.rsplit("/", 1)[-1]][1]
        items = list(self.collections.get(base, {}).values())
        if api_2010:
            return {
                key: items,
                "start": 0,
                "end": max(len(items) - 1, 0),
                "page": 0,
                "page_size": 50,
                "uri": url,
                "first_page_uri": url,
                "previous_page_uri": None,
                "next_page_uri": None,
            }
        meta = {"page": 0, "page_size": 50, "first_page_url": url, "previous_page_url": None}
        return {key: items, "meta": {**meta, "url": url, "next_page_url": None, "key": key}}

    def create(self, base: str, name: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        missing = [field for field in REQUIRED.get(name, ()) if field not in form]
        if missing:
            return 400, {"code": 21201, "message": f"Missing required parameter {missing[0]}"}
        reference = COLLECTIONS[name][2]
        if reference is not None and base.startswith(TRUNKING):
            # An association: the record is the account's list, named by its SID.
            sid = form.get(reference, "")
            account_list = self.collections.get(f"{SIP}/{name}", {}).get(sid)
            if account_list is None:
                return 400, {"code": 20001, "message": f"{reference} {sid} not found"}
            record = self.add(base, sid=sid, friendly_name=account_list["friendly_name"])
            return 201, record
        fields: dict[str, Any] = {"secure": False} if name == "Trunks" else {}
        if name == "OriginationUrls":
            fields["trunk_sid"] = base.rsplit("/", 2)[-2]
        record = self.add(base, **fields)
        self.update(record, form)
        return 201, record

    def update(self, record: dict[str, Any], form: dict[str, str]) -> None:
        for name, value in form.items():
            if name == "Password":
                self.passwords[record["sid"]] = value
            elif value in ("true", "false"):
                record[snake(name)] = value == "true"
            else:
                record[snake(name)] = int(value) if name in INTEGERS else value


class _Handler(BaseHTTPRequestHandler):
    fake: FakeTwilio

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self.serve("GET")

    def do_POST(self) -> None:
        self.serve("POST")

    def do_DELETE(self) -> None:
        self.serve("DELETE")

    def serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        domain, _, rest = parts.path.lstrip("/").partition("/")
        url = f"https://{domain}.twilio.com/{rest}"
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True)
        user = pw = None
        scheme, _, credentials = (self.headers.get("Authorization") or "").partition(" ")
        if scheme == "Basic":
            user, _, pw = base64.b64decode(credentials).decode().partition(":")
        fake = self.fake
        with fake._lock:
            fake.requests.append(
                Recorded(method, url, tuple(form), tuple(parse_qsl(parts.query)), user)
            )
            status, payload = fake.handle(method, url, form, user, pw)
        body = json.dumps({"status": status, **payload} if status >= 400 else payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class LocalTwilioHttpClient(TwilioHttpClient):  # type: ignore[misc]
    """The SDK's own HTTP client, with https://<domain>.twilio.com sent to the fake."""

    def __init__(self, base_url: str) -> None:
        super().__init__(timeout=10.0)
        self.base_url = base_url

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        parts = urlsplit(url)
        domain = parts.netloc.removesuffix(".twilio.com")
        assert parts.scheme == "https" and "." not in domain, url
        local = f"{self.base_url}/{domain}{parts.path}"
        if parts.query:
            local += f"?{parts.query}"
        return super().request(method, local, *args, **kwargs)


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    twilio = FakeTwilio()
    handler = type("Handler", (_Handler,), {"fake": twilio})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    twilio.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield twilio
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class Result:
    code: int
    out: list[str]
    err: list[str]


Cli = Callable[..., Result]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Twilio credentials, a public host, and no other settings (empty working directory)."""
    import os

    for name in list(os.environ):
        if name.startswith(("SIPAGENT_", "TWILIO_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SIPAGENT_PUBLIC_HOST", PUBLIC_HOST)
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)


@pytest.fixture
def cli(
    env: None,
    fake: FakeTwilio,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Cli:
    """``sipagent twilio setup ARGS`` through the real command line, talking to the fake."""
    client = LocalTwilioHttpClient(fake.base_url)
    command = functools.partial(twilio_setup.setup_command, http_client=client)
    monkeypatch.setattr(twilio_setup, "setup_command", command)

    def run(*args: str) -> Result:
        code = main(["twilio", "setup", *args])
        captured = capsys.readouterr()
        return Result(code, captured.out.splitlines(), captured.err.splitlines())

    return run


def writes(fake: FakeTwilio) -> list[Recorded]:
    return [request for request in fake.requests if request.method != "GET"]


def only(records: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(records) == 1, records
    return records[0]


# -- first run, second run ---------------------------------------------------------------------


def test_first_run_creates_trunk_origination_and_ip_list(cli: Cli, fake: FakeTwilio) -> None:
    result = cli()
    assert result.code == 0, result.err
    assert result.err == []
    trunk = only(fake.records(f"{TRUNKING}/Trunks"))["sid"]
    acl = only(fake.records(f"{SIP}/IpAccessControlLists.json"))["sid"]
    assert [request.call for request in fake.requests] == [
        ("GET", f"{TRUNKING}/Trunks", ()),
        ("POST", f"{TRUNKING}/Trunks", (("FriendlyName", "sipagent"), ("Secure", "false"))),
        (
            "POST",
            f"{TRUNKING}/Trunks/{trunk}/OriginationUrls",
            (
                ("Weight", "10"),
                ("Priority", "10"),
                ("Enabled", "true"),
                ("FriendlyName", f"sipagent {PUBLIC_HOST}"),
                ("SipUrl", f"sip:{PUBLIC_HOST}:5060"),
            ),
        ),
        ("GET", f"{SIP}/IpAccessControlLists.json", ()),
        ("POST", f"{SIP}/IpAccessControlLists.json", (("FriendlyName", "sipagent"),)),
        (
            "POST",
            f"{SIP}/IpAccessControlLists/{acl}/IpAddresses.json",
            (
                ("FriendlyName", f"sipagent {PUBLIC_HOST}/32"),
                ("IpAddress", PUBLIC_HOST),
                ("CidrPrefixLength", "32"),
            ),
        ),
        (
            "POST",
            f"{TRUNKING}/Trunks/{trunk}/IpAccessControlLists",
            (("IpAccessControlListSid", acl),),
        ),
    ]
    assert {request.user for request in fake.requests} == {ACCOUNT}
    assert all(request.query == () for request in fake.requests)
    # What Twilio now holds.
    assert only(fake.records(f"{TRUNKING}/Trunks"))["secure"] is False
    origination = only(fake.records(f"{TRUNKING}/Trunks/{trunk}/OriginationUrls"))
    assert origination["sip_url"] == f"sip:{PUBLIC_HOST}:5060"
    assert (origination["priority"], origination["weight"], origination["enabled"]) == (
        10,
        10,
        True,
    )
    address = only(fake.records(f"{SIP}/IpAccessControlLists/{acl}/IpAddresses"))
    assert (address["ip_address"], address["cidr_prefix_length"]) == (PUBLIC_HOST, 32)
    assert only(fake.records(f"{TRUNKING}/Trunks/{trunk}/IpAccessControlLists"))["sid"] == acl
    # One line per resource, then the summary.
    assert result.out == [
        f"trunk 'sipagent' ({trunk}): created",
        f"origination sip:{PUBLIC_HOST}:5060 (priority 10, weight 10): created",
        f"IP access control list 'sipagent' ({acl}): created",
        f"IP access control list 'sipagent': {PUBLIC_HOST}/32 added",
        f"trunk uses IP access control list {acl}: associated",
        f"trunk 'sipagent' is set up: Twilio sends its calls to sip:{PUBLIC_HOST}:5060",
    ]


def test_second_run_only_reads(cli: Cli, fake: FakeTwilio) -> None:
    assert cli().code == 0
    trunk = only(fake.records(f"{TRUNKING}/Trunks"))["sid"]
    acl = only(fake.records(f"{SIP}/IpAccessControlLists.json"))["sid"]
    before = json.dumps(fake.collections, sort_keys=True)
    fake.requests.clear()
    result = cli()
    assert result.code == 0, result.err
    assert [request.call for request in fake.requests] == [
        ("GET", f"{TRUNKING}/Trunks", ()),
        ("GET", f"{TRUNKING}/Trunks/{trunk}/OriginationUrls", ()),
        ("GET", f"{SIP}/IpAccessControlLists.json", ()),
        ("GET", f"{SIP}/IpAccessControlLists/{acl}/IpAddresses.json", ()),
        ("GET", f"{TRUNKING}/Trunks/{trunk}/IpAccessControlLists", ()),
    ]
    assert json.dumps(fake.collections, sort_keys=True) == before
    assert all(line.endswith("unchanged") for line in result.out[:-1]), result.out


def test_existing_trunk_is_updated_not_doubled(cli: Cli, fake: FakeTwilio) -> None:
    """Resources made by hand (or an older run) are found by name and only corrected."""
    trunk = fake.add(f"{TRUNKING}/Trunks", friendly_name="sipagent", secure=False)["sid"]
    other = fake.add(f"{TRUNKING}/Trunks", friendly_name="another", secure=True)
    origination = fake.add(
        f"{TRUNKING}/Trunks/{trunk}/OriginationUrls",
        friendly_name="by hand",
        sip_url=f"sip:{PUBLIC_HOST}:5060",
        priority=10,
        weight=5,
        enabled=False,
    )
    backup = fake.add(
        f"{TRUNKING}/Trunks/{trunk}/OriginationUrls",
        friendly_name="backup",
        sip_url="sip:198.51.100.7:5060",
        priority=20,
        weight=10,
        enabled=True,
    )
    acl = fake.add(f"{SIP}/IpAccessControlLists", friendly_name="sipagent")["sid"]
    fake.add(
        f"{SIP}/IpAccessControlLists/{acl}/IpAddresses",
        friendly_name="kept",
        ip_address="192.0.2.1",
        cidr_prefix_length=32,
    )
    result = cli("--acl-cidr", "192.0.2.1", "--acl-cidr", "198.51.100.0/28")
    assert result.code == 0, result.err
    assert [request.call for request in writes(fake)] == [
        (
            "POST",
            f"{TRUNKING}/Trunks/{trunk}/OriginationUrls/{origination['sid']}",
            (("Weight", "10"), ("Enabled", "true")),
        ),
        (
            "POST",
            f"{SIP}/IpAccessControlLists/{acl}/IpAddresses.json",
            (
                ("FriendlyName", "sipagent 198.51.100.0/28"),
                ("IpAddress", "198.51.100.0"),
                ("CidrPrefixLength", "28"),
            ),
        ),
        (
            "POST",
            f"{TRUNKING}/Trunks/{trunk}/IpAccessControlLists",
            (("IpAccessControlListSid", acl),),
        ),
    ]
    assert len(fake.records(f"{TRUNKING}/Trunks")) == 2
    assert other["secure"] is True
    assert backup in fake.records(f"{TRUNKING}/Trunks/{trunk}/OriginationUrls")
    assert len(fake.records(f"{SIP}/IpAccessControlLists/{acl}/IpAddresses")) == 2
    assert f"origination sip:{PUBLIC_HOST}:5060 (priority 10, weight 10): updated" in result.out


def test_two_trunks_of_the_same_name_is_an_error(cli: Cli, fake: FakeTwilio) -> None:
    first = fake.add(f"{TRUNKING}/Trunks", friendly_name="sipagent", secure=False)["sid"]
    second = fake.add(f"{TRUNKING}/Trunks", friendly_name="sipagent", secure=False)["sid"]
    result = cli()
    assert result.code == 1
    assert result.err == [
        f"sipagent: 2 trunks are named 'sipagent' ({first}, {second}): delete or rename all but one"
    ]
    assert writes(fake) == []


# -- secure trunking, credentials ---------------------------------------------------------------


def test_secure_on_a_new_trunk(cli: Cli, fake: FakeTwilio) -> None:
    result = cli("--secure", "--trunk-name", "agent tls")
    assert result.code == 0, result.err
    trunk = only(fake.records(f"{TRUNKING}/Trunks"))
    assert trunk["secure"] is True
    calls = [request.call for request in writes(fake)]
    assert calls[0] == (
        "POST",
        f"{TRUNKING}/Trunks",
        (("FriendlyName", "agent tls"), ("Secure", "true")),
    )
    assert dict(calls[1][2])["SipUrl"] == f"sip:{PUBLIC_HOST}:5060;transport=tls"


def test_secure_on_an_existing_trunk_updates_it(cli: Cli, fake: FakeTwilio) -> None:
    assert cli().code == 0
    trunk = only(fake.records(f"{TRUNKING}/Trunks"))["sid"]
    origination = only(fake.records(f"{TRUNKING}/Trunks/{trunk}/OriginationUrls"))["sid"]
    fake.requests.clear()
    result = cli("--secure")
    assert result.code == 0, result.err
    tls = f"sip:{PUBLIC_HOST}:5060;transport=tls"
    assert [request.call for request in writes(fake)] == [
        ("POST", f"{TRUNKING}/Trunks/{trunk}", (("Secure", "true"),)),
        (
            "POST",
            f"{TRUNKING}/Trunks/{trunk}/OriginationUrls/{origination}",
            (("SipUrl", tls),),
        ),
    ]
    assert only(fake.records(f"{TRUNKING}/Trunks"))["secure"] is True
    assert only(fake.records(f"{TRUNKING}/Trunks/{trunk}/OriginationUrls"))["sip_url"] == tls
    assert f"trunk 'sipagent' ({trunk}): secure trunking set to True" in result.out
    assert (
        f"origination {tls} (priority 10, weight 10): updated (was sip:{PUBLIC_HOST}:5060)"
        in result.out
    )


def test_credential_list(cli: Cli, fake: FakeTwilio) -> None:
    password = "Sip4gent-Passw0rd"
    args = ("--credential-user", "agent", "--credential-password", password)
    assert cli(*args).code == 0
    trunk = only(fake.records(f"{TRUNKING}/Trunks"))["sid"]
    credential_list = only(fake.records(f"{SIP}/CredentialLists.json"))["sid"]
    credential = only(fake.records(f"{SIP}/CredentialLists/{credential_list}/Credentials"))
    assert [request.call for request in fake.requests[-4:]] == [
        ("GET", f"{SIP}/CredentialLists.json", ()),
        ("POST", f"{SIP}/CredentialLists.json", (("FriendlyName", "sipagent"),)),
        (
            "POST",
            f"{SIP}/CredentialLists/{credential_list}/Credentials.json",
            (("Username", "agent"), ("Password", password)),
        ),
        (
            "POST",
            f"{TRUNKING}/Trunks/{trunk}/CredentialLists",
            (("CredentialListSid", credential_list),),
        ),
    ]
    assert credential["username"] == "agent" and "password" not in credential
    assert fake.passwords[credential["sid"]] == password
    assert only(fake.records(f"{TRUNKING}/Trunks/{trunk}/CredentialLists"))["sid"] == (
        credential_list
    )
    # Again: Twilio cannot be asked for the password, so it is the one write left.
    fake.requests.clear()
    result = cli("--credential-user", "agent", "--credential-password", "New-Passw0rd-123")
    assert result.code == 0, result.err
    assert [request.call for request in writes(fake)] == [
        (
            "POST",
            f"{SIP}/CredentialLists/{credential_list}/Credentials/{credential['sid']}.json",
            (("Password", "New-Passw0rd-123"),),
        )
    ]
    assert fake.passwords[credential["sid"]] == "New-Passw0rd-123"
    assert "credential list 'sipagent': user 'agent': password set" in result.out
    assert not any("Passw0rd" in line for line in result.out + result.err)


# -- dry run -----------------------------------------------------------------------------------


def test_dry_run_sends_nothing_and_prints_a_first_runs_requests(cli: Cli, fake: FakeTwilio) -> None:
    args = ("--secure", "--credential-user", "agent", "--credential-password", "Secret-Passw0rd")
    planned = cli("--dry-run", *args)
    assert planned.code == 0, planned.err
    assert fake.requests == []
    header, *lines = planned.out
    assert header.startswith("dry run, nothing sent")
    assert "Secret-Passw0rd" not in "\n".join(planned.out)
    assert lines[:3] == [
        f"GET {TRUNKING}/Trunks",
        f"POST {TRUNKING}/Trunks FriendlyName=sipagent Secure=true",
        f"POST {TRUNKING}/Trunks/{{TrunkSid}}/OriginationUrls Weight=10 Priority=10 "
        f"Enabled=true FriendlyName='sipagent {PUBLIC_HOST}' "
        f"SipUrl=sip:{PUBLIC_HOST}:5060;transport=tls",
    ]
    # The plan is exactly what a real first run sends, SIDs aside.
    assert cli(*args).code == 0
    placeholders = {
        only(fake.records(f"{TRUNKING}/Trunks"))["sid"]: "{TrunkSid}",
        only(fake.records(f"{SIP}/IpAccessControlLists"))["sid"]: "{IpAccessControlListSid}",
        only(fake.records(f"{SIP}/CredentialLists"))["sid"]: "{CredentialListSid}",
    }
    sent = []
    for request in fake.requests:
        line = str(ApiCall(method=request.method, url=request.url, params=request.form))
        for sid, placeholder in placeholders.items():
            line = line.replace(f"'{sid}'", placeholder).replace(sid, placeholder)
        sent.append(line)
    assert [line.replace("{AccountSid}", ACCOUNT) for line in lines] == sent


def test_dry_run_needs_no_credentials(
    env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TWILIO_ACCOUNT_SID")
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    assert main(["twilio", "setup", "--dry-run", "--acl-cidr", "192.0.2.0/24"]) == 0
    out = capsys.readouterr().out
    assert "GET https://api.twilio.com/2010-04-01/Accounts/{AccountSid}/SIP/" in out
    assert "IpAddress=192.0.2.0 CidrPrefixLength=24" in out


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID"])
def test_missing_credential_is_one_line_naming_it(
    cli: Cli, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.delenv(variable)
    result = cli()
    assert result.code == 2
    assert len(result.err) == 1 and variable in result.err[0], result.err
    assert result.out == []
    assert fake.requests == []


def test_credentials_from_options(
    cli: Cli, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TWILIO_ACCOUNT_SID")
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    assert cli("--account-sid", ACCOUNT, "--auth-token", TOKEN).code == 0
    assert {request.user for request in fake.requests} == {ACCOUNT}


def test_http_401_is_one_line(cli: Cli, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "wrong-token")
    result = cli()
    assert result.code == 1
    assert result.out == []
    assert result.err == [
        f"sipagent: Twilio API: GET {TRUNKING}/Trunks failed with HTTP 401: Authenticate "
        "(error 20003); check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
    ]
    assert [request.call for request in fake.requests] == [("GET", f"{TRUNKING}/Trunks", ())]


def test_error_on_a_write_keeps_what_was_done(cli: Cli, fake: FakeTwilio) -> None:
    """A 4xx mid-way: the lines so far say what exists, the error line says what failed."""
    original = fake.create

    def refuse_ip_lists(base: str, name: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if name == "IpAccessControlLists" and base.startswith(SIP):
            return 400, {"code": 21614, "message": "Friendly name is\ninvalid"}
        return original(base, name, form)

    fake.create = refuse_ip_lists  # type: ignore[method-assign]
    result = cli()
    assert result.code == 1
    assert result.out[0].startswith("trunk 'sipagent' (TK")
    assert result.err == [
        f"sipagent: Twilio API: POST {SIP}/IpAccessControlLists.json failed with HTTP 400: "
        "Friendly name is invalid (error 21614)"
    ]


def test_unreachable_api_is_one_line(
    env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = LocalTwilioHttpClient(f"http://127.0.0.1:{port}")
    command = functools.partial(twilio_setup.setup_command, http_client=client)
    monkeypatch.setattr(twilio_setup, "setup_command", command)
    assert main(["twilio", "setup"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("sipagent: cannot reach the Twilio API: "), err


def test_service_error_format() -> None:
    """RFC 9457 errors (newer Twilio APIs) read as well as the legacy ones."""

    class Inner(TwilioHttpClient):  # type: ignore[misc]
        def request(self, *args: Any, **kwargs: Any) -> Response:
            body = {"type": "t", "title": "Bad Request", "status": 400, "code": 20001}
            return Response(400, json.dumps({**body, "detail": "Priority out of range"}))

    with pytest.raises(TwilioApiError) as caught:
        CheckedHttpClient(Inner()).request("post", "https://trunking.twilio.com/v1/Trunks")
    assert str(caught.value) == (
        "Twilio API: POST https://trunking.twilio.com/v1/Trunks failed with HTTP 400: "
        "Bad Request: Priority out of range (error 20001)"
    )
    assert (caught.value.status, caught.value.code) == (400, 20001)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--origination-uri", "sip:agent.example.com:5060", "--secure"], ";transport=tls"),
        (["--origination-uri", "sips:agent.example.com"], "must be a sip: URI"),
        (["--origination-uri", "agent.example.com"], "must be a sip: URI"),
        (["--acl-cidr", "300.1.2.3"], "--acl-cidr: not an IPv4 address"),
        (["--acl-cidr", "2001:db8::/32"], "IPv4 only"),
        (["--priority", "70000"], "--priority: must be between 0 and 65535"),
        (["--weight", "0"], "--weight: must be between 1 and 65535"),
        (["--credential-user", "agent"], "go together"),
        (["--trunk-name", " "], "--trunk-name"),
    ],
)
def test_bad_options_are_one_line(
    cli: Cli, fake: FakeTwilio, args: list[str], message: str
) -> None:
    result = cli(*args)
    assert result.code == 2
    assert len(result.err) == 1 and message in result.err[0], result.err
    assert fake.requests == []


def test_loopback_public_host_is_refused(
    cli: Cli, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default settings announce 127.0.0.1, which Twilio cannot reach."""
    monkeypatch.delenv("SIPAGENT_PUBLIC_HOST")
    result = cli()
    assert result.code == 2
    assert len(result.err) == 1 and "SIPAGENT_PUBLIC_HOST" in result.err[0], result.err
    # With both options given, no setting is needed.
    assert (
        cli("--origination-uri", "sip:agent.example.com:5080", "--acl-cidr", "192.0.2.9").code == 0
    )
    assert dict(writes(fake)[1].form)["SipUrl"] == "sip:agent.example.com:5080"


def test_public_host_name_needs_acl_cidr(
    cli: Cli, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIPAGENT_PUBLIC_HOST", "agent.example.com")
    result = cli()
    assert result.code == 2
    assert result.err == [
        "sipagent: --acl-cidr: not given, and the public host agent.example.com is not an IPv4 "
        "address (give the addresses sipagent sends SIP from)"
    ]
    assert cli("--acl-cidr", "192.0.2.9").code == 0
    assert dict(writes(fake)[1].form)["SipUrl"] == "sip:agent.example.com:5060"


def test_defaults_follow_the_settings(
    cli: Cli, fake: FakeTwilio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SIPAGENT_PUBLIC_HOST")
    config = tmp_path / "server.toml"
    config.write_text('public_host = "198.51.100.20"\nsip_port = 5080\n')
    assert cli("--config", str(config), "--priority", "5", "--weight", "30").code == 0
    form = dict(writes(fake)[1].form)
    assert (form["SipUrl"], form["Priority"], form["Weight"]) == (
        "sip:198.51.100.20:5080",
        "5",
        "30",
    )
    assert dict(writes(fake)[3].form)["IpAddress"] == "198.51.100.20"


def test_api_call_line() -> None:
    call = ApiCall(
        method="POST",
        url="https://api.twilio.com/x.json",
        params=(("FriendlyName", "two words"), ("Password", "hidden"), ("Empty", "")),
    )
    assert (
        str(call)
        == "POST https://api.twilio.com/x.json FriendlyName='two words' Password=*** Empty=''"
    )
