"""Engine ports of the messaging pipeline: the send queue, carrier submissions,
tracked links, routing statistics and broadcasts.

Like every port, each has two implementations (memory/ on SQLite, redis/)
held to one contract suite (tests/contract/). docs/messaging.md explains how
the pipeline uses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from protocol.plans import Priority, ShareLimiter

URGENT, NORMAL, BULK = 0, 1, 2
PRIORITIES = (URGENT, NORMAL, BULK)


# -- The send queue --------------------------------------------------------------------


@dataclass(frozen=True)
class SendJob:
    """One message waiting to be sent (or to be tried again).

    The queue holds at most one job per message. ``sender`` is the message's
    ``from`` (the per-sender queue bound counts by it); ``attempt`` counts the
    sends already tried.
    """

    account_sid: str
    message_sid: str
    priority: int  # URGENT, NORMAL or BULK
    due_at: float  # epoch seconds; not claimable before
    sender: str = ""
    attempt: int = 0

    def __post_init__(self) -> None:
        if self.priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {PRIORITIES}")
        if not self.account_sid or not self.message_sid:
            raise ValueError("a send job needs an account_sid and a message_sid")
        if self.attempt < 0:
            raise ValueError("attempt must not be negative")


class SendQueue(Protocol):
    """Durable jobs with priorities, due times and leases (at-least-once).

    A claimed job is leased to one worker until ``lease_until``; a worker that
    dies leaves its lease to run out, and the job is claimable again. Jobs are
    created with their message records (:meth:`MessageStore.create_batch`), never
    on their own, so a record and its job are stored together or not at all.
    """

    async def claim(self, now: float, priority: int, limit: int, lease_until: float, worker: str) -> list[SendJob]:
        """Up to ``limit`` jobs of this priority with ``due_at <= now`` that are not
        leased (or whose lease ended before ``now``), earliest due first (then in
        the order they were enqueued); each is leased to ``worker`` until
        ``lease_until``. Two concurrent claims never return the same job."""

    async def complete(self, account_sid: str, message_sid: str) -> None:
        """Remove the job (sent, or ended for good). Removing a missing job is a no-op."""

    async def reschedule(
        self, account_sid: str, message_sid: str, due_at: float, attempt: int, priority: int | None = None
    ) -> bool:
        """Put a (claimed) job back, due at ``due_at``, with its lease dropped; False
        when there is no such job."""

    async def cancel(self, account_sid: str, message_sid: str, now: float) -> bool:
        """Remove the job if it is waiting (not leased, or its lease ended before
        ``now``): True. False when it is leased (being sent) or not there."""

    async def release(self, worker: str) -> int:
        """Drop every lease held by ``worker`` (it is stopping, or restarted): its
        jobs are claimable at once. Returns how many."""

    async def depth(self, account_sid: str | None = None, sender: str | None = None) -> int:
        """Jobs held (leased or not): all, one account's, or one account's for one
        sender (``sender`` needs ``account_sid``)."""

    async def next_due(self) -> float | None:
        """The earliest time a job becomes claimable (its due time, or the end of
        its lease), or None when the queue is empty; for a worker's sleep."""


# -- Carrier submissions ---------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    """One send to one carrier: what a delivery report is matched to.

    A message has one submission per provider it was handed to (failover, the
    ``broadcast`` strategy) and per part when the provider splits it (SMPP
    concatenated SMS: one id per segment). ``provider_message_id`` is stored
    normalized (protocol.smpp.receipts.normalize_message_id for SMPP).
    """

    provider: str
    provider_message_id: str
    account_sid: str
    message_sid: str
    submitted_at: float
    route: str | None = None
    part: int = 1  # 1-based segment number
    parts: int = 1
    status: str = "sent"  # sent | delivered | undelivered | failed
    error_code: int | None = None
    reported_at: float | None = None


class SubmissionStore(Protocol):
    async def add(self, submission: Submission) -> bool:
        """Store it; False (and nothing changed) when (provider, id) is stored already."""

    async def find(self, provider: str, provider_message_id: str) -> Submission | None: ...

    async def report(
        self, provider: str, provider_message_id: str, status: str, error_code: int | None, at: float
    ) -> tuple[Submission, Submission] | None:
        """Apply a delivery report: (before, after), or None for an unknown id.
        A report that changes nothing (a duplicate, or 'sent' after a final
        status) returns before == after."""

    async def of_message(self, account_sid: str, message_sid: str) -> list[Submission]:
        """The message's submissions, in the order they were added."""


# -- Tracked links ---------------------------------------------------------------------


@dataclass(frozen=True)
class TrackedLink:
    """A short link standing in for ``url`` in one message (per destination)."""

    code: str
    url: str
    account_sid: str
    message_sid: str
    created_at: float
    broadcast_sid: str | None = None
    content_version: str | None = None


@dataclass(frozen=True)
class LinkStats:
    content_version: str | None
    clicks: int  # every GET /l/{code}
    unique: int  # messages with at least one click


class LinkStore(Protocol):
    async def add(self, links: Sequence[TrackedLink]) -> None:
        """Store links; a code already stored raises ValueError and stores none."""

    async def get(self, code: str) -> TrackedLink | None: ...

    async def click(self, code: str, at: float, user_agent: str) -> TrackedLink | None:
        """Record a click (time and user agent, capped at 512 characters) and return
        the link; None for an unknown code (nothing recorded)."""

    async def clicks(self, account_sid: str, code: str, limit: int = 100) -> list[tuple[float, str]]:
        """(time, user agent) of the latest clicks on one of the account's links, newest first."""

    async def broadcast_stats(self, account_sid: str, broadcast_sid: str) -> list[LinkStats]:
        """Clicks per content version of one broadcast's links, by version name
        (None sorts first)."""


# -- Routing statistics ----------------------------------------------------------------

OUTCOMES = ("submitted", "rejected", "delivered", "undelivered", "failed")


@dataclass(frozen=True)
class RouteOutcome:
    """One thing learned about a provider on a route.

    ``submitted``: the provider accepted a send; ``rejected``: it refused one
    (``error_code``); ``delivered`` / ``undelivered`` / ``failed``: a delivery
    report (or an in-app ack, provider ``app``), with ``latency`` = seconds
    from submission to the report.
    """

    account_sid: str
    provider: str
    route: str
    outcome: str
    at: float
    latency: float | None = None
    error_code: int | None = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}")


@dataclass(frozen=True)
class RouteStats:
    """Counts for one (provider, route): totals (an account's, or everyone's) or
    one minute bucket (``minute`` = epoch seconds of its start)."""

    provider: str
    route: str
    submitted: int = 0
    rejected: int = 0
    delivered: int = 0
    undelivered: int = 0
    failed: int = 0
    latency_sum: float = 0.0  # over the reports that had a latency
    latency_count: int = 0
    errors: dict[int, int] = field(default_factory=dict)  # error code -> count
    minute: float | None = None


class RoutingStatsStore(Protocol):
    async def record(self, outcome: RouteOutcome) -> None:
        """Count it in the account's totals and in the (provider, route) minute bucket."""

    async def totals(self, account_sid: str | None = None) -> list[RouteStats]:
        """Totals per (provider, route): one account's, or (None) summed over all
        accounts; sorted by provider, then route."""

    async def window(self, since: float) -> list[RouteStats]:
        """The minute buckets (all accounts) starting at or after ``since``, sorted
        by minute, provider, route. Buckets older than a day may be dropped."""


# -- Broadcasts ------------------------------------------------------------------------


@dataclass(frozen=True)
class BroadcastRecord:
    """A multi-destination request with intent (POST /v1/Accounts/{sid}/Broadcasts).

    ``intent`` and ``content`` are the request's, as plain JSON-able data; the
    destinations are its messages (MessageStore.list(broadcast_sid=...)).
    """

    sid: str  # 'BC' + 32 hex
    account_sid: str
    destinations: int
    intent: dict[str, Any]
    content: dict[str, Any]
    date_created: float
    messaging_service_sid: str | None = None
    from_: str | None = None



# -- Provider rate limits ----------------------------------------------------------------


@dataclass(frozen=True)
class RateLimit:
    """A provider's throughput limit: ``rate`` sends per second, bursts of up to
    ``burst``, split into guaranteed shares per priority class
    (protocol.plans.ShareLimiter). ``shares`` is in priority order."""

    rate: float
    burst: float
    shares: tuple[float, float, float]

    def limiter(self, now: float) -> ShareLimiter:
        """A full limiter for this limit (what an engine keeps, or restores a
        stored state into)."""
        return ShareLimiter(self.rate, self.burst, dict(zip(Priority, self.shares)), now)


def take_or_wait(limiter: ShareLimiter, priority: int, now: float) -> float:
    """0.0 when a token was taken; else the seconds until one could be (never
    0, so the caller comes back later). The embedded engine decides with this;
    the redis engine's script (redis/ratelimits.py) is its copy in Lua, which a
    property test holds to it."""
    if limiter.take(Priority(priority), now):
        return 0.0
    return max(0.001, limiter.wait(Priority(priority), now))


class RateLimiter(Protocol):
    """Token buckets shared by every sending process of the deployment, so that
    two messaging processes together keep to a provider's limit.

    ``now`` is wall-clock time (epoch seconds): processes on different machines
    share no monotonic clock. A clock running behind only slows its refills."""

    async def take(self, name: str, limit: RateLimit, priority: int, now: float) -> float:
        """0.0 when a token was taken for ``priority`` from the limiter ``name``;
        else the seconds to wait before asking again (nothing was taken)."""
