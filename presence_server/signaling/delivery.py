"""Messages the signaling role sends: ``<Message>`` replies and the SMS
fallback of a missed call.

Both go through the messaging pipeline like any other message (durable,
queued, routed; in-app when the recipient's app is present, SMS otherwise),
so this module only turns the signaling context into a send request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from ..accounts import Account
from ..engines.ports import MessageRecord
from ..messaging.intake import SendRequest

if TYPE_CHECKING:
    from .run import CallRun
    from .service import SignalingService

log = structlog.get_logger(__name__)


class Delivery:
    def __init__(self, service: SignalingService) -> None:
        self.service = service

    async def send(
        self,
        account: Account,
        to: str,
        sender: str,
        body: str,
        media: tuple[str, ...] = (),
        *,
        direction: str,
        related_call_sid: str | None = None,
        status_callback: str | None = None,
    ) -> MessageRecord:
        """Queue a message (a ``<Message>`` verb); returns its record as accepted."""
        request = SendRequest(
            to=to, body=body, from_=sender, media_urls=media, status_callback=status_callback, direction=direction,
            related_call_sid=related_call_sid, trusted_sender=True,
        )
        (record,) = await self.service.messaging.send(account, [request])
        return record

    async def settled(self, record: MessageRecord) -> MessageRecord:
        """The record once the pipeline is done with it (for a ``<Message action>``),
        waiting at most the in-app ack timeout and a little more."""
        timeout = self.service.config.signaling.message_ack_timeout + 5.0
        return await self.service.messaging.tracker.settled(record.account_sid, record.sid, timeout) or record

    async def missed_call(self, run: CallRun, identity: str, reason: str) -> MessageRecord | None:
        """The fallback for a dial nobody answered: the missed-call text to the
        callee identity's phone, by SMS (the callee is not in the app, or did
        not answer there)."""
        account = run.account
        if account.fallback.mode == "none":
            return None
        phone = account.phones.get(identity)
        if phone is None:
            log.info("no phone for a missed-call SMS", identity=identity, call_sid=run.sid)
            return None
        sender = account.fallback.from_number or (run.record.to if run.record.to in account.numbers else None) or next(iter(account.numbers), "")
        text = account.fallback.missed_call_template.format(**{"from": run.record.from_, "to": f"client:{identity}"})
        request = SendRequest(
            to=phone, body=text, from_=sender, direction="outbound-call", related_call_sid=run.sid, fallback_reason=reason,
            channels=("sms",), trusted_sender=True,
        )
        (record,) = await self.service.messaging.send(account, [request])
        return record
