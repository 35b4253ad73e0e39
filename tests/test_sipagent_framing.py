"""Tests for sipagent.framing: cutting a TCP/TLS byte stream into SIP messages."""

from __future__ import annotations

import pytest

from sipagent.exceptions import MessageParseError
from sipagent.framing import MAX_HEADER_SIZE, StreamFramer
from sipagent.message import MAX_MESSAGE_SIZE
from tests.test_sipagent_message import INVITE, OK, replace_header


def test_framer_byte_by_byte() -> None:
    framer = StreamFramer()
    out: list[bytes] = []
    for index in range(len(INVITE)):
        out.extend(framer.feed(INVITE[index : index + 1]))
        if index < len(INVITE) - 1:
            assert out == []
    assert out == [INVITE]


def test_framer_several_messages_and_keepalives() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == []
    assert framer.feed(b"\r\n" + INVITE + b"\r\n\r\n" + OK + INVITE[:10]) == [INVITE, OK]
    assert framer.feed(INVITE[10:] + b"\r\n") == [INVITE]
    assert framer.feed(b"") == []


def test_framer_compact_content_length_and_folding() -> None:
    data = replace_header(INVITE, b"Content-Length", b"l:\r\n 4")
    assert StreamFramer().feed(data) == [data]


def test_framer_oversized_headers() -> None:
    with pytest.raises(MessageParseError, match="too large"):
        StreamFramer().feed(b"INVITE sip:a@b SIP/2.0\r\nX: " + b"a" * MAX_HEADER_SIZE)
    big = INVITE.replace(b"Max-Forwards: 70", b"X: " + b"a" * MAX_HEADER_SIZE)
    with pytest.raises(MessageParseError, match="too large"):
        StreamFramer().feed(big)


def test_framer_oversized_message() -> None:
    data = replace_header(INVITE, b"Content-Length", f"Content-Length: {MAX_MESSAGE_SIZE}".encode())
    with pytest.raises(MessageParseError) as info:
        StreamFramer().feed(data)
    assert info.value.status == 513


@pytest.mark.parametrize(
    "line",
    [None, b"Content-Length: -1", b"Content-Length: 4\r\nl: 4", b"Content-Length: four"],
)
def test_framer_needs_one_usable_content_length(line: bytes | None) -> None:
    with pytest.raises(MessageParseError):
        StreamFramer().feed(replace_header(INVITE, b"Content-Length", line))
