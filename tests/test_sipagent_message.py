"""Tests for sipagent.message: Headers, parsing, serializing, validating and answering."""

from __future__ import annotations

import pytest

from sipagent.exceptions import MessageParseError, RemoteProtocolError
from sipagent.headers import CSeq
from sipagent.message import (
    MAX_MESSAGE_SIZE,
    FramedError,
    Headers,
    Request,
    Response,
    canonical_name,
    make_response,
    parse_message,
    validate_request,
)

INVITE = (
    b"INVITE sip:agent@198.51.100.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.20;branch=z9hG4bKproxy;received=192.0.2.21\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:alice@example.com>;tag=1928301774\r\n'
    b"To: <sip:agent@198.51.100.1>\r\n"
    b"Call-ID: a84b4c76e66710@192.0.2.10\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.10:5062>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)

OK = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK776asdhds\r\n"
    b"From: <sip:alice@example.com>;tag=1928301774\r\n"
    b"To: <sip:agent@198.51.100.1>;tag=a6c85cf\r\n"
    b"Call-ID: a84b4c76e66710@192.0.2.10\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def request(data: bytes = INVITE) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def replace_header(data: bytes, name: bytes, line: bytes | None) -> bytes:
    """Replace (or drop, with None) the header line starting with ``name:``."""
    out = []
    for old in data.split(b"\r\n"):
        if old.lower().startswith(name.lower() + b":"):
            if line is not None:
                out.append(line)
        else:
            out.append(old)
    return b"\r\n".join(out)


# -- header names and the Headers collection --------------------------------------------------


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("v", "Via"),
        ("I", "Call-ID"),
        ("f", "From"),
        ("t", "To"),
        ("m", "Contact"),
        ("l", "Content-Length"),
        ("c", "Content-Type"),
        ("k", "Supported"),
        ("call-id", "Call-ID"),
        ("CSEQ", "CSeq"),
        ("www-authenticate", "WWW-Authenticate"),
        (" record-route ", "Record-Route"),
        ("x-custom-thing", "X-Custom-Thing"),
    ],
)
def test_canonical_name(name: str, canonical: str) -> None:
    assert canonical_name(name) == canonical


def test_headers_case_insensitive_and_compact() -> None:
    headers = Headers([("v", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b"), ("VIA", "x")])
    headers.add("i", "call@host")
    assert "Via" in headers and "v" in headers and "call-id" in headers
    assert 42 not in headers
    assert "Route" not in headers
    assert headers.get("Call-ID") == "call@host"
    assert headers.get("Route") is None
    assert headers.get("Route", "none") == "none"
    assert headers.lines("via") == ["SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b", "x"]
    assert headers.get_all("Via") == ["SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/UDP b", "x"]
    assert [name for name, _ in headers] == ["Via", "Via", "Call-ID"]
    assert len(headers) == 3


def test_headers_single_value_not_split() -> None:
    headers = Headers([("Subject", "hello, world"), ("Allow", "INVITE, ACK,,BYE")])
    assert headers.get_all("Subject") == ["hello, world"]
    assert headers.get_all("Allow") == ["INVITE", "ACK", "BYE"]


def test_headers_set_remove_copy() -> None:
    headers = Headers([("X-A", "1"), ("Route", "<sip:r1>"), ("X-B", "2"), ("Route", "<sip:r2>")])
    copy = headers.copy()
    headers.set("route", "<sip:new>")
    assert list(headers) == [("X-A", "1"), ("Route", "<sip:new>"), ("X-B", "2")]
    headers.set("x-c", "3")
    assert list(headers)[-1] == ("X-C", "3")
    headers.remove("x-a")
    assert "X-A" not in headers
    assert copy.lines("Route") == ["<sip:r1>", "<sip:r2>"]  # the copy is independent


# -- parse and serialize ----------------------------------------------------------------------


def test_request_round_trip_is_byte_exact() -> None:
    message = request()
    assert message.method == "INVITE"
    assert message.uri == "sip:agent@198.51.100.1:5060"
    assert message.version == "SIP/2.0"
    assert message.body == b"v=0\n"
    assert message.call_id == "a84b4c76e66710@192.0.2.10"
    assert message.cseq == CSeq(seq=314159, method="INVITE")
    assert message.from_.tag == "1928301774"
    assert message.to.tag is None
    assert [via.host for via in message.vias] == ["192.0.2.10", "192.0.2.20"]
    assert message.top_via.branch == "z9hG4bK776asdhds"
    assert message.content_type == "application/sdp"
    assert message.serialize() == INVITE
    assert bytes(message) == INVITE
    assert "INVITE" in repr(message)


def test_response_round_trip_is_byte_exact() -> None:
    message = parse_message(OK)
    assert isinstance(message, Response)
    assert (message.status, message.reason) == (200, "OK")
    assert message.to.tag == "a6c85cf"
    assert message.serialize() == OK
    assert "200" in repr(message)


def test_response_reason_phrases() -> None:
    message = parse_message(OK.replace(b"200 OK", b"180 Ringing Right Now"))
    assert isinstance(message, Response)
    assert message.reason == "Ringing Right Now"
    message = parse_message(OK.replace(b"200 OK", b"100 "))
    assert isinstance(message, Response)
    assert (message.status, message.reason) == (100, "")
    message = parse_message(OK.replace(b"200 OK", b"200"))
    assert isinstance(message, Response)
    assert message.reason == ""


def test_serialize_recomputes_content_length() -> None:
    message = request()
    message.body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\n"
    data = message.serialize()
    assert data.count(b"Content-Length") == 1
    assert f"Content-Length: {len(message.body)}\r\n".encode() in data
    assert parse_message(data).body == message.body


def test_compact_folded_and_case_insensitive_headers() -> None:
    data = (
        b"OPTIONS sip:a@b SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 192.0.2.1\r\n"
        b"  ;branch=z9hG4bKfold\r\n"
        b"f: <sip:c@d>;tag=1\r\n"
        b"t: <sip:a@b>\r\n"
        b"i: fold@x\r\n"
        b"cseq: 7\r\n\tOPTIONS\r\n"
        b"SUBJECT:  two   words \r\n"
        b"l: 0\r\n"
        b"\r\n"
    )
    message = request(data)
    assert message.top_via.branch == "z9hG4bKfold"
    assert message.cseq == CSeq(seq=7, method="OPTIONS")
    assert message.headers.get("Subject") == "two words"
    assert message.call_id == "fold@x"
    validate_request(message)
    out = message.serialize()
    assert b"\r\nVia: SIP/2.0/UDP 192.0.2.1 ;branch=z9hG4bKfold\r\n" in out
    assert b"\r\nCall-ID: fold@x\r\n" in out


def test_bare_lf_and_leading_crlf() -> None:
    data = b"\r\n\r\n" + OK.replace(b"\r\n", b"\n")
    message = parse_message(data)
    assert isinstance(message, Response)
    assert message.call_id == "a84b4c76e66710@192.0.2.10"


def test_first_empty_line_wins_whatever_its_line_ending() -> None:
    data = OK.replace(b"\r\n", b"\n").replace(b"Length: 0", b"Length: 6") + b"a\r\n\r\nb"
    assert parse_message(data).body == b"a\r\n\r\nb"


def test_non_utf8_headers_fall_back_to_latin1() -> None:
    data = OK.replace(b"200 OK", b"200 Caf\xe9")
    message = parse_message(data)
    assert isinstance(message, Response)
    assert message.reason == "Café"


def test_udp_body_truncated_to_content_length() -> None:
    # RFC 3261 §18.3 / RFC 4475 §3.1.1.8: octets after Content-Length are ignored.
    data = INVITE + b"INVITE sip:evil@x SIP/2.0\r\n\r\n"
    assert parse_message(data).body == b"v=0\n"


def test_udp_missing_content_length_means_rest_of_datagram() -> None:
    data = replace_header(INVITE, b"Content-Length", None) + b"more"
    assert parse_message(data).body == b"v=0\nmore"


def test_stream_needs_content_length() -> None:
    data = replace_header(INVITE, b"Content-Length", None)
    with pytest.raises(FramedError) as info:
        parse_message(data, stream=True)
    assert info.value.status == 400
    assert isinstance(info.value.message, Request)
    assert parse_message(INVITE, stream=True).body == b"v=0\n"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"Content-Length: 500", "larger"),
        (b"Content-Length: -999", "invalid"),
        (b"Content-Length: \xc2\xb2", "invalid"),  # '²': isdigit() but not int()
        (b"Content-Length: 4, 5", "invalid"),
    ],
)
def test_bad_content_length_is_answerable(line: bytes, reason: str) -> None:
    with pytest.raises(FramedError) as info:
        parse_message(replace_header(INVITE, b"Content-Length", line))
    assert reason in info.value.reason
    assert info.value.message.headers.get("Call-ID") == "a84b4c76e66710@192.0.2.10"


def test_multiple_content_length_is_answerable() -> None:
    data = INVITE.replace(b"Content-Length: 4\r\n", b"Content-Length: 4\r\nl: 4\r\n")
    with pytest.raises(FramedError, match="multiple"):
        parse_message(data)


def test_missing_empty_line_is_answerable() -> None:
    with pytest.raises(FramedError, match="empty line"):
        parse_message(OK[:-2])


def test_too_large() -> None:
    with pytest.raises(MessageParseError) as info:
        parse_message(OK + b"x" * MAX_MESSAGE_SIZE)
    assert info.value.status == 513


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"garbage\r\n\r\n",
        b"INVITE sip:a@b\r\nFoobar roobar\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nFoobar roobar\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\n: x\r\n\r\n",
        b"INVITE sip:a@b HTTP/1.1\r\n\r\n",
        b"SIP/2.0 4294967301 Overlarge\r\n\r\n",
        b"SIP/2.0 20 OK\r\n\r\n",
        b"SIP/2.0 099 Low\r\n\r\n",
        b"SIP/2.0 700 High\r\n\r\n",
        b"SIP/2.0 2\xc2\xb200 Odd\r\n\r\n",
        b"SIP/2.0\r\n\r\n",
        b"SIP/2.x 200 OK\r\n\r\n",
    ],
)
def test_unframeable_is_a_parse_error(data: bytes) -> None:
    with pytest.raises(MessageParseError):
        parse_message(data)


def test_trailing_whitespace_on_request_line_is_tolerated() -> None:
    data = INVITE.replace(b" SIP/2.0\r\n", b" SIP/2.0 \t\r\n", 1)
    assert request(data).version == "SIP/2.0"


def test_missing_top_via() -> None:
    message = Response(200, "OK")
    assert message.vias == []
    with pytest.raises(RemoteProtocolError):
        _ = message.top_via
    assert message.content_type == ""
    assert message.call_id == ""


def test_message_base_serialize_is_abstract() -> None:
    from sipagent.message import _Message

    with pytest.raises(NotImplementedError):
        _Message(None, b"", "SIP/2.0").serialize()


# -- validate_request -------------------------------------------------------------------------


def test_valid_request_passes() -> None:
    validate_request(request())
    validate_request(request(INVITE.replace(b"sip:agent@198.51.100.1:5060", b"tel:+15551234")))


@pytest.mark.parametrize(
    ("change", "status", "match"),
    [
        (lambda d: d.replace(b" SIP/2.0\r\n", b" SIP/3.0\r\n", 1), 505, "version"),
        (lambda d: d.replace(b"INVITE sip", b"INV@TE sip").replace(b"314159 INVITE",
                                                                   b"314159 INV@TE"), 400,
         "method"),
        (lambda d: d.replace(b"INVITE sip:agent@198.51.100.1:5060",
                             b"INVITE sip:agent@198.51.100.1:5060 x"), 400, "whitespace"),
        (lambda d: d.replace(b"sip:agent@198.51.100.1:5060 SIP",
                             b"<sip:agent@198.51.100.1:5060> SIP"), 400, "<>"),
        (lambda d: replace_header(d, b"To", None), 400, "missing To"),
        (lambda d: replace_header(d, b"Call-ID", None), 400, "missing Call-ID"),
        (lambda d: d.replace(b"Max-Forwards: 70", b"Max-Forwards: 70\r\nCall-ID: x@y"), 400,
         "Call-ID"),
        (lambda d: replace_header(d, b"To", b"To: <sip:a@b>, <sip:c@d>"), 400, "more than one"),
        (lambda d: d.replace(b"Max-Forwards: 70", b"Max-Forwards: 70\r\nMax-Forwards: 69"), 400,
         "Max-Forwards"),
        (lambda d: d.replace(b"314159 INVITE", b"314159 OPTIONS"), 400, "CSeq method"),
        (lambda d: d.replace(b"314159 INVITE", b"4294967296 INVITE"), 400, "CSeq"),
        (lambda d: d.replace(b"Call-ID: a84b", b"Call-ID: a,84b"), 400, "Call-ID"),
        (lambda d: d.replace(b"branch=z9hG4bK776asdhds", b"branch=z9hG4bK"), 400, "branch"),
        (lambda d: d.replace(b"received=192.0.2.21", b"received=192.0.2.21;;=;"), 400,
         "parameter"),
        (lambda d: replace_header(d, b"From", b"From: <sip:alice@example.com"), 400, "<URI>"),
        (lambda d: replace_header(d, b"Contact", b"Contact: <sip:a@b>;;x y"), 400, "parameter"),
        (lambda d: d.replace(b"Max-Forwards: 70", b"Max-Forwards: seventy"), 400,
         "Max-Forwards"),
        (lambda d: d.replace(b"Max-Forwards: 70", b"Max-Forwards: \xc2\xb2"), 400,
         "Max-Forwards"),
        (lambda d: d.replace(b"sip:agent@198.51.100.1:5060", b"soap.beep://192.0.2.103:3002"),
         416, "scheme"),
        (lambda d: d.replace(b"sip:agent@198.51.100.1:5060", b"sip:agent@"), 400, "host"),
    ],
)
def test_validate_request_rejects(change, status: int, match: str) -> None:  # type: ignore[no-untyped-def]
    message = request(change(INVITE))
    with pytest.raises(RemoteProtocolError, match=match) as info:
        validate_request(message)
    assert info.value.status == status


# -- make_response ----------------------------------------------------------------------------


def test_make_response_copies_the_identity_headers() -> None:
    message = request()
    response = make_response(message, 180, to_tag="tag-1", headers=[("Contact", "<sip:x@y>")])
    assert (response.status, response.reason) == (180, "Ringing")
    assert response.headers.lines("Via") == message.headers.lines("Via")
    assert response.headers.get("From") == message.headers.get("From")
    assert response.headers.get("To") == "<sip:agent@198.51.100.1>;tag=tag-1"
    assert response.headers.get("Call-ID") == message.call_id
    assert response.headers.get("CSeq") == "314159 INVITE"
    assert response.headers.get("Contact") == "<sip:x@y>"
    assert "Content-Type" not in response.headers
    assert "Record-Route" not in response.headers


def test_make_response_keeps_an_existing_to_tag() -> None:
    message = request(replace_header(INVITE, b"To", b"To: <sip:agent@x> ;  tag = old"))
    response = make_response(message, 200, to_tag="new")
    assert response.headers.get("To") == "<sip:agent@x> ; tag = old"


def test_make_response_to_tag_is_a_header_param_not_a_uri_param() -> None:
    message = request(replace_header(INVITE, b"To", b"To: <sip:agent@x;tag=uri>"))
    response = make_response(message, 200, to_tag="new")
    assert response.to.tag == "new"


def test_make_response_on_a_malformed_to_is_best_effort() -> None:
    for line, expected in [
        (b'To: "broken <sip:a@b>;tag=t', '"broken <sip:a@b>;tag=t'),
        (b'To: "broken <sip:a@b>', '"broken <sip:a@b>;tag=x'),
    ]:
        message = request(replace_header(INVITE, b"To", line))
        assert make_response(message, 400, to_tag="x").headers.get("To") == expected


def test_make_response_body_reason_and_missing_headers() -> None:
    message = Request("OPTIONS", "sip:a@b")
    response = make_response(
        message, 299, "Custom", body=b"v=0\r\n", content_type="application/sdp"
    )
    assert response.reason == "Custom"
    assert response.headers.get("Content-Type") == "application/sdp"
    assert response.body == b"v=0\r\n"
    assert len(response.headers) == 1
    assert make_response(message, 299).reason == "Unknown"
