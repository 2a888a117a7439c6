"""In-app messages: handing them to the application, de-duplicating, acking.

The server delivers a message at least once and waits for an ``ack``
(``signaling.message_ack_timeout``, 10 s by default); without one it sends
the message by SMS instead. So the client acks a message only once the
application has it: when an ``on_message`` callback has returned (an async
one: completed) without raising, or a ``messages()`` stream has yielded it,
whichever comes first. A message that arrives with neither a callback nor a
stream is not acked at all, and the server falls back to SMS.

Every copy is acked (the server may be waiting on any of them), but a
message is handed over once: the sids seen are kept in a bounded LRU, and a
copy of a sid in it is acked again without being delivered. A copy that
arrives before the first has been handed over is acked with it.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from protocol.errors import ErrorCode

from ._link import Link, LinkLost
from .errors import PresenceError
from .models import Message
from .stream import ItemStream

if TYPE_CHECKING:
    from ._core import ClientCore

log = logging.getLogger("presence_client")

# How many message sids are remembered for de-duplication. A duplicate comes
# from a redelivery of a recent message, never of one a thousand messages old.
SEEN_MESSAGES = 1024


@dataclass
class _Inbound:
    message: Message
    handed_over: bool = False
    unacked: list[Link] = field(default_factory=list)  # the connections of copies not acked yet


class Inbox:
    def __init__(self, core: ClientCore) -> None:
        self._core = core
        self._seen: collections.OrderedDict[str, _Inbound] = collections.OrderedDict()
        self.streams: set[ItemStream[Message]] = set()

    def stream(self, max_pending: int) -> ItemStream[Message]:
        stream: ItemStream[Message] = ItemStream(self.streams.discard, max_pending, self._taken)
        if self._core._closing or self._core._closed_event.is_set():
            stream._end()
        else:
            self.streams.add(stream)
        return stream

    def on_frame(self, link: Link, frame: dict[str, Any]) -> None:
        try:
            message = Message.from_wire(frame)
        except ValueError as exc:
            self._core._report(PresenceError(None, f"malformed message from the server: {exc}"))
            return
        record = self._seen.get(message.sid)
        if record is not None:
            self._seen.move_to_end(message.sid)
            record.unacked.append(link)
            log.debug("message %s received again: acked, not delivered again", message.sid)
            if record.handed_over:
                self._ack_copies(record)
            return
        on_message = self._core.on_message
        if on_message is None and not self.streams:
            # Not remembered either: a later copy may find a consumer.
            log.warning(
                "in-app message %s arrived with no on_message callback or messages() stream: "
                "not acked (the server will send it by SMS instead)", message.sid,
            )
            return
        record = _Inbound(message, unacked=[link])
        self._seen[message.sid] = record
        while len(self._seen) > SEEN_MESSAGES:
            self._seen.popitem(last=False)
        for stream in list(self.streams):
            stream._put(message)
        self._core._call(on_message, message, then=lambda: self._handed_over(record))

    def _taken(self, message: Message) -> None:
        record = self._seen.get(message.sid)
        if record is not None:
            self._handed_over(record)

    def _handed_over(self, record: _Inbound) -> None:
        record.handed_over = True
        self._ack_copies(record)

    def _ack_copies(self, record: _Inbound) -> None:
        links, record.unacked = record.unacked, []
        for link in links:
            self._core._spawn(self._ack(link, record.message.sid))

    async def _ack(self, link: Link, sid: str) -> None:
        # On the connection the copy came on: the server knows the message
        # there only (another connection's ack is refused with 31010).
        if link.ended:
            return
        try:
            await self._core._link_request(link, {"type": "ack", "sid": sid})
        except LinkLost:
            pass  # the server sends it again, or by SMS
        except PresenceError as exc:
            if exc.code == ErrorCode.MESSAGE_NOT_FOUND.code:
                log.debug("ack for %s refused: the server no longer waits for it", sid)
            else:
                self._core._report(exc)

    def end_streams(self) -> None:
        for stream in list(self.streams):
            stream._end()
        self.streams.clear()
