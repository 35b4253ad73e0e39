"""tests.peers.sipp and tests/sipp/*.xml: every UAC scenario the integration tests run against
sipagent is first run here against a SIPp UAS that answers the way sipagent does, so that a
failing integration test points at the server, not at the scenario. Negative cases check that the
scenarios' assertions (regexp checks, expected codes) really fail a call."""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import pytest

from tests.peers.audio import cross_correlate, read_wav, ulaw_decode
from tests.peers.pcap import capture, read_rtp, rtp_payloads
from tests.peers.sipp import (
    SCENARIOS,
    SippResult,
    free_media_port,
    free_tcp_port,
    free_udp_port,
    run_sipp,
    sipp_available,
    start_sipp,
)

pytestmark = pytest.mark.skipif(not sipp_available(), reason="sipp (sip-tester) not installed")

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="play_pcap_audio needs a raw socket (root)")
FIXTURES = Path(__file__).parent / "fixtures"


def run_pair(
    uac: str | Path,
    uas: str | Path,
    tmp_path: Path,
    *,
    rtp_echo: bool = False,
    uac_timeout: float = 20.0,
) -> tuple[SippResult, SippResult]:
    """Run a SIPp UAS scenario, then the UAC scenario against it; both results."""
    with start_sipp(uas, timeout=uac_timeout + 10.0, rtp_echo=rtp_echo,
                    workdir=tmp_path / "uas") as server:
        assert server.wait_ready(), server.stop().describe()
        client = run_sipp(uac, remote=("127.0.0.1", server.local_port), timeout=uac_timeout,
                          workdir=tmp_path / "uac")
        served = server.wait(timeout=10.0)
    return client, served


def assert_one_good_call(client: SippResult, served: SippResult) -> None:
    assert client.ok, client.describe()
    assert served.ok, served.describe()
    assert (client.successful, client.failed) == (1, 0), client.describe()
    assert (served.successful, served.failed) == (1, 0), served.describe()


def variant(tmp_path: Path, scenario: str, pattern: str, new: str) -> Path:
    """A copy of a tests/sipp scenario with a regexp's matches replaced (for negative tests)."""
    text, count = re.subn(pattern, new, (SCENARIOS / scenario).read_text(), flags=re.S)
    assert count >= 1, pattern
    path = tmp_path / f"variant_{scenario}"
    path.write_text(text)
    return path


def status_lines(messages: str) -> list[str]:
    return re.findall(r"^(SIP/2\.0 \d{3}[^\r\n]*|[A-Z]+ sip:\S+ SIP/2\.0)", messages, re.M)


# ---------------------------------------------------------------------------------- helpers


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = {free_udp_port() for _ in range(5)} | {free_tcp_port() for _ in range(5)}
    assert len(ports) == 10
    media = free_media_port()
    assert media % 2 == 0
    for port in range(media, media + 4):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", port))


def test_missing_scenario_is_reported(tmp_path: Path) -> None:
    from tests.peers.sipp import SippError

    with pytest.raises(SippError):
        start_sipp("no_such_scenario.xml", workdir=tmp_path)


def test_a_stuck_run_is_stopped_in_time(tmp_path: Path) -> None:
    started = time.monotonic()
    # a UAS nobody calls: SIPp's own -timeout (1 s) or our kill ends it
    result = run_sipp("uas_basic.xml", timeout=3.0, workdir=tmp_path)
    assert time.monotonic() - started < 10.0
    assert not result.ok
    assert result.successful in (0, None)


def test_stop_kills_by_pid(tmp_path: Path) -> None:
    process = start_sipp("uas_basic.xml", timeout=60.0, workdir=tmp_path)
    assert process.wait_ready()
    result = process.stop()
    assert not process.running()
    assert not result.ok


# ------------------------------------------------------------------------ scenario pairs


@needs_root
def test_basic_rtp_echoes_the_speech(tmp_path: Path) -> None:
    # SIPp's -rtp_echo sends every packet straight back: what sipagent's echo mode does.
    with start_sipp("uas_basic.xml", timeout=30.0, rtp_echo=True,
                    workdir=tmp_path / "uas") as server:
        assert server.wait_ready()
        with capture(tmp_path / "rtp.pcap", bpf=f"udp port {server.media_port}") as pcap:
            client = run_sipp("uac_basic_rtp.xml", remote=("127.0.0.1", server.local_port),
                              timeout=20.0, workdir=tmp_path / "uac")
        served = server.wait(timeout=10.0)
    assert_one_good_call(client, served)
    assert "speech_pcmu.pcap, npkts 149" in client.stderr
    sent = read_rtp(pcap, dst_port=server.media_port)
    echoed = read_rtp(pcap, src_port=server.media_port)
    assert len(sent) == 149
    assert len(echoed) == 149
    assert {r.src[1] for r in sent} == {_media_port(client)}  # RTP leaves from -mp
    reference, _ = read_wav(FIXTURES / "speech_8k.wav")
    result = cross_correlate(reference, ulaw_decode(b"".join(rtp_payloads(echoed))))
    assert result.peak > 0.99
    assert result.lag_ms == 0.0


def _media_port(result: SippResult) -> int:
    return int(result.command[result.command.index("-mp") + 1])


def test_cancel(tmp_path: Path) -> None:
    client, served = run_pair("uac_cancel.xml", "uas_cancel.xml", tmp_path)
    assert_one_good_call(client, served)
    assert status_lines(client.messages)[-3:] == [
        "SIP/2.0 200 OK", "SIP/2.0 487 Request Terminated",
        f"ACK sip:echo@127.0.0.1:{served.command[served.command.index('-p') + 1]} SIP/2.0",
    ]
    branches = set(re.findall(r"^Via: .*branch=(\S+)", client.messages, re.M))
    assert len(branches) == 1  # INVITE, CANCEL and the ACK of the 487 share one branch


def test_cancel_without_ringing_cancels_after_a_second(tmp_path: Path) -> None:
    ringing = r"<send>(?:(?!</send>).)*180 Ringing.*?</send>"
    silent = variant(tmp_path, "uas_cancel.xml", ringing, "")
    client, served = run_pair("uac_cancel.xml", silent, tmp_path)
    assert_one_good_call(client, served)


def test_cancel_fails_when_the_server_answers(tmp_path: Path) -> None:
    client, _served = run_pair("uac_cancel.xml", "uas_basic.xml", tmp_path, uac_timeout=8.0)
    assert not client.ok


def test_options(tmp_path: Path) -> None:
    client, served = run_pair("uac_options.xml", "uas_options.xml", tmp_path)
    assert_one_good_call(client, served)
    assert "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS" in client.messages


def test_options_fails_when_allow_lacks_a_method(tmp_path: Path) -> None:
    no_bye = variant(tmp_path, "uas_options.xml", "CANCEL, BYE, OPTIONS", "CANCEL, OPTIONS")
    client, _served = run_pair("uac_options.xml", no_bye, tmp_path)
    assert not client.ok
    assert client.failed == 1
    assert client.stats.get("FailedRegexpDoesntMatch(C)") == "1"


def test_hold_and_resume(tmp_path: Path) -> None:
    client, served = run_pair("uac_hold.xml", "uas_hold.xml", tmp_path)
    assert_one_good_call(client, served)
    assert client.count("CSeq: 3 INVITE") == 2  # the resume re-INVITE and its 200


def test_hold_fails_when_the_answer_is_not_recvonly(tmp_path: Path) -> None:
    wrong = variant(tmp_path, "uas_hold.xml", "a=recvonly", "a=sendrecv")
    client, _served = run_pair("uac_hold.xml", wrong, tmp_path, uac_timeout=8.0)
    assert not client.ok
    assert client.stats.get("FailedRegexpDoesntMatch(C)") == "1"


def test_bye_for_unknown_dialog_gets_481(tmp_path: Path) -> None:
    client, served = run_pair("uac_481.xml", "uas_481.xml", tmp_path)
    assert_one_good_call(client, served)
    assert "SIP/2.0 481" in client.messages


def test_481_scenario_fails_on_another_answer(tmp_path: Path) -> None:
    polite = variant(tmp_path, "uas_481.xml", "481 Call/Transaction Does Not Exist", "200 OK")
    client, _served = run_pair("uac_481.xml", polite, tmp_path, uac_timeout=8.0)
    assert not client.ok


def test_g729_only_offer_gets_488(tmp_path: Path) -> None:
    client, served = run_pair("uac_488.xml", "uas_488.xml", tmp_path)
    assert_one_good_call(client, served)
    assert re.search(r"^m=audio \d+ RTP/AVP 18\r?$", client.messages, re.M)


def test_late_offer(tmp_path: Path) -> None:
    client, served = run_pair("uac_late_offer.xml", "uas_late_offer.xml", tmp_path)
    assert_one_good_call(client, served)
    invite = client.messages.split("INVITE sip:", 1)[1].split("-----", 1)[0]
    assert "Content-Length: 0" in invite


def test_retransmitted_invite_makes_one_dialog(tmp_path: Path) -> None:
    client, served = run_pair("uac_retrans.xml", "uas_retrans.xml", tmp_path)
    assert_one_good_call(client, served)
    assert "-nr" in client.command  # declared by the scenario's sipp-args line
    invites = re.findall(r"^INVITE sip:\S+ SIP/2\.0\r?$", served.messages, re.M)
    assert len(invites) == 2
    branches = set(re.findall(r"^Via: .*branch=(\S+)", served.messages.split("ACK sip:")[0], re.M))
    assert len(branches) == 1
    to_tags = set(re.findall(r"^To: .*;tag=(\S+)", client.messages, re.M))
    assert len(to_tags) == 1
    assert client.messages.count("UDP message sent") <= 5  # INVITE x2, ACK, BYE (+1 slack)


def test_retransmitted_invite_against_an_instant_answer(tmp_path: Path) -> None:
    client, served = run_pair("uac_retrans.xml", "uas_basic.xml", tmp_path)
    assert_one_good_call(client, served)


def test_server_hangs_up(tmp_path: Path) -> None:
    client, served = run_pair("uac_server_bye.xml", "uas_server_bye.xml", tmp_path)
    assert_one_good_call(client, served)
    bye = client.messages.split("BYE sip:", 1)[1].split("-----", 1)[0]
    assert "CSeq: 1 BYE" in bye
    assert re.search(r"^From: <sip:echo@127\.0\.0\.1:\d+>;tag=\S+", bye, re.M)


@needs_root
def test_dtmf_digits_are_sent(tmp_path: Path) -> None:
    with start_sipp("uas_basic.xml", timeout=30.0, workdir=tmp_path / "uas") as server:
        assert server.wait_ready()
        with capture(tmp_path / "dtmf.pcap", bpf=f"udp port {server.media_port}") as pcap:
            client = run_sipp("uac_dtmf.xml", remote=("127.0.0.1", server.local_port),
                              timeout=20.0, workdir=tmp_path / "uac")
        served = server.wait(timeout=10.0)
    assert_one_good_call(client, served)
    events = read_rtp(pcap, dst_port=server.media_port, payload_type=101)
    assert len(events) == 35
    digits = [r.packet.payload[0] for r in events if r.packet.marker]
    assert digits == [1, 2, 3, 4, 11]
