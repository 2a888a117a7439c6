"""Delivery reports: from a carrier's word to the message's status and the
routing statistics.

Reports name a message by the carrier's id, and arrive from an http
provider's webhook (http/ingress_carrier.py) or an SMPP ``deliver_sm``
receipt (carriers/smpp.py). Each is matched to the submission it is about
(engine ``submissions``: one per provider and part), the message's status is
recomputed from all of its submissions, and the outcome is counted for the
(provider, route) pair, which is what the adaptive strategy ranks by.

Robust matching:

* ids are compared normalized (an SMPP carrier may write the same id in hex in
  the ``submit_sm_resp`` and in decimal in the receipt: the provider
  normalizes both);
* a report can arrive before the submit response has been stored (SMPP
  carriers send receipts fast): an unknown id is parked for a short while and
  applied when the submission shows up;
* duplicates and a late ``sent`` after a final status change nothing.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Awaitable, Callable

import structlog

from ..carriers.base import UNKNOWN_ERROR, DeliveryReport, InboundMessage
from ..clock import Clock
from ..engines.outbound import RouteOutcome, Submission
from ..engines.ports import Engine, MessageRecord
from .tracker import FINAL, StatusTracker

if TYPE_CHECKING:
    from .routing import RouteTable

log = structlog.get_logger(__name__)

PARK_SECONDS = 60.0  # how long a report for an unknown id waits for its submission
PARK_LIMIT = 10_000  # parked reports held at most (oldest dropped first)


@dataclass(frozen=True)
class ReportResult:
    outcome: str  # applied | duplicate | unknown
    record: MessageRecord | None = None


def message_status(submissions: list[Submission]) -> tuple[str, int | None]:
    """The message's status from its submissions (and the error code to show).

    Per provider, a split message is delivered when every part is, and failed
    as soon as one part is. Over providers (failover leaves one live submission;
    the 'broadcast' strategy several), one delivery is enough.
    """
    per_provider: dict[str, list[Submission]] = {}
    for s in submissions:
        per_provider.setdefault(s.provider, []).append(s)
    statuses: list[tuple[str, int | None]] = []
    for subs in per_provider.values():
        bad = next((s for s in subs if s.status in ("failed", "undelivered")), None)
        if bad is not None:
            statuses.append((bad.status, bad.error_code or UNKNOWN_ERROR))
        elif all(s.status == "delivered" for s in subs) and len(subs) >= max(s.parts for s in subs):
            statuses.append(("delivered", None))
        else:
            statuses.append(("sent", None))
    if any(st == "delivered" for st, _ in statuses):
        return "delivered", None
    if any(st == "sent" for st, _ in statuses):
        return "sent", None
    failed = next((x for x in statuses if x[0] == "failed"), None)
    return failed or statuses[0]


class Reports:
    def __init__(
        self,
        engine: Engine,
        tracker: StatusTracker,
        routes: RouteTable,
        clock: Clock,
        inbound: Callable[[InboundMessage], Awaitable[None]] | None = None,
    ) -> None:
        self.engine = engine
        self.tracker = tracker
        self.routes = routes
        self.clock = clock
        self._inbound = inbound
        self._parked: OrderedDict[tuple[str, str], tuple[float, DeliveryReport]] = OrderedDict()
        # Reports about one message are applied one at a time (the receipts of a
        # long SMS's parts arrive together): striped locks, nothing to clean up.
        self._stripes = [asyncio.Lock() for _ in range(64)]

    # -- CarrierEvents -----------------------------------------------------------------

    async def report(self, report: DeliveryReport) -> None:
        result = await self.apply(report)
        if result.outcome == "unknown":
            self.park(report)

    async def inbound(self, message: InboundMessage) -> None:
        if self._inbound is None:
            log.warning("inbound message dropped: this node does not run the signaling role", provider=message.provider)
            return
        await self._inbound(message)

    # -- matching ----------------------------------------------------------------------

    def park(self, report: DeliveryReport) -> None:
        key = (report.provider, report.provider_message_id)
        self._parked[key] = (self.clock.monotonic() + PARK_SECONDS, report)
        self._parked.move_to_end(key)
        while len(self._parked) > PARK_LIMIT:
            self._parked.popitem(last=False)
        log.info("delivery report parked until its submission is known", provider=report.provider)

    async def submitted(self, provider: str, ids: tuple[str, ...]) -> None:
        """A send's ids are stored: apply the reports that came before them."""
        if not self._parked:
            return
        now = self.clock.monotonic()
        for key in [k for k, (until, _) in self._parked.items() if until < now]:
            del self._parked[key]
        for pid in ids:
            entry = self._parked.pop((provider, pid), None)
            if entry is not None:
                await self.apply(entry[1])

    async def _find(self, report: DeliveryReport) -> Submission | None:
        sub = await self.engine.submissions.find(report.provider, report.provider_message_id)
        if sub is not None:
            return sub
        # A message sent before submissions were recorded (or by the signaling
        # path of an older version) is still found by its record's provider id.
        record = await self.engine.messages.find_by_provider_id(report.provider, report.provider_message_id)
        if record is None:
            return None
        sub = Submission(report.provider, report.provider_message_id, record.account_sid, record.sid,
                         record.date_sent or record.date_created, record.route)
        await self.engine.submissions.add(sub)
        return sub

    async def apply(self, report: DeliveryReport) -> ReportResult:
        sub = await self._find(report)
        if sub is None:
            return ReportResult("unknown")
        async with self._stripes[hash(sub.message_sid) % len(self._stripes)]:
            return await self._apply(report, sub)

    async def _apply(self, report: DeliveryReport, sub: Submission) -> ReportResult:
        at = report.timestamp if report.timestamp is not None else self.clock.time()
        changed = await self.engine.submissions.report(
            report.provider, report.provider_message_id, report.status, report.error_code, at
        )
        record = await self.engine.messages.get(sub.account_sid, sub.message_sid)
        if changed is None or changed[0] == changed[1] or record is None:
            return ReportResult("duplicate", record)
        before, after = changed
        submissions = await self.engine.submissions.of_message(sub.account_sid, sub.message_sid)
        # Outcomes are counted per message and provider, like 'submitted': once,
        # when this provider's parts together reach a final status (a 3-part SMS
        # is one delivery; one undelivered part makes it one undelivered message).
        mine = [s for s in submissions if s.provider == report.provider]
        was, _ = message_status([before if s.provider_message_id == after.provider_message_id else s for s in mine])
        now, now_code = message_status(mine)
        if now != was and now != "sent":
            await self.routes.observe(RouteOutcome(
                sub.account_sid, report.provider, sub.route or "default", now, self.clock.time(),
                latency=max(0.0, at - sub.submitted_at), error_code=now_code,
            ))
        status, error_code = message_status(submissions)
        if status == record.status or (record.status in FINAL and status == "sent"):
            return ReportResult("duplicate", record)
        changes: dict[str, object] = {"status": status}
        if status in ("undelivered", "failed"):
            changes.update(error_code=error_code, error_message=f"the carrier reported the message {status}")
        elif status == "delivered":
            changes.update(error_code=None, error_message=None)
        if record.date_sent is None and status in ("sent", "delivered"):
            changes["date_sent"] = at
        updated = await self.tracker.update(record, **changes)
        log.debug("delivery report applied", provider=report.provider, message_sid=record.sid, status=status)
        return ReportResult("applied", updated)
