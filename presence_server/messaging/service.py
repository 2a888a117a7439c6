"""The messaging pipeline of one node, put together.

Every node accepts messages (the intake only writes to the engine), matches
delivery reports and serves tracked links; a node with the ``messaging`` role
also runs the dispatcher that sends them. docs/messaging.md describes the
whole pipeline.
"""

from __future__ import annotations

import random
from typing import Any

import structlog

from protocol.errors import ErrorCode, RemoteProtocolError

from ..accounts import Account, AccountRegistry
from ..carriers.base import InboundMessage, Provider
from ..clock import Clock
from ..config import Config
from ..engines.outbound import BroadcastRecord, LinkStats
from ..engines.ports import Engine, MessageRecord
from ..mailbox import Mailbox
from ..presence.service import PresenceService
from ..tasks import TaskSet
from ..webhooks import WebhookSender
from .dispatcher import Dispatcher
from .inapp import InApp
from .intake import Intake, SendRequest
from .reports import Reports
from .routing import RouteTable
from .sender import Sender
from .tracker import StatusTracker

log = structlog.get_logger(__name__)

CANCELABLE = frozenset({"accepted", "scheduled", "queued"})


class MessagingService:
    def __init__(
        self,
        *,
        config: Config,
        engine: Engine,
        accounts: AccountRegistry,
        presence: PresenceService,
        mailbox: Mailbox,
        providers: dict[str, Provider],
        webhooks: WebhookSender,
        clock: Clock,
        worker: str,
        dispatch: bool,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.accounts = accounts
        self.clock = clock
        self.tracker = StatusTracker(engine.messages, webhooks, accounts, clock)
        self.routes = RouteTable(config, providers, engine.routing_stats, engine.rate_limits, clock, rng)
        self.reports = Reports(engine, self.tracker, self.routes, clock)
        self.intake = Intake(
            config=config, engine=engine, clock=clock,
            link_base_url=config.messaging.link_base_url or config.server.base_url(), on_enqueued=self._wake,
        )
        self._tasks = TaskSet("messaging")
        self.dispatcher: Dispatcher | None = None
        if dispatch:
            inapp = InApp(presence, mailbox, clock, config.signaling.message_ack_timeout)
            inapp.on_read = lambda account_sid, sid: self._tasks.spawn(self._read(account_sid, sid))
            sender = Sender(
                engine=engine, accounts=accounts, providers=providers, routes=self.routes, inapp=inapp,
                tracker=self.tracker, reports=self.reports, config=config.messaging, clock=clock, rng=rng,
            )
            self.dispatcher = Dispatcher(engine, sender, config.messaging, clock, worker)

    def _wake(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake()

    def set_inbound(self, handler: Any) -> None:
        """Where inbound messages from carriers with their own connection go (the
        signaling role's ingress_message, through an adapter)."""
        self.reports._inbound = handler

    async def start(self) -> None:
        if self.dispatcher is not None:
            self._tasks.spawn(self.dispatcher.run())

    async def close(self) -> None:
        await self._tasks.close()
        if self.dispatcher is not None:
            await self.dispatcher.close()

    # -- what the API and the signaling role call -------------------------------------

    async def send(self, account: Account, requests: list[SendRequest], broadcast: BroadcastRecord | None = None) -> list[MessageRecord]:
        return await self.intake.accept(account, requests, broadcast)

    async def cancel(self, account_sid: str, sid: str) -> MessageRecord | None:
        """Cancel a scheduled or queued message: the record, canceled; None when the
        account has no such message; RemoteProtocolError when it is past canceling."""
        record = await self.engine.messages.get(account_sid, sid)
        if record is None:
            return None
        if record.status == "canceled":
            return record
        if record.status not in CANCELABLE or not await self.engine.queue.cancel(account_sid, sid, self.clock.time()):
            raise RemoteProtocolError(
                ErrorCode.MESSAGE_NOT_CANCELABLE, f"the message is {record.status}; only a scheduled or queued message can be canceled"
            )
        return await self.tracker.update(record, status="canceled")

    async def _read(self, account_sid: str, sid: str) -> None:
        record = await self.engine.messages.get(account_sid, sid)
        if record is not None and record.status == "delivered" and record.channel == "app":
            await self.tracker.update(record, status="read")

    async def broadcast_view(self, account_sid: str, sid: str) -> dict[str, Any] | None:
        """A broadcast with each destination's outcome and the access-rate
        statistics per content version."""
        broadcast = await self.engine.messages.get_broadcast(account_sid, sid)
        if broadcast is None:
            return None
        # Listed newest first; shown in the request's order (stored in that order).
        records = (await self.engine.messages.list(account_sid, broadcast_sid=sid, limit=broadcast.destinations + 1))[::-1]
        link_stats = {s.content_version: s for s in await self.engine.links.broadcast_stats(account_sid, sid)}
        return render_broadcast(broadcast, records, link_stats)


def render_broadcast(broadcast: BroadcastRecord, records: list[MessageRecord], link_stats: dict[str | None, LinkStats]) -> dict[str, Any]:
    from ..engines.ports import _rfc2822

    versions: dict[str, dict[str, Any]] = {}
    by_status: dict[str, int] = {}
    by_channel: dict[str, int] = {}
    for r in records:
        by_status[r.status] = by_status.get(r.status, 0) + 1
        by_channel[r.channel] = by_channel.get(r.channel, 0) + 1
        v = versions.setdefault(r.content_version or "text", {"messages": 0, "delivered": 0})
        v["messages"] += 1
        if r.status in ("delivered", "read"):
            v["delivered"] += 1
    stats = []
    for name in sorted(set(versions) | {k for k in link_stats if k is not None}):
        v = versions.get(name, {"messages": 0, "delivered": 0})
        ls = link_stats.get(name)
        unique, total = (ls.unique, ls.clicks) if ls else (0, 0)
        stats.append({
            "content_version": name, "messages": v["messages"], "delivered": v["delivered"],
            "links_opened_unique": unique, "links_opened_total": total,
            "open_rate": round(unique / v["delivered"], 4) if v["delivered"] else None,
        })
    return {
        "sid": broadcast.sid,
        "account_sid": broadcast.account_sid,
        "messaging_service_sid": broadcast.messaging_service_sid,
        "from": broadcast.from_,
        "date_created": _rfc2822(broadcast.date_created),
        "destinations": broadcast.destinations,
        "intent": broadcast.intent,
        "content": broadcast.content,
        "messages": [
            {
                "to": r.to, "message_sid": r.sid, "channel": r.channel,
                "content_version": r.content_version, "status": r.status, "channel_reason": r.channel_reason,
                "fallback_reason": r.fallback_reason, "error_code": r.error_code, "provider": r.provider, "route": r.route,
            }
            for r in records
        ],
        "by_status": by_status,
        "by_channel": by_channel,
        "access_stats": stats,
        "uri": f"/v1/Accounts/{broadcast.account_sid}/Broadcasts/{broadcast.sid}",
    }


def inbound_adapter(accounts: AccountRegistry, ingress: Any) -> Any:
    """Inbound messages from a carrier connection, handed to the signaling role
    like the http ingress does (the number's owner account, its sms_url)."""

    async def handle(message: InboundMessage) -> None:
        account = accounts.owner_of_number(message.to)
        if account is None:
            log.warning("inbound message for a number no account owns; dropped", provider=message.provider)
            return
        await ingress(account, message.from_, message.to, message.body, message.media_urls)

    return handle
