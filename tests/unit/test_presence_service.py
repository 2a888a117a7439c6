"""The presence service over the memory engine, with a manual clock: leases,
grace periods and what gets published."""

from __future__ import annotations

from typing import Any

from presence_server.clock import ManualClock
from presence_server.config import PresenceConfig
from presence_server.engines.memory import MemoryEngine
from presence_server.engines.ports import SessionKey
from presence_server.presence.service import PresenceService
from protocol.presence import SessionPresence, Status

ACC = "AC" + "1" * 32


async def setup(**cfg: Any) -> tuple[PresenceService, ManualClock, list[dict[str, Any]]]:
    engine = MemoryEngine()
    clock = ManualClock(1000.0)
    service = PresenceService(engine, clock, PresenceConfig(**cfg))
    published: list[dict[str, Any]] = []
    await engine.bus.subscribe(f"presence:{ACC}", published.append)
    return service, clock, published


def session(sid: str = "SEa", **kw: Any) -> SessionPresence:
    return SessionPresence(sid, ACC, "alice", "ND1", connected_at=1000.0, last_activity=1000.0, **kw)


async def test_a_session_whose_node_stops_renewing_is_gone_within_one_lease() -> None:
    service, clock, published = await setup(lease_ttl=30)
    await service.connect(session())
    assert [p["presence"]["status"] for p in published] == ["available"]
    await clock.advance(29)
    assert await service.sweep() == 0
    await clock.advance(1)
    assert await service.sweep() == 1
    assert published[-1]["presence"]["status"] == "offline"
    assert published[-1]["presence"]["last_seen"] == 1030.0


async def test_renewal_keeps_it() -> None:
    service, clock, _ = await setup(lease_ttl=30)
    s = session()
    await service.connect(s)
    for _ in range(5):
        await clock.advance(20)
        await service.renew([SessionKey(ACC, "alice", s.session_id)])
        assert await service.sweep() == 0


async def test_drop_publishes_nothing_until_the_grace_period_ends() -> None:
    service, clock, published = await setup(grace_period=5)
    s = session()
    await service.connect(s)
    await service.drop(SessionKey(ACC, "alice", s.session_id))
    assert len(published) == 1  # lingering is invisible to subscribers
    await clock.advance(5)
    await service.sweep()
    assert published[-1]["presence"]["status"] == "offline"
    assert published[-1]["presence"]["last_seen"] == 1000.0  # when the connection dropped


async def test_zero_grace_removes_at_once() -> None:
    service, _, published = await setup(grace_period=0)
    s = session()
    await service.connect(s)
    await service.drop(SessionKey(ACC, "alice", s.session_id))
    assert published[-1]["presence"]["status"] == "offline"


async def test_changes_that_subscribers_cannot_see_are_not_published() -> None:
    service, clock, published = await setup()
    s = session()
    await service.connect(s)
    await clock.advance(10)
    await service.change(SessionKey(ACC, "alice", s.session_id), status=Status.AVAILABLE)  # same status, new activity
    assert len(published) == 1
    await service.change(SessionKey(ACC, "alice", s.session_id), text="lunch")
    assert published[-1]["presence"]["text"] == "lunch" and published[-1]["version"] == 3


async def test_change_of_an_unknown_session() -> None:
    service, _, _ = await setup()
    assert await service.change(SessionKey(ACC, "alice", "SEnone"), status=Status.BUSY) is None


async def test_with_nobody_watching_nothing_is_built_but_everything_is_stored(monkeypatch: Any) -> None:
    import presence_server.presence.service as service_module

    engine = MemoryEngine()
    service = PresenceService(engine, ManualClock(1000.0), PresenceConfig())
    merges = 0
    real_merge = service_module.merge

    def counting_merge(*args: Any) -> Any:
        nonlocal merges
        merges += 1
        return real_merge(*args)

    monkeypatch.setattr(service_module, "merge", counting_merge)
    s = session()
    await service.connect(s)
    await service.change(SessionKey(ACC, "alice", s.session_id), text="lunch")
    assert merges == 0  # no subscriber to the account's topic in this process: nothing merged or encoded
    (snap,) = await service.query(ACC, ["alice"])
    assert snap.presence.text == "lunch"
    published: list[dict[str, Any]] = []
    await engine.bus.subscribe(f"presence:{ACC}", published.append)
    merges = 0
    await service.change(SessionKey(ACC, "alice", s.session_id), text="back")
    assert merges == 2 and published[-1]["presence"]["text"] == "back" and published[-1]["version"] == snap.version + 1
