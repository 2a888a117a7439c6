from __future__ import annotations

import dataclasses

from presence_server.engines.ports import Engine, SessionKey
from protocol.presence import SessionPresence, Status

ACC = "AC" + "1" * 32
OTHER = "AC" + "2" * 32


def sess(sid: str, identity: str = "alice", account: str = ACC, **kw: object) -> SessionPresence:
    return SessionPresence(sid, account, identity, "ND1", **kw)  # type: ignore[arg-type]


def key(s: SessionPresence) -> SessionKey:
    return SessionKey(s.account_sid, s.identity, s.session_id)


async def test_upsert_reports_before_after_and_bumps_version(engine: Engine) -> None:
    store = engine.presence
    a = sess("SEa")
    first = await store.upsert(a, lease_expires=100)
    # The first version is engine-defined (Redis starts at its clock: see
    # test_versions_never_go_back_after_redis_loses_everything); then +1 a change.
    assert first.before == () and first.after == (a,) and first.version >= 1
    a2 = dataclasses.replace(a, status=Status.BUSY)
    second = await store.upsert(a2, lease_expires=100)
    assert second.before == (a,) and second.after == (a2,) and second.version == first.version + 1
    assert await store.get(key(a)) == a2


async def test_remove_records_last_seen_for_the_last_session(engine: Engine) -> None:
    store = engine.presence
    a, b = sess("SEa"), sess("SEb")
    first = (await store.upsert(a, 100)).version
    await store.upsert(b, 100)
    change = await store.remove(key(a), now=50)
    assert change is not None and change.after == (b,) and change.last_seen is None
    change = await store.remove(key(b), now=60)
    assert change is not None and change.after == () and change.last_seen == 60
    assert await store.remove(key(b), now=61) is None
    (snap,) = await store.snapshot(ACC, ["alice"])
    assert snap.sessions == () and snap.last_seen == 60 and snap.version == first + 3


async def test_accounts_and_identities_are_separate(engine: Engine) -> None:
    store = engine.presence
    await store.upsert(sess("SEa"), 100)
    await store.upsert(sess("SEb", account=OTHER), 100)
    await store.upsert(sess("SEc", identity="bob"), 100)
    snaps = await store.snapshot(ACC, ["alice", "bob", "carol"])
    assert [len(s.sessions) for s in snaps] == [1, 1, 0]
    assert await store.get(SessionKey(OTHER, "alice", "SEa")) is None


async def test_sweep_removes_only_expired_leases_once(engine: Engine) -> None:
    store = engine.presence
    a, b = sess("SEa"), sess("SEb", identity="bob")
    await store.upsert(a, 100)
    await store.upsert(b, 100)
    await store.renew([key(b)], 200)
    assert await store.sweep(now=99) == []
    changes = await store.sweep(now=100)
    assert [(c.identity, c.after) for c in changes] == [("alice", ())]
    assert changes[0].last_seen == 100
    assert await store.sweep(now=150) == []
    assert [c.identity for c in await store.sweep(now=200)] == ["bob"]


async def test_linger_keeps_the_session_until_then_is_swept(engine: Engine) -> None:
    store = engine.presence
    a = sess("SEa", last_activity=1)
    await store.upsert(a, 100)
    change = await store.linger(key(a), until=15, now=10)
    assert change is not None and change.after[0].lingering and change.after[0].last_activity == 10
    await store.renew([key(a)], 200)  # a lingering session's lease is not extended by renewal
    assert await store.sweep(now=14) == []
    (gone,) = await store.sweep(now=15)
    assert gone.after == () and gone.last_seen == 10


async def test_resume_by_upsert_ends_lingering(engine: Engine) -> None:
    store = engine.presence
    a = sess("SEa")
    await store.upsert(a, 100)
    await store.linger(key(a), until=15, now=10)
    await store.upsert(dataclasses.replace(a, lingering=False), 200)
    assert await store.sweep(now=150) == []
    got = await store.get(key(a))
    assert got is not None and not got.lingering


async def test_renew_returns_the_sessions_the_store_does_not_hold(engine: Engine) -> None:
    """What a gateway re-asserts after an outage: renewal reports the sessions that
    are gone (neither live nor lingering), creates nothing for them, and still
    extends the others. A lingering session is held, so it is not reported."""
    store = engine.presence
    live, lingering, other = sess("SEa"), sess("SEb", identity="a:b"), sess("SEc", account=OTHER)
    for s in (live, lingering, other):
        await store.upsert(s, 100)
    await store.linger(key(lingering), until=50, now=10)
    gone = [SessionKey(ACC, "alice", "SEgone"), SessionKey(OTHER, "bob", "SEgone2")]
    missing = await store.renew([key(live), gone[0], key(lingering), key(other), gone[1]], 200)
    assert set(missing) == set(gone) and len(missing) == 2
    assert (await store.snapshot(ACC, ["alice"]))[0].sessions == (live,)
    assert [c.identity for c in await store.sweep(now=150)] == ["a:b"]  # the lingering one, not extended
    assert await store.sweep(now=199) == []  # the live ones were extended
    assert await store.renew([key(live), key(other)], 300) == []
    many = [SessionKey(ACC, f"u{i}", f"SE{i}") for i in range(2500)]  # more than one script batch
    assert set(await store.renew([key(live), *many], 400)) == set(many)


async def test_linger_and_remove_of_unknown_sessions(engine: Engine) -> None:
    store = engine.presence
    ghost = SessionKey(ACC, "alice", "SEnone")
    assert await store.linger(ghost, 10, 5) is None
    assert await store.remove(ghost, 5) is None
    assert await store.renew([ghost], 10) == [ghost]  # no error, nothing created
    assert (await store.snapshot(ACC, ["alice"]))[0].sessions == ()


async def test_sweep_limit(engine: Engine) -> None:
    store = engine.presence
    for i in range(5):
        await store.upsert(sess(f"SE{i}", identity=f"u{i}"), 10)
    assert len(await store.sweep(now=10, limit=2)) == 2
    assert len(await store.sweep(now=10, limit=10)) == 3


async def test_identities_lists_an_accounts_present_identities(engine: Engine) -> None:
    store = engine.presence
    # ':' and non-ASCII in identities must not confuse an index that packs them into one member.
    names = ["zoe", "a:b", "bob", "ünï"]
    for i, name in enumerate(names):
        await store.upsert(sess(f"SE{i}", identity=name), 100)
    await store.upsert(sess("SEx", identity="bob"), 100)  # a second session: listed once
    await store.upsert(sess("SEo", identity="mallory", account=OTHER), 100)
    await store.upsert(sess("SEl", identity="lingers"), 100)
    await store.linger(SessionKey(ACC, "lingers", "SEl"), until=90, now=80)
    assert await store.identities(ACC) == sorted([*names, "lingers"])
    assert await store.identities(ACC, limit=2) == sorted([*names, "lingers"])[:2]
    assert await store.identities(OTHER) == ["mallory"]
    await store.remove(SessionKey(ACC, "zoe", "SE0"), now=81)
    await store.sweep(now=95)  # the lingering session runs out
    assert await store.identities(ACC) == sorted(["a:b", "bob", "ünï"])
    assert await store.identities("AC" + "3" * 32) == []
