"""A send job claimed twice - its lease ran out while the first worker was only
slow, and another worker took it over (XCLAIM) - is sent once.

Two messaging nodes on one real redis-server share the outbox (as processes
on one host share its file). The workers' claims are made by the test with
explicit times, so "slow" is exact: the first worker's job is claimed again by
the second after its lease ended, and then both process it. What keeps the send
single is the pipeline (presence_server/messaging/sender.py): a worker reads
the record again before sending and completes a job whose record is settled
without sending; a worker that sends anyway (both past that read) sends with
the message sid as the carrier's idempotency key, which the outbox honours.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from presence_server.carriers.outbox import FILE_NAME, query_entries
from presence_server.clock import ManualClock
from presence_server.engines.outbound import NORMAL, SendJob
from presence_server.engines.ports import MessageRecord
from presence_server.messaging.sender import Sender
from presence_server.node import Node
from protocol.addresses import new_sid
from tests.helpers.messaging import NUMBER, account_with_number
from tests.helpers.redis_server import redis_server
from tests.helpers.servers import TestAccount, make_config

LEASE = 30.0


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[tuple[Node, Node, TestAccount, Path]]:
    account = account_with_number()
    shared = tmp_path / "outbox"  # one outbox file for both nodes
    async with redis_server() as redis:
        clock = ManualClock()
        made = []
        for _ in range(2):
            config = make_config(
                [account], engine={"kind": "redis", "url": redis.url, "data_dir": str(shared)},
                providers=[{"name": "outbox", "kind": "outbox"}],
            )
            node = Node(config, clock=clock)
            await node.start("127.0.0.1", 0)
            made.append(node)
        try:
            yield made[0], made[1], account, shared
        finally:
            for node in made:
                await node.stop()


def sender(node: Node) -> Sender:
    assert node.messaging.dispatcher is not None
    return node.messaging.dispatcher.sender


def outbox(data_dir: Path) -> list[str]:
    conn = sqlite3.connect(data_dir / FILE_NAME)
    try:
        return [entry["message_sid"] for entry in query_entries(conn, 1000)]
    finally:
        conn.close()


async def enqueue(node: Node, account: TestAccount, due: float) -> SendJob:
    """A queued message and its job, due long after the nodes' (manual) clock, so their
    own dispatchers never claim it: only the test's claims do."""
    now = node.clock.time()
    record = MessageRecord(
        sid=new_sid("SM"), account_sid=account.sid, to="+15550109999", from_=NUMBER, body="once",
        status="queued", date_created=now, date_updated=now,
    )  # fmt: skip
    job = SendJob(account.sid, record.sid, NORMAL, due, NUMBER)
    await node.engine.messages.create_batch([record], [job])
    return job


async def claim_twice(one: Node, two: Node, due: float) -> tuple[SendJob, SendJob]:
    (first,) = await one.engine.queue.claim(due, NORMAL, 1, due + LEASE, "worker-1")
    # worker-1 is slow: its lease ends, worker-2 takes the job over.
    assert await two.engine.queue.claim(due + LEASE, NORMAL, 1, due + 2 * LEASE, "worker-2") == []
    (second,) = await two.engine.queue.claim(due + LEASE + 1, NORMAL, 1, due + 2 * LEASE + 1, "worker-2")
    assert first == second
    return first, second


async def sent_once(node: Node, account: TestAccount, job: SendJob, data_dir: Path) -> MessageRecord:
    record = await node.engine.messages.get(account.sid, job.message_sid)
    assert record is not None and record.status == "sent"
    assert outbox(data_dir).count(job.message_sid) == 1
    assert await node.engine.queue.depth(account.sid) == 0
    assert not await node.engine._redis.exists(node.engine.keys.queue_stream(account.sid, NORMAL))  # type: ignore[attr-defined]
    return record


async def test_the_slow_worker_finds_the_message_sent_and_does_not_send_it_again(nodes: Any) -> None:
    one, two, account, data_dir = nodes
    due = one.clock.time() + 1000
    job = await enqueue(one, account, due)
    stale, taken = await claim_twice(one, two, due)
    await sender(two).process(taken)
    before = await sent_once(two, account, job, data_dir)
    await sender(one).process(stale)  # the slow worker wakes up
    after = await sent_once(one, account, job, data_dir)
    assert after == before  # not sent, not touched
    assert after.attempts == 1


async def test_both_workers_sending_at_once_send_it_once(nodes: Any) -> None:
    one, two, account, data_dir = nodes
    jobs = []
    for i in range(5):
        job = await enqueue(one, account, one.clock.time() + 1000 + 100 * i)
        jobs.append(job)
        stale, taken = await claim_twice(one, two, job.due_at)
        # Both past their reading of the record: both send, with the same idempotency key.
        await asyncio.gather(sender(one).process(stale), sender(two).process(taken))
        await sent_once(one, account, job, data_dir)
    assert sorted(outbox(data_dir)) == sorted(j.message_sid for j in jobs)
