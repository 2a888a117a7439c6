"""Accepting messages: from a request to durable records and queued sends.

Everything that sends a message comes through here - the Messages API, a
broadcast's destinations, a ``<Message>`` verb, the SMS fallback of a missed
call - so every message gets the same checks, the same content transformation
and the same durability: :meth:`Intake.accept` returns only once the records
and their send jobs are stored together (``MessageStore.create_batch``), which
is what lets the API answer 201 for a message that survives a crash.

The channel is *not* chosen here: a recipient's app may come online or go
away before the message's turn comes, so the sender decides per destination
when it sends (messaging/sender.py).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import structlog

from protocol import links, sms
from protocol.addresses import is_e164, is_identity, new_sid
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.plans import Priority, build_plan, priority_of, schedule_problem
from protocol.senders import is_alphanumeric_sender, pick_sender

from ..accounts import Account
from ..clock import Clock
from ..config import Config, MessagingServiceConfig
from ..engines.outbound import BroadcastRecord, SendJob, TrackedLink
from ..engines.ports import Engine, EngineUnavailable, MessageRecord

log = structlog.get_logger(__name__)

# Pauses before each look for a batch whose store answer was lost (see accept):
# a pooled connection that broke is replaced at the next command, so the first
# look is immediate; the others give a restarting Redis (AOF read back) about
# five seconds, during which the request waits rather than answer a 503 that
# may be untrue.
STORED_CHECKS = (0.0, 0.2, 0.3, 0.5, 1.0, 1.0, 1.0, 1.0)

MAX_BODY = 1600
MAX_MEDIA = 10


@dataclass(frozen=True)
class SendRequest:
    """One message to one destination, as asked (already parsed, not yet checked
    against the account)."""

    to: str  # E.164 or client:<identity>
    body: str = ""
    from_: str | None = None
    messaging_service_sid: str | None = None
    media_urls: tuple[str, ...] = ()
    status_callback: str | None = None
    validity: int | None = None  # seconds
    send_at: float | None = None  # epoch seconds (ScheduleType=fixed)
    track_links: bool = False
    smart_encoded: bool = False
    send_as_mms: bool = False
    priority: Priority | None = None  # None: the service's usecase, else normal
    channels: tuple[str, ...] = ()
    app_payload: str | None = None  # JSON text of the in-app variant
    max_segments: int | None = None
    max_cost: float | None = None
    direction: str = "outbound-api"
    related_call_sid: str | None = None
    fallback_reason: str | None = None
    # The name of the content version ``body`` is ('text', or 'sms' when a
    # broadcast gave an SMS variant); 'app' is the in-app variant's.
    text_version: str = "text"
    # A From the server picked itself (fallback SMS, <Message> replies): not
    # checked against the account's senders, as the API's From is.
    trusted_sender: bool = False


def _refuse(error: ErrorCode, detail: str) -> RemoteProtocolError:
    return RemoteProtocolError(error, detail)


def check_destination(to: str) -> None:
    if to.lower().startswith("client:"):
        if not is_identity(to[len("client:") :]):
            raise _refuse(ErrorCode.MESSAGE_TO_INVALID, f"'To' {to[:64]!r} is not a valid client:<identity> address")
    elif not is_e164(to):
        raise _refuse(ErrorCode.MESSAGE_TO_INVALID, f"'To' {to[:64]!r} is not an E.164 number (+15551230001) or client:<identity>")


def check_content(body: str, media: Sequence[str]) -> None:
    if not body and not media:
        raise _refuse(ErrorCode.MESSAGE_BODY_REQUIRED, "a message needs a 'Body' or a 'MediaUrl'")
    if len(body) > MAX_BODY:
        raise _refuse(ErrorCode.MESSAGE_BODY_TOO_LONG, f"'Body' has {len(body)} characters; at most {MAX_BODY}")
    if len(media) > MAX_MEDIA:
        raise _refuse(ErrorCode.MESSAGE_MEDIA_INVALID, f"{len(media)} media URLs; at most {MAX_MEDIA}")
    for url in media:
        if not url.startswith(("http://", "https://")) or len(url) > 4096:
            raise _refuse(ErrorCode.MESSAGE_MEDIA_INVALID, f"media URL {url[:64]!r} is not an http(s) URL")


class Intake:
    def __init__(
        self,
        *,
        config: Config,
        engine: Engine,
        clock: Clock,
        link_base_url: str,
        on_enqueued: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.clock = clock
        self.link_base_url = link_base_url
        # Wakes this process's dispatcher (others find the work by polling).
        self.on_enqueued = on_enqueued

    def service(self, account: Account, sid: str) -> MessagingServiceConfig:
        service = account.messaging_services.get(sid)
        if service is None:
            # Another account's service is not found either: nothing tells them apart.
            raise _refuse(ErrorCode.MESSAGING_SERVICE_UNKNOWN, f"no messaging service {sid[:40]!r} in this account")
        return service

    async def _sender(self, account: Account, req: SendRequest, service: MessagingServiceConfig | None) -> str:
        if req.from_ is not None:
            if not req.trusted_sender:
                owned = req.from_ in account.numbers or any(
                    req.from_ in s.senders for s in account.messaging_services.values()
                )
                if not (is_e164(req.from_) or is_alphanumeric_sender(req.from_)):
                    raise _refuse(ErrorCode.MESSAGE_FROM_INVALID, f"'From' {req.from_[:40]!r} is not an E.164 number or an alphanumeric sender id")
                if not owned:
                    raise _refuse(ErrorCode.MESSAGE_FROM_NOT_OWNED, f"'From' {req.from_} is not one of this account's numbers or sender ids")
            return req.from_
        if service is None:
            raise _refuse(ErrorCode.MESSAGE_FROM_REQUIRED, "give 'From' or 'MessagingServiceSid'")
        target = req.to if is_e164(req.to) else account.phones.get(req.to[len("client:") :], req.to)
        sticky = None
        if service.sticky_sender:
            sticky = await self.engine.messages.last_sender(account.sid, service.sid, req.to)
        return pick_sender(service.senders, target, sticky=sticky, geomatch=service.geomatch)

    async def accept(
        self, account: Account, requests: Sequence[SendRequest], broadcast: BroadcastRecord | None = None
    ) -> list[MessageRecord]:
        """Check, transform and store the messages with their send jobs; raise
        RemoteProtocolError (nothing stored) when one of them is refused."""
        now = self.clock.time()
        cfg = self.config.messaging
        records: list[MessageRecord] = []
        jobs: list[SendJob] = []
        tracked: list[TrackedLink] = []
        queued_per_sender: dict[str, int] = {}
        for req in requests:
            check_destination(req.to)
            check_content(req.body, req.media_urls)
            service = self.service(account, req.messaging_service_sid) if req.messaging_service_sid else None
            sender = await self._sender(account, req, service)
            if req.send_at is not None:
                problem = schedule_problem(req.send_at, now, cfg.max_schedule_ahead)
                if problem is not None:
                    raise _refuse(ErrorCode.MESSAGE_SCHEDULE_INVALID, f"SendAt is {problem}")
            priority = req.priority
            if priority is None:
                priority = priority_of(service.priority) if service is not None else Priority.NORMAL
            validity = req.validity or (service.validity_period if service else None) or cfg.default_validity
            plan = build_plan(now, priority=priority, send_at=req.send_at, validity=validity, max_attempts=cfg.max_attempts)
            sid = new_sid("MM" if req.media_urls else "SM")
            body = sms.smart_encode(req.body) if req.smart_encoded else req.body
            app_payload = req.app_payload
            if req.track_links:
                body, pairs = links.shorten(body, self.link_base_url, links.new_code)
                tracked.extend(
                    TrackedLink(code, url, account.sid, sid, now, broadcast.sid if broadcast else None, req.text_version)
                    for code, url in pairs
                )
                app_payload = self._shorten_payload(app_payload, account.sid, sid, now, broadcast, tracked)
            info = sms.segments(body)
            status = "scheduled" if req.send_at is not None else ("accepted" if service is not None else "queued")
            records.append(
                MessageRecord(
                    sid=sid, account_sid=account.sid, to=req.to, from_=sender, body=body, media_urls=req.media_urls,
                    direction=req.direction, status=status, channel="mms" if req.media_urls else "sms",
                    fallback_reason=req.fallback_reason, related_call_sid=req.related_call_sid,
                    messaging_service_sid=service.sid if service else None, num_segments=info.num_segments,
                    date_created=now, date_updated=now, status_callback=req.status_callback or (service.status_callback if service else None),
                    priority=int(priority), send_at=req.send_at, valid_until=plan.deadline,
                    broadcast_sid=broadcast.sid if broadcast else None, channels=req.channels, app_payload=app_payload,
                    track_links=req.track_links, smart_encoded=req.smart_encoded, send_as_mms=req.send_as_mms,
                    max_segments=req.max_segments, max_cost=req.max_cost, encoding=info.encoding,
                    content_version=req.text_version,
                )
            )
            jobs.append(SendJob(account.sid, sid, int(priority), plan.not_before, sender))
            queued_per_sender[sender] = queued_per_sender.get(sender, 0) + 1
        for sender, adding in queued_per_sender.items():
            held = await self.engine.queue.depth(account.sid, sender)
            if held + adding > cfg.max_queued_per_sender:
                raise RemoteProtocolError(
                    ErrorCode.MESSAGE_QUEUE_FULL,
                    f"sender {sender} has {held} messages queued; the limit is {cfg.max_queued_per_sender}",
                )
        if tracked:
            # Before the records: a crash in between leaves unused links, never a
            # message whose short link does not resolve.
            await self.engine.links.add(tracked)
        try:
            await self.engine.messages.create_batch(records, jobs, broadcast)
        except EngineUnavailable:
            # The store may have run and only its answer been lost (a dropped
            # connection, a reply slower than the socket timeout). Answering 503
            # then would leave a message the client was told was refused, and
            # that is sent all the same (and again, if the client retries).
            # The batch is stored all at once or not at all: look for its first record.
            if not await self._stored(records[0]):
                raise
            log.warning("the store's answer was lost, but the messages were stored", account_sid=account.sid, count=len(records))
        log.debug("messages accepted", account_sid=account.sid, count=len(records), broadcast_sid=broadcast.sid if broadcast else None)
        self.on_enqueued()
        return records

    async def _stored(self, record: MessageRecord) -> bool:
        """Whether ``record`` is in the store, asked over a fresh round trip; False
        also when the store cannot say (then the caller's 503 stands)."""
        for wait in STORED_CHECKS:
            await asyncio.sleep(wait)  # real time, not the clock's: it is the network that recovers
            try:
                return await self.engine.messages.get(record.account_sid, record.sid) is not None
            except EngineUnavailable:
                continue
        return False

    def _shorten_payload(
        self, payload: str | None, account_sid: str, sid: str, now: float, broadcast: BroadcastRecord | None, tracked: list[TrackedLink]
    ) -> str | None:
        """The in-app variant's text gets its own tracked links (version 'app'), so
        opens are counted per content version."""
        if payload is None:
            return None
        data: dict[str, Any] = json.loads(payload)
        text = data.get("text")
        if isinstance(text, str):
            data["text"], pairs = links.shorten(text, self.link_base_url, links.new_code)
            tracked.extend(
                TrackedLink(code, url, account_sid, sid, now, broadcast.sid if broadcast else None, "app") for code, url in pairs
            )
        return json.dumps(data, separators=(",", ":"))
