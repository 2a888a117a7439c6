"""A server's WebSocket frame, built here so it can be built once.

A server does not mask its frames (RFC 6455, 5.1), so one message's frame is
the same bytes for every client on the same codec: a presence change fanned
out to a thousand subscribers is framed once and written a thousand times,
instead of going through aiohttp's ``send_str`` (a coroutine, a header and a
copy) per subscriber. Only whole, unfragmented text or binary messages.
"""

from __future__ import annotations

import struct

_TEXT = 0x81  # FIN + opcode 1
_BINARY = 0x82  # FIN + opcode 2
_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")


def ws_frame(data: str | bytes) -> bytes:
    """The unmasked frame of one message: text for ``str`` (UTF-8), binary for ``bytes``."""
    if isinstance(data, str):
        payload = data.encode("utf-8")
        first = _TEXT
    else:
        payload = data
        first = _BINARY
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return _LEN16.pack(first, 126, n) + payload
    return _LEN64.pack(first, 127, n) + payload
