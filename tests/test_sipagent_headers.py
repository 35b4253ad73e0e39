"""Tests for sipagent.headers: header-value splitting, parameters, URIs, name-addrs, Via, CSeq."""

from __future__ import annotations

import pytest

from sipagent.exceptions import RemoteProtocolError
from sipagent.headers import (
    CSeq,
    NameAddress,
    SipUri,
    Via,
    parse_params,
    split_header_values,
)

# -- header values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("a, b ,c", ["a", "b", "c"]),
        ('"Doe, John" <sip:j@x>, <sip:k@y>', ['"Doe, John" <sip:j@x>', "<sip:k@y>"]),
        ("<sip:a@x;p=a,b>, <sip:c@y>", ["<sip:a@x;p=a,b>", "<sip:c@y>"]),
        (r'"a \" , b" <sip:a@x>', [r'"a \" , b" <sip:a@x>']),
        ("a>, b", ["a>", "b"]),
        ("", [""]),
    ],
)
def test_split_header_values(value: str, parts: list[str]) -> None:
    assert split_header_values(value) == parts


def test_split_header_values_unterminated_quote() -> None:
    with pytest.raises(RemoteProtocolError):
        split_header_values('"abc, <sip:a@b>')


# -- parameters and URIs --------------------------------------------------------------------


def test_parse_params() -> None:
    assert parse_params(" ; lr ; Transport = TCP;x=\"a;b\";maddr=10.0.0.1;;") == {
        "lr": None,
        "transport": "TCP",
        "x": "a;b",
        "maddr": "10.0.0.1",
    }
    assert parse_params(r';q="a\";b";next') == {"q": 'a";b', "next": None}
    assert parse_params("") == {}


@pytest.mark.parametrize("text", [";=x", ";a b=1", ";a b", ";a@=1", ';x="open'])
def test_parse_params_invalid(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_params(text)


def test_sip_uri_full() -> None:
    uri = SipUri.parse("SIP:alice:secret@Example.com:5070;transport=TCP;lr?subject=x&priority=y")
    assert uri.scheme == "sip"
    assert uri.user == "alice"
    assert uri.password == "secret"
    assert uri.host == "Example.com"
    assert uri.port == 5070
    assert uri.params == {"transport": "TCP", "lr": None}
    assert uri.headers == "subject=x&priority=y"
    assert uri.transport == "tcp"
    assert uri.is_sip
    assert str(uri) == "sip:alice:secret@Example.com:5070;transport=TCP;lr?subject=x&priority=y"


def test_sip_uri_user_with_semicolon_and_question_mark() -> None:
    # RFC 4475 §3.1.1.9 and §3.1.1.2: ';' and '?' are user characters before the '@'.
    uri = SipUri.parse("sip:user;par=u%40example.net@example.com")
    assert uri.user == "user;par=u%40example.net"
    assert uri.host == "example.com"
    assert uri.params == {}
    uri = SipUri.parse(
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
        ":&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com"
    )
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com"


def test_sip_uri_escapes_are_kept() -> None:
    # RFC 4475 §3.1.1.3: never unescape-then-reparse.
    uri = SipUri.parse("sip:sips%3Auser%40example.com@example.net")
    assert uri.scheme == "sip"
    assert uri.user == "sips%3Auser%40example.com"
    assert str(uri) == "sip:sips%3Auser%40example.com@example.net"


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("sip:[2001:db8::10]:5070", "2001:db8::10", 5070),
        ("sips:bob@[2001:db8::10]", "2001:db8::10", None),
        ("sip:192.0.2.1", "192.0.2.1", None),
    ],
)
def test_sip_uri_hosts(text: str, host: str, port: int | None) -> None:
    uri = SipUri.parse(text)
    assert (uri.host, uri.port) == (host, port)
    assert str(uri) == text


def test_sip_uri_default_transports() -> None:
    assert SipUri.parse("sip:a@b").transport == "udp"
    assert SipUri.parse("sips:a@b").transport == "tls"


def test_non_sip_uri_is_opaque() -> None:
    uri = SipUri.parse("tel:+1-201-555-0123;phone-context=x")
    assert not uri.is_sip
    assert uri.opaque == "+1-201-555-0123;phone-context=x"
    assert str(uri) == "tel:+1-201-555-0123;phone-context=x"


@pytest.mark.parametrize(
    "text",
    [
        "example.com",
        ":x",
        "1sip:a@b",
        "sip:a b@c",
        "sip:<a@b>",
        "sip:@example.com",
        "sip:a@",
        "sip:a@[::1",
        "sip:a@[::1]5060",
        "sip:a@b:0",
        "sip:a@b:65536",
        "sip:a@b:50x",
        "sip:a@b:²",
        "sip:a@b/c",
    ],
)
def test_sip_uri_invalid(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        SipUri.parse(text)


# -- name-addr ------------------------------------------------------------------------------


def test_name_address_quoted_display_with_escapes() -> None:
    address = NameAddress.parse(r'"J Rosenberg \\\"" <sip:jdrosen@example.com>;tag=98asjd8')
    assert address.display_name == 'J Rosenberg \\"'
    assert address.uri.user == "jdrosen"
    assert address.tag == "98asjd8"
    assert str(address) == r'"J Rosenberg \\\"" <sip:jdrosen@example.com>;tag=98asjd8'


def test_name_address_quoted_display_holding_brackets_and_commas() -> None:
    address = NameAddress.parse('"Doe, <John>"<sip:j@example.com> ; expires = 60')
    assert address.display_name == "Doe, <John>"
    assert address.params == {"expires": "60"}


@pytest.mark.parametrize(
    ("text", "display"),
    [
        ("Bob <sip:bob@example.com>", "Bob"),
        ("Mr   Bob  Smith<sip:bob@example.com>", "Mr Bob Smith"),
        ("<sip:bob@example.com>", None),
        ('"" <sip:bob@example.com>', ""),
    ],
)
def test_name_address_display_names(text: str, display: str | None) -> None:
    assert NameAddress.parse(text).display_name == display


def test_name_address_addr_spec_params_belong_to_the_header() -> None:
    # §20.10: without <>, ';' parameters after the URI are header parameters.
    address = NameAddress.parse("sip:caller@example.net;tag=134161461246;q=\"0.5\"")
    assert address.uri.params == {}
    assert address.params == {"tag": "134161461246", "q": "0.5"}
    assert str(address) == "<sip:caller@example.net>;tag=134161461246;q=0.5"


def test_name_address_uri_params_stay_in_the_uri() -> None:
    address = NameAddress.parse("<sip:proxy.example.com;lr;transport=tcp>;tag=x")
    assert address.uri.params == {"lr": None, "transport": "tcp"}
    assert address.params == {"tag": "x"}


def test_name_address_wildcard() -> None:
    address = NameAddress.parse(" * ")
    assert address.wildcard
    assert str(address) == "*"


@pytest.mark.parametrize(
    "text",
    [
        '"Mr. J. User <sip:j.user@example.com>',  # quotbal
        '"unterminated',
        '"Quoted" sip:a@b',
        "<sip:a@b",
        "<sip:a@b> junk",
        "Bell, Alexander <sip:a.g.bell@example.com>",
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E",  # regbadct
        "<sip:user@example.com> ;tag",
        "<sip:a @b>",
    ],
)
def test_name_address_invalid(text: str) -> None:
    if text == "<sip:user@example.com> ;tag":
        assert NameAddress.parse(text).params == {"tag": None}  # a flag is fine
        return
    with pytest.raises(RemoteProtocolError):
        NameAddress.parse(text)


# -- Via --------------------------------------------------------------------------------------


def test_via_rport_received() -> None:
    via = Via.parse("SIP/2.0/udp 192.0.2.10:5062;branch=z9hG4bK1;rport;received=192.0.2.99")
    assert via.transport == "UDP"
    assert (via.host, via.port) == ("192.0.2.10", 5062)
    assert via.branch == "z9hG4bK1"
    assert via.params["rport"] is None
    assert via.params["received"] == "192.0.2.99"
    via.params["rport"] = "40000"
    assert str(via) == (
        "SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK1;rport=40000;received=192.0.2.99"
    )


def test_via_ipv6_and_lws() -> None:
    via = Via.parse(
        "SIP  /   2.0\t/ TLS   [2001:db8::9]:5061 ; branch = z9hG4bKx ;received=2001:db8::1"
    )
    assert via.transport == "TLS"
    assert (via.host, via.port) == ("2001:db8::9", 5061)
    assert via.params == {"branch": "z9hG4bKx", "received": "2001:db8::1"}
    assert str(via) == "SIP/2.0/TLS [2001:db8::9]:5061;branch=z9hG4bKx;received=2001:db8::1"


def test_via_without_params() -> None:
    via = Via.parse("SIP/2.0/UDP host.example.com")
    assert via.branch is None
    assert via.port is None
    assert str(via) == "SIP/2.0/UDP host.example.com"


@pytest.mark.parametrize(
    "text", ["SIP/7.0/UDP host", "SIP/2.0 host", "SIP/2.0/UDP", "HTTP/1.1/TCP a", ";"]
)
def test_via_invalid(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        Via.parse(text)


# -- CSeq -------------------------------------------------------------------------------------


def test_cseq() -> None:
    assert CSeq.parse("0009 \t INVITE") == CSeq(seq=9, method="INVITE")
    assert CSeq.parse(f"{2**31 - 1} BYE").seq == 2**31 - 1
    assert str(CSeq(seq=4, method="ACK")) == "4 ACK"


@pytest.mark.parametrize(
    "text", ["", "1", "INVITE 1", "1 INVITE x", "-1 INVITE", f"{2**31} INVITE",
             "36893488147419103232 REGISTER", "1 INV@ITE", "² INVITE"]
)
def test_cseq_invalid(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        CSeq.parse(text)
