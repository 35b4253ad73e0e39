"""``sipagent twilio setup``: point a Twilio Elastic SIP Trunk at this server.

The command describes the wanted state and brings the account to it through the twilio SDK,
so that running it twice changes nothing the second time:

- the trunk is found by friendly name (created when missing; ``Secure`` set to ``--secure``);
- this server's origination URI is on the trunk with the given priority and weight (an
  origination URI of the same host is updated rather than doubled; other hosts' are kept);
- an IP access control list named like the trunk holds the ``--acl-cidr`` ranges (ranges are
  added, never removed) and is associated with the trunk;
- with ``--credential-user``, a credential list named like the trunk holds that user and is
  associated with the trunk. Twilio never returns a password, so it is always set again.

``--dry-run`` sends nothing: the SDK runs against :class:`DryRunHttpClient`, which answers
every read with an empty list, so it prints the requests of a first run, one per line.

Errors: :class:`UsageError` (bad options or missing credentials, exit 2) and
:class:`TwilioApiError` (Twilio answered 4xx/5xx, exit 1), both one line.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import re
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urlsplit

from twilio.http import HttpClient  # type: ignore[import-untyped]
from twilio.http.http_client import TwilioHttpClient  # type: ignore[import-untyped]
from twilio.http.response import Response  # type: ignore[import-untyped]
from twilio.rest import Client  # type: ignore[import-untyped]

from .exceptions import RemoteProtocolError
from .headers import SipUri
from .settings import ConfigError, Settings, load_settings

__all__ = [
    "ACCOUNT_SID_VARIABLE",
    "AUTH_TOKEN_VARIABLE",
    "DEFAULT_TRUNK_NAME",
    "ApiCall",
    "CheckedHttpClient",
    "DryRunHttpClient",
    "SetupError",
    "TrunkSpec",
    "TwilioApiError",
    "UsageError",
    "apply",
    "setup_command",
    "spec_from_args",
]

logger = logging.getLogger(__name__)

ACCOUNT_SID_VARIABLE = "TWILIO_ACCOUNT_SID"
AUTH_TOKEN_VARIABLE = "TWILIO_AUTH_TOKEN"
DEFAULT_TRUNK_NAME = "sipagent"
HTTP_TIMEOUT = 30.0
"""Seconds one API request may take before the command gives up."""
_DRY_RUN_ACCOUNT_SID = "{AccountSid}"
_SECRET_PARAMETERS = frozenset({"Password"})
_MAX_TRUNK_NAME = 64
# The placeholder SID a dry run's create returns, by the collection it posts to.
_PLACEHOLDER_SIDS = {
    "Trunks": "{TrunkSid}",
    "OriginationUrls": "{OriginationUrlSid}",
    "IpAccessControlLists": "{IpAccessControlListSid}",
    "IpAddresses": "{IpAddressSid}",
    "CredentialLists": "{CredentialListSid}",
    "Credentials": "{CredentialSid}",
}
_NEEDS_QUOTES = re.compile(r"[\s'\"]")
_SID_IN_FORM = re.compile(r"(?:IpAccessControlList|CredentialList)Sid\Z")


class SetupError(Exception):
    """The setup cannot go on; ``str()`` is one line for the user."""

    exit_code = 1


class UsageError(SetupError):
    """The user's fault: a bad option, or credentials not given."""

    exit_code = 2


class TwilioApiError(SetupError):
    """Twilio answered a request with an HTTP error."""

    def __init__(self, message: str, *, status: int, code: int | None) -> None:
        super().__init__(message)
        self.status = status
        """The HTTP status Twilio answered."""
        self.code = code
        """Twilio's error code (https://www.twilio.com/docs/errors/<code>), if it sent one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TrunkSpec:
    """The wanted state of the trunk."""

    trunk_name: str
    """Friendly name of the trunk, and of its IP access control list and credential list."""
    origination_uri: str
    """SIP URI Twilio sends this trunk's calls to."""
    priority: int
    """Origination priority: Twilio tries lower values first (0-65535)."""
    weight: int
    """Origination weight among URIs of equal priority (1-65535)."""
    acl_cidrs: tuple[ipaddress.IPv4Network, ...]
    """Sources allowed to send calls into the trunk (termination); empty: no IP list."""
    credential_user: str | None = None
    """User of the trunk's credential list; None: no credential list."""
    credential_password: str | None = field(default=None, repr=False)
    """That user's password."""
    secure: bool = False
    """Twilio Secure Trunking: TLS signalling and SRTP media."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiCall:
    """One request to the Twilio REST API, as a dry run prints it."""

    method: str
    """HTTP method."""
    url: str
    """Absolute URL, without the query."""
    params: tuple[tuple[str, str], ...] = ()
    """Query parameters (GET) or form fields (POST), in the SDK's order."""

    def __str__(self) -> str:
        shown = [
            f"{name}={'***' if name in _SECRET_PARAMETERS else _quote(value)}"
            for name, value in self.params
        ]
        return " ".join([self.method, self.url, *shown])


def _quote(value: str) -> str:
    """The value as is, unless blanks or quotes would make the line ambiguous."""
    return value if value and not _NEEDS_QUOTES.search(value) else shlex.quote(value)


def _pairs(values: Mapping[str, object] | None) -> tuple[tuple[str, str], ...]:
    return tuple((name, str(value)) for name, value in (values or {}).items())


class DryRunHttpClient(HttpClient):  # type: ignore[misc]
    """Records the SDK's requests instead of sending them; every list it answers is empty."""

    def __init__(self) -> None:
        super().__init__(logger, False, None)
        self.calls: list[ApiCall] = []
        """The requests made, in order."""

    def request(
        self,
        method: str,
        uri: str,
        params: Mapping[str, object] | None = None,
        data: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        method = method.upper()
        self.calls.append(ApiCall(method=method, url=uri, params=_pairs(params or data)))
        if method == "GET":
            page = {"items": [], "meta": {"key": "items", "next_page_url": None}}
            return Response(200, json.dumps(page))
        collection = urlsplit(uri).path.rsplit("/", 1)[-1].removesuffix(".json")
        record: dict[str, object] = {_snake(name): value for name, value in (data or {}).items()}
        # An association answers with the associated list, whose SID it names.
        record["sid"] = next(
            (str(value) for name, value in (data or {}).items() if _SID_IN_FORM.match(name)),
            _PLACEHOLDER_SIDS.get(collection, "{Sid}"),
        )
        return Response(201, json.dumps(record))


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class CheckedHttpClient(HttpClient):  # type: ignore[misc]
    """Sends through ``inner`` and turns any HTTP error into a one-line :class:`TwilioApiError`.

    The SDK reports a failed list read as a bare "Unable to fetch page"; this names the
    request, the status and Twilio's message for every kind of request alike.
    """

    def __init__(self, inner: HttpClient) -> None:
        super().__init__(logger, False, inner.timeout)
        self.inner = inner
        """The client that does the HTTP."""

    def request(
        self,
        method: str,
        uri: str,
        params: Mapping[str, object] | None = None,
        data: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        logger.debug("Twilio API: %s %s", method, uri)
        response = self.inner.request(
            method,
            uri,
            params=params,
            data=data,
            headers=headers,
            auth=auth,
            timeout=timeout,
            allow_redirects=allow_redirects,
        )
        status = int(response.status_code)
        if status >= 400:
            raise _api_error(method.upper(), uri, status, str(response.text))
        return response


def _api_error(method: str, url: str, status: int, body: str) -> TwilioApiError:
    code: int | None = None
    message = ""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        raw_code = payload.get("code")
        code = raw_code if isinstance(raw_code, int) else None
        # Legacy errors carry "message"; RFC 9457 ones "title" and "detail".
        parts = [payload.get(key) for key in ("message", "title", "detail")]
        message = ": ".join(str(part) for part in parts if part)
    if not message:
        message = body.strip()[:200]
    message = " ".join(message.split())
    text = f"Twilio API: {method} {url} failed with HTTP {status}"
    if message:
        text += f": {message}"
    if code is not None:
        text += f" (error {code})"
    if status == 401:
        text += f"; check {ACCOUNT_SID_VARIABLE} and {AUTH_TOKEN_VARIABLE}"
    return TwilioApiError(text, status=status, code=code)


# -- reconciling --------------------------------------------------------------------------------


Report = Callable[[str], None]


def _find_by_name(records: Sequence[Any], name: str, kind: str) -> Any | None:
    found = [record for record in records if record.friendly_name == name]
    if len(found) > 1:
        sids = ", ".join(str(record.sid) for record in found)
        raise SetupError(
            f"{len(found)} {kind}s are named {name!r} ({sids}): delete or rename all but one"
        )
    return found[0] if found else None


def _host_of(uri: str) -> str | None:
    try:
        return SipUri.parse(uri).host.lower()
    except RemoteProtocolError:
        return None


def apply(client: Client, spec: TrunkSpec, report: Report) -> None:
    """Bring the account to ``spec`` through ``client``, reporting one line per resource."""
    trunks = client.trunking.v1.trunks
    trunk = _find_by_name(trunks.list(), spec.trunk_name, "trunk")
    new_trunk = trunk is None
    if trunk is None:
        trunk = trunks.create(friendly_name=spec.trunk_name, secure=spec.secure)
        report(f"trunk {spec.trunk_name!r} ({trunk.sid}): created")
    elif bool(trunk.secure) != spec.secure:
        trunks(trunk.sid).update(secure=spec.secure)
        report(f"trunk {spec.trunk_name!r} ({trunk.sid}): secure trunking set to {spec.secure}")
    else:
        report(f"trunk {spec.trunk_name!r} ({trunk.sid}): unchanged")
    trunk_api = trunks(trunk.sid)
    _ensure_origination(trunk_api, spec, new_trunk, report)
    sip = client.api.v2010.account.sip
    if spec.acl_cidrs:
        acl_sid = _ensure_ip_list(sip, spec, report)
        _ensure_association(
            trunk_api.ip_access_control_lists,
            "ip_access_control_list_sid",
            acl_sid,
            new_trunk,
            f"IP access control list {acl_sid}",
            report,
        )
    if spec.credential_user is not None:
        list_sid = _ensure_credentials(sip, spec, report)
        _ensure_association(
            trunk_api.credentials_lists,
            "credential_list_sid",
            list_sid,
            new_trunk,
            f"credential list {list_sid}",
            report,
        )


def _ensure_origination(trunk_api: Any, spec: TrunkSpec, new_trunk: bool, report: Report) -> None:
    urls = trunk_api.origination_urls
    existing: list[Any] = [] if new_trunk else urls.list()
    wanted = spec.origination_uri
    same = [url for url in existing if str(url.sip_url) == wanted]
    if not same:
        host = _host_of(wanted)
        same = [url for url in existing if host is not None and _host_of(str(url.sip_url)) == host]
    label = f"origination {wanted} (priority {spec.priority}, weight {spec.weight})"
    if not same:
        urls.create(
            weight=spec.weight,
            priority=spec.priority,
            enabled=True,
            friendly_name=f"{spec.trunk_name} {_host_of(wanted) or wanted}",
            sip_url=wanted,
        )
        report(f"{label}: created")
        return
    url = same[0]
    changes: dict[str, object] = {}
    if url.weight != spec.weight:
        changes["weight"] = spec.weight
    if url.priority != spec.priority:
        changes["priority"] = spec.priority
    if not url.enabled:
        changes["enabled"] = True
    if str(url.sip_url) != wanted:
        changes["sip_url"] = wanted
    if not changes:
        report(f"{label}: unchanged")
        return
    urls(url.sid).update(**changes)
    was = f" (was {url.sip_url})" if "sip_url" in changes else ""
    report(f"{label}: updated{was}")


def _ensure_ip_list(sip: Any, spec: TrunkSpec, report: Report) -> str:
    lists = sip.ip_access_control_lists
    acl = _find_by_name(lists.list(), spec.trunk_name, "IP access control list")
    present: set[ipaddress.IPv4Network] = set()
    if acl is None:
        acl = lists.create(friendly_name=spec.trunk_name)
        report(f"IP access control list {spec.trunk_name!r} ({acl.sid}): created")
    else:
        for address in lists(acl.sid).ip_addresses.list():
            try:
                present.add(
                    ipaddress.IPv4Network(
                        f"{address.ip_address}/{address.cidr_prefix_length}", strict=False
                    )
                )
            except ValueError:
                continue
    addresses = lists(acl.sid).ip_addresses
    for cidr in spec.acl_cidrs:
        if cidr in present:
            report(f"IP access control list {spec.trunk_name!r}: {cidr} unchanged")
            continue
        addresses.create(
            friendly_name=f"{spec.trunk_name} {cidr}",
            ip_address=str(cidr.network_address),
            cidr_prefix_length=cidr.prefixlen,
        )
        report(f"IP access control list {spec.trunk_name!r}: {cidr} added")
    return str(acl.sid)


def _ensure_credentials(sip: Any, spec: TrunkSpec, report: Report) -> str:
    lists = sip.credential_lists
    credential_list = _find_by_name(lists.list(), spec.trunk_name, "credential list")
    users: list[Any] = []
    if credential_list is None:
        credential_list = lists.create(friendly_name=spec.trunk_name)
        report(f"credential list {spec.trunk_name!r} ({credential_list.sid}): created")
    else:
        users = lists(credential_list.sid).credentials.list()
    credentials = lists(credential_list.sid).credentials
    user = next((item for item in users if item.username == spec.credential_user), None)
    label = f"credential list {spec.trunk_name!r}: user {spec.credential_user!r}"
    if user is None:
        credentials.create(username=spec.credential_user, password=spec.credential_password)
        report(f"{label} added")
    else:
        # Twilio never returns a password, so there is nothing to compare it with.
        credentials(user.sid).update(password=spec.credential_password)
        report(f"{label}: password set")
    return str(credential_list.sid)


def _ensure_association(
    associations: Any, sid_field: str, sid: str, new_trunk: bool, label: str, report: Report
) -> None:
    if not new_trunk and any(item.sid == sid for item in associations.list()):
        report(f"trunk uses {label}: unchanged")
        return
    associations.create(**{sid_field: sid})
    report(f"trunk uses {label}: associated")


# -- the command --------------------------------------------------------------------------------


def _check_range(option: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise UsageError(f"{option}: must be between {low} and {high} (got {value})")
    return value


def _uri_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _is_ipv4(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv4Address)
    except ValueError:
        return False


def _reachable_host(settings: Settings, option: str) -> str:
    host = settings.effective_public_host
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        raise UsageError(
            f"{option}: not given, and the public host {host} cannot be reached from Twilio "
            "(set SIPAGENT_PUBLIC_HOST, or give the option)"
        )
    return host


def spec_from_args(
    args: argparse.Namespace, settings: Callable[[], Settings] | None = None
) -> TrunkSpec:
    """The wanted state from ``sipagent twilio setup``'s options; UsageError when invalid.

    ``settings`` loads the server's settings, read only when an option defaults from them.
    """
    loaded: list[Settings] = []

    def server() -> Settings:
        if not loaded:
            try:
                loaded.append(settings() if settings else load_settings(args.config))
            except ConfigError as exc:
                raise UsageError(f"configuration error: {exc}") from None
        return loaded[0]

    name = args.trunk_name.strip()
    if not name or len(name) > _MAX_TRUNK_NAME or not name.isprintable():
        raise UsageError(f"--trunk-name: must be 1 to {_MAX_TRUNK_NAME} printable characters")
    secure: bool = args.secure
    uri: str | None = args.origination_uri
    if uri is None:
        host = _reachable_host(server(), "--origination-uri")
        uri = f"sip:{_uri_host(host)}:{server().sip_port}"
        if secure:
            uri += ";transport=tls"
    try:
        parsed = SipUri.parse(uri)
    except RemoteProtocolError:
        parsed = None
    # Twilio's origination URIs are sip: only; TLS is asked for with ;transport=tls.
    if parsed is None or parsed.scheme != "sip" or not parsed.host:
        raise UsageError(
            f"--origination-uri: must be a sip: URI such as sip:host:5060 (got {uri!r})"
        )
    if secure and (parsed.params.get("transport") or "").lower() != "tls":
        raise UsageError(f"--origination-uri: --secure needs ;transport=tls (got {uri!r})")
    acl_texts: list[str] = args.acl_cidr or []
    if not acl_texts:
        host = _reachable_host(server(), "--acl-cidr")
        if not _is_ipv4(host):
            raise UsageError(
                f"--acl-cidr: not given, and the public host {host} is not an IPv4 address "
                "(give the addresses sipagent sends SIP from)"
            )
        acl_texts = [host]
    cidrs: list[ipaddress.IPv4Network] = []
    for text in acl_texts:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise UsageError(f"--acl-cidr: not an IPv4 address or CIDR (got {text!r})") from None
        if not isinstance(network, ipaddress.IPv4Network):
            raise UsageError(f"--acl-cidr: Twilio takes IPv4 only (got {text!r})")
        if network not in cidrs:
            cidrs.append(network)
    user: str | None = args.credential_user
    password: str | None = args.credential_password
    if (user is None) != (password is None):
        raise UsageError("--credential-user and --credential-password go together")
    return TrunkSpec(
        trunk_name=name,
        origination_uri=uri,
        priority=_check_range("--priority", args.priority, 0, 65535),
        weight=_check_range("--weight", args.weight, 1, 65535),
        acl_cidrs=tuple(cidrs),
        credential_user=user,
        credential_password=password,
        secure=secure,
    )


def _credentials(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[str, str]:
    sid: str | None = args.account_sid or environ.get(ACCOUNT_SID_VARIABLE)
    token: str | None = args.auth_token or environ.get(AUTH_TOKEN_VARIABLE)
    if not sid:
        raise UsageError(f"{ACCOUNT_SID_VARIABLE} is not set (or give --account-sid)")
    if not sid.startswith("AC"):
        raise UsageError(f"{ACCOUNT_SID_VARIABLE}: must be an Account SID, AC… (got {sid[:2]}…)")
    if not token:
        raise UsageError(f"{AUTH_TOKEN_VARIABLE} is not set (or give --auth-token)")
    return sid, token


def setup_command(
    args: argparse.Namespace,
    *,
    http_client: HttpClient | None = None,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run ``sipagent twilio setup``; the exit status (0, 1: failed, 2: usage).

    ``http_client`` does the HTTP (default: the SDK's, with a timeout); ``environ`` holds the
    Twilio credentials (default: ``os.environ``).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    environ = os.environ if environ is None else environ
    try:
        spec = spec_from_args(args)
        if args.dry_run:
            sid = args.account_sid or environ.get(ACCOUNT_SID_VARIABLE) or _DRY_RUN_ACCOUNT_SID
            recorder = DryRunHttpClient()
            apply(Client(sid, "dry-run", http_client=recorder), spec, lambda line: None)
            print(
                f"dry run, nothing sent: the requests of a first run (no trunk named "
                f"{spec.trunk_name!r} yet); on an existing trunk, writes already done are skipped",
                file=out,
            )
            for call in recorder.calls:
                print(call, file=out)
            return 0
        sid, token = _credentials(args, environ)
        checked = CheckedHttpClient(http_client or TwilioHttpClient(timeout=HTTP_TIMEOUT))
        client = Client(sid, token, http_client=checked)
        apply(client, spec, lambda line: print(line, file=out, flush=True))
    except SetupError as exc:
        print(f"sipagent: {exc}", file=err)
        return exc.exit_code
    except OSError as exc:  # requests' errors are OSErrors: refused, DNS, TLS, timeout
        print(f"sipagent: cannot reach the Twilio API: {' '.join(str(exc).split())}", file=err)
        return 1
    print(
        f"trunk {spec.trunk_name!r} is set up: Twilio sends its calls to {spec.origination_uri}",
        file=out,
    )
    return 0
