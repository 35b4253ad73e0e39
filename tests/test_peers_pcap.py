"""tests.peers.pcap and the committed fixtures: write/read round trips, every link type a loopback
capture can have, pcapng, a real dumpcap capture, and the fixtures' exact RTP layout."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.peers.audio import cross_correlate, read_wav, ulaw_decode, ulaw_encode
from tests.peers.pcap import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    PcapError,
    UdpDatagram,
    build_rtp_stream,
    capture,
    is_rtp,
    read_rtp,
    read_udp,
    rtp_payloads,
    write_pcap,
)

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
SPEECH_WAV = FIXTURES / "speech_8k.wav"
SPEECH_PCAP = FIXTURES / "speech_pcmu.pcap"
DTMF_PCAP = FIXTURES / "dtmf_1234hash.pcap"


def _stream(count: int = 10, first_sequence: int = 100) -> list[UdpDatagram]:
    payloads = [bytes([i]) * 160 for i in range(count)]
    return build_rtp_stream(payloads, payload_type=0, ssrc=0x1234, first_sequence=first_sequence,
                            first_timestamp=4000, start_time=1000.0,
                            src=("127.0.0.1", 5004), dst=("127.0.0.2", 6006))


def _ones_complement_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


# ----------------------------------------------------------------------------- write / read


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    stream = _stream()
    path = tmp_path / "rtp.pcap"
    assert write_pcap(path, stream) == 10
    back = read_udp(path)
    assert back == stream
    records = read_rtp(path)
    assert [r.packet.sequence_number for r in records] == list(range(100, 110))
    assert [r.packet.timestamp for r in records] == [4000 + 160 * i for i in range(10)]
    assert [r.packet.marker for r in records] == [1] + [0] * 9
    assert {r.packet.ssrc for r in records} == {0x1234}
    assert records[3].timestamp == pytest.approx(1000.06)
    assert rtp_payloads(records) == [bytes([i]) * 160 for i in range(10)]


def test_written_checksums_are_valid(tmp_path: Path) -> None:
    path = tmp_path / "rtp.pcap"
    write_pcap(path, _stream(count=1))
    frame = path.read_bytes()[24 + 16 :]
    ip = frame[14:34]
    assert _ones_complement_sum(ip) == 0xFFFF
    udp = frame[34:]
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, len(udp))
    assert _ones_complement_sum(pseudo + udp) == 0xFFFF


def test_raw_ip_link_type_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "raw.pcap"
    write_pcap(path, _stream(), linktype=LINKTYPE_RAW)
    assert read_udp(path) == _stream()
    with pytest.raises(ValueError):
        write_pcap(tmp_path / "x.pcap", _stream(), linktype=LINKTYPE_LINUX_SLL)


def _ip_packet(tmp_path: Path) -> bytes:
    path = tmp_path / "one.pcap"
    write_pcap(path, _stream(count=1), linktype=LINKTYPE_RAW)
    return path.read_bytes()[24 + 16 :]


def _classic(linktype: int, frames: list[bytes], *, endian: str = "<", nano: bool = False) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for frame in frames:
        fraction = 500_000_000 if nano else 500_000
        out += struct.pack(endian + "IIII", 1000, fraction, len(frame), len(frame)) + frame
    return out


@pytest.mark.parametrize(
    ("linktype", "header"),
    [
        (LINKTYPE_ETHERNET, bytes(12) + b"\x08\x00"),
        (LINKTYPE_ETHERNET, bytes(12) + b"\x81\x00\x00\x05\x08\x00"),  # 802.1Q tag
        (LINKTYPE_LINUX_SLL, struct.pack("!HHH8sH", 0, 772, 0, bytes(8), 0x0800)),
        (LINKTYPE_LINUX_SLL2, struct.pack("!HHIHBB8s", 0x0800, 0, 1, 772, 0, 0, bytes(8))),
        (LINKTYPE_NULL, struct.pack("<I", 2)),
        (LINKTYPE_NULL, struct.pack(">I", 2)),
        (LINKTYPE_RAW, b""),
    ],
)
def test_reads_every_loopback_link_type(tmp_path: Path, linktype: int, header: bytes) -> None:
    path = tmp_path / "link.pcap"
    path.write_bytes(_classic(linktype, [header + _ip_packet(tmp_path)]))
    [datagram] = read_udp(path)
    assert datagram.src == ("127.0.0.1", 5004)
    assert datagram.dst == ("127.0.0.2", 6006)
    assert datagram.timestamp == pytest.approx(1000.5)
    assert is_rtp(datagram.payload)


def test_reads_big_endian_and_nanosecond_files(tmp_path: Path) -> None:
    frame = bytes(12) + b"\x08\x00" + _ip_packet(tmp_path)
    for endian in "<>":
        path = tmp_path / f"n{endian == '>'}.pcap"
        path.write_bytes(_classic(LINKTYPE_ETHERNET, [frame], endian=endian, nano=True))
        [datagram] = read_udp(path)
        assert datagram.timestamp == pytest.approx(1000.5)


def test_reads_pcapng(tmp_path: Path) -> None:
    def block(kind: int, body: bytes) -> bytes:
        body += bytes(-len(body) % 4)
        return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    tsresol = struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0)  # nanoseconds
    frame = bytes(12) + b"\x08\x00" + _ip_packet(tmp_path)
    nanos = 1000_500_000_000
    data = (
        block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
        + block(1, struct.pack("<HHI", LINKTYPE_ETHERNET, 0, 65535) + tsresol)
        + block(6, struct.pack("<IIIII", 0, nanos >> 32, nanos & 0xFFFFFFFF, len(frame),
                               len(frame)) + frame)
    )
    path = tmp_path / "x.pcapng"
    path.write_bytes(data)
    [datagram] = read_udp(path)
    assert datagram.timestamp == pytest.approx(1000.5)
    assert datagram.dst == ("127.0.0.2", 6006)


@pytest.mark.skipif(shutil.which("editcap") is None, reason="editcap (tshark) not installed")
def test_reads_what_wireshark_tools_write(tmp_path: Path) -> None:
    converted = tmp_path / "speech.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", str(SPEECH_PCAP), str(converted)], check=True,
                   timeout=30, capture_output=True)
    original = read_udp(SPEECH_PCAP)
    again = read_udp(converted)
    assert [(d.src, d.dst, d.payload) for d in again] == [
        (d.src, d.dst, d.payload) for d in original
    ]
    assert np.allclose([d.timestamp for d in again], [d.timestamp for d in original], atol=1e-6)


def test_rejects_what_is_not_a_capture(tmp_path: Path) -> None:
    path = tmp_path / "junk.pcap"
    path.write_bytes(b"RIFF0000WAVEfmt ")
    with pytest.raises(PcapError):
        read_udp(path)
    truncated = tmp_path / "truncated.pcap"
    truncated.write_bytes(SPEECH_PCAP.read_bytes()[:100])
    with pytest.raises(PcapError):
        read_udp(truncated)


def test_filters_and_rtcp(tmp_path: Path) -> None:
    rtcp_rr = bytes([0x80, 201, 0, 1]) + struct.pack("!I", 0x1234)
    stream = [
        *_stream(count=3),
        UdpDatagram(timestamp=1001.0, src=("127.0.0.2", 6006), dst=("127.0.0.1", 5004),
                    payload=rtcp_rr),
        UdpDatagram(timestamp=1001.1, src=("127.0.0.2", 6006), dst=("127.0.0.1", 5004),
                    payload=b"not rtp"),
    ]
    path = tmp_path / "mixed.pcap"
    write_pcap(path, stream)
    assert len(read_udp(path)) == 5
    assert len(read_rtp(path)) == 3
    assert len(read_rtp(path, dst_port=6006)) == 3
    assert read_rtp(path, src_port=6006) == []
    assert read_rtp(path, payload_type=8) == []
    assert read_rtp(path, ssrc=0x9999) == []


def test_payloads_in_sequence_order_across_wrap() -> None:
    import random

    records = [r for r in _records(_stream(count=8, first_sequence=65532))]
    shuffled = records[:]
    random.Random(3).shuffle(shuffled)
    shuffled.append(records[2])  # a duplicate
    assert rtp_payloads(shuffled) == [bytes([i]) * 160 for i in range(8)]
    assert len(rtp_payloads(shuffled, by_sequence=False)) == 9


def _records(stream: list[UdpDatagram]) -> list:  # type: ignore[type-arg]
    from aiortc.rtp import RtpPacket

    from tests.peers.pcap import RtpRecord

    return [RtpRecord(timestamp=d.timestamp, src=d.src, dst=d.dst,
                      packet=RtpPacket.parse(d.payload)) for d in stream]


# ---------------------------------------------------------------------------- real capture


def _can_capture() -> bool:
    return shutil.which("dumpcap") is not None and hasattr(__import__("os"), "geteuid") and \
        __import__("os").geteuid() == 0


@pytest.mark.skipif(not _can_capture(), reason="needs dumpcap and root")
def test_capture_on_loopback_reads_back(tmp_path: Path) -> None:
    stream = _stream(count=5)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        receiver.bind(("127.0.0.1", 0))
        sender.bind(("127.0.0.1", 0))
        port = receiver.getsockname()[1]
        with capture(tmp_path / "lo.pcap", bpf=f"udp port {port}", max_seconds=30) as path:
            for datagram in stream:
                sender.sendto(datagram.payload, ("127.0.0.1", port))
                time.sleep(0.02)
    records = read_rtp(path, dst_port=port)
    assert [r.packet.sequence_number for r in records] == list(range(100, 105))
    assert rtp_payloads(records) == [d.payload[12:] for d in stream]
    gaps = np.diff([r.timestamp for r in records])
    assert np.all(gaps > 0.0)


# -------------------------------------------------------------------------------- fixtures


def test_fixture_sizes_stay_small() -> None:
    files = [p for p in FIXTURES.iterdir() if p.is_file()]
    assert all(p.stat().st_size < 100_000 for p in files), files
    assert sum(p.stat().st_size for p in files) < 300_000


def test_speech_fixtures_match() -> None:
    samples, rate = read_wav(SPEECH_WAV)
    assert rate == 8000
    assert samples.size % 160 == 0
    assert 2.5 <= samples.size / rate <= 3.5
    records = read_rtp(SPEECH_PCAP)
    assert len(records) == samples.size // 160
    assert {r.packet.payload_type for r in records} == {0}
    assert len({r.packet.ssrc for r in records}) == 1
    assert [r.packet.marker for r in records[:2]] == [1, 0]
    assert sum(r.packet.marker for r in records) == 1
    sequences = [r.packet.sequence_number for r in records]
    assert sequences == list(range(sequences[0], sequences[0] + len(records)))
    assert np.all(np.diff([r.packet.timestamp for r in records]) == 160)
    assert np.allclose(np.diff([r.timestamp for r in records]), 0.020, atol=1e-5)
    assert {(r.src, r.dst) for r in records} == {(("127.0.0.1", 6000), ("127.0.0.1", 6000))}
    payload = b"".join(rtp_payloads(records))
    assert payload == ulaw_encode(samples)
    result = cross_correlate(samples, ulaw_decode(payload))
    assert result.lag_ms == 0.0
    assert result.peak > 0.99


def test_dtmf_fixture_is_rfc4733() -> None:
    speech = read_rtp(SPEECH_PCAP)
    records = read_rtp(DTMF_PCAP)
    assert {r.packet.payload_type for r in records} == {101}
    assert {r.packet.ssrc for r in records} == {speech[0].packet.ssrc}
    sequences = [r.packet.sequence_number for r in records]
    assert sequences[0] == speech[-1].packet.sequence_number + 1
    assert sequences == list(range(sequences[0], sequences[0] + len(records)))
    events: dict[int, list[tuple[int, bool, int, int]]] = {}
    for record in records:
        event, flags, duration = struct.unpack("!BBH", record.packet.payload)
        events.setdefault(record.packet.timestamp, []).append(
            (event, bool(flags & 0x80), duration, record.packet.marker))
    assert [packets[0][0] for packets in events.values()] == [1, 2, 3, 4, 11]  # "1234#"
    for packets in events.values():
        assert len({event for event, *_ in packets}) == 1
        assert [marker for *_, marker in packets] == [1, 0, 0, 0, 0, 0, 0]
        assert [end for _, end, _, _ in packets] == [False] * 4 + [True] * 3
        durations = [duration for _, _, duration, _ in packets]
        assert durations == [160, 320, 480, 640, 800, 800, 800]
    starts = sorted(events)
    assert np.all(np.diff(starts) == 1600)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_fixture_pcaps_rebuild_from_the_wav() -> None:
    done = subprocess.run([sys.executable, str(FIXTURES / "make_fixtures.py"), "--check"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
