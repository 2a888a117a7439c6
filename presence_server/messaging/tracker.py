"""Message status changes, and the status callbacks they cause.

Every change of a message's status in the pipeline goes through
:meth:`StatusTracker.update`, so the record, the callback to the customer's
``StatusCallback`` and the local waiters (a ``<Message action>`` waiting to
learn the outcome) never disagree.

Callbacks are signed form POSTs (``X-Twilio-Signature``, the account's auth
token) with Twilio's parameters - ``MessageStatus``/``SmsStatus`` and
``ErrorCode`` when there is one - retried with backoff on a connection
failure, a timeout or a 5xx (webhooks.py).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import structlog

from ..accounts import AccountRegistry
from ..clock import Clock
from ..engines.ports import MessageRecord, MessageStore
from ..webhooks import WebhookSender

log = structlog.get_logger(__name__)

# The statuses a status callback is sent for (Twilio's set, plus 'canceled' and 'read').
CALLBACK_STATUSES = frozenset({"queued", "sent", "delivered", "undelivered", "failed", "canceled", "read"})
# Past these, the pipeline has nothing more to do with the message (reports may still come).
SETTLED = frozenset({"sent", "delivered", "undelivered", "failed", "canceled", "read"})
FINAL = frozenset({"delivered", "undelivered", "failed", "canceled", "read"})


def callback_params(record: MessageRecord) -> dict[str, str]:
    params = {
        "MessageSid": record.sid, "SmsSid": record.sid, "AccountSid": record.account_sid, "From": record.from_,
        "To": record.to, "MessageStatus": record.status, "SmsStatus": record.status, "ApiVersion": "2010-04-01",
        "Channel": record.channel,
    }
    if record.messaging_service_sid:
        params["MessagingServiceSid"] = record.messaging_service_sid
    if record.error_code is not None:
        params["ErrorCode"] = str(record.error_code)
    if record.broadcast_sid:
        params["BroadcastSid"] = record.broadcast_sid
    return params


class StatusTracker:
    def __init__(self, messages: MessageStore, webhooks: WebhookSender, accounts: AccountRegistry, clock: Clock) -> None:
        self.messages = messages
        self.webhooks = webhooks
        self.accounts = accounts
        self.clock = clock
        self._waiters: dict[str, list[asyncio.Future[MessageRecord]]] = defaultdict(list)

    async def update(self, record: MessageRecord, **changes: Any) -> MessageRecord:
        """Change the record; when its status changed, tell the callback URL and
        the waiters. Returns the record as stored (the given one if it is gone)."""
        changes.setdefault("date_updated", self.clock.time())
        updated = await self.messages.update(record.account_sid, record.sid, **changes)
        if updated is None:
            return record
        if updated.status != record.status:
            self.changed(updated)
        return updated

    def changed(self, record: MessageRecord) -> None:
        # debug: at thousands of messages a second, a line per change is the
        # single largest cost of the send path (docs/benchmarks.md).
        log.debug("message status", message_sid=record.sid, account_sid=record.account_sid, status=record.status,
                 channel=record.channel, error_code=record.error_code)
        if record.status_callback and record.status in CALLBACK_STATUSES:
            account = self.accounts.account(record.account_sid)
            if account is not None:
                self.webhooks.send_soon(record.status_callback, "POST", callback_params(record), account.auth_token)
        if record.status in SETTLED:
            for fut in self._waiters.pop(record.sid, []):
                if not fut.done():
                    fut.set_result(record)

    async def settled(self, account_sid: str, sid: str, timeout: float) -> MessageRecord | None:
        """The record once the pipeline is done with it (sent, delivered, failed...),
        or as it is after ``timeout`` seconds of clock time."""
        record = await self.messages.get(account_sid, sid)
        if record is None or record.status in SETTLED:
            return record
        fut: asyncio.Future[MessageRecord] = asyncio.get_running_loop().create_future()
        self._waiters[sid].append(fut)
        sleeper = asyncio.ensure_future(self.clock.sleep(timeout))
        try:
            await asyncio.wait({fut, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waiters = self._waiters.get(sid)
            if waiters is not None and fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    del self._waiters[sid]
        if fut.done():
            return fut.result()
        return await self.messages.get(account_sid, sid)
