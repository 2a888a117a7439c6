"""Engine ports: everything the services need from storage and from other nodes.

Two engines implement them - ``memory`` (one process) and ``redis`` (many) -
and one contract test suite (tests/contract/) holds both to the same
behaviour. Services only ever see these interfaces.

Bus messages are plain data (dicts of str, int, float, bool, None, lists and
dicts): the redis engine sends them as msgpack, and the memory engine
round-trips them through msgpack too, so a message that would not survive
Redis fails in the embedded engine's tests as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol, Sequence

from protocol.presence import SessionPresence

from .calls import CallStore


@dataclass(frozen=True)
class SessionKey:
    account_sid: str
    identity: str
    session_id: str


@dataclass(frozen=True)
class IdentityChange:
    """One atomic change to an identity's sessions, with the sessions before
    and after it and the identity's presence version after it."""

    account_sid: str
    identity: str
    before: tuple[SessionPresence, ...]
    after: tuple[SessionPresence, ...]
    version: int
    last_seen: float | None


@dataclass(frozen=True)
class IdentitySnapshot:
    identity: str
    sessions: tuple[SessionPresence, ...]
    version: int
    last_seen: float | None


class PresenceStore(Protocol):
    """Sessions per identity, each with a lease; a version counter per identity."""

    async def upsert(self, session: SessionPresence, lease_expires: float) -> IdentityChange:
        """Insert the session, or replace the one with its session id (a resume
        or a presence change). Bumps the identity's version."""

    async def remove(self, key: SessionKey, now: float) -> IdentityChange | None:
        """Remove a session (None if it was not there). Records last_seen = now
        when it was the identity's last session."""

    async def linger(self, key: SessionKey, until: float, now: float) -> IdentityChange | None:
        """Mark a session as lingering (its connection dropped at ``now``) with
        its lease cut to ``until``; it is removed then unless resumed first."""

    async def renew(self, keys: Sequence[SessionKey], lease_expires: float) -> list[SessionKey]:
        """Extend the leases of these (non-lingering) sessions, in one batch.

        Returns the keys the store does not hold at all, neither live nor
        lingering: sessions lost while the engine was away (a Redis restarted
        without persistence, or swept during an outage longer than a lease).
        Nothing is created for them; the caller re-asserts those it still holds."""

    async def sweep(self, now: float, limit: int = 1000) -> list[IdentityChange]:
        """Remove up to ``limit`` sessions whose lease ended. Each removed
        session is in exactly one returned change, even with many sweepers."""

    async def get(self, key: SessionKey) -> SessionPresence | None: ...

    async def snapshot(self, account_sid: str, identities: Iterable[str]) -> list[IdentitySnapshot]:
        """The sessions, version and last_seen of each identity, in order."""

    async def identities(self, account_sid: str, limit: int = 1000) -> list[str]:
        """The account's identities that have at least one session (lingering
        ones included), sorted, at most ``limit`` of them: what a directory or
        a dashboard lists before it asks for their presence."""


MessageHandler = Callable[[dict[str, Any]], None]


class Subscription(Protocol):
    async def close(self) -> None: ...


class Bus(Protocol):
    """Publish/subscribe between nodes: per-account topics and per-node addresses.

    Delivery is in publish order per topic, at most once (a node that is not
    subscribed when a message is published does not get it). Handlers are
    plain functions, called one at a time, that must not block.
    """

    async def publish(self, topic: str, message: dict[str, Any]) -> int:
        """Returns how many engines had the topic subscribed when it was published
        (each engine counts once, however many handlers it has): 0 means nobody
        listens, which for a node's own topic means that node is gone."""

    async def subscribe(self, topic: str, handler: MessageHandler) -> Subscription: ...

    def may_have_listeners(self, topic: str) -> bool:
        """False only when no process can be subscribed to ``topic`` (so a
        publisher may skip building the message); True whenever that is not known."""


@dataclass(frozen=True)
class NodeInfo:
    """One server process as it last announced itself."""

    node_id: str
    roles: tuple[str, ...]
    version: str
    address: str  # host:port it serves HTTP and WebSocket on
    sessions: int  # gateway sessions it holds (0 without the gateway role)
    started: float
    heartbeat: float  # when it last announced itself (epoch seconds)


class NodeRegistry(Protocol):
    """The live nodes of a deployment: each node announces itself every few
    seconds; one that stops announcing drops out after its ``ttl``."""

    async def heartbeat(self, info: NodeInfo, ttl: float) -> None:
        """Record (or refresh) the node; it counts as live until ``info.heartbeat + ttl``."""

    async def leave(self, node_id: str) -> None:
        """Forget the node now (a clean shutdown)."""

    async def live(self, now: float) -> list[NodeInfo]:
        """Nodes whose announcement has not run out at ``now``, by node id.
        Run-out entries are dropped as a side effect."""


class KeyRevocations(Protocol):
    """API keys revoked at run time (``DELETE .../Keys/{KeySid}.json``), per account.

    Durable and shared: every node reads the same answer, before and after a
    restart. Keys revoked in the config file are not recorded here; the
    config says so itself.
    """

    async def revoke(self, account_sid: str, key_sid: str, at: float) -> bool:
        """Record the key as revoked at ``at``. True when it was not revoked
        before; revoking again changes nothing (the first time is kept)."""

    async def revoked(self, account_sid: str) -> dict[str, float]:
        """The account's revoked keys: key sid -> when it was revoked."""


@dataclass(frozen=True)
class CreatedApiKey:
    """An API key created over REST (``POST .../Keys.json``). The secret is
    kept as the config keeps its keys' secrets: HS256 tokens are checked with it."""

    sid: str
    account_sid: str
    friendly_name: str
    secret: str
    date_created: float


class ApiKeyStore(Protocol):
    """API keys created at run time, per account; durable and shared like
    :class:`KeyRevocations` (a created key that is revoked stays here, and is
    refused because it is in both). The config's keys are not recorded here."""

    async def create(self, key: CreatedApiKey) -> bool:
        """Record a new key. False (and nothing changed) when the account already
        has a key of that sid."""

    async def list(self, account_sid: str) -> builtins.list[CreatedApiKey]:
        """The account's created keys, oldest first."""


REVOCATIONS_TOPIC = "revocations"  # bus topic: {"account": AC..., "key": SK...} for each revocation
API_KEYS_TOPIC = "api_keys"  # bus topic: {"account": AC..., "key": SK...} for each key created (no secret on the bus)


def presence_topic(account_sid: str) -> str:
    return f"presence:{account_sid}"


def node_topic(node_id: str) -> str:
    return f"node:{node_id}"


class Engine(Protocol):
    presence: PresenceStore
    bus: Bus
    calls: CallStore
    messages: MessageStore
    # The messaging pipeline's (engines/outbound.py): jobs are enqueued through
    # messages.create_batch, so a record and its job are stored together.
    queue: SendQueue
    submissions: SubmissionStore
    links: LinkStore
    routing_stats: RoutingStatsStore
    nodes: NodeRegistry
    rate_limits: RateLimiter
    revocations: KeyRevocations
    api_keys: ApiKeyStore

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ready(self) -> bool:
        """True while the engine can serve (for /readyz)."""


class EngineUnavailable(Exception):
    """The engine cannot serve right now (for example, Redis is unreachable).
    Entry points answer it with a temporary error; nothing is half-done."""


# -- Message records ------------------------------------------------------------------
# Every message the product handles - SMS fallback, in-app delivery, inbound text - is one
# record, readable as a Twilio-compatible Message resource. Appended here (rather than
# interleaved above) so that parallel work on this module merges without conflicts.

MESSAGE_STATUSES = frozenset(
    {"accepted", "scheduled", "queued", "sending", "sent", "delivered", "undelivered", "failed", "canceled", "read", "received"}
)
MESSAGE_DIRECTIONS = frozenset({"inbound", "outbound-api", "outbound-call", "outbound-reply"})
MESSAGE_CHANNELS = frozenset({"sms", "mms", "app"})
PRIORITY_NAMES = ("urgent", "normal", "bulk")  # index = MessageRecord.priority
FALLBACK_REASONS = frozenset({"absent", "no-answer", "busy", "rejected", "failed", "not-acked"})

import builtins  # noqa: E402 - append-only section; MessageStore.list shadows 'list'


def _rfc2822(epoch: float | None) -> str | None:
    # Twilio renders dates as RFC 2822 in UTC ("Thu, 30 Jul 2015 20:12:31 +0000").
    # (Imports are local because this section is append-only; see above.)
    import email.utils
    from datetime import datetime, timezone

    if epoch is None:
        return None
    return email.utils.format_datetime(datetime.fromtimestamp(int(epoch), tz=timezone.utc))


@dataclass(frozen=True)
class MessageRecord:
    sid: str  # 'SM' + 32 hex ('MM' when it carries media)
    account_sid: str
    to: str  # E.164 or 'client:<identity>'
    from_: str
    body: str
    media_urls: tuple[str, ...] = ()
    direction: str = "outbound-api"  # inbound | outbound-api | outbound-call | outbound-reply
    status: str = "accepted"  # see MESSAGE_STATUSES
    channel: str = "sms"  # sms | mms | app
    provider: str | None = None
    provider_message_id: str | None = None
    error_code: int | None = None
    error_message: str | None = None
    # Why this went by SMS instead of in-app or a call: see FALLBACK_REASONS.
    fallback_reason: str | None = None
    related_call_sid: str | None = None
    messaging_service_sid: str | None = None
    num_segments: int = 1
    date_created: float = 0.0  # epoch seconds
    date_updated: float = 0.0
    date_sent: float | None = None
    # -- the messaging pipeline's plan for this message (docs/messaging.md) --
    # Where status changes are POSTed (signed form), or None.
    status_callback: str | None = None
    priority: int = 1  # 0 urgent (one-time passwords), 1 normal (notifications), 2 bulk (marketing)
    send_at: float | None = None  # ScheduleType=fixed: not sent before this
    valid_until: float | None = None  # not sent after this: ends 'failed' (30001... see docs) instead
    broadcast_sid: str | None = None  # the multi-destination request it is one destination of
    # The intent's channel order for this destination ('app', 'sms'); () is the default, app then sms.
    channels: tuple[str, ...] = ()
    # Per-channel content: the rich payload an in-app recipient gets (JSON text), or None.
    app_payload: str | None = None
    content_version: str | None = None  # which variant of the content was sent ('app', 'sms', ...)
    channel_reason: str | None = None  # why this channel was chosen (see docs/messaging.md)
    route: str | None = None  # the [[routes]] entry that carried it
    attempts: int = 0  # sends tried
    tried_providers: tuple[str, ...] = ()  # in order; failover skips them
    track_links: bool = False  # ShortenUrls: links become tracked short links
    smart_encoded: bool = False
    send_as_mms: bool = False
    max_segments: int | None = None  # the intent's segment budget per destination
    max_cost: float | None = None  # the intent's cost budget per destination (route entry cost x segments)
    encoding: str | None = None  # 'GSM-7' or 'UCS-2' once the SMS text is final

    def __post_init__(self) -> None:
        # Checked here so that a bad record fails where it is made, as a ValueError,
        # rather than deep in a store (or, worse, stored and rendered later).
        for name in ("media_urls", "channels", "tried_providers"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.status not in MESSAGE_STATUSES:
            raise ValueError(f"message status {self.status!r} is not one of {sorted(MESSAGE_STATUSES)}")
        if self.direction not in MESSAGE_DIRECTIONS:
            raise ValueError(f"message direction {self.direction!r} is not one of {sorted(MESSAGE_DIRECTIONS)}")
        if self.channel not in MESSAGE_CHANNELS:
            raise ValueError(f"message channel {self.channel!r} is not one of {sorted(MESSAGE_CHANNELS)}")
        if self.fallback_reason is not None and self.fallback_reason not in FALLBACK_REASONS:
            raise ValueError(f"fallback_reason {self.fallback_reason!r} is not one of {sorted(FALLBACK_REASONS)}")
        if not self.sid or not self.account_sid:
            raise ValueError("a message record needs a sid and an account_sid")
        if self.num_segments < 0:
            raise ValueError("num_segments must not be negative")
        if self.priority not in (0, 1, 2):
            raise ValueError("priority must be 0 (urgent), 1 (normal) or 2 (bulk)")
        if self.attempts < 0:
            raise ValueError("attempts must not be negative")
        bad = [c for c in self.channels if c not in ("app", "sms")]
        if bad:
            raise ValueError(f"channels may name only 'app' and 'sms', not {bad}")
        # Text that cannot be stored as UTF-8 (a lone surrogate from a JSON "\ud800")
        # raises UnicodeEncodeError, itself a ValueError.
        for text in (self.to, self.from_, self.body, self.error_message or "", *self.media_urls):
            text.encode("utf-8")

    @property
    def uri(self) -> str:
        return f"/2010-04-01/Accounts/{self.account_sid}/Messages/{self.sid}.json"

    def to_api(self, api_version: str = "2010-04-01") -> dict[str, Any]:
        """The Twilio-compatible Message resource, plus this product's own fields
        (channel, fallback_reason, related_call_sid, provider) in the same object."""
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "messaging_service_sid": self.messaging_service_sid,
            "from": self.from_,
            "to": self.to,
            "body": self.body,
            "status": self.status,
            "direction": self.direction,
            # Twilio sends both counts as strings; clients parse them as such.
            "num_segments": str(self.num_segments),
            "num_media": str(len(self.media_urls)),
            "error_code": self.error_code,
            "error_message": self.error_message,
            "date_created": _rfc2822(self.date_created),
            "date_updated": _rfc2822(self.date_updated),
            "date_sent": _rfc2822(self.date_sent),
            "api_version": api_version,
            "uri": self.uri,
            "price": None,
            "price_unit": "USD",
            "subresource_uris": {"media": self.uri.removesuffix(".json") + "/Media.json"},
            "channel": self.channel,
            "fallback_reason": self.fallback_reason,
            "related_call_sid": self.related_call_sid,
            "provider": self.provider,
            "priority": PRIORITY_NAMES[self.priority],
            "send_at": _rfc2822(self.send_at),
            "valid_until": _rfc2822(self.valid_until),
            "broadcast_sid": self.broadcast_sid,
            "channel_reason": self.channel_reason,
            "content_version": self.content_version,
            "route": self.route,
            "attempts": self.attempts,
            "encoding": self.encoding,
        }


class MessageStore(Protocol):
    """Durable message records, scoped by account.

    Every read takes the account: a sid of another account is simply not found,
    so no caller can leak records across accounts by forgetting a check.
    """

    async def create(self, record: MessageRecord) -> None:
        """Store a new record. A sid that is already stored raises ValueError."""

    async def update(self, account_sid: str, sid: str, **changes: Any) -> MessageRecord | None:
        """Change fields of a record and return it; None when the account has no
        such record. An unknown field or a bad value raises ValueError (sid and
        account_sid cannot be passed: they name the record). Sets date_updated to
        now unless ``changes`` gives it."""

    async def get(self, account_sid: str, sid: str) -> MessageRecord | None: ...

    async def find_by_provider_id(self, provider: str, provider_message_id: str) -> MessageRecord | None:
        """The record a carrier's delivery report is about (the newest, if a carrier
        ever reused an id)."""

    async def list(
        self,
        account_sid: str,
        *,
        to: str | None = None,
        from_: str | None = None,
        sent_after: float | None = None,
        sent_before: float | None = None,
        broadcast_sid: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> builtins.list[MessageRecord]:  # builtins.: inside this class, 'list' is the method
        """The account's records, newest first (by date_created, then by when they
        were stored). ``sent_after`` is inclusive and ``sent_before`` exclusive,
        both on date_sent: a record never sent does not match a date filter.
        ``broadcast_sid`` keeps the messages of one broadcast."""

    async def create_batch(
        self,
        records: Sequence[MessageRecord],
        jobs: Sequence[SendJob] = (),
        broadcast: BroadcastRecord | None = None,
    ) -> None:
        """Store new records, enqueue their send jobs (on this engine's
        :class:`SendQueue`) and store the broadcast they belong to, all or
        nothing: after a crash either all of it is there or none is. This is
        what makes an accepted message durable before the API answers 201.
        A sid already stored raises ValueError and stores nothing."""

    async def last_sender(self, account_sid: str, messaging_service_sid: str, to: str) -> str | None:
        """The ``from`` of the newest record of this messaging service to this
        destination (sticky sender), or None."""

    async def get_broadcast(self, account_sid: str, sid: str) -> BroadcastRecord | None: ...

    async def list_broadcasts(self, account_sid: str, *, limit: int = 50, offset: int = 0) -> builtins.list[BroadcastRecord]:
        """Newest first."""


from .outbound import BroadcastRecord, LinkStore, RateLimiter, RoutingStatsStore, SendJob, SendQueue, SubmissionStore  # noqa: E402 - see the note on this section
