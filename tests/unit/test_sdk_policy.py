"""The SDK's pure pieces: reconnect and renewal rules, the subscription book,
wire models and argument checks. No sockets, no event loop."""

from __future__ import annotations

from typing import Any

import pytest

from presence_client import Presence, PresenceError, Status
from presence_client import _policy, _validate
from presence_client._book import SubscriptionBook
from presence_client.errors import PresenceConnectionError

# -- reconnect rules --------------------------------------------------------------------------


def refusal(code: int) -> PresenceError:
    return PresenceError(code, "refused", fatal=True)


@pytest.mark.parametrize(
    ("close_code", "error", "renewable", "final"),
    [
        (1006, None, False, False),  # network drop
        (1001, None, False, False),
        (1011, None, False, False),
        (1012, None, False, False),
        (4012, None, False, False),  # server restart
        (4013, None, False, False),  # try again later
        (4005, None, False, False),  # idle timeout
        (1000, None, True, True),  # a normal close we did not ask for
        (4000, None, True, True),  # protocol violation: fix the client
        (4009, None, True, True),
        (1009, None, True, True),
        (4010, None, True, True),  # another connection took the session: do not fight
        (4001, refusal(20107), False, True),  # fixed token refused: same again
        (4001, refusal(20107), True, False),  # a callable can supply a new one
        (4002, refusal(20104), True, False),
        (4003, None, False, True),
        (4003, None, True, False),
    ],
)
def test_loss_is_final(close_code: int, error: PresenceError | None, renewable: bool, final: bool) -> None:
    assert _policy.loss_is_final(close_code, error, reconnect=True, renewable_token=renewable) is final


def test_reconnect_disabled_makes_every_loss_final() -> None:
    assert _policy.loss_is_final(1006, None, reconnect=False, renewable_token=True)


def test_auth_loss_is_known_by_close_code_or_error() -> None:
    assert _policy.is_auth_loss(4002, None)
    assert _policy.is_auth_loss(1006, refusal(20107))  # the error frame came, the close frame did not
    assert not _policy.is_auth_loss(4012, None)


def test_one_fresh_token_after_a_refusal() -> None:
    refused = refusal(20107)
    assert not _policy.attempt_refused_for_good(refused, renewable_token=True, fresh_token_tried=False)
    assert _policy.attempt_refused_for_good(refused, renewable_token=True, fresh_token_tried=True)
    assert _policy.attempt_refused_for_good(refused, renewable_token=False, fresh_token_tried=False)
    overloaded = PresenceError(30004, "too many sessions", fatal=True)  # close 4013: later
    assert not _policy.attempt_refused_for_good(overloaded, renewable_token=False, fresh_token_tried=True)
    down = PresenceConnectionError("refused", close_code=None)
    assert not _policy.attempt_refused_for_good(down, renewable_token=False, fresh_token_tried=True)
    replaced = PresenceError(10015, "replaced", fatal=True)
    assert _policy.attempt_refused_for_good(replaced, renewable_token=True, fresh_token_tried=False)


# -- renewal rules ----------------------------------------------------------------------------


def test_renewal_delay() -> None:
    assert _policy.renewal_delay(3600, 60) == 3540  # renew_before ahead
    assert _policy.renewal_delay(120, 60) == 60
    assert _policy.renewal_delay(90, 60) == 45  # shorter-lived: at half-life
    assert _policy.renewal_delay(30, 60) == 15
    assert _policy.renewal_delay(10, 0) == 10  # renew_before 0: at expiry
    assert _policy.renewal_delay(0, 60) is None  # expired by our clock: leave it to the server
    assert _policy.renewal_delay(-5, 60) is None


@pytest.mark.parametrize("life", [0.5, 1, 10, 59, 60, 61, 90, 120, 3600, 86400])
def test_renewals_cannot_spin(life: float) -> None:
    # Whatever the token's life, the next renewal is at least half of it away.
    delay = _policy.renewal_delay(life, 60)
    assert delay is not None and life / 2 <= delay <= life


def test_warning_deferral() -> None:
    assert _policy.warning_deferral(60, None) is None  # age unknown: renew now
    assert _policy.warning_deferral(60, 3000) is None  # an old token: renew now
    assert _policy.warning_deferral(60, 30) is None
    assert _policy.warning_deferral(30, 0) == 15  # brand new and already "expiring"
    assert _policy.warning_deferral(30, 10) == 5


# -- the subscription book --------------------------------------------------------------------


def presence(identity: str, status: str = "available", version: int = 1, text: str = "", sessions: int = 1) -> Presence:
    wire: dict[str, Any] = {
        "identity": identity,
        "status": status,
        "text": text,
        "last_seen": None,
        "version": version,
        "sessions": [{"session": f"SE{i:032x}", "status": status, "text": text} for i in range(sessions)],
    }
    return Presence.from_wire(wire)


def test_book_drops_old_and_duplicate_updates() -> None:
    book = SubscriptionBook()
    book.add(["bob"], None)
    assert book.apply_snapshot([presence("bob", version=5)]) == []  # first snapshot: nothing to report
    assert book.apply_update(presence("bob", "away", version=5)) is None  # not newer
    assert book.apply_update(presence("bob", "away", version=4)) is None  # older
    update = book.apply_update(presence("bob", "away", version=6))
    assert update is not None and update.previous is not None and update.previous.version == 5
    assert book.apply_update(presence("carol", version=9)) is None  # not subscribed


def test_book_resync_reports_only_visible_changes() -> None:
    book = SubscriptionBook()
    book.add(["bob", "carol"], None)
    book.apply_snapshot([presence("bob", version=3), presence("carol", version=3)])
    # After a reconnect: bob changed, carol only got a new version (a linger, say).
    updates = book.apply_snapshot([presence("bob", "dnd", version=7), presence("carol", version=4)])
    assert [(u.identity, u.status, u.resync) for u in updates] == [("bob", Status.DND, True)]


def test_book_snapshot_resets_the_version_baseline() -> None:
    # A restarted server counts from the start again: its updates must not be dropped.
    book = SubscriptionBook()
    book.add(["bob"], None)
    book.apply_snapshot([presence("bob", version=40)])
    book.apply_snapshot([presence("bob", version=1)])
    assert book.apply_update(presence("bob", "away", version=2)) is not None


def test_book_callbacks_and_undo() -> None:
    book = SubscriptionBook()

    def first(u: Any) -> None: ...

    def second(u: Any) -> None: ...

    assert book.add(["bob"], first) == ["bob"]
    assert book.add(["bob", "carol"], first) == ["carol"]
    assert book.callbacks("bob") == [first]  # not twice
    added = book.add(["bob", "dave"], second)
    book.undo_add(["bob", "dave"], added, second)
    assert book.identities == ("bob", "carol") and book.callbacks("bob") == [first]
    assert book.remove(["bob", "zed"]) == ["bob"]
    assert "bob" not in book and book.presence_of("bob") is None


def test_book_ignores_snapshots_of_unsubscribed_identities() -> None:
    book = SubscriptionBook()
    assert book.apply_snapshot([presence("bob")]) == []
    assert book.presence_of("bob") is None


# -- models -----------------------------------------------------------------------------------

WIRE: dict[str, Any] = {
    "identity": "alice",
    "status": "away",
    "text": "lunch",
    "last_seen": 1800000000,
    "version": 7,
    "sessions": [
        {
            "session": "SE" + "0" * 32,
            "status": "away",
            "text": "lunch",
            "priority": 3,
            "capabilities": ["voice"],
            "connected_at": 1.0,
            "last_activity": 2.0,
        }
    ],
}


def test_presence_from_wire() -> None:
    presence = Presence.from_wire(WIRE)
    assert (presence.identity, presence.status, presence.text, presence.version) == ("alice", Status.AWAY, "lunch", 7)
    assert presence.last_seen == 1800000000.0 and presence.online
    (session,) = presence.sessions
    assert (session.session_id, session.priority, session.capabilities) == ("SE" + "0" * 32, 3, ("voice",))


def test_same_state_ignores_activity_times_and_versions() -> None:
    base = Presence.from_wire(WIRE)
    session: dict[str, Any] = {**WIRE["sessions"][0], "last_activity": 99.0}
    later = Presence.from_wire({**WIRE, "version": 9, "last_seen": 1800000100, "sessions": [session]})
    assert base.same_state(later)
    changed = Presence.from_wire({**WIRE, "text": "back"})
    assert not base.same_state(changed)
    assert not base.same_state(None)


@pytest.mark.parametrize("bad", [{}, {**WIRE, "status": "asleep"}, {**WIRE, "identity": 5}, {**WIRE, "sessions": "x"}])
def test_malformed_presence_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises((KeyError, TypeError, ValueError)):
        Presence.from_wire(bad)


# -- argument checks --------------------------------------------------------------------------


def test_validation_accepts_what_the_server_accepts() -> None:
    assert _validate.status(Status.DND) == "dnd"
    assert _validate.capabilities(["voice", "voice", "video"]) == ("voice", "video")
    assert _validate.identities(("bob", "bob", "team-1@example.com"), what="subscribe") == ("bob", "team-1@example.com")
    assert _validate.url("wss://presence.example.com/v1/connect")
    assert _validate.priority(-128) == -128 and _validate.priority(127) == 127


# -- update streams ---------------------------------------------------------------------------


async def test_stream_keeps_the_newest_when_nobody_reads() -> None:
    from presence_client import PresenceUpdate, PresenceUpdateStream

    unregistered: list[PresenceUpdateStream] = []
    stream = PresenceUpdateStream(frozenset({"bob"}), unregistered.append, max_pending=2)
    for version in (1, 2, 3):
        stream._put(PresenceUpdate(presence("bob", version=version)))
    stream._put(PresenceUpdate(presence("carol")))  # filtered out
    assert stream.dropped == 1
    assert [u.presence.version for u in stream.pending()] == [2, 3]
    stream._put(PresenceUpdate(presence("bob", version=4)))
    stream.close()
    assert unregistered == [stream]
    assert [u.presence.version async for u in stream] == [4]  # queued updates are still read
