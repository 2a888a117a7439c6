"""Key naming for the redis engine (see docs/redis.md for the whole layout).

Every key that belongs to one account carries the account sid as a hash tag,
``<prefix>:{AC...}:...``, so a Redis Cluster keeps all of an account's keys in
one slot and a Lua script over them stays legal there. Global keys are each
used alone or, when two must change together, share a tag of their own
(``ps:{i}:...`` the due-accounts index, ``ps:{q}:...`` the queue's indexes,
``ps:{bus}:...`` the bus channels). No script or MULTI touches two slots.
"""

from __future__ import annotations

# The kinds of record the record stores keep; the name is part of the key.
CALL = "call"
MESSAGE = "msg"
BROADCAST = "bc"


class KeySpace:
    """Builds every key and channel name from one prefix (default ``ps``)."""

    def __init__(self, prefix: str = "ps") -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            # A brace in the prefix would become the hash tag of every key.
            raise ValueError(f"bad redis key prefix {prefix!r}: it must be non-empty and have no braces")
        self.prefix = prefix

    # -- per account (one hash slot) ---------------------------------------------------

    def account(self, account_sid: str) -> str:
        """The tagged stem of every key of this account: ``ps:{AC...}``."""
        if not account_sid or "{" in account_sid or "}" in account_sid:
            raise ValueError(f"bad account sid {account_sid!r} for a redis key")
        return f"{self.prefix}:{{{account_sid}}}"

    def sessions_prefix(self, account_sid: str) -> str:
        # The sweep script appends identities to it (it learns them from the index).
        return f"{self.account(account_sid)}:sessions:"

    def sessions(self, account_sid: str, identity: str) -> str:
        """Hash: session id -> msgpack session (see presence.py for the layout)."""
        return self.sessions_prefix(account_sid) + identity

    def presence_prefix(self, account_sid: str) -> str:
        return f"{self.account(account_sid)}:presence:"

    def presence(self, account_sid: str, identity: str) -> str:
        """Hash: ``version`` (the identity's change counter) and ``last_seen``."""
        return self.presence_prefix(account_sid) + identity

    def expiry(self, account_sid: str) -> str:
        """Sorted set: lease member -> lease end (epoch seconds)."""
        return f"{self.account(account_sid)}:expiry"

    def record(self, account_sid: str, kind: str, sid: str) -> str:
        """Hash: one call or message record, a msgpack value per field."""
        return f"{self.account(account_sid)}:{kind}:{sid}"

    def record_index(self, account_sid: str, kind: str) -> str:
        """Sorted set: ``<seq>:<sid>`` -> date_created, for listing newest first."""
        return f"{self.account(account_sid)}:{kind}s"

    def record_seq(self, account_sid: str, kind: str) -> str:
        """Counter: the store order of the account's records (the listing tie-break)."""
        return f"{self.account(account_sid)}:{kind}s:seq"

    def broadcast_messages(self, account_sid: str, broadcast_sid: str) -> str:
        """Sorted set: the ``msgs`` index entries of one broadcast's messages."""
        return f"{self.account(account_sid)}:msgs:bc:{broadcast_sid}"

    def last_sender(self, account_sid: str, messaging_service_sid: str) -> str:
        """Hash: destination -> ``<date_created>|<seq>:<sid>|<from>`` of the newest
        record of one messaging service to it (the sticky sender)."""
        return f"{self.account(account_sid)}:sender:{messaging_service_sid}"

    def submissions_of(self, account_sid: str, message_sid: str) -> str:
        """List: the submission ids (``<n>:<provider>:<id>``) of one message, in order added."""
        return f"{self.account(account_sid)}:subs:{message_sid}"

    def link_stats(self, account_sid: str, broadcast_sid: str) -> str:
        """Hash: ``links|clicks|unique:<version tag>`` -> count, for one broadcast."""
        return f"{self.account(account_sid)}:bclinks:{broadcast_sid}"

    def link_clicked(self, account_sid: str, broadcast_sid: str) -> str:
        """Set: ``<version tag>|<message sid>`` of the messages with a click (unique clicks)."""
        return f"{self.account(account_sid)}:bclinks:{broadcast_sid}:clicked"

    def route_totals(self, account_sid: str | None, route_id: str) -> str:
        """Hash: the outcome counters of one (provider, route), one account's or (None)
        everyone's (``ps:{routes}:...``: everyone's statistics share one slot, so one
        script counts an outcome in the totals and the minute bucket)."""
        stem = f"{self.prefix}:{{routes}}" if account_sid is None else f"{self.account(account_sid)}:routes"
        return f"{stem}:{route_id}"

    def route_index(self, account_sid: str | None) -> str:
        """Set: the (provider, route) ids with totals, one account's or (None) everyone's."""
        return f"{self.prefix}:{{routes}}" if account_sid is None else f"{self.account(account_sid)}:routes"

    def revoked_keys(self, account_sid: str) -> str:
        """Hash: API key sid -> when it was revoked (epoch seconds, as text)."""
        return f"{self.account(account_sid)}:revoked"

    def api_keys(self, account_sid: str) -> str:
        """Hash: API key sid -> the key created over REST (JSON: name, secret, date)."""
        return f"{self.account(account_sid)}:apikeys"

    # -- global (no hash tag) ----------------------------------------------------------

    def accounts(self) -> str:
        """Sorted set: account sid -> a time at or before the earliest lease end in its
        expiry index (a lower bound, see presence.py)."""
        return f"{self.prefix}:{{i}}:accounts"

    def accounts_pending(self) -> str:
        """Sorted set (the accounts index's slot): ``<account>:<token>`` -> time, one per
        presence write in flight on a cluster (crash recovery, see presence.py)."""
        return f"{self.prefix}:{{i}}:accounts:pending"

    def sid_claim(self, sid: str) -> str:
        """String: the account that owns a call, message or broadcast sid (sids are global)."""
        return f"{self.prefix}:sid:{sid}"

    def rate_limit(self, name: str) -> str:
        """String: msgpack ``[limit spec, ShareLimiter state]`` of one provider's
        shared rate limiter (global: providers belong to no account)."""
        return f"{self.prefix}:rate:{name}"

    def nodes(self) -> str:
        """Hash: node id -> msgpack announcement ``[roles, version, address, sessions,
        started, heartbeat, live_until]`` (global: nodes belong to no account)."""
        return f"{self.prefix}:nodes"

    def provider_index(self, provider: str, provider_message_id: str) -> str:
        """Sorted set: ``<account>:<sid>`` -> date_created of the records with this
        carrier message id. The provider name is length-prefixed so that a ':' in
        it cannot make two (provider, id) pairs share a key."""
        return f"{self.prefix}:provider:{len(provider)}:{provider}:{provider_message_id}"

    # The send queue: each account's jobs in its own slot (so create_batch stores a
    # record and its job in one script), plus global indexes (see queue.py).

    def queue_due(self, account_sid: str, priority: int) -> str:
        """Sorted set: ``<order, 20 digits>:<message sid>`` -> due_at, the account's
        waiting jobs of one priority (scheduled, due, to be retried, released)."""
        return f"{self.account(account_sid)}:q:due:{priority}"

    def queue_leases(self, account_sid: str, priority: int) -> str:
        """Sorted set: the same members -> lease_until, the account's leased jobs of one
        priority (the lease ends of the entries pending in its stream)."""
        return f"{self.account(account_sid)}:q:leases:{priority}"

    def queue_stream(self, account_sid: str, priority: int) -> str:
        """Stream with the consumer group ``send``: one entry (``sid``) per leased job of
        the account of one priority, pending in the group under the worker that holds it."""
        return f"{self.account(account_sid)}:q:stream:{priority}"

    def queue_job_prefix(self, account_sid: str) -> str:
        return f"{self.account(account_sid)}:q:job:"

    def queue_job(self, account_sid: str, message_sid: str) -> str:
        """Hash: one job (sid, priority, due, sender, attempt, member, and while leased
        worker, lease, entry: its stream entry id)."""
        return self.queue_job_prefix(account_sid) + message_sid

    def queue_order(self, account_sid: str) -> str:
        """String: the last order number given to one of the account's jobs."""
        return f"{self.account(account_sid)}:q:order"

    def queue_depth(self, account_sid: str) -> str:
        """Hash: ``*`` and ``s:<sender>`` -> the account's jobs held."""
        return f"{self.account(account_sid)}:q:depth"

    def queue_ready(self, priority: int) -> str:
        """Sorted set (global): account -> a time at or before the earliest moment one
        of its jobs of this priority is claimable (a lower bound, see queue.py)."""
        return f"{self.prefix}:{{q}}:ready:{priority}"

    def queue_pending(self) -> str:
        """Sorted set (global, the ready indexes' slot): ``<account>:<token>`` -> time,
        one per create_batch between its first and last step (crash recovery)."""
        return f"{self.prefix}:{{q}}:pending"

    def queue_consumer(self, worker: str) -> str:
        """Set (global): the accounts in whose streams one worker (a consumer) has held
        jobs since it started: where ``release`` looks for its pending entries."""
        return f"{self.prefix}:q:consumer:{worker}"

    def submission(self, provider: str, provider_message_id: str) -> str:
        """String: one carrier submission, msgpack."""
        return f"{self.prefix}:sub:{submission_id(provider, provider_message_id)}"

    def submission_prefix(self) -> str:
        return f"{self.prefix}:sub:"

    def link(self, code: str) -> str:
        """Hash: ``data`` (the link, msgpack), ``clicks`` (count) and where its clicks
        are counted. The code is the hash tag: the link and its click log share a slot."""
        if "{" in code or "}" in code:
            raise ValueError(f"bad link code {code!r}: it must have no braces")
        return f"{self.prefix}:link:{{{code}}}"

    def link_clicks(self, code: str) -> str:
        """Sorted set: ``<n, 20 digits>:<user agent>`` -> time of the latest clicks (capped)."""
        return f"{self.link(code)}:clicks"

    def route_minute(self, minute_id: str) -> str:
        """Hash: one (provider, route) minute bucket's counters; expires after a day."""
        return f"{self.prefix}:{{routes}}:min:{minute_id}"

    def route_minutes(self) -> str:
        """Sorted set: minute bucket ids -> the minute (epoch seconds of its start)."""
        return f"{self.prefix}:{{routes}}:mins"

    def channel(self, topic: str) -> str:
        """The pub/sub channel of a bus topic. One hash tag for every channel: on a
        cluster the bus is sharded pub/sub on the node that owns that slot (bus.py)."""
        return f"{self.prefix}:{{bus}}:{topic}"

    def control_channel(self, engine_id: str) -> str:
        """A channel only this engine listens on: it keeps the pub/sub connection in
        subscribed mode, so PING always answers there (see bus.py)."""
        return f"{self.prefix}:{{bus}}-control:{engine_id}"


def as_text(value: object) -> str:
    """A name redis-py returned (bytes, as this engine never decodes replies) as text."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a name from redis, got {type(value).__name__}")


def lease_member(identity: str, session_id: str, lingering: bool) -> str:
    """The expiry-index member of one session: ``A:<n>:<identity>:<session_id>``.

    ``A`` marks a live session, ``L`` a lingering one: renewal is a plain
    ``ZADD XX`` of ``A`` members, so a lingering session (whose member starts
    with ``L``) is never extended and no session is ever created by it. ``n``
    is the identity's length in bytes, so either part may contain ':'.
    """
    flag = "L" if lingering else "A"
    return f"{flag}:{len(identity.encode())}:{identity}:{session_id}"


def submission_id(provider: str, provider_message_id: str) -> str:
    """``<n>:<provider>:<id>``, length-prefixed like the provider index."""
    return f"{len(provider.encode())}:{provider}:{provider_message_id}"


def route_id(provider: str, route: str) -> str:
    """``<n>:<provider>:<route>``, length-prefixed like the provider index."""
    return f"{len(provider.encode())}:{provider}:{route}"
