"""Read and write packet captures of RTP over UDP.

``capture()`` records loopback traffic with ``dumpcap`` (root or CAP_NET_RAW) for the tests.

Writing produces classic libpcap files (Ethernet/IPv4/UDP, microsecond timestamps), the format
SIPp's ``play_pcap_audio`` reads. Reading accepts classic libpcap (either byte order, micro- or
nanosecond timestamps) and pcapng (what ``tshark``/``dumpcap`` write by default), with the link
types a loopback capture can have: Ethernet (``-i lo`` on Linux), Linux cooked v1/v2 (``-i any``),
BSD null/loop, and raw IP.

RTP packets are parsed with :class:`aiortc.rtp.RtpPacket`; RTCP (payload types 200-204, also when
multiplexed on the RTP port) is skipped.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiortc.rtp import RtpPacket

__all__ = [
    "LINKTYPE_ETHERNET",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_LINUX_SLL2",
    "LINKTYPE_LOOP",
    "LINKTYPE_NULL",
    "LINKTYPE_RAW",
    "CaptureError",
    "PcapError",
    "RtpRecord",
    "UdpDatagram",
    "build_rtp_stream",
    "capture",
    "is_rtp",
    "read_rtp",
    "read_udp",
    "rtp_payloads",
    "write_pcap",
]

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

_PCAP_MAGIC_US = 0xA1B2C3D4
_PCAP_MAGIC_NS = 0xA1B23C4D
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D

_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_ETHERTYPE_VLAN = (0x8100, 0x88A8)
_IPPROTO_UDP = 17
_SNAPLEN = 65535


class PcapError(ValueError):
    """The file is not a capture this module understands, or is truncated."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UdpDatagram:
    """One UDP datagram of a capture."""

    timestamp: float
    """Capture time, seconds since the epoch."""
    src: tuple[str, int]
    """Source address and port."""
    dst: tuple[str, int]
    """Destination address and port."""
    payload: bytes
    """UDP payload."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RtpRecord:
    """One RTP packet of a capture, with where and when it was seen."""

    timestamp: float
    """Capture time, seconds since the epoch."""
    src: tuple[str, int]
    """Source address and port."""
    dst: tuple[str, int]
    """Destination address and port."""
    packet: RtpPacket
    """The parsed RTP packet."""


# --------------------------------------------------------------------------------------- writing


def _checksum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ipv4_udp_frame(datagram: UdpDatagram, ident: int) -> bytes:
    src_ip = ipaddress.IPv4Address(datagram.src[0]).packed
    dst_ip = ipaddress.IPv4Address(datagram.dst[0]).packed
    udp_length = 8 + len(datagram.payload)
    pseudo = src_ip + dst_ip + struct.pack("!BBH", 0, _IPPROTO_UDP, udp_length)
    udp_header = struct.pack("!HHHH", datagram.src[1], datagram.dst[1], udp_length, 0)
    udp_checksum = _checksum16(pseudo + udp_header + datagram.payload) or 0xFFFF
    udp = struct.pack("!HHHH", datagram.src[1], datagram.dst[1], udp_length, udp_checksum)
    ip_header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45, 0, 20 + udp_length, ident & 0xFFFF, 0x4000, 64, _IPPROTO_UDP, 0, src_ip, dst_ip,
    )
    ip_header = ip_header[:10] + struct.pack("!H", _checksum16(ip_header)) + ip_header[12:]
    return ip_header + udp + datagram.payload


def write_pcap(
    path: str | Path,
    datagrams: Iterable[UdpDatagram],
    *,
    linktype: int = LINKTYPE_ETHERNET,
) -> int:
    """Write IPv4 UDP datagrams as a classic little-endian libpcap file; return the count.

    ``linktype`` is ``LINKTYPE_ETHERNET`` (zero MAC addresses, what SIPp expects) or
    ``LINKTYPE_RAW``.
    """
    if linktype not in (LINKTYPE_ETHERNET, LINKTYPE_RAW):
        raise ValueError(f"cannot write link type {linktype}")
    count = 0
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", _PCAP_MAGIC_US, 2, 4, 0, 0, _SNAPLEN, linktype))
        for datagram in datagrams:
            frame = _ipv4_udp_frame(datagram, ident=count)
            if linktype == LINKTYPE_ETHERNET:
                frame = bytes(12) + struct.pack("!H", _ETHERTYPE_IPV4) + frame
            micros = round(datagram.timestamp * 1_000_000)
            seconds, micros = divmod(micros, 1_000_000)
            out.write(struct.pack("<IIII", seconds, micros, len(frame), len(frame)))
            out.write(frame)
            count += 1
    return count


def build_rtp_stream(
    payloads: Sequence[bytes],
    *,
    payload_type: int,
    ssrc: int,
    first_sequence: int,
    first_timestamp: int,
    samples_per_packet: int = 160,
    ptime: float = 0.020,
    start_time: float,
    src: tuple[str, int],
    dst: tuple[str, int],
) -> list[UdpDatagram]:
    """Packetize one payload per packet: marker on the first, seq +1 and timestamp +samples each."""
    datagrams = []
    for index, payload in enumerate(payloads):
        packet = RtpPacket(
            payload_type=payload_type,
            marker=1 if index == 0 else 0,
            sequence_number=(first_sequence + index) & 0xFFFF,
            timestamp=(first_timestamp + index * samples_per_packet) & 0xFFFFFFFF,
            ssrc=ssrc,
            payload=payload,
        )
        datagrams.append(
            UdpDatagram(
                timestamp=start_time + index * ptime,
                src=src,
                dst=dst,
                payload=packet.serialize(),
            )
        )
    return datagrams


# --------------------------------------------------------------------------------------- reading


def _frames_classic(data: bytes) -> Iterable[tuple[int, float, bytes]]:
    magic_le = struct.unpack_from("<I", data)[0]
    magic_be = struct.unpack_from(">I", data)[0]
    if magic_le in (_PCAP_MAGIC_US, _PCAP_MAGIC_NS):
        endian, magic = "<", magic_le
    elif magic_be in (_PCAP_MAGIC_US, _PCAP_MAGIC_NS):
        endian, magic = ">", magic_be
    else:
        raise PcapError("not a pcap file")
    divisor = 1e9 if magic == _PCAP_MAGIC_NS else 1e6
    if len(data) < 24:
        raise PcapError("truncated pcap header")
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    offset = 24
    while offset + 16 <= len(data):
        seconds, fraction, caplen, _origlen = struct.unpack_from(endian + "IIII", data, offset)
        offset += 16
        if offset + caplen > len(data):
            raise PcapError("truncated packet record")
        yield linktype, seconds + fraction / divisor, data[offset : offset + caplen]
        offset += caplen


def _frames_pcapng(data: bytes) -> Iterable[tuple[int, float, bytes]]:
    interfaces: list[tuple[int, float]] = []  # (linktype, seconds per timestamp unit)
    endian = "<"
    offset = 0
    while offset + 12 <= len(data):
        block_type = struct.unpack_from(endian + "I", data, offset)[0]
        if block_type == _PCAPNG_SHB:
            order = data[offset + 8 : offset + 12]
            endian = "<" if struct.unpack("<I", order)[0] == _PCAPNG_BYTE_ORDER_MAGIC else ">"
            interfaces = []
        block_length = struct.unpack_from(endian + "I", data, offset + 4)[0]
        if block_length < 12 or offset + block_length > len(data):
            raise PcapError("truncated pcapng block")
        body = data[offset + 8 : offset + block_length - 4]
        if block_type == 1:  # Interface Description Block
            linktype = struct.unpack_from(endian + "H", body, 0)[0]
            interfaces.append((linktype, _pcapng_tsresol(body[8:], endian)))
        elif block_type == 6:  # Enhanced Packet Block
            interface, high, low, caplen = struct.unpack_from(endian + "IIII", body, 0)
            linktype, unit = interfaces[interface]
            yield linktype, ((high << 32) | low) * unit, body[20 : 20 + caplen]
        elif block_type == 3:  # Simple Packet Block: no timestamp
            origlen = struct.unpack_from(endian + "I", body, 0)[0]
            linktype, _unit = interfaces[0]
            yield linktype, 0.0, body[4 : 4 + origlen]
        offset += block_length


def _pcapng_tsresol(options: bytes, endian: str) -> float:
    offset = 0
    while offset + 4 <= len(options):
        code, length = struct.unpack_from(endian + "HH", options, offset)
        if code == 0:
            break
        if code == 9 and length >= 1:  # if_tsresol
            value = options[offset + 4]
            return float(2.0 ** -(value & 0x7F)) if value & 0x80 else float(10.0**-value)
        offset += 4 + (length + 3) // 4 * 4
    return 1e-6


def _network_layer(linktype: int, frame: bytes) -> tuple[int, bytes] | None:
    """Return (ethertype, IP packet) for a link-layer frame, or None when it is not IP."""
    if linktype == LINKTYPE_ETHERNET:
        offset, ethertype = 14, struct.unpack_from("!H", frame, 12)[0]
        while ethertype in _ETHERTYPE_VLAN and len(frame) >= offset + 4:
            ethertype = struct.unpack_from("!H", frame, offset + 2)[0]
            offset += 4
        return ethertype, frame[offset:]
    if linktype == LINKTYPE_LINUX_SLL:
        return struct.unpack_from("!H", frame, 14)[0], frame[16:]
    if linktype == LINKTYPE_LINUX_SLL2:
        return struct.unpack_from("!H", frame, 0)[0], frame[20:]
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        # NULL stores the address family in the writer's byte order, LOOP in network order.
        family = struct.unpack_from("!I", frame, 0)[0]
        if linktype == LINKTYPE_NULL and family > 0xFFFF:
            family = struct.unpack_from("<I", frame, 0)[0]
        if family == 2:
            return _ETHERTYPE_IPV4, frame[4:]
        if family in (10, 24, 28, 30):
            return _ETHERTYPE_IPV6, frame[4:]
        return None
    if linktype in (LINKTYPE_RAW, 12, 14, LINKTYPE_IPV4, LINKTYPE_IPV6):
        version = frame[0] >> 4 if frame else 0
        return (_ETHERTYPE_IPV4 if version == 4 else _ETHERTYPE_IPV6), frame
    raise PcapError(f"unsupported link type {linktype}")


def _udp_of(ethertype: int, packet: bytes) -> tuple[str, str, bytes] | None:
    if ethertype == _ETHERTYPE_IPV4 and len(packet) >= 20 and packet[0] >> 4 == 4:
        header_length = (packet[0] & 0x0F) * 4
        total_length = struct.unpack_from("!H", packet, 2)[0]
        flags_fragment = struct.unpack_from("!H", packet, 6)[0]
        if packet[9] != _IPPROTO_UDP or flags_fragment & 0x3FFF:  # not UDP, or a fragment
            return None
        src = str(ipaddress.IPv4Address(packet[12:16]))
        dst = str(ipaddress.IPv4Address(packet[16:20]))
        return src, dst, packet[header_length:total_length]
    if ethertype == _ETHERTYPE_IPV6 and len(packet) >= 40 and packet[0] >> 4 == 6:
        if packet[6] != _IPPROTO_UDP:
            return None
        payload_length = struct.unpack_from("!H", packet, 4)[0]
        src = str(ipaddress.IPv6Address(packet[8:24]))
        dst = str(ipaddress.IPv6Address(packet[24:40]))
        return src, dst, packet[40 : 40 + payload_length]
    return None


def read_udp(path: str | Path) -> list[UdpDatagram]:
    """Every UDP datagram of a pcap or pcapng file, in capture order."""
    data = Path(path).read_bytes()
    if len(data) < 4:
        raise PcapError("file too short")
    is_ng = struct.unpack_from("<I", data)[0] == _PCAPNG_SHB
    frames = _frames_pcapng(data) if is_ng else _frames_classic(data)
    datagrams = []
    for linktype, timestamp, frame in frames:
        network = _network_layer(linktype, frame)
        if network is None:
            continue
        udp = _udp_of(*network)
        if udp is None or len(udp[2]) < 8:
            continue
        src_ip, dst_ip, segment = udp
        sport, dport, length = struct.unpack_from("!HHH", segment, 0)
        datagrams.append(
            UdpDatagram(
                timestamp=timestamp,
                src=(src_ip, sport),
                dst=(dst_ip, dport),
                payload=segment[8:length] if length >= 8 else segment[8:],
            )
        )
    return datagrams


def is_rtp(payload: bytes) -> bool:
    """True for an RTP (version 2, not RTCP) packet."""
    return len(payload) >= 12 and payload[0] >> 6 == 2 and not 192 <= payload[1] <= 223


def read_rtp(
    path: str | Path,
    *,
    src_port: int | None = None,
    dst_port: int | None = None,
    payload_type: int | None = None,
    ssrc: int | None = None,
) -> list[RtpRecord]:
    """RTP packets of a capture, in capture order, filtered by port, payload type and SSRC."""
    records = []
    for datagram in read_udp(path):
        if src_port is not None and datagram.src[1] != src_port:
            continue
        if dst_port is not None and datagram.dst[1] != dst_port:
            continue
        if not is_rtp(datagram.payload):
            continue
        try:
            packet = RtpPacket.parse(datagram.payload)
        except ValueError:
            continue
        if payload_type is not None and packet.payload_type != payload_type:
            continue
        if ssrc is not None and packet.ssrc != ssrc:
            continue
        records.append(
            RtpRecord(timestamp=datagram.timestamp, src=datagram.src, dst=datagram.dst,
                      packet=packet)
        )
    return records


def rtp_payloads(records: Sequence[RtpRecord], *, by_sequence: bool = True) -> list[bytes]:
    """Payloads of one stream, in sequence-number order (wrap-aware, duplicates dropped).

    With ``by_sequence=False`` the payloads come in capture order, duplicates included.
    """
    if not by_sequence:
        return [record.packet.payload for record in records]
    unwrapped: dict[int, bytes] = {}
    previous: int | None = None
    extended = 0
    for record in records:
        sequence = record.packet.sequence_number
        if previous is None:
            extended = sequence
        else:
            delta = (sequence - previous) & 0xFFFF
            extended += delta - 0x10000 if delta >= 0x8000 else delta
        previous = sequence
        unwrapped.setdefault(extended, record.packet.payload)
    return [unwrapped[key] for key in sorted(unwrapped)]


# -------------------------------------------------------------------------------------- capturing


class CaptureError(RuntimeError):
    """dumpcap is missing, or did not start capturing in time."""


@contextlib.contextmanager
def capture(
    path: str | Path,
    *,
    bpf: str = "udp",
    interface: str = "lo",
    max_seconds: int = 120,
    start_timeout: float = 10.0,
    drain_seconds: float = 0.5,
) -> Iterator[Path]:
    """Capture ``interface`` with dumpcap into a classic pcap at ``path`` during the block.

    ``bpf`` is a capture filter such as ``"udp port 40000"``. dumpcap stops by itself after
    ``max_seconds``; leaving the block waits ``drain_seconds`` (dumpcap drops what the kernel has
    not handed it yet when interrupted), then stops it (SIGINT, then SIGKILL, by PID). The file
    is complete when the block has exited.
    """
    dumpcap = shutil.which("dumpcap")
    if dumpcap is None:
        raise CaptureError("dumpcap is not installed (Debian package tshark)")
    target = Path(path)
    log = target.with_suffix(target.suffix + ".log")
    command = [dumpcap, "-i", interface, "-f", bpf, "-P", "-q", "-w", str(target),
               "-a", f"duration:{max_seconds}"]
    with open(log, "wb") as stderr:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + start_timeout
        while b"Capturing on" not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise CaptureError(f"dumpcap did not start: {log.read_text(errors='replace')}")
            time.sleep(0.05)
        yield target
        time.sleep(drain_seconds)
    finally:
        for sig in (signal.SIGINT, signal.SIGKILL):
            if process.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
