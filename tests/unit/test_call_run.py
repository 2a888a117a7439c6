"""CallRun.move with several events: one write to the call store, the same
record as moving one event at a time, and each status's callback describing
the call as it was at that status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from presence_server.accounts import Account
from presence_server.clock import ManualClock
from presence_server.engines.calls import CallRecord
from presence_server.engines.memory.calls import MemoryCallStore
from presence_server.signaling.run import CallRun, Leg
from protocol.calls import CallEvent, CallStatus

ACC = "AC" + "1" * 32
SID = "CA" + "2" * 32


class CountingCallStore(MemoryCallStore):
    """The embedded engine's store, counting its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.updates = 0

    async def update(self, account_sid: str, sid: str, **changes: Any) -> CallRecord | None:
        self.updates += 1
        return await super().update(account_sid, sid, **changes)


@dataclass
class Service:
    """What a CallRun asks of its signaling service when it moves."""

    clock: ManualClock
    calls: CountingCallStore
    callbacks: list[tuple[CallStatus, str, float | None]] = field(default_factory=list)

    def status_callback(self, run: CallRun, status: CallStatus) -> None:
        self.callbacks.append((status, run.record.status, run.record.end_time))


async def new_run() -> tuple[CallRun, Service]:
    service = Service(ManualClock(1_000.0), CountingCallStore())
    record = CallRecord(sid=SID, account_sid=ACC, from_="+15550001111", to="+15550002222", date_created=999.0, date_updated=999.0)
    await service.calls.create(record)
    return CallRun(service, record, Account(ACC, "token"), Leg("+15550001111")), service  # type: ignore[arg-type]


async def test_several_events_are_one_write_with_each_status_called_back() -> None:
    run, service = await new_run()
    assert await run.move(CallEvent.START, CallEvent.RING)
    assert service.calls.updates == 1
    assert run.record.status == "ringing" and run.record.date_updated == 1_000.0
    assert await service.calls.get(ACC, SID) == run.record
    assert service.callbacks == [(CallStatus.INITIATED, "initiated", None), (CallStatus.RINGING, "ringing", None)]

    await service.clock.advance(5.0)
    assert await run.move(CallEvent.ANSWER, CallEvent.HANGUP)
    assert service.calls.updates == 2
    assert (run.record.status, run.record.start_time, run.record.end_time) == ("completed", 1_005.0, 1_005.0)
    assert await service.calls.get(ACC, SID) == run.record
    assert service.callbacks[2:] == [(CallStatus.IN_PROGRESS, "in-progress", None), (CallStatus.COMPLETED, "completed", 1_005.0)]


async def test_the_same_record_as_one_event_at_a_time() -> None:
    merged, _ = await new_run()
    one_by_one, _ = await new_run()
    await merged.move(CallEvent.START, CallEvent.RING, CallEvent.ANSWER, CallEvent.HANGUP)
    for event in (CallEvent.START, CallEvent.RING, CallEvent.ANSWER, CallEvent.HANGUP):
        await one_by_one.move(event)
    assert merged.record == one_by_one.record


async def test_events_that_do_not_apply_are_skipped_and_a_first_that_does_not_is_refused() -> None:
    run, service = await new_run()
    assert await run.move(CallEvent.START, CallEvent.START, CallEvent.RING)  # the second START does not apply
    assert run.record.status == "ringing" and [s for s, _, _ in service.callbacks] == [CallStatus.INITIATED, CallStatus.RINGING]
    assert not await run.move(CallEvent.START, CallEvent.HANGUP)  # START no longer applies: nothing happens
    assert run.record.status == "ringing" and service.calls.updates == 1
