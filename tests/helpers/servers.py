"""Real servers for tests: a Node on a free loopback port, driven by a manual clock."""

from __future__ import annotations

import contextlib
import secrets
import tempfile
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from presence_server.clock import ManualClock
from presence_server.config import Config, parse_config
from presence_server.node import Node
from protocol.addresses import new_sid
from protocol.tokens import default_grants, mint_token


@dataclass
class TestAccount:
    __test__ = False  # a helper, not a test class
    sid: str = field(default_factory=lambda: new_sid("AC"))
    auth_token: str = field(default_factory=lambda: secrets.token_hex(16))
    key_sid: str = field(default_factory=lambda: new_sid("SK"))
    key_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    identities: list[dict[str, str]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # applications, phone_numbers, fallback

    def config(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "auth_token": self.auth_token,
            "api_keys": [{"sid": self.key_sid, "secret": self.key_secret}],
            "identities": self.identities,
            **self.extra,
        }


@dataclass
class RunningServer:
    node: Node
    clock: ManualClock
    accounts: list[TestAccount]

    @property
    def account(self) -> TestAccount:
        return self.accounts[0]

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.node.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.node.port}/v1/connect"

    def token(
        self,
        identity: str,
        *,
        account: TestAccount | None = None,
        ttl: float = 3600,
        grants: dict[str, Any] | None = None,
    ) -> str:
        acc = account or self.account
        return mint_token(
            key_sid=acc.key_sid,
            account_sid=acc.sid,
            identity=identity,
            secret=acc.key_secret,
            ttl=ttl,
            now=self.clock.time(),
            grants=default_grants(identity) if grants is None else grants,
        )

    async def advance(self, seconds: float) -> None:
        await self.clock.advance(seconds)


def make_config(accounts: list[TestAccount], **sections: Any) -> Config:
    data: dict[str, Any] = {"accounts": [a.config() for a in accounts]}
    data.update(sections)
    # Each server gets its own data_dir (message records, outbox) unless a test names
    # one, so that tests neither write ./data nor see each other's records.
    data["engine"] = {"data_dir": fresh_data_dir(), **data.get("engine", {})}
    # No call drain when a test stops its server, unless the test asks for one:
    # the drain sleeps on the node's clock, which in most tests is a ManualClock
    # that nothing advances at teardown.
    data["signaling"] = {"drain_timeout": 0.0, **data.get("signaling", {})}
    return parse_config(data, environ={})


async def start_server(accounts: list[TestAccount] | None = None, *, clock_start: float | None = None, **sections: Any) -> RunningServer:
    accounts = accounts or [TestAccount(identities=[{"identity": "alice", "phone": "+15550100001"}]), TestAccount()]
    clock = ManualClock() if clock_start is None else ManualClock(clock_start)
    node = Node(make_config(accounts, **sections), clock=clock)
    await node.start("127.0.0.1", 0)
    return RunningServer(node, clock, accounts)


# Removed when the test process exits (the TemporaryDirectory's finalizer).
_DATA_ROOT = tempfile.TemporaryDirectory(prefix="presence-tests-")


def fresh_data_dir() -> str:
    """A new, empty data_dir for one server (under a root removed at exit)."""
    return tempfile.mkdtemp(dir=_DATA_ROOT.name)


@contextlib.asynccontextmanager
async def redis_nodes(accounts: list[TestAccount], count: int = 2) -> AsyncIterator[list[Node]]:
    """``count`` nodes sharing a fresh real redis-server (and one ManualClock), started
    on free ports and stopped at the end."""
    from tests.helpers.redis_server import redis_server

    async with redis_server() as redis:
        clock = ManualClock()
        nodes: list[Node] = []
        try:
            for _ in range(count):
                node = Node(make_config(accounts, engine={"kind": "redis", "url": redis.url, "data_dir": fresh_data_dir()}), clock=clock)
                await node.start("127.0.0.1", 0)
                nodes.append(node)
            yield nodes
        finally:
            for node in nodes:
                await node.stop()
