"""Tests for rtp.srtp: SRTP/SRTCP round trips, drops, and libsrtp checked against RFC 3711.

The reference implementation below (key derivation, AES-CM, HMAC-SHA1 from ``cryptography``)
is checked against the RFC 3711 appendix B.3 key-derivation vectors, then used to verify the
exact bytes libsrtp produces and to forge packets libsrtp must accept: an independent peer.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from aiortc.rtp import RtcpByePacket, RtcpPacket, RtcpSenderInfo, RtcpSrPacket, RtpPacket
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from rtp.srtp import (
    SRTP_KEY_LENGTH,
    SrtpContext,
    SrtpStats,
    SrtpSuite,
    is_rtcp_datagram,
)

KEY_A = bytes(range(1, 31))
KEY_B = bytes(range(101, 131))
SUITES = list(SrtpSuite)


def pair(suite: SrtpSuite) -> tuple[SrtpContext, SrtpContext]:
    """Two ends with mirrored keys, as after an SDES offer/answer."""
    return SrtpContext(suite, KEY_A, KEY_B), SrtpContext(suite, KEY_B, KEY_A)


def rtp(seq: int, payload: bytes = b"\xd5" * 160, ssrc: int = 0x1234ABCD) -> bytes:
    return RtpPacket(
        payload_type=0, sequence_number=seq, timestamp=seq * 160, ssrc=ssrc, payload=payload
    ).serialize()


def rtcp_bye(ssrc: int = 0x1234ABCD) -> bytes:
    return bytes(RtcpByePacket(sources=[ssrc]))


def rtcp_sr(ssrc: int = 0x1234ABCD) -> bytes:
    info = RtcpSenderInfo(ntp_timestamp=1, rtp_timestamp=2, packet_count=3, octet_count=4)
    return bytes(RtcpSrPacket(ssrc=ssrc, sender_info=info))


# --- an independent SRTP (RFC 3711), for known answers ---------------------------------


def _aes_cm(key: bytes, iv: int, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv.to_bytes(16, "big"))).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def derive(master: bytes, label: int, length: int) -> bytes:
    """RFC 3711 section 4.3.1 with key_derivation_rate 0."""
    key, salt = master[:16], master[16:]
    x = int.from_bytes(salt, "big") ^ (label << 48)
    return _aes_cm(key, x << 16, bytes(length))


def reference_protect(master: bytes, packet: bytes, tag_length: int, roc: int = 0) -> bytes:
    """SRTP-protect an RTP packet without CSRCs or extension (12-byte header)."""
    enc, auth, salt = derive(master, 0, 16), derive(master, 1, 20), derive(master, 2, 14)
    seq, ssrc = struct.unpack_from("!H4xI", packet, 2)
    index = (roc << 16) | seq
    iv = (int.from_bytes(salt, "big") << 16) ^ (ssrc << 64) ^ (index << 16)
    protected = packet[:12] + _aes_cm(enc, iv, packet[12:])
    tag = hmac.new(auth, protected + roc.to_bytes(4, "big"), hashlib.sha1).digest()
    return protected + tag[:tag_length]


def reference_unprotect_rtcp(master: bytes, packet: bytes) -> tuple[bytes, int]:
    """Check and decrypt an SRTCP packet (80-bit tag); returns the RTCP packet and index."""
    enc, auth, salt = derive(master, 3, 16), derive(master, 4, 20), derive(master, 5, 14)
    body, tag = packet[:-10], packet[-10:]
    assert hmac.compare_digest(hmac.new(auth, body, hashlib.sha1).digest()[:10], tag)
    (e_index,) = struct.unpack("!I", body[-4:])
    assert e_index & 0x80000000  # E flag: encrypted
    index = e_index & 0x7FFFFFFF
    (ssrc,) = struct.unpack_from("!I", body, 4)
    iv = (int.from_bytes(salt, "big") << 16) ^ (ssrc << 64) ^ (index << 16)
    return body[:8] + _aes_cm(enc, iv, body[8:-4]), index


def test_reference_key_derivation_matches_rfc3711_appendix_b3() -> None:
    master = bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE4139" "0EC675AD498AFEEBB6960B3AABE6")
    assert derive(master, 0, 16).hex() == "c61e7a93744f39ee10734afe3ff7a087"
    assert derive(master, 2, 14).hex() == "30cbbc08863d8c85d49db34a9ae1"
    assert derive(master, 1, 20).hex() == "cebe321f6ff7716b6fd4ab49af256a156d38baa4"


@pytest.mark.parametrize("suite", SUITES)
def test_libsrtp_output_is_rfc3711_byte_for_byte(suite: SrtpSuite) -> None:
    ours, _ = pair(suite)
    for seq in (7, 8, 65535):
        packet = rtp(seq, payload=bytes(range(160)))
        assert ours.protect(packet) == reference_protect(KEY_A, packet, suite.tag_length)


@pytest.mark.parametrize("suite", SUITES)
def test_packets_from_an_independent_implementation_are_accepted(suite: SrtpSuite) -> None:
    _, theirs = pair(suite)
    packet = rtp(100, payload=b"hello" * 32)
    assert theirs.unprotect(reference_protect(KEY_A, packet, suite.tag_length)) == packet


@pytest.mark.parametrize("suite", SUITES)
def test_srtcp_uses_an_80_bit_tag_and_an_encrypted_index(suite: SrtpSuite) -> None:
    ours, _ = pair(suite)
    bye = rtcp_bye()
    protected = ours.protect_rtcp(bye)
    assert protected is not None
    assert len(protected) == len(bye) + 4 + 10  # E||index, then the tag, for both suites
    clear, index = reference_unprotect_rtcp(KEY_A, protected)
    assert clear == bye
    second = ours.protect_rtcp(bye)
    assert second is not None
    assert reference_unprotect_rtcp(KEY_A, second)[1] == index + 1


# --- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES)
def test_round_trip_both_directions(suite: SrtpSuite) -> None:
    alice, bob = pair(suite)
    for seq in range(65530, 65536 + 10):  # across the rollover: libsrtp tracks the ROC
        packet = rtp(seq & 0xFFFF)
        protected = alice.protect(packet)
        assert protected is not None and protected != packet
        assert len(protected) == len(packet) + suite.tag_length
        assert protected[:12] == packet[:12]  # header in the clear
        assert bob.unprotect(protected) == packet
        reply = rtp(seq & 0xFFFF, ssrc=0x0BB0)
        back = bob.protect(reply)
        assert back is not None and alice.unprotect(back) == reply
    report = rtcp_sr()
    protected_report = alice.protect_rtcp(report)
    assert protected_report is not None
    clear = bob.unprotect_rtcp(protected_report)
    assert clear is not None
    assert isinstance(RtcpPacket.parse(clear)[0], RtcpSrPacket)
    assert bob.stats() == SrtpStats(
        protected=16, unprotected=17, auth_failures=0, replays=0, malformed=0, protect_failures=0
    )


def test_a_new_ssrc_from_the_peer_is_accepted() -> None:
    alice, bob = pair(SrtpSuite.AES_CM_128_HMAC_SHA1_80)
    for ssrc in (1, 2, 3):
        protected = alice.protect(rtp(10, ssrc=ssrc))
        assert protected is not None and bob.unprotect(protected) == rtp(10, ssrc=ssrc)


# --- drops -----------------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES)
def test_tampered_packet_is_dropped_and_counted(suite: SrtpSuite) -> None:
    alice, bob = pair(suite)
    protected = alice.protect(rtp(1))
    assert protected is not None
    for position in (2, 20, len(protected) - 1):  # header, payload, tag
        forged = bytearray(protected)
        forged[position] ^= 0x01
        assert bob.unprotect(bytes(forged)) is None
    assert bob.auth_failures == 3
    assert bob.unprotect(protected) == rtp(1)  # the forgeries did not poison the window


@pytest.mark.parametrize("suite", SUITES)
def test_replayed_packet_is_dropped_and_counted(suite: SrtpSuite) -> None:
    alice, bob = pair(suite)
    protected = alice.protect(rtp(1))
    assert protected is not None
    assert bob.unprotect(protected) is not None
    assert bob.unprotect(protected) is None
    rtcp = alice.protect_rtcp(rtcp_bye())
    assert rtcp is not None
    assert bob.unprotect_rtcp(rtcp) is not None
    assert bob.unprotect_rtcp(rtcp) is None
    assert (bob.replays, bob.auth_failures, bob.unprotected) == (2, 0, 2)


def test_packets_far_behind_the_replay_window_are_dropped() -> None:
    alice, bob = pair(SrtpSuite.AES_CM_128_HMAC_SHA1_80)
    old = alice.protect(rtp(1))
    for seq in range(2, 300):
        packet = alice.protect(rtp(seq))
        assert packet is not None and bob.unprotect(packet) is not None
    assert old is not None
    assert bob.unprotect(old) is None
    assert bob.replays == 1


def test_wrong_key_plain_rtp_and_garbage_are_dropped_not_raised() -> None:
    _, bob = pair(SrtpSuite.AES_CM_128_HMAC_SHA1_80)
    stranger = SrtpContext(SrtpSuite.AES_CM_128_HMAC_SHA1_80, bytes(30), bytes(30))
    forged = stranger.protect(rtp(5))
    assert forged is not None
    assert bob.unprotect(forged) is None
    assert bob.unprotect(rtp(6)) is None  # plain RTP: its last 10 bytes are no tag
    assert bob.auth_failures == 2
    assert bob.unprotect_rtcp(rtcp_sr()) is None  # plain RTCP: no E flag, cannot check
    assert bob.unprotect(b"\x80\x00") is None
    assert bob.unprotect(b"") is None
    assert bob.unprotect(b"\x80" * 4000) is None  # larger than libsrtp's buffer
    assert bob.unprotect_rtcp(rtcp_bye()) is None  # shorter than an SRTCP trailer
    assert bob.malformed == 5
    assert bob.unprotected == 0


def test_protect_failures_are_counted_not_raised() -> None:
    alice, _ = pair(SrtpSuite.AES_CM_128_HMAC_SHA1_80)
    assert alice.protect(rtp(1)) is not None
    assert alice.protect(rtp(1)) is None  # the same index twice would reuse keystream
    assert alice.protect(b"\x80" * 1500) is None
    assert alice.protect_rtcp(b"\x80" * 1500) is None
    assert alice.protect_failures == 3 and alice.protected == 1


# --- re-keying --------------------------------------------------------------------------

KEY_C = bytes(range(201, 231))


def srtcp_index(packet: bytes) -> int:
    """The SRTCP index (E flag masked off) of a protected RTCP packet."""
    return int(struct.unpack_from("!I", packet, len(packet) - 14)[0]) & 0x7FFF_FFFF


@pytest.mark.parametrize("suite", SUITES)
def test_peer_rekey_keeps_our_outbound_state(suite: SrtpSuite) -> None:
    # A re-offer brought the peer's new key; ours is unchanged, so our outbound session must
    # go on where it was: same SRTCP index sequence, no packet index protected twice.
    ours, peer = pair(suite)
    before = [ours.protect_rtcp(rtcp_sr()) for _ in range(3)]
    assert ours.protect(rtp(65535)) is not None
    ours.update_remote_key(KEY_C)
    after = [ours.protect_rtcp(rtcp_sr()) for _ in range(3)]
    assert ours.protect(rtp(0)) is not None  # the rollover counter went on to 1
    indexes = [srtcp_index(p) for p in before + after if p is not None]
    assert indexes == [1, 2, 3, 4, 5, 6]
    assert not set(before) & set(after)  # no ciphertext repeated: no keystream reused
    assert ours.protect_failures == 0
    # The peer still decrypts all of it (its inbound state is untouched).
    assert all(peer.unprotect_rtcp(p) == rtcp_sr() for p in after if p is not None)
    # What the peer now sends under its new key is accepted; under the old one, refused.
    rekeyed_peer = SrtpContext(suite, KEY_C, KEY_A)
    old_key = peer.protect(rtp(7))
    new_key = rekeyed_peer.protect(rtp(8))
    assert old_key is not None and new_key is not None
    assert ours.unprotect(old_key) is None and ours.auth_failures == 1
    assert ours.unprotect(new_key) == rtp(8)


def test_a_fresh_context_under_the_same_key_repeats_keystream() -> None:
    # Why update_remote_key exists: rebuilding the context for a peer re-key restarts our
    # SRTCP index under our unchanged key, and identical input gives identical output.
    suite = SrtpSuite.AES_CM_128_HMAC_SHA1_80
    first = SrtpContext(suite, KEY_A, KEY_B).protect_rtcp(rtcp_sr())
    again = SrtpContext(suite, KEY_A, KEY_C).protect_rtcp(rtcp_sr())
    assert first is not None and first == again


def test_rekey_with_a_bad_key_is_rejected() -> None:
    ours, _ = pair(SrtpSuite.AES_CM_128_HMAC_SHA1_80)
    with pytest.raises(ValueError):
        ours.update_remote_key(KEY_C[:29])


# --- construction ----------------------------------------------------------------------


def test_suites_by_name_and_their_tags() -> None:
    assert SrtpSuite("AES_CM_128_HMAC_SHA1_80").tag_length == 10
    assert SrtpSuite.AES_CM_128_HMAC_SHA1_32.tag_length == 4
    assert all(suite.key_length == SRTP_KEY_LENGTH == 30 for suite in SrtpSuite)
    context = SrtpContext("AES_CM_128_HMAC_SHA1_32", KEY_A, KEY_B)
    assert context.suite is SrtpSuite.AES_CM_128_HMAC_SHA1_32
    assert "AES_CM_128_HMAC_SHA1_32" in repr(context) and KEY_A.hex() not in repr(context)


@pytest.mark.parametrize(
    ("suite", "local", "remote"),
    [
        ("AEAD_AES_256_GCM", KEY_A, KEY_B),
        ("AES_CM_128_HMAC_SHA1_80", KEY_A[:29], KEY_B),
        ("AES_CM_128_HMAC_SHA1_80", KEY_A, KEY_B + b"\x00"),
    ],
)
def test_bad_suite_or_key_length_is_rejected(suite: str, local: bytes, remote: bytes) -> None:
    with pytest.raises(ValueError):
        SrtpContext(suite, local, remote)


def test_is_rtcp_datagram_demultiplexes_rfc5761() -> None:
    assert is_rtcp_datagram(rtcp_bye())
    assert is_rtcp_datagram(rtcp_sr())
    assert not is_rtcp_datagram(rtp(1))
    assert not is_rtcp_datagram(b"\x80")
