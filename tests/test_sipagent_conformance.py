"""RFC 4475 torture messages, each fed as one UDP datagram to a fresh UserAgent.

The expected verdicts follow the "Our UAS" column of ``shared/conformance/rfc4475/INDEX.md``.
Where that column allows several outcomes, ``allowed`` lists them and ``ours`` pins the one
this UAS chose, so a change of behaviour is a visible decision.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from sipagent.events import IncomingCall, UaEvent
from sipagent.message import FramedError, Request, Response, parse_message
from sipagent.transaction import Destination
from sipagent.useragent import UserAgent

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "rfc4475"
SOURCE = Destination("udp", "192.0.2.99", 5060)

pytestmark = pytest.mark.skipif(
    not CORPUS.is_dir(),
    reason=f"RFC 4475 corpus not found at {CORPUS} (CI checks ../shared out beside the repo)",
)

DROP = None  # nothing is sent


@dataclass(frozen=True)
class Verdict:
    ours: int | None
    """The one status we answer with, or DROP."""
    allowed: frozenset[int | None]
    """What INDEX.md's "Our UAS" column accepts."""
    call: bool = False
    """Whether an IncomingCall reaches the call layer."""


def v(ours: int | None, *also: int | None, call: bool = False) -> Verdict:
    return Verdict(ours, frozenset({ours, *also}), call)


VERDICTS: dict[str, Verdict] = {
    # §3.1.1 valid messages
    "wsinv": v(100, 180, 200, 404, 480, call=True),  # To tag of an unknown dialog: recreated
    "intmeth": v(501, 405),
    "esc01": v(100, call=True),
    "escnull": v(405, 501),
    "esc02": v(501),
    "lwsdisp": v(200),
    "longreq": v(100, call=True),
    "dblreq": v(405, 501),
    "semiuri": v(200),
    "transports": v(200),
    "mpart01": v(405, 501),
    "unreason": v(DROP),
    "noreason": v(DROP),
    # §3.1.2 invalid messages
    "badinv01": v(400),
    "clerr": v(400),
    "ncl": v(400, DROP),
    "scalar02": v(400),
    "scalarlg": v(DROP),
    "quotbal": v(400),
    "ltgtruri": v(400),
    "lwsruri": v(400),
    "lwsstart": v(400, 100),
    "trws": v(200, 400),
    "escruri": v(100, 400, call=True),
    "baddate": v(100, 400, call=True),
    "regbadct": v(400, 405),
    "badaspec": v(200, 400),
    "baddn": v(400, DROP),
    "baddn_crlf-fixed": v(400),
    "badvers": v(505),
    "mismatch01": v(400),
    "mismatch02": v(501, 400),
    "bigcode": v(DROP),
    # §3.2 transaction layer
    "badbranch": v(400, 200),
    # §3.3 application layer
    "insuf": v(400, DROP),
    "unkscm": v(416),
    "novelsc": v(416, 404),
    "unksm2": v(405, 400),
    "bext01": v(420),
    "invut": v(415),
    "regaut01": v(405),
    "multi01": v(400),
    "mcl01": v(400, DROP),
    "bcast": v(DROP),
    "zeromf": v(200),
    "cparam01": v(405, 501),
    "cparam02": v(405, 501),
    "regescrt": v(405, 501),
    "sdp01": v(406, 400),
    # §3.4 backward compatibility: no Contact, so 400 rather than a call
    "inv2543": v(400, 100),
    # extra, not an RFC 4475 case
    "test": v(DROP, 400),
}

OPTIONS = (
    b"OPTIONS sip:agent@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKafter\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:probe@192.0.2.99>;tag=probe\r\n"
    b"To: <sip:agent@127.0.0.1>\r\n"
    b"Call-ID: probe-after-torture@192.0.2.99\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


@dataclass
class Outcome:
    ua: UserAgent
    responses: list[tuple[Response, Destination]]
    events: list[UaEvent]


def make_ua() -> UserAgent:
    counter = itertools.count(1)
    return UserAgent(
        host="127.0.0.1", port=5060, public_host="127.0.0.1",
        new_token=lambda: f"tok{next(counter)}",
    )


def drain(ua: UserAgent) -> tuple[list[tuple[Response, Destination]], list[UaEvent]]:
    responses: list[tuple[Response, Destination]] = []
    for data, destination in ua.messages_to_send():
        message = parse_message(data)
        assert isinstance(message, Response), "a UAS core never sends requests here"
        responses.append((message, destination))
    events: list[UaEvent] = []
    while (event := ua.next_event()) is not None:
        events.append(event)
    return responses, events


def feed(name: str) -> Outcome:
    ua = make_ua()
    ua.receive((CORPUS / f"{name}.sip").read_bytes(), SOURCE, 0.0)
    return Outcome(ua, *drain(ua))


def test_every_corpus_file_has_a_verdict() -> None:
    files = {path.stem for path in CORPUS.glob("*.sip")}
    indexed = set(re.findall(r"^\| ([\w-]+)\.sip \|", (CORPUS / "INDEX.md").read_text(), re.M))
    assert files == set(VERDICTS)
    assert indexed <= set(VERDICTS)


@pytest.mark.parametrize("name", sorted(VERDICTS))
def test_verdict(name: str) -> None:
    verdict = VERDICTS[name]
    assert verdict.ours in verdict.allowed
    outcome = feed(name)
    statuses = [response.status for response, _ in outcome.responses]
    assert statuses == ([] if verdict.ours is DROP else [verdict.ours])
    for _, destination in outcome.responses:
        assert destination.host == SOURCE.host  # never 255.255.255.255, never a Via host
        assert destination.transport == "udp"
    calls = [event for event in outcome.events if isinstance(event, IncomingCall)]
    assert len(calls) == (1 if verdict.call else 0)
    assert len(outcome.events) == len(calls)
    # No leak: refuse the call, let every timer run out.
    ua = outcome.ua
    for call in calls:
        ua.reject(call.dialog, 480, 1.0)
    now = 1.0
    while (deadline := ua.get_timer()) is not None:
        assert deadline < 1000.0
        now = deadline
        ua.handle_timer(now)
    assert ua.dialogs == []
    drain(ua)
    # The next valid request is still answered.
    ua.receive(OPTIONS, SOURCE, now)
    responses, _ = drain(ua)
    assert [(r.status, r.call_id) for r, _ in responses] == [
        (200, "probe-after-torture@192.0.2.99")
    ]


@pytest.mark.parametrize("name", sorted(n for n, v in VERDICTS.items() if v.ours is not DROP))
def test_responses_echo_the_request(name: str) -> None:
    outcome = feed(name)
    (response, _), = outcome.responses
    try:
        request = parse_message((CORPUS / f"{name}.sip").read_bytes())
    except FramedError as exc:  # framing errors still carry what was read
        request = exc.message
    assert isinstance(request, Request)
    for header in ("Call-ID", "CSeq", "From"):
        assert response.headers.get(header) == request.headers.get(header)
    assert response.headers.lines("Via")[1:] == request.headers.lines("Via")[1:]


def test_intmeth_echoes_the_unusual_method() -> None:
    (response, _), = feed("intmeth").responses
    assert response.cseq.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert response.headers.get("Allow")


def test_esc02_is_an_unknown_method_not_register() -> None:
    request = parse_message((CORPUS / "esc02.sip").read_bytes())
    assert isinstance(request, Request)
    assert request.method == "RE%47IST%45R"
    assert len(request.headers.get_all("Contact")) == 2  # C%6Fntact is another header
    (response, _), = feed("esc02").responses
    assert response.status == 501


def test_esc01_keeps_the_escaped_user() -> None:
    (call,) = feed("esc01").events
    assert isinstance(call, IncomingCall)
    assert call.request.uri.startswith("sip:sips%3Auser%40example.com@")


def test_wsinv_is_a_call_with_its_pcmu_offer() -> None:
    (call,) = feed("wsinv").events
    assert isinstance(call, IncomingCall)
    assert call.offer is not None and b"m=audio 49217 RTP/AVP 0 12" in call.offer
    assert call.dialog.key.local_tag == "1918181833n"
    assert call.dialog.route_set == []


def test_escruri_never_applies_the_escaped_route() -> None:
    outcome = feed("escruri")
    (call,) = outcome.events
    assert isinstance(call, IncomingCall)
    assert call.dialog.route_set == []
    outcome.ua.answer(call.dialog, b"v=0\r\n", 0.1)
    responses, _ = drain(outcome.ua)
    (ok, _), = responses
    assert ok.status == 200
    assert "Route" not in ok.headers and "Record-Route" not in ok.headers


def test_bext01_lists_both_unsupported_extensions() -> None:
    (response, _), = feed("bext01").responses
    assert response.headers.get_all("Unsupported") == [
        "nothingSupportsThis",
        "nothingSupportsThisEither",
    ]


def test_invut_advertises_sdp() -> None:
    (response, _), = feed("invut").responses
    assert response.headers.get("Accept") == "application/sdp"


def test_quotbal_answer_goes_to_the_via_port() -> None:
    (_, destination), = feed("quotbal").responses
    assert destination == Destination("udp", "192.0.2.99", 5050)
