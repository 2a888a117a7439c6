"""Key naming for the redis engine (see docs/redis.md for the whole layout).

Every key that belongs to one account carries the account sid as a hash tag,
``<prefix>:{AC...}:...``, so a Redis Cluster keeps all of an account's keys in
one slot and a Lua script over them stays legal there. The few global keys
(the due-accounts index, sid claims, provider ids, bus channels) have no tag.
"""

from __future__ import annotations

# The kinds of record the record stores keep; the name is part of the key.
CALL = "call"
MESSAGE = "msg"


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

    # -- global (no hash tag) ----------------------------------------------------------

    def accounts(self) -> str:
        """Sorted set: account sid -> the earliest lease end in its expiry index."""
        return f"{self.prefix}:accounts"

    def sid_claim(self, sid: str) -> str:
        """String: the account that owns a call or message sid (sids are global)."""
        return f"{self.prefix}:sid:{sid}"

    def provider_index(self, provider: str, provider_message_id: str) -> str:
        """Sorted set: ``<account>:<sid>`` -> date_created of the records with this
        carrier message id. The provider name is length-prefixed so that a ':' in
        it cannot make two (provider, id) pairs share a key."""
        return f"{self.prefix}:provider:{len(provider)}:{provider}:{provider_message_id}"

    def channel(self, topic: str) -> str:
        """The pub/sub channel of a bus topic."""
        return f"{self.prefix}:bus:{topic}"

    def control_channel(self, engine_id: str) -> str:
        """A channel only this engine listens on: it keeps the pub/sub connection in
        subscribed mode, so PING always answers there (see bus.py)."""
        return f"{self.prefix}:bus-control:{engine_id}"


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
