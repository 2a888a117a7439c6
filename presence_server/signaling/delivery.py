"""Delivering a message: in-app to a present client, else carrier SMS.

This is the carrier <-> IP transition for messages. A destination that is a
client identity (``client:alice``, or a number configured as alice's phone)
gets the message over its socket when one of its sessions is present with
the ``messaging`` capability, and must ack it within the ack timeout;
otherwise - absent, or no ack - the same message goes by SMS to the
identity's phone, and the record says why (``fallback_reason``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from protocol import messages as m
from protocol.addresses import is_e164, new_sid

from ..accounts import Account
from ..carriers.base import OutboundMessage, Provider
from ..engines.ports import MessageRecord

if TYPE_CHECKING:
    from .run import CallRun
    from .service import SignalingService

log = structlog.get_logger(__name__)

# Twilio-compatible messaging error codes used here (docs/carriers.md lists all).
ERR_UNREACHABLE = 30003  # no way to reach the destination (no phone for an identity)
ERR_NO_PROVIDER = 30008  # no provider can carry it


class Delivery:
    def __init__(self, service: SignalingService) -> None:
        self.service = service
        self._acks: dict[str, asyncio.Future[None]] = {}

    def on_ack(self, sid: str) -> None:
        fut = self._acks.get(sid)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _provider(self, capability: str) -> Provider | None:
        return next((p for p in self.service.providers.values() if capability in p.capabilities), None)

    def _identity_of(self, account: Account, to: str) -> str | None:
        if to.lower().startswith("client:"):
            return to[len("client:") :]
        return account.identity_for_phone(to) if is_e164(to) else None

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
        fallback_reason: str | None = None,
    ) -> MessageRecord:
        record = await self._deliver(account, to, sender, body, media, direction, related_call_sid, fallback_reason)
        if status_callback is not None:
            params = {
                "MessageSid": record.sid, "SmsSid": record.sid, "AccountSid": record.account_sid, "From": record.from_,
                "To": record.to, "MessageStatus": record.status, "SmsStatus": record.status, "ApiVersion": "2010-04-01",
                **({"ErrorCode": str(record.error_code)} if record.error_code is not None else {}),
            }
            self.service.webhooks.send_soon(status_callback, "POST", params, account.auth_token)
        return record

    async def _deliver(
        self, account: Account, to: str, sender: str, body: str, media: tuple[str, ...], direction: str,
        related_call_sid: str | None, fallback_reason: str | None,
    ) -> MessageRecord:
        svc = self.service
        now = svc.clock.time()
        record = MessageRecord(
            sid=new_sid("MM" if media else "SM"),
            account_sid=account.sid,
            to=to,
            from_=sender,
            body=body,
            media_urls=media,
            direction=direction,
            status="queued",
            channel="mms" if media else "sms",
            related_call_sid=related_call_sid,
            fallback_reason=fallback_reason,
            date_created=now,
            date_updated=now,
        )
        await svc.messages.create(record)
        identity = self._identity_of(account, to)
        if identity is not None:
            sessions = [
                s
                for s in await svc.present_sessions(account.sid, identity)
                if "messaging" in s.capabilities
            ]
            if sessions:
                record = await self._update(record, channel="app", status="sending")
                if await self._in_app(record, identity, sessions):
                    return await self._update(record, status="delivered", date_sent=svc.clock.time())
                reason = "not-acked"
            else:
                reason = "absent"
            phone = account.phones.get(identity)
            if account.fallback.mode == "none":
                return await self._update(
                    record, status="undelivered", fallback_reason=reason, error_code=ERR_UNREACHABLE,
                    error_message=f"client {identity} is {reason.replace('-', ' ')} and the account's fallback policy is 'none'",
                )
            if phone is None:
                return await self._update(
                    record, status="failed", fallback_reason=reason, error_code=ERR_UNREACHABLE,
                    error_message=f"client {identity} is {reason.replace('-', ' ')} and has no phone number for SMS",
                )
            record = await self._update(record, channel="mms" if media else "sms", fallback_reason=reason, to=phone)
        return await self._carrier(record)

    async def _in_app(self, record: MessageRecord, identity: str, sessions: list) -> bool:  # type: ignore[type-arg]
        svc = self.service
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks[record.sid] = fut
        frame = m.InAppMessage(sid=record.sid, caller=record.from_, to=f"client:{identity}", body=record.body, media=list(record.media_urls))
        try:
            for session in sessions:
                await svc.deliver(session.node_id, session.session_id, frame)
            sleeper = asyncio.ensure_future(svc.clock.sleep(svc.config.signaling.message_ack_timeout))
            await asyncio.wait({fut, sleeper}, return_when=asyncio.FIRST_COMPLETED)
            sleeper.cancel()
            return fut.done()
        finally:
            del self._acks[record.sid]

    async def _carrier(self, record: MessageRecord) -> MessageRecord:
        provider = self._provider("mms") if record.media_urls else self._provider("sms")
        if provider is None and record.media_urls:
            # No route carries MMS: the media travel as links in the text.
            provider = self._provider("sms")
            links = "\n".join(record.media_urls)
            record = await self._update(record, body=f"{record.body}\n{links}".strip(), media_urls=(), channel="sms")
        if provider is None:
            return await self._update(record, status="failed", error_code=ERR_NO_PROVIDER, error_message="no provider can send SMS")
        record = await self._update(record, status="sending", provider=provider.name)
        result = await provider.send(
            OutboundMessage(record.sid, record.account_sid, record.to, record.from_, record.body, record.media_urls)
        )
        if not result.accepted:
            return await self._update(record, status="failed", error_code=result.error_code, error_message=result.error_message)
        return await self._update(
            record, status=result.status, provider_message_id=result.provider_message_id, date_sent=self.service.clock.time()
        )

    async def _update(self, record: MessageRecord, **changes: object) -> MessageRecord:
        changes.setdefault("date_updated", self.service.clock.time())
        updated = await self.service.messages.update(record.account_sid, record.sid, **changes)
        return updated or record

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
        now = self.service.clock.time()
        record = MessageRecord(
            sid=new_sid("SM"), account_sid=account.sid, to=phone, from_=sender, body=text, direction="outbound-call",
            status="queued", channel="sms", fallback_reason=reason, related_call_sid=run.sid, date_created=now, date_updated=now,
        )
        await self.service.messages.create(record)
        return await self._carrier(record)
