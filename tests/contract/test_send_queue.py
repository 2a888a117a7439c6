"""The SendQueue contract (engines/outbound.py): priorities, due times, leases."""

from __future__ import annotations

import asyncio

import pytest

from presence_server.engines.outbound import BULK, NORMAL, URGENT, SendJob
from presence_server.engines.ports import Engine, MessageRecord
from protocol.addresses import new_sid

T0 = 1_700_000_000.0
LEASE = 30.0


def job(account: str, *, priority: int = NORMAL, due_at: float = T0, sender: str = "+15550199999", attempt: int = 0) -> SendJob:
    return SendJob(account_sid=account, message_sid=new_sid("SM"), priority=priority, due_at=due_at, sender=sender, attempt=attempt)


async def enqueue(engine: Engine, *jobs: SendJob) -> None:
    """Jobs are only ever stored with their records (MessageStore.create_batch)."""
    records = [
        MessageRecord(
            sid=j.message_sid,
            account_sid=j.account_sid,
            to="+15550100001",
            from_=j.sender or "+15550199999",
            body="hello",
            priority=j.priority,
            date_created=T0,
            date_updated=T0,
        )
        for j in jobs
    ]
    await engine.messages.create_batch(records, jobs)


def sids(jobs: list[SendJob]) -> list[str]:
    return [j.message_sid for j in jobs]


async def test_claim_returns_the_jobs_as_enqueued(engine: Engine) -> None:
    account = new_sid("AC")
    j = job(account, priority=URGENT, sender="+15550123456", attempt=2)
    await enqueue(engine, j)
    assert await engine.queue.claim(T0, URGENT, 10, T0 + LEASE, "w1") == [j]


async def test_claim_takes_only_its_priority(engine: Engine) -> None:
    account = new_sid("AC")
    urgent, normal, bulk = job(account, priority=URGENT), job(account, priority=NORMAL), job(account, priority=BULK)
    await enqueue(engine, bulk, normal, urgent)
    assert sids(await engine.queue.claim(T0, NORMAL, 10, T0 + LEASE, "w")) == [normal.message_sid]
    assert sids(await engine.queue.claim(T0, BULK, 10, T0 + LEASE, "w")) == [bulk.message_sid]
    assert sids(await engine.queue.claim(T0, URGENT, 10, T0 + LEASE, "w")) == [urgent.message_sid]
    assert await engine.queue.claim(T0, NORMAL, 10, T0 + LEASE, "w") == []


async def test_earliest_due_first_then_enqueue_order(engine: Engine) -> None:
    account = new_sid("AC")
    late, early, mid = job(account, due_at=T0 + 3), job(account, due_at=T0 + 1), job(account, due_at=T0 + 2)
    tie = [job(account, due_at=T0 + 2) for _ in range(3)]
    await enqueue(engine, late, early)
    await enqueue(engine, mid)
    await enqueue(engine, *tie)  # within one batch, enqueued in the batch's order
    claimed = await engine.queue.claim(T0 + 10, NORMAL, 10, T0 + 10 + LEASE, "w")
    assert sids(claimed) == sids([early, mid, *tie, late])


async def test_a_job_is_not_claimable_before_it_is_due(engine: Engine) -> None:
    account = new_sid("AC")
    j = job(account, due_at=T0 + 60)
    await enqueue(engine, j)
    assert await engine.queue.claim(T0 + 59.9, NORMAL, 10, T0 + 100, "w") == []
    assert sids(await engine.queue.claim(T0 + 60, NORMAL, 10, T0 + 100, "w")) == [j.message_sid]  # due_at <= now


async def test_claim_honours_the_limit(engine: Engine) -> None:
    account = new_sid("AC")
    jobs = [job(account, due_at=T0 + i) for i in range(5)]
    await enqueue(engine, *jobs)
    assert sids(await engine.queue.claim(T0 + 10, NORMAL, 2, T0 + LEASE, "w")) == sids(jobs[:2])
    assert sids(await engine.queue.claim(T0 + 10, NORMAL, 2, T0 + LEASE, "w")) == sids(jobs[2:4])
    assert sids(await engine.queue.claim(T0 + 10, NORMAL, 2, T0 + LEASE, "w")) == sids(jobs[4:])


async def test_a_leased_job_is_claimable_again_once_its_lease_ended(engine: Engine) -> None:
    account = new_sid("AC")
    j = job(account)
    await enqueue(engine, j)
    assert sids(await engine.queue.claim(T0, NORMAL, 10, T0 + LEASE, "w1")) == [j.message_sid]
    assert await engine.queue.claim(T0 + 1, NORMAL, 10, T0 + 1 + LEASE, "w2") == []
    assert await engine.queue.claim(T0 + LEASE, NORMAL, 10, T0 + 2 * LEASE, "w2") == []  # ended *before* now
    again = await engine.queue.claim(T0 + LEASE + 0.5, NORMAL, 10, T0 + 2 * LEASE, "w2")
    assert again == [j]  # the same job, as it was (at least once)
    assert await engine.queue.claim(T0 + LEASE + 1, NORMAL, 10, T0 + 3 * LEASE, "w3") == []  # w2's lease now


async def test_concurrent_claims_never_return_a_job_twice(engine: Engine) -> None:
    account = new_sid("AC")
    jobs = [job(account, due_at=T0 + i * 0.001) for i in range(40)]
    await enqueue(engine, *jobs)
    results = await asyncio.gather(*(engine.queue.claim(T0 + 1, NORMAL, 7, T0 + LEASE, f"w{i}") for i in range(10)))
    claimed = [s for result in results for s in sids(result)]
    assert len(claimed) == len(set(claimed)) == 40
    assert set(claimed) == set(sids(jobs))


async def test_complete_removes_the_job(engine: Engine) -> None:
    account = new_sid("AC")
    a, b = job(account), job(account)
    await enqueue(engine, a, b)
    await engine.queue.claim(T0, NORMAL, 1, T0 + LEASE, "w")
    await engine.queue.complete(account, a.message_sid)
    await engine.queue.complete(account, a.message_sid)  # a missing job: no-op
    await engine.queue.complete(account, new_sid("SM"))
    assert await engine.queue.depth() == 1
    assert await engine.queue.claim(T0 + 2 * LEASE, NORMAL, 10, T0 + 3 * LEASE, "w") == [b]


async def test_cancel_removes_a_waiting_job_but_not_a_leased_one(engine: Engine) -> None:
    account = new_sid("AC")
    waiting, leased = job(account, due_at=T0 + 100), job(account)
    await enqueue(engine, waiting, leased)
    assert sids(await engine.queue.claim(T0, NORMAL, 10, T0 + LEASE, "w")) == [leased.message_sid]
    assert await engine.queue.cancel(account, waiting.message_sid, T0) is True
    assert await engine.queue.cancel(account, waiting.message_sid, T0) is False  # gone
    assert await engine.queue.cancel(account, leased.message_sid, T0 + 1) is False  # being sent
    assert await engine.queue.depth(account) == 1
    assert await engine.queue.cancel(account, leased.message_sid, T0 + LEASE + 1) is True  # its lease ended
    assert await engine.queue.depth(account) == 0
    assert await engine.queue.cancel(account, new_sid("SM"), T0) is False


async def test_another_accounts_job_cannot_be_cancelled_or_completed(engine: Engine) -> None:
    account, other = new_sid("AC"), new_sid("AC")
    j = job(account)
    await enqueue(engine, j)
    assert await engine.queue.cancel(other, j.message_sid, T0) is False
    await engine.queue.complete(other, j.message_sid)
    assert await engine.queue.reschedule(other, j.message_sid, T0 + 5, 1) is False
    assert await engine.queue.claim(T0, NORMAL, 10, T0 + LEASE, "w") == [j]


async def test_release_frees_one_workers_leases_at_once(engine: Engine) -> None:
    account = new_sid("AC")
    jobs = [job(account, due_at=T0 + i) for i in range(5)]
    await enqueue(engine, *jobs)
    mine = await engine.queue.claim(T0 + 10, NORMAL, 3, T0 + 1000, "stopping")
    theirs = await engine.queue.claim(T0 + 10, NORMAL, 2, T0 + 1000, "busy")
    assert await engine.queue.release("stopping") == 3
    assert await engine.queue.release("stopping") == 0
    assert await engine.queue.release("nobody") == 0
    again = await engine.queue.claim(T0 + 11, NORMAL, 10, T0 + 1000, "new")  # long before the lease would end
    assert sids(again) == sids(mine)
    assert set(sids(theirs)).isdisjoint(sids(again))
    assert await engine.queue.depth(account) == 5


async def test_reschedule_puts_a_claimed_job_back(engine: Engine) -> None:
    account = new_sid("AC")
    j = job(account)
    await enqueue(engine, j)
    await engine.queue.claim(T0, NORMAL, 10, T0 + 1000, "w")
    assert await engine.queue.reschedule(account, j.message_sid, T0 + 60, 1) is True
    assert await engine.queue.claim(T0 + 59, NORMAL, 10, T0 + 1000, "w") == []
    # Due again, and no longer leased (although the old lease would still run).
    again = await engine.queue.claim(T0 + 60, NORMAL, 10, T0 + 1000, "w")
    assert again == [SendJob(account, j.message_sid, NORMAL, T0 + 60, j.sender, 1)]
    assert await engine.queue.reschedule(account, new_sid("SM"), T0, 1) is False


async def test_reschedule_can_change_the_priority(engine: Engine) -> None:
    account = new_sid("AC")
    j = job(account, priority=URGENT)
    await enqueue(engine, j)
    await engine.queue.claim(T0, URGENT, 10, T0 + LEASE, "w")
    assert await engine.queue.reschedule(account, j.message_sid, T0 + 5, 2, priority=BULK) is True
    assert await engine.queue.claim(T0 + 5, URGENT, 10, T0 + LEASE, "w") == []
    assert await engine.queue.claim(T0 + 5, BULK, 10, T0 + LEASE, "w") == [
        SendJob(account, j.message_sid, BULK, T0 + 5, j.sender, 2)
    ]


async def test_depth_counts_all_one_account_or_one_sender(engine: Engine) -> None:
    a, b = new_sid("AC"), new_sid("AC")
    await enqueue(engine, job(a, sender="+1555000001"), job(a, sender="+1555000001"), job(a, sender="+1555000002"))
    await enqueue(engine, job(b, sender="+1555000001", priority=BULK))
    await engine.queue.claim(T0, NORMAL, 1, T0 + LEASE, "w")  # leased jobs still count
    assert await engine.queue.depth() == 4
    assert await engine.queue.depth(a) == 3
    assert await engine.queue.depth(b) == 1
    assert await engine.queue.depth(a, "+1555000001") == 2
    assert await engine.queue.depth(a, "+1555000002") == 1
    assert await engine.queue.depth(b, "+1555000002") == 0
    assert await engine.queue.depth(new_sid("AC")) == 0


async def test_next_due(engine: Engine) -> None:
    account = new_sid("AC")
    assert await engine.queue.next_due() is None
    soon, later = job(account, due_at=T0 + 10), job(account, due_at=T0 + 50, priority=BULK)
    await enqueue(engine, later, soon)
    assert await engine.queue.next_due() == T0 + 10
    # Claimed: claimable again when its lease ends (later than the other job's due time here).
    await engine.queue.claim(T0 + 10, NORMAL, 10, T0 + 100, "w")
    assert await engine.queue.next_due() == T0 + 50
    await engine.queue.claim(T0 + 50, BULK, 10, T0 + 80, "w")
    assert await engine.queue.next_due() == T0 + 80
    await engine.queue.complete(account, later.message_sid)
    assert await engine.queue.next_due() == T0 + 100
    await engine.queue.complete(account, soon.message_sid)
    assert await engine.queue.next_due() is None


def test_jobs_check_their_values() -> None:
    with pytest.raises(ValueError):
        SendJob(new_sid("AC"), new_sid("SM"), 3, T0)
    with pytest.raises(ValueError):
        SendJob("", new_sid("SM"), NORMAL, T0)
    with pytest.raises(ValueError):
        SendJob(new_sid("AC"), new_sid("SM"), NORMAL, T0, attempt=-1)
