"""Stream framing: cut a TCP/TLS byte stream into SIP messages (RFC 3261 §18.3).

Datagram transports hand :func:`~sipagent.message.parse_message` one message at a time;
stream transports first feed their bytes to a :class:`StreamFramer`, which finds the
message boundaries from the Content-Length header alone.
"""

from __future__ import annotations

from .exceptions import MessageParseError
from .message import _FOLD_RE, MAX_MESSAGE_SIZE  # unfold exactly as the parser does

__all__ = ["MAX_HEADER_SIZE", "StreamFramer"]

#: Largest header section on a stream before the peer is cut off.
MAX_HEADER_SIZE = 16_384


class StreamFramer:
    """Cut a TCP/TLS byte stream into messages (RFC 3261 §18.3).

    ``feed(data)`` returns the complete messages' bytes; keep-alive CRLFs between
    messages are skipped. A header section over :data:`MAX_HEADER_SIZE` or a message
    without a usable Content-Length raises :class:`MessageParseError`: the connection
    must be closed, as the stream cannot be re-synchronised.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        messages: list[bytes] = []
        while True:
            stripped = self._buffer.lstrip(b"\r\n")
            self._buffer = stripped
            if not stripped:
                return messages
            end = stripped.find(b"\r\n\r\n")
            if end < 0:
                if len(stripped) > MAX_HEADER_SIZE:
                    raise MessageParseError("header section too large")
                return messages
            if end > MAX_HEADER_SIZE:
                raise MessageParseError("header section too large")
            head = stripped[:end]
            length = _stream_content_length(head)
            total = end + 4 + length
            if total > MAX_MESSAGE_SIZE:
                raise MessageParseError("message too large", 513)
            if len(stripped) < total:
                return messages
            messages.append(stripped[:total])
            self._buffer = stripped[total:]


def _stream_content_length(head: bytes) -> int:
    found: list[int] = []
    for line in _FOLD_RE.sub(b" ", head).split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() in (b"content-length", b"l"):
            text = value.strip()
            if not text.isdigit():
                raise MessageParseError("invalid Content-Length on stream")
            found.append(int(text))
    if len(found) != 1:
        raise MessageParseError("stream message needs exactly one Content-Length")
    return found[0]
