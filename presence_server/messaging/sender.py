"""Sending one queued message: channel, content, route, throttle, send, retry.

A job claimed from the send queue comes here. In order:

1. The record is read again (it may have been canceled, or be past its
   validity period: then it ends ``failed`` with 30001).
2. The channel is chosen now, from the recipient's presence at this moment
   (protocol/channels.py): in-app when the destination is, or maps to, a client
   identity with a present session that takes messages; otherwise SMS, or MMS
   when there is media and the route carries it (else the media become links).
   An in-app message that is not acked in time falls back to SMS.
3. For SMS/MMS the route is matched and its providers ranked (routing.py), the
   provider's throughput limit is checked (a throttled send is put back for
   when a token will be there, without counting as an attempt), the record is
   marked ``sending`` with the provider *before* the send (a crash after this
   re-sends to the same provider with the same idempotency key, the message
   sid), and the result is stored: submissions for report matching, the
   outcome for the statistics, the status for the API and callbacks.
4. A temporary refusal tries the next provider of the route at once
   (failover); when all have been tried, it waits (exponential backoff with
   jitter) and starts over, within the attempt limit and the validity period.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import structlog

from protocol import links, sms
from protocol.addresses import is_e164
from protocol.channels import choose_channel
from protocol.errors import ErrorCode
from protocol.plans import Priority, TransmissionPlan

from ..accounts import Account, AccountRegistry
from ..carriers.base import QUEUE_OVERFLOW, UNREACHABLE, UNKNOWN_ERROR, OutboundMessage, Provider, SendResult
from ..clock import Clock
from ..config import MessagingConfig
from ..engines.outbound import RouteOutcome, SendJob, Submission
from ..engines.ports import Engine, EngineUnavailable, MessageRecord
from .inapp import InApp
from .reports import Reports
from .routing import RoutePlan, RouteTable
from .tracker import SETTLED, StatusTracker

log = structlog.get_logger(__name__)

# Over the request's segment or cost budget: the API's own code, as no Twilio code says it.
BUDGET_EXCEEDED = ErrorCode.MESSAGE_BUDGET_EXCEEDED.code
APP = "app"  # the 'provider' and 'route' in-app outcomes are counted under


class Sender:
    def __init__(
        self,
        *,
        engine: Engine,
        accounts: AccountRegistry,
        providers: dict[str, Provider],
        routes: RouteTable,
        inapp: InApp | None,
        tracker: StatusTracker,
        reports: Reports,
        config: MessagingConfig,
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        self.engine = engine
        self.accounts = accounts
        self.providers = providers
        self.routes = routes
        self.inapp = inapp
        self.tracker = tracker
        self.reports = reports
        self.config = config
        self.clock = clock
        self.rng = rng or random.Random()

    async def process(self, job: SendJob) -> None:
        bound = log.bind(message_sid=job.message_sid, account_sid=job.account_sid)
        try:
            await self._process(job)
        except EngineUnavailable:
            # Nothing is lost: the job's lease runs out and it is claimed again.
            bound.warning("engine unavailable while sending; the job will be retried after its lease")
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug must not retry forever: the message ends failed, and says so.
            bound.exception("sending failed unexpectedly")
            record = await self.engine.messages.get(job.account_sid, job.message_sid)
            if record is not None and record.status not in SETTLED:
                await self.tracker.update(record, status="failed", error_code=UNKNOWN_ERROR, error_message="internal error while sending")
            await self.engine.queue.complete(job.account_sid, job.message_sid)

    async def _fail(self, job: SendJob, record: MessageRecord, code: int, message: str, status: str = "failed", **extra: Any) -> None:
        await self.tracker.update(record, status=status, error_code=code, error_message=message, **extra)
        await self.engine.queue.complete(job.account_sid, job.message_sid)

    async def _process(self, job: SendJob) -> None:
        record = await self.engine.messages.get(job.account_sid, job.message_sid)
        if record is None or record.status in SETTLED:
            await self.engine.queue.complete(job.account_sid, job.message_sid)
            return
        now = self.clock.time()
        if record.valid_until is not None and now > record.valid_until:
            await self._fail(job, record, QUEUE_OVERFLOW, "the validity period ended before the message could be sent")
            return
        account = self.accounts.account(record.account_sid)
        if account is None:
            await self._fail(job, record, UNKNOWN_ERROR, "the account no longer exists")
            return
        if record.status in ("scheduled", "accepted"):
            record = await self.tracker.update(record, status="queued")
        await self._send(job, account, record)

    def _addresses(self, account: Account, record: MessageRecord) -> tuple[str | None, str | None]:
        """(identity, phone) of the destination."""
        to = record.to
        if to.lower().startswith("client:"):
            identity = to[len("client:") :]
            return identity, account.phones.get(identity)
        return (account.identity_for_phone(to) if is_e164(to) else None), (to if is_e164(to) else None)

    async def _send(self, job: SendJob, account: Account, record: MessageRecord) -> None:
        identity, phone = self._addresses(account, record)
        app_failed = "not-acked" if record.fallback_reason == "not-acked" else None
        order = record.channels or ("app", "sms")
        sessions = []
        if identity and self.inapp is not None and "app" in order and app_failed is None:
            sessions = await self.inapp.sessions(account.sid, identity)
        choice = choose_channel(
            order=order, to=record.to, identity=identity, phone=phone, app_present=bool(sessions), app_failed=app_failed,
            has_media=bool(record.media_urls), send_as_mms=record.send_as_mms,
            mms_capable=phone is not None and self.routes.can_carry(phone, identity, "mms"),
        )
        if choice.channel == "app":
            assert identity is not None and self.inapp is not None
            await self._in_app(job, account, record, identity, sessions, choice.reason)
            return
        if choice.channel == "none":
            await self._fail(job, record, UNREACHABLE, f"no way to reach {record.to}: {choice.reason}", channel_reason=choice.reason)
            return
        fallback = choice.reason if choice.reason in ("app-absent", "app-not-acked") else None
        if identity is not None and fallback and account.fallback.mode == "none":
            reason = "absent" if fallback == "app-absent" else "not-acked"
            await self._fail(
                job, record, UNREACHABLE, f"client {identity} is {reason.replace('-', ' ')} and the account's fallback policy is 'none'",
                status="undelivered", fallback_reason=reason, channel_reason=choice.reason,
            )
            return
        await self._carrier(job, record, choice.channel, choice.to, choice.reason, choice.media_as_links, identity, fallback)

    async def _in_app(
        self, job: SendJob, account: Account, record: MessageRecord, identity: str, sessions: list[Any], reason: str
    ) -> None:
        assert self.inapp is not None
        started = self.clock.time()
        record = await self.tracker.update(
            record, status="sending", channel="app", channel_reason=reason, attempts=record.attempts + 1,
            content_version="app" if record.app_payload is not None else record.content_version,
        )
        outcome = await self.inapp.deliver(record, identity, sessions)
        now = self.clock.time()
        await self.routes.observe(RouteOutcome(account.sid, APP, APP, "delivered" if outcome else "undelivered", now, latency=now - started))
        if outcome is not None:
            await self.tracker.update(record, status=outcome, date_sent=now)
            await self.engine.queue.complete(job.account_sid, job.message_sid)
            return
        # Not acked in time: the same message goes on by SMS (the channel choice
        # sees the failed app and moves to the next channel).
        record = await self.tracker.update(record, status="queued", fallback_reason="not-acked")
        await self._send(job, account, record)

    async def _carrier(
        self, job: SendJob, record: MessageRecord, channel: str, phone: str, reason: str, media_as_links: bool,
        identity: str | None, fallback: str | None,
    ) -> None:
        body, media = record.body, record.media_urls
        if media_as_links:
            body, media = links.media_as_links(body, media), ()
        info = sms.segments(body)
        if channel == "sms" and record.max_segments is not None and info.num_segments > record.max_segments:
            await self._fail(job, record, BUDGET_EXCEEDED, f"{info.num_segments} segments; the budget is {record.max_segments}", channel_reason=reason)
            return
        capability = "mms" if channel == "mms" else "sms"
        recovering = record.status == "sending" and record.provider is not None and record.channel in ("sms", "mms")
        if recovering:
            # Interrupted mid-send (a crash): the same provider again, with the same
            # idempotency key, so a send that did go through is not doubled.
            assert record.provider is not None
            plan = RoutePlan(self.routes.route_for(phone, identity), [record.provider])
        else:
            plan = await self.routes.plan(
                phone, identity, capability, exclude=record.tried_providers, segments=info.num_segments, max_cost=record.max_cost
            )
            if not plan.providers and record.tried_providers:  # every one tried: start over
                plan = await self.routes.plan(phone, identity, capability, exclude=(), segments=info.num_segments, max_cost=record.max_cost)
        if not plan.providers:
            over_budget = record.max_cost is not None
            await self._fail(
                job, record, BUDGET_EXCEEDED if over_budget else UNKNOWN_ERROR,
                "no provider fits the cost budget" if over_budget else f"no provider can send {capability.upper()}", channel_reason=reason,
            )
            return
        targets = [p for p in (plan.providers if plan.broadcast else plan.providers[:1]) if p in self.providers]
        wait = max([await self.routes.throttle_wait(p, record.priority) for p in targets]) if not recovering else 0.0
        if wait > 0:
            await self.engine.queue.reschedule(job.account_sid, job.message_sid, self.clock.time() + wait, job.attempt)
            return
        sending: dict[str, Any] = dict(
            status="sending", channel=channel, channel_reason=reason, to=phone, provider=targets[0], route=plan.route.name,
            num_segments=info.num_segments, encoding=info.encoding, body=body, media_urls=media,
        )
        if fallback is not None and record.fallback_reason is None:
            sending["fallback_reason"] = "absent"
        if not recovering:
            sending.update(attempts=record.attempts + 1, tried_providers=record.tried_providers + tuple(targets))
        record = await self.tracker.update(record, **sending)
        message = OutboundMessage(record.sid, record.account_sid, phone, record.from_, body, media)
        results = await asyncio.gather(*(self.providers[p].send(message) for p in targets))
        await self._settle(job, record, plan, list(zip(targets, results)))

    async def _settle(self, job: SendJob, record: MessageRecord, plan: RoutePlan, results: list[tuple[str, SendResult]]) -> None:
        now = self.clock.time()
        route = plan.route.name
        accepted = [(p, r) for p, r in results if r.accepted]
        for p, r in results:
            outcome = "submitted" if r.accepted else "rejected"
            await self.routes.observe(RouteOutcome(record.account_sid, p, route, outcome, now, error_code=r.error_code))
        if accepted:
            first_provider, first = accepted[0]
            await self.tracker.update(
                record, status=first.status, provider=first_provider, provider_message_id=first.provider_message_id,
                date_sent=now, error_code=None, error_message=None,
            )
            for p, r in accepted:
                ids = r.ids
                for part, pid in enumerate(ids, start=1):
                    await self.engine.submissions.add(Submission(p, pid, record.account_sid, record.sid, now, route, part, len(ids)))
                await self.reports.submitted(p, ids)
            await self.engine.queue.complete(job.account_sid, job.message_sid)
            return
        _, last = results[-1]
        code = last.error_code or UNKNOWN_ERROR
        text = last.error_message or "the provider refused the message"
        if any(r.temporary for _, r in results):
            due = self._next_due(record, plan, now)
            if due is not None:
                await self.tracker.update(record, status="queued", error_code=code, error_message=text)
                await self.engine.queue.reschedule(job.account_sid, job.message_sid, due, job.attempt + 1)
                return
        await self._fail(job, record, code, text)

    def _next_due(self, record: MessageRecord, plan: RoutePlan, now: float) -> float | None:
        """When to try again after a temporary refusal: at once when the route has
        a provider not tried yet (failover), else after a backoff; None when the
        attempts or the validity period are used up."""
        deadline = record.valid_until if record.valid_until is not None else now + self.config.default_validity
        tp = TransmissionPlan(Priority(record.priority), record.date_created, deadline, self.config.max_attempts)
        if record.attempts >= tp.max_attempts or tp.expired(now):
            return None
        untried = [p for p in plan.providers if p not in record.tried_providers]
        if untried and not plan.broadcast:
            return now
        return tp.next_retry(now, record.attempts, self.config.retry_base, self.config.retry_max, self.rng.random())
