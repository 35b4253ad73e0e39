"""sipagent.policy with a fake clock: allow-lists, presets, numbers, verdicts."""

from __future__ import annotations

import ast
import ipaddress
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from sipagent import policy
from sipagent.message import Request, Response, parse_message
from sipagent.policy import (
    CAPACITY_RETRY_AFTER,
    Action,
    DialledNumberCheck,
    EdgePolicy,
    EdgePolicyConfig,
    Reason,
    SourceAllowList,
    Verdict,
    dialled_users,
    load_carrier_ranges,
    normalize_number,
    parse_cidrs,
    parse_numbers,
    preset_path,
    refusal,
    twilio_preset,
)
from sipagent.ratelimit import NOTICE_INTERVAL
from sipagent.settings import load_settings
from sipagent.transaction import Destination

REPO = Path(__file__).resolve().parent.parent
TWILIO_FILE = REPO / "config" / "presets" / "twilio_ranges.toml"


def options(via_params: str = ";rport", port: int = 5070) -> bytes:
    return (
        f"OPTIONS sip:agent@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 198.51.100.7:{port};branch=z9hG4bK-1{via_params}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:scanner@198.51.100.7>;tag=abc\r\n"
        "To: <sip:agent@127.0.0.1>\r\n"
        "Call-ID: flood-1\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def invite(request_uri: str, to: str) -> Request:
    data = (
        f"INVITE {request_uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 54.172.60.1:5060;branch=z9hG4bK-2\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:+14155550199@54.172.60.1>;tag=f1\r\n"
        f"To: {to}\r\n"
        "Call-ID: call-2\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:+14155550199@54.172.60.1:5060>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


# -- allow-list --------------------------------------------------------------------------------
def test_empty_allow_list_allows_everyone() -> None:
    allow = SourceAllowList([])
    assert allow.allows_all and len(allow) == 0
    assert "203.0.113.9" in allow and "not an address" in allow
    assert "allow all" in repr(allow)


def test_cidr_boundaries() -> None:
    allow = SourceAllowList(["54.172.60.0/30", "192.0.2.7"])
    assert "54.172.60.0" in allow and "54.172.60.3" in allow
    assert "54.172.60.4" not in allow and "54.172.59.255" not in allow
    assert "192.0.2.7" in allow and "192.0.2.6" not in allow and "192.0.2.8" not in allow
    assert ipaddress.ip_address("54.172.60.1") in allow  # address objects too
    assert "example.com" not in allow
    assert "" not in allow


def test_host_bits_are_masked_and_neighbours_collapse() -> None:
    allow = SourceAllowList(["10.0.0.1/24", "10.0.1.0/24", "10.0.0.128/25"])
    assert [str(n) for n in allow.networks] == ["10.0.0.0/23"]
    assert "10.0.1.255" in allow and "10.0.2.0" not in allow


def test_whole_internet_and_single_hosts() -> None:
    assert "203.0.113.1" in SourceAllowList(["0.0.0.0/0"])
    assert "2001:db8::1" not in SourceAllowList(["0.0.0.0/0"])
    assert "2001:db8::1" in SourceAllowList(["::/0"])


def test_ipv6_and_ipv4_mapped() -> None:
    allow = SourceAllowList(["2001:db8:1::/48", "[2001:db8:ffff::5]", "192.0.2.0/24"])
    assert "2001:db8:1:abcd::1" in allow
    assert "2001:db8:2::1" not in allow
    assert "2001:db8:ffff::5" in allow and "2001:db8:ffff::6" not in allow
    assert "[2001:db8:1::9]" in allow
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
    assert "::ffff:192.0.2.10" in allow
    assert "::ffff:198.51.100.1" not in allow
    # A mapped network in the list means its IPv4 network.
    assert "192.0.2.1" in SourceAllowList(["::ffff:192.0.2.0/120"])
    assert "fe80::1%eth0" in SourceAllowList(["fe80::/10"])


def test_many_networks_stay_a_handful_of_probes() -> None:
    cidrs = [f"10.{i >> 8}.{i & 255}.0/24" for i in range(0, 4096, 2)]
    allow = SourceAllowList(cidrs)
    assert len(allow) == 2048
    assert len(allow._index[4]) == 1  # one prefix length: one probe
    assert "10.0.2.77" in allow and "10.0.3.77" not in allow
    assert "more" in repr(allow)


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "300.1.1.1", "bogus", "2001:db8::/129"])
def test_bad_cidrs_are_named(bad: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        SourceAllowList([bad])


def test_parse_cidrs_accepts_text_or_lists() -> None:
    assert parse_cidrs("10.0.0.0/8, 192.0.2.1 ,") == ("10.0.0.0/8", "192.0.2.1")
    assert parse_cidrs(["::1"]) == ("::1",)
    assert parse_cidrs(None) == ()
    with pytest.raises(ValueError):
        parse_cidrs("10.0.0.0/8, nope")


# -- Twilio preset -----------------------------------------------------------------------------
def test_twilio_preset_loads_and_contains_twilio_signalling() -> None:
    allow = twilio_preset()
    assert "54.172.60.1" in allow  # ashburn (us1)
    assert "54.244.51.2" in allow  # umatilla (us2)
    assert "177.71.206.193" in allow  # sao-paulo
    assert "54.172.60.4" not in allow
    assert "168.86.130.1" not in allow  # media, not signalling
    assert "8.8.8.8" not in allow


def test_twilio_ranges_file_says_where_and_when() -> None:
    ranges = load_carrier_ranges(TWILIO_FILE)
    assert ranges.provider == "twilio"
    assert "Elastic SIP Trunking" in ranges.source_page
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", ranges.retrieved)
    assert len(ranges.signalling) == 8
    assert ranges.media == ("168.86.128.0/18",)
    assert ranges.media_ports == (10000, 60000)
    assert "REFRESH AT DEPLOY TIME" in TWILIO_FILE.read_text()
    assert preset_path("Twilio").name == TWILIO_FILE.name


def test_preset_is_not_read_as_a_settings_file() -> None:
    load_settings()  # config/*.toml must stay settings only


def test_unknown_preset_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown allow-list preset"):
        preset_path("acme")
    cases = {
        "broken.toml": "signalling = [",
        "cidr.toml": '[signalling]\nedge = ["10.0.0.0/40"]\n',
        "list.toml": '[signalling]\nedge = "10.0.0.0/8"\n',
        "table.toml": 'signalling = 3\n',
        "media.toml": '[media]\ncidrs = "x"\n',
        "ports.toml": '[media]\ncidrs = []\nudp_ports = [1]\n',
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError):
            load_carrier_ranges(tmp_path / name)
    (tmp_path / "mini.toml").write_text('[signalling]\nedge = ["192.0.2.0/30"]\n')
    mini = load_carrier_ranges(tmp_path / "mini.toml")
    assert mini.provider == "mini" and mini.media == () and mini.media_ports is None
    assert "192.0.2.1" in twilio_preset(tmp_path / "mini.toml")


def test_missing_preset_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(policy, "_PRESET_DIRS", (tmp_path,))
    with pytest.raises(FileNotFoundError):
        preset_path("twilio")


# -- dialled numbers ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "+14155550100",
        "14155550100",
        "+1 415 555 0100",
        "+1-415-555-0100",
        "+1 (415) 555.0100",
        "tel:+1-415-555-0100",
        "tel:+14155550100;phone-context=example.com",
        "sip:+14155550100@trunk.example.com;user=phone",
        "sips:14155550100@trunk.example.com",
        "%2B14155550100",
        "+14155550100;npdi",
        " +14155550100 ",
    ],
)
def test_number_normalisation(text: str) -> None:
    assert normalize_number(text) == "14155550100"


def test_users_that_are_not_numbers() -> None:
    assert normalize_number("Support") == "support"
    assert normalize_number("sip:Agent@host") == "agent"
    assert normalize_number("sip:host.example.com") == ""
    assert normalize_number("+") == "+"


def test_dialled_number_check() -> None:
    check = DialledNumberCheck(["+1 415 555 0100", "support"])
    assert check.allows("+14155550100")
    assert check.allows("sipagent", "14155550100")  # R-URI user, To user
    assert check.allows("SUPPORT")
    assert not check.allows("+14155550101")
    assert not check.allows(None)
    assert not check.allows()
    assert DialledNumberCheck([]).allows(None)
    with pytest.raises(ValueError):
        DialledNumberCheck(["sip:host.example.com"])
    assert parse_numbers("+1 415 555 0100, 442071234567") == ("14155550100", "442071234567")


def test_dialled_users_of_an_invite() -> None:
    request = invite("sip:+14155550100@203.0.113.5:5060", "<sip:+14155550100@trunk.example.com>")
    assert dialled_users(request) == ("+14155550100",)
    request = invite("sip:sipagent@203.0.113.5", "<tel:+14155550100;phone-context=x>")
    assert dialled_users(request) == ("sipagent", "+14155550100")
    request = invite("sip:203.0.113.5", "<sip:203.0.113.5>")
    assert dialled_users(request) == ()
    request.uri = "not a uri"
    request.headers.set("To", "<broken")
    assert dialled_users(request) == ()


# -- the policy --------------------------------------------------------------------------------
def test_defaults_are_30_per_2_seconds() -> None:
    config = EdgePolicyConfig()
    assert config.rate_burst == 30 and config.rate_limit * 2 == 30
    assert config.drop_unknown_sources is True


def test_unknown_sources_are_dropped_silently() -> None:
    edge = EdgePolicy(EdgePolicyConfig(allow_preset="twilio"))
    verdict = edge.check_datagram("203.0.113.9", 0.0)
    assert verdict.action is Action.DROP and verdict.reason is Reason.SOURCE_NOT_ALLOWED
    assert verdict.status is None and not verdict.allowed
    assert edge.check_datagram("54.172.60.2", 0.0).allowed
    assert edge.counters["source_not_allowed"] == 1


def test_unknown_sources_may_get_403_but_never_faster_than_the_rate() -> None:
    edge = EdgePolicy(EdgePolicyConfig(
        allow_cidrs=("192.0.2.0/24",), drop_unknown_sources=False, rate_limit=1, rate_burst=2
    ))
    verdicts = [edge.check_datagram("203.0.113.9", 0.0) for _ in range(10)]
    assert [v.action for v in verdicts[:3]] == [Action.REJECT] * 3  # burst 2, one notice
    assert verdicts[0].status == 403
    assert all(v.action is Action.DROP for v in verdicts[3:])
    assert edge.counters["source_not_allowed"] == 10
    no_limit = EdgePolicy(EdgePolicyConfig(
        allow_cidrs=("192.0.2.0/24",), drop_unknown_sources=False, rate_limit=0
    ))
    assert no_limit.check_datagram("203.0.113.9", 0.0).status == 403


def test_a_flood_gets_one_503_per_interval_then_silence() -> None:
    edge = EdgePolicy(EdgePolicyConfig(exempt_cidrs=()))
    verdicts = [edge.check_datagram("198.51.100.7", 0.0) for _ in range(500)]
    assert sum(v.allowed for v in verdicts) == 30
    rejects = [v for v in verdicts if v.action is Action.REJECT]
    assert len(rejects) == 1
    assert rejects[0].status == 503 and rejects[0].reason is Reason.RATE_LIMITED
    assert rejects[0].headers == (("Retry-After", "1"),)
    assert edge.counters["rate_limited"] == 470
    # Another source is not affected.
    assert edge.check_datagram("198.51.100.8", 0.0).allowed
    # Within the interval: silence; 2 s later: a full burst again.
    assert edge.check_datagram("198.51.100.7", 0.01).action is Action.DROP
    assert sum(edge.check_datagram("198.51.100.7", 2.0).allowed for _ in range(40)) == 30


def test_a_limited_source_is_told_again_after_the_interval() -> None:
    edge = EdgePolicy(EdgePolicyConfig(exempt_cidrs=(), rate_limit=0.1, rate_burst=1))
    actions = [edge.check_datagram("198.51.100.7", 0.0).action for _ in range(3)]
    assert actions == [Action.ALLOW, Action.REJECT, Action.DROP]
    assert edge.check_datagram("198.51.100.7", NOTICE_INTERVAL / 2).action is Action.DROP
    late = edge.check_datagram("198.51.100.7", NOTICE_INTERVAL)
    assert late.action is Action.REJECT and late.retry_after == 9  # 0.1 token/s


def test_ipv6_sources_are_limited_per_64() -> None:
    edge = EdgePolicy(EdgePolicyConfig(exempt_cidrs=(), rate_burst=5, rate_limit=1))
    allowed = sum(edge.check_datagram(f"2001:db8:0:1::{n:x}", 0.0).allowed for n in range(50))
    assert allowed == 5  # rotating addresses inside one /64 does not help
    assert edge.check_datagram("2001:db8:0:2::1", 0.0).allowed
    # IPv4-mapped and plain IPv4 are the same source.
    for _ in range(5):
        edge.check_datagram("192.0.2.1", 0.0)
    assert not edge.check_datagram("::ffff:192.0.2.1", 0.0).allowed


def test_loopback_is_exempt_by_default() -> None:
    edge = EdgePolicy()
    assert all(edge.check_datagram("127.0.0.1", 0.0).allowed for _ in range(500))
    assert all(edge.check_datagram("::1", 0.0).allowed for _ in range(500))
    assert sum(edge.check_datagram("192.0.2.1", 0.0).allowed for _ in range(500)) == 30


def test_allowed_carriers_are_not_rate_limited_unless_asked() -> None:
    carrier = EdgePolicy(EdgePolicyConfig(allow_cidrs=("192.0.2.0/24",)))
    assert all(carrier.check_datagram("192.0.2.1", 0.0).allowed for _ in range(500))
    strict = EdgePolicy(EdgePolicyConfig(
        allow_cidrs=("192.0.2.0/24",), exempt_allowed_sources=False
    ))
    assert sum(strict.check_datagram("192.0.2.1", 0.0).allowed for _ in range(500)) == 30


def test_rate_limit_zero_turns_it_off() -> None:
    edge = EdgePolicy(EdgePolicyConfig(rate_limit=0, exempt_cidrs=()))
    assert edge.limiter is None
    assert all(edge.check_datagram("192.0.2.1", 0.0).allowed for _ in range(500))


def test_unparseable_source_text() -> None:
    open_edge = EdgePolicy(EdgePolicyConfig(exempt_cidrs=(), rate_burst=1, rate_limit=1))
    assert open_edge.check_datagram("some-host", 0.0).allowed
    assert not open_edge.check_datagram("some-host", 0.0).allowed
    closed = EdgePolicy(EdgePolicyConfig(allow_cidrs=("192.0.2.0/24",)))
    assert closed.check_datagram("some-host", 0.0).action is Action.DROP


def test_check_invite_order_and_statuses() -> None:
    edge = EdgePolicy(EdgePolicyConfig(
        allow_preset="twilio", numbers=("+14155550100",), max_new_calls_per_second=1
    ))
    source = "54.172.60.1"
    other_tenant = edge.check_invite(source, "+14155550999", 0.0, 0, 10)
    assert (other_tenant.action, other_tenant.status) == (Action.REJECT, 404)
    assert other_tenant.reason is Reason.NUMBER_NOT_SERVED
    busy = edge.check_invite(source, "+14155550100", 0.0, 10, 10)
    assert busy.status == 486 and busy.retry_after == CAPACITY_RETRY_AFTER
    assert edge.check_invite(source, ("sipagent", "+14155550100"), 0.0, 0, 10).allowed
    too_fast = edge.check_invite(source, "+14155550100", 0.2, 0, 10)
    assert too_fast.status == 503 and too_fast.reason is Reason.NEW_CALL_RATE
    assert too_fast.headers == (("Retry-After", "1"),)
    assert edge.check_invite(source, "+14155550100", 1.0, 0, 10).allowed
    stranger = edge.check_invite("203.0.113.9", "+14155550100", 5.0, 0, 10)
    assert stranger.status == 403 and stranger.action is Action.REJECT
    assert edge.counters == {
        "number_not_served": 1, "capacity": 1, "new_call_rate": 1, "source_not_allowed": 1
    }


def test_refused_numbers_do_not_spend_new_call_tokens() -> None:
    edge = EdgePolicy(EdgePolicyConfig(numbers=("100",), max_new_calls_per_second=1))
    for _ in range(5):
        assert not edge.check_invite("192.0.2.1", "999", 0.0, 0, 10).allowed
        assert not edge.check_invite("192.0.2.1", "100", 0.0, 5, 5).allowed
    assert edge.check_invite("192.0.2.1", "100", 0.0, 0, 10).allowed
    assert not EdgePolicy(EdgePolicyConfig(numbers=("100",))).check_invite(
        "192.0.2.1", None, 0.0, 0, 10
    ).allowed


def test_metric_counters_fit_the_sip_dropped_family() -> None:
    edge = EdgePolicy(EdgePolicyConfig(allow_cidrs=("192.0.2.0/24",)))
    edge.check_datagram("203.0.113.1", 0.0)
    assert edge.metric_counters() == {"rx_policy_source_not_allowed": 1}
    assert all(re.fullmatch(r"(rx|tx)_([a-z_]+)", key) for key in edge.metric_counters())


def test_config_from_settings_like_objects() -> None:
    settings = SimpleNamespace(
        allow_cidrs="192.0.2.0/24, 2001:db8::/32",
        allow_preset="twilio",
        numbers=["+1 415 555 0100"],
        rate_limit="5",
        rate_burst=10,
        max_new_calls_per_second=0,
        drop_unknown_sources=False,
    )
    config = EdgePolicyConfig.from_settings(settings)
    assert config.allow_cidrs == ("192.0.2.0/24", "2001:db8::/32")
    assert config.allow_preset == "twilio" and config.numbers == ("+1 415 555 0100",)
    assert (config.rate_limit, config.rate_burst) == (5.0, 10)
    assert config.drop_unknown_sources is False
    assert config.exempt_cidrs == policy.DEFAULT_EXEMPT_CIDRS
    edge = EdgePolicy.from_settings(settings)
    assert "54.172.60.1" in edge.allow_list and "192.0.2.9" in edge.allow_list
    assert edge.numbers.allows("14155550100")
    # The real Settings, before it has any of these fields: all defaults.
    assert EdgePolicyConfig.from_settings(load_settings()) == EdgePolicyConfig()
    # SIPAGENT_RATE_LIMIT_EXEMPT: loopback by default, nothing when emptied.
    assert EdgePolicyConfig.from_settings(
        load_settings(rate_limit_exempt="")
    ).exempt_cidrs == ()
    assert EdgePolicyConfig.from_settings(
        load_settings(rate_limit_exempt="10.1.0.0/16")
    ).exempt_cidrs == ("10.1.0.0/16",)
    with pytest.raises(ValueError):
        EdgePolicyConfig.from_settings(SimpleNamespace(rate_limit=object()))
    assert EdgePolicyConfig.from_settings(SimpleNamespace(allow_cidrs=None)).allow_cidrs == ()
    # TOML may give a lone number as an integer.
    assert EdgePolicyConfig.from_settings(SimpleNamespace(numbers=14155550100)).numbers == (
        "14155550100",
    )
    assert EdgePolicyConfig.from_settings(
        SimpleNamespace(allow_preset="  ", preset_path=str(TWILIO_FILE))
    ).allow_preset is None


def test_preset_path_override(tmp_path: Path) -> None:
    path = tmp_path / "carrier.toml"
    path.write_text('[signalling]\nedge = ["198.51.100.0/24"]\n')
    edge = EdgePolicy(EdgePolicyConfig(allow_preset="twilio", preset_path=str(path)))
    assert "198.51.100.7" in edge.allow_list and "54.172.60.1" not in edge.allow_list


def test_verdict_is_frozen() -> None:
    verdict = Verdict(action=Action.ALLOW, reason=Reason.OK)
    assert verdict.headers == ()
    with pytest.raises(AttributeError):
        verdict.status = 500  # type: ignore[misc]


# -- refusal -----------------------------------------------------------------------------------
def test_refusal_builds_a_stateless_503_for_the_source() -> None:
    edge = EdgePolicy(EdgePolicyConfig(exempt_cidrs=(), rate_burst=1, rate_limit=1))
    edge.check_datagram("198.51.100.7", 0.0)
    verdict = edge.check_datagram("198.51.100.7", 0.0)
    source = Destination("udp", "198.51.100.7", 40000)
    answer = refusal(options(), source, verdict, to_tag="t1", server="sipagent/0.1")
    assert answer is not None
    data, destination = answer
    response = parse_message(data)
    assert isinstance(response, Response) and response.status == 503
    assert response.headers.get("Retry-After") == "1"
    assert response.headers.get("Server") == "sipagent/0.1"
    assert response.to.tag == "t1" and response.call_id == "flood-1"
    assert destination == source  # rport: back to the source port


def test_refusal_without_rport_goes_to_the_via_port() -> None:
    verdict = Verdict(action=Action.REJECT, reason=Reason.SOURCE_NOT_ALLOWED, status=403)
    source = Destination("udp", "198.51.100.7", 40000)
    answer = refusal(options(via_params="", port=5070), source, verdict, to_tag="t")
    assert answer is not None
    assert answer[1] == Destination("udp", "198.51.100.7", 5070)
    tcp = Destination("tcp", "198.51.100.7", 40001)
    answer = refusal(options(via_params=""), tcp, verdict, to_tag="t")
    assert answer is not None and answer[1] == tcp


def test_refusal_has_nothing_to_say_sometimes() -> None:
    verdict = Verdict(action=Action.REJECT, reason=Reason.RATE_LIMITED, status=503)
    source = Destination("udp", "198.51.100.7", 40000)
    ack = options().replace(b"OPTIONS sip", b"ACK sip").replace(b"1 OPTIONS", b"1 ACK")
    assert refusal(ack, source, verdict, to_tag="t") is None
    assert refusal(b"\x00garbage", source, verdict, to_tag="t") is None
    response = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n"
    assert refusal(response, source, verdict, to_tag="t") is None
    no_via = b"OPTIONS sip:a@h SIP/2.0\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n"
    assert refusal(no_via, source, verdict, to_tag="t") is None
    allow = Verdict(action=Action.ALLOW, reason=Reason.OK)
    assert refusal(options(), source, allow, to_tag="t") is None


# -- the core stays sans-I/O -------------------------------------------------------------------
def test_policy_does_no_io_of_its_own() -> None:
    tree = ast.parse(Path(policy.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"time", "socket", "random", "asyncio", "secrets"}
