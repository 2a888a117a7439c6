"""The SubmissionStore contract (engines/outbound.py): sends to carriers and their reports.

A report "changes nothing" when it is a duplicate - the same status, and the
same error code or none given - or a 'sent' after a final status (delivered,
undelivered, failed). Any other report is applied: status, error_code (as
given, None included) and reported_at.
"""

from __future__ import annotations

import dataclasses

from presence_server.engines.outbound import Submission
from presence_server.engines.ports import Engine
from protocol.addresses import new_sid

T0 = 1_700_000_000.0


def submission(account: str, message: str, provider_id: str, **fields: object) -> Submission:
    data: dict[str, object] = {
        "provider": "carrier-a",
        "provider_message_id": provider_id,
        "account_sid": account,
        "message_sid": message,
        "submitted_at": T0,
    }
    data.update(fields)
    return Submission(**data)  # type: ignore[arg-type]


async def test_add_then_find_returns_every_field(engine: Engine) -> None:
    s = submission(new_sid("AC"), new_sid("SM"), "id-1", route="us-marketing", part=2, parts=3, status="sent")
    assert await engine.submissions.add(s) is True
    assert await engine.submissions.find("carrier-a", "id-1") == s
    assert await engine.submissions.find("carrier-b", "id-1") is None
    assert await engine.submissions.find("carrier-a", "id-2") is None


async def test_a_stored_provider_id_is_not_added_again(engine: Engine) -> None:
    first = submission(new_sid("AC"), new_sid("SM"), "id-1")
    assert await engine.submissions.add(first) is True
    again = submission(new_sid("AC"), new_sid("SM"), "id-1", route="other", submitted_at=T0 + 5)
    assert await engine.submissions.add(again) is False
    assert await engine.submissions.find("carrier-a", "id-1") == first
    assert await engine.submissions.of_message(again.account_sid, again.message_sid) == []
    # The same id at another provider is another submission.
    assert await engine.submissions.add(dataclasses.replace(again, provider="carrier-b")) is True


async def test_report_applies_a_status(engine: Engine) -> None:
    s = submission(new_sid("AC"), new_sid("SM"), "id-1")
    await engine.submissions.add(s)
    result = await engine.submissions.report("carrier-a", "id-1", "delivered", None, T0 + 3)
    assert result is not None
    before, after = result
    assert before == s
    assert after == dataclasses.replace(s, status="delivered", reported_at=T0 + 3)
    assert await engine.submissions.find("carrier-a", "id-1") == after


async def test_report_of_an_unknown_id_is_none(engine: Engine) -> None:
    assert await engine.submissions.report("carrier-a", "nope", "delivered", None, T0) is None
    assert await engine.submissions.find("carrier-a", "nope") is None


async def test_a_failure_carries_its_error_code(engine: Engine) -> None:
    s = submission(new_sid("AC"), new_sid("SM"), "id-1")
    await engine.submissions.add(s)
    _, after = await engine.submissions.report("carrier-a", "id-1", "undelivered", 30003, T0 + 1)  # type: ignore[misc]
    assert (after.status, after.error_code, after.reported_at) == ("undelivered", 30003, T0 + 1)
    # A different status is applied, its error code (here none) with it.
    _, later = await engine.submissions.report("carrier-a", "id-1", "delivered", None, T0 + 2)  # type: ignore[misc]
    assert (later.status, later.error_code, later.reported_at) == ("delivered", None, T0 + 2)


async def test_a_duplicate_report_changes_nothing(engine: Engine) -> None:
    s = submission(new_sid("AC"), new_sid("SM"), "id-1")
    await engine.submissions.add(s)
    _, failed = await engine.submissions.report("carrier-a", "id-1", "failed", 30008, T0 + 1)  # type: ignore[misc]
    for error_code in (30008, None):  # the same code, or none given
        before, after = await engine.submissions.report("carrier-a", "id-1", "failed", error_code, T0 + 9)  # type: ignore[misc]
        assert before == after == failed
    assert await engine.submissions.find("carrier-a", "id-1") == failed
    # The same status with another error code is news.
    _, recoded = await engine.submissions.report("carrier-a", "id-1", "failed", 30005, T0 + 10)  # type: ignore[misc]
    assert (recoded.status, recoded.error_code, recoded.reported_at) == ("failed", 30005, T0 + 10)


async def test_sent_after_a_final_status_changes_nothing(engine: Engine) -> None:
    for final in ("delivered", "undelivered", "failed"):
        s = submission(new_sid("AC"), new_sid("SM"), f"id-{final}")
        await engine.submissions.add(s)
        _, reported = await engine.submissions.report("carrier-a", s.provider_message_id, final, None, T0 + 1)  # type: ignore[misc]
        before, after = await engine.submissions.report("carrier-a", s.provider_message_id, "sent", None, T0 + 2)  # type: ignore[misc]
        assert before == after == reported
        assert await engine.submissions.find("carrier-a", s.provider_message_id) == reported


async def test_sent_again_is_a_duplicate(engine: Engine) -> None:
    s = submission(new_sid("AC"), new_sid("SM"), "id-1")
    await engine.submissions.add(s)
    before, after = await engine.submissions.report("carrier-a", "id-1", "sent", None, T0 + 1)  # type: ignore[misc]
    assert before == after == s


async def test_of_message_lists_a_messages_submissions_in_order(engine: Engine) -> None:
    account, message = new_sid("AC"), new_sid("SM")
    parts = [submission(account, message, f"part-{n}", part=n, parts=3) for n in (2, 1, 3)]
    failover = submission(account, message, "b-1", provider="carrier-b", submitted_at=T0 + 30)
    for s in parts:
        await engine.submissions.add(s)
    await engine.submissions.add(submission(account, new_sid("SM"), "someone-else"))
    await engine.submissions.add(failover)
    await engine.submissions.report("carrier-a", "part-1", "delivered", None, T0 + 5)
    listed = await engine.submissions.of_message(account, message)
    assert [(s.provider, s.provider_message_id) for s in listed] == [
        ("carrier-a", "part-2"),
        ("carrier-a", "part-1"),
        ("carrier-a", "part-3"),
        ("carrier-b", "b-1"),
    ]
    assert listed[1].status == "delivered"  # as stored now
    assert await engine.submissions.of_message(new_sid("AC"), message) == []  # another account's
    assert await engine.submissions.of_message(account, new_sid("SM")) == []
