"""A real 3-master Redis Cluster for tests: three ``redis-server --cluster-enabled
yes`` processes on free loopback ports, each in its own temporary directory,
joined with ``redis-cli --cluster create ... --cluster-replicas 0``. Never the
machine's own Redis.

- ``RedisCluster()`` as a context manager starts it (``cluster.url`` is the
  ``redis+cluster://`` URL the engine takes) and removes it after.
- The ``shared_redis_cluster`` fixture (session scope) starts one for the whole
  run; tests flush it (``flushall()``, every master) so they stay independent.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import Iterator

import pytest

from tests.helpers.redis_server import REDIS_SERVER, RedisServer, free_port

REDIS_CLI = shutil.which("redis-cli")
MASTERS = 3


class RedisCluster:
    def __init__(self, masters: int = MASTERS) -> None:
        # Cluster nodes also listen on port + 10000 (the cluster bus): pick ports
        # whose bus port is free too, or a node fails to start.
        ports: list[int] = []
        while len(ports) < masters:
            port = free_port()
            if port + 10000 < 65536 and port not in ports and _is_free(port + 10000):
                ports.append(port)
        self.nodes = [
            RedisServer(
                port,
                extra_args=(
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",  # relative to the node's own --dir
                    "--cluster-node-timeout", "2000",
                    # The tests flush and restart quickly; a node must never refuse
                    # writes because it thinks part of the keyspace is missing.
                    "--cluster-require-full-coverage", "no",
                ),
            )  # fmt: skip
            for port in ports
        ]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"redis+cluster://{hosts}/0"

    def start(self, timeout: float = 20.0) -> None:
        if REDIS_SERVER is None or REDIS_CLI is None:
            raise RuntimeError("redis-server and redis-cli are needed (make system-deps installs them)")
        for node in self.nodes:
            node.start()
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(b"cluster_state:ok" in (node.command("CLUSTER", "INFO") or b"") for node in self.nodes):
                return
            time.sleep(0.05)
        raise RuntimeError("the redis cluster did not reach cluster_state:ok")

    def flushall(self) -> None:
        for node in self.nodes:
            node.flushall()

    def keyslot(self, key: str) -> int:
        slot: int = self.nodes[0].command("CLUSTER", "KEYSLOT", key)
        return slot

    def command_count(self, name: str) -> int:
        """How many times the masters ran ``name`` since the last flushall (INFO commandstats)."""
        total = 0
        for node in self.nodes:
            info = node.command("INFO", "commandstats") or b""
            for line in info.decode().splitlines():
                if line.startswith(f"cmdstat_{name.lower()}:"):
                    total += int(line.split("calls=", 1)[1].split(",", 1)[0])
        return total

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()

    def __enter__(self) -> RedisCluster:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _is_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture(scope="session")
def shared_redis_cluster() -> Iterator[RedisCluster]:
    """One 3-master cluster for the whole run; a missing redis-server or redis-cli fails the tests."""
    if REDIS_SERVER is None or REDIS_CLI is None:
        pytest.fail("redis-server/redis-cli are not installed (make system-deps installs them from Debian's packages)")
    with RedisCluster() as cluster:
        yield cluster
