"""A gateway re-asserts the presence of its connected sessions that the engine
lost (a Redis restarted empty, or sessions swept while the node could not renew
them), and renews again soon after a failed round. In-process, embedded engine,
manual clock; tests/integration/test_scale_processes.py does the same with real
processes and a real Redis restart."""

from __future__ import annotations

from presence_server.engines.ports import EngineUnavailable, SessionKey
from tests.helpers.servers import RunningServer
from tests.helpers.wsclient import RawClient


async def test_a_session_the_engine_lost_is_written_again_and_subscribers_hear_it(server: RunningServer) -> None:
    bob = await RawClient.open(server.ws_url)
    registered = await bob.register(server.token("bob"), status="busy", text="in a meeting")
    alice = await RawClient.open(server.ws_url)
    await alice.register(server.token("alice"))
    await alice.send({"type": "subscribe", "identities": ["bob"]})
    assert (await alice.recv_type("subscribed"))["presences"][0]["status"] == "busy"

    key = SessionKey(server.account.sid, "bob", registered["session"])
    before = await server.node.engine.presence.get(key)
    await server.node.engine.presence.remove(key, server.clock.time())  # behind the gateway's back, unannounced
    assert await server.node.engine.presence.get(key) is None

    await server.advance(server.node.config.presence.lease_ttl / 3)  # the next lease round
    assert await server.node.engine.presence.get(key) == before  # the same session, as it was
    update = await alice.recv_type("presence_update")
    assert update["identity"] == "bob" and update["status"] == "busy" and update["text"] == "in a meeting"
    # The session is whole: a presence change on it takes.
    await bob.send({"type": "presence", "status": "available", "id": 1})
    assert (await bob.recv_type("ok"))["id"] == 1
    await alice.close()
    await bob.close()


async def test_after_a_failed_renewal_the_next_comes_sooner(server: RunningServer) -> None:
    client = await RawClient.open(server.ws_url)
    await client.register(server.token("alice"))
    store = server.node.engine.presence
    calls: list[float] = []
    original = store.renew

    async def failing_once(keys, lease_expires):  # type: ignore[no-untyped-def]
        calls.append(server.clock.time())
        if len(calls) == 1:
            raise EngineUnavailable("redis unavailable: test")
        return await original(keys, lease_expires)

    store.renew = failing_once  # type: ignore[method-assign]
    interval = server.node.config.presence.lease_ttl / 3
    await server.advance(interval)
    assert len(calls) == 1
    await server.advance(1.0)  # gateway.LEASE_RETRY, not another full interval
    assert len(calls) == 2 and calls[1] - calls[0] == 1.0
    await server.advance(interval - 0.5)
    assert len(calls) == 2  # healthy again: back to the normal interval
    await server.advance(0.5)
    assert len(calls) == 3
    await client.close()
