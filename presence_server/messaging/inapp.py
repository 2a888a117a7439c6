"""In-app delivery: a message frame to every present session of the recipient
with the ``messaging`` capability, delivered once one of them acks.

The frame goes through the node's mailbox to whichever gateway holds each
session; the gateway sends the ack back to the node that sent the frame (it
remembers the sender per message sid), so acks always come back here. Delivery
is at least once: a retry after a crash sends the same sid again, and clients
drop the duplicate (docs/protocol.md, "In-app messages").
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable

import structlog

from protocol import messages as m
from protocol.presence import SessionPresence

from ..clock import Clock
from ..engines.ports import MessageRecord
from ..mailbox import Mailbox
from ..presence.service import PresenceService

log = structlog.get_logger(__name__)


class InApp:
    def __init__(self, presence: PresenceService, mailbox: Mailbox, clock: Clock, ack_timeout: float) -> None:
        self.presence = presence
        self.mailbox = mailbox
        self.clock = clock
        self.ack_timeout = ack_timeout
        self._acks: dict[str, asyncio.Future[bool]] = {}  # sid -> read?
        # Called with (account_sid, sid) for a read receipt that comes after the
        # delivery ack (nothing waits for it any more).
        self.on_read: Callable[[str, str], None] = lambda account_sid, sid: None
        mailbox.on("ack", self._on_ack)

    def _on_ack(self, msg: dict[str, Any]) -> None:
        fut = self._acks.get(msg.get("sid", ""))
        if fut is not None and not fut.done():
            fut.set_result(bool(msg.get("read")))
        elif msg.get("read") and isinstance(msg.get("account"), str):
            self.on_read(msg["account"], msg["sid"])

    async def sessions(self, account_sid: str, identity: str) -> list[SessionPresence]:
        """The identity's present sessions that take messages."""
        (snap,) = await self.presence.query(account_sid, [identity])
        return [s for s in snap.presence.sessions if not s.lingering and "messaging" in s.capabilities]

    async def deliver(self, record: MessageRecord, identity: str, sessions: list[SessionPresence]) -> str | None:
        """Send the frame and wait for an ack: 'delivered' (or 'read'), or None when
        no session acked within the ack timeout."""
        payload: Any = None
        body = record.body
        if record.app_payload is not None:
            variant = json.loads(record.app_payload)
            body = variant.get("text", body) if isinstance(variant.get("text"), str) else body
            payload = variant.get("payload")
        frame = m.InAppMessage(
            sid=record.sid, caller=record.from_, to=f"client:{identity}", body=body, media=list(record.media_urls), payload=payload
        )
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._acks[record.sid] = fut
        try:
            wire = frame.to_wire()
            reached = 0
            for session in sessions:
                reached += await self.mailbox.send(session.node_id, "deliver", session=session.session_id, frame=wire)
            if not reached:
                # Every session is on a gateway that is gone (its leases have not run
                # out yet): nobody can ack, so don't wait for the ack timeout.
                return None
            sleeper = asyncio.ensure_future(self.clock.sleep(self.ack_timeout))
            try:
                await asyncio.wait({fut, sleeper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
            if not fut.done():
                return None
            return "read" if fut.result() else "delivered"
        finally:
            if self._acks.get(record.sid) is fut:  # a redelivery may have taken the slot
                del self._acks[record.sid]
