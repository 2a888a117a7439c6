"""One call in progress on this signaling node: its legs, its event queue.

Events for a call (a callee rings, accepts, rejects; either side signals or
hangs up) arrive through the node's mailbox and are queued on the call's
run, which consumes them in order: relays keep their order, and nothing
about one call waits on another.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from protocol.calls import CallEvent, CallStatus, next_status

from ..accounts import Account
from ..engines.calls import CallRecord
from ..engines.ports import MessageRecord

if TYPE_CHECKING:
    from .service import SignalingService


# Why a call ended when its node stopped before it did (cancel, hangup and
# call_progress frames; docs/protocol.md).
SHUTDOWN_REASON = "server_shutdown"


@dataclass(frozen=True)
class Leg:
    """One party of a call: a client session, or someone outside (a carrier caller)."""

    address: str  # 'client:alice' or '+15551230001'
    session_id: str | None = None
    node_id: str | None = None  # the gateway node holding the session
    media: bool = False  # the leg declared the 'media' capability

    @property
    def is_client(self) -> bool:
        return self.session_id is not None


@dataclass(frozen=True)
class LegEvent:
    event: str  # ringing | accept | reject | hangup | signal | undeliverable | shutdown (ours: the drain ran out)
    call_sid: str  # the call (or child call) the event names
    session_id: str
    node_id: str
    request_id: Any = None
    reason: str | None = None
    payload: dict[str, Any] | None = None


class Replies:
    """What a call and a message run share: their sid, and whom a <Message>
    without to/from answers (the sender, from the number they reached)."""

    record: CallRecord | MessageRecord

    @property
    def sid(self) -> str:
        return self.record.sid

    @property
    def reply_to(self) -> str:
        return self.record.from_

    @property
    def reply_from(self) -> str:
        return self.record.to


@dataclass
class CallRun(Replies):
    service: SignalingService
    record: CallRecord
    account: Account
    caller: Leg
    params: dict[str, str] = field(default_factory=dict)  # custom parameters for instruction requests
    sdp: str | None = None
    status_callback: str | None = None
    status_callback_method: str = "POST"
    status_callback_events: frozenset[str] = frozenset({"completed"})
    events: asyncio.Queue[LegEvent] = field(default_factory=asyncio.Queue)
    caller_gone: bool = False
    redirects: int = 0
    end_reason: str | None = None  # set by <Reject>: 'rejected' or 'busy'
    # Sessions invited to this call: session id -> (the call sid it was invited
    # on, its gateway node); what ends their legs if that node dies (peers.py).
    invited: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Set when this node's drain ran out (SignalingService.drain): the call ends
    # now, for both parties, with reason 'server_shutdown'. An instruction fetch
    # in flight is abandoned for it (SignalingService.fetch waits on it too).
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[Any] | None = None  # the task running the call (the drain's last resort cancels it)

    @property
    def shutdown(self) -> bool:
        return self.stopping.is_set()

    def stop(self) -> None:
        """End this call for the node's shutdown: every wait for the call's
        events (ringing, the bridge, a Pause) finds the 'shutdown' event and
        ends the call as its state requires, through the state table."""
        if not self.stopping.is_set():
            self.stopping.set()
            self.events.put_nowait(LegEvent("shutdown", self.sid, "", ""))

    async def move(self, event: CallEvent, *then: CallEvent, **changes: Any) -> bool:
        """Apply a call event through the state table; False when it does not apply.

        Events in ``then`` follow in the same write (each one that applies, in
        order), with each status's callback as if they had been written one by
        one: back-to-back moves (initiated then ringing, answered then completed)
        cost one store round trip instead of one each.
        """
        now = self.service.clock.time()
        steps: list[tuple[CallStatus, CallRecord]] = []  # each status reached, and the record then
        status = CallStatus(self.record.status)
        record = self.record
        for ev in (event, *then):
            new = next_status(status, ev)
            if new is None:
                if not steps:
                    return False
                continue
            if new is CallStatus.IN_PROGRESS:
                changes.setdefault("start_time", now)
            if new.final:
                changes.setdefault("end_time", now)
            status = new
            record = record.replace(status=new.value, date_updated=now, **changes)
            steps.append((new, record))
        updated = await self.service.calls.update(self.account.sid, self.sid, status=status.value, date_updated=now, **changes)
        for i, (reached, local) in enumerate(steps):
            if updated is not None:
                # The callbacks of the earlier statuses describe the call as it was then.
                self.record = updated if i == len(steps) - 1 else local
            self.service.status_callback(self, reached)
        return True

    async def answer(self) -> None:
        """The call is answered by the first verb that needs it (not by the
        fetch of its instructions), so a <Reject> first leaves it unanswered."""
        if self.record.status in ("initiated", "ringing"):
            await self.move(CallEvent.ANSWER)

    def instruction_params(self) -> dict[str, str]:
        """The well-known parameters of every instruction request for this call."""
        rec = self.record
        # Custom parameters first: the standard ones must win, or a client could
        # claim another From (or CallSid, AccountSid) in its own call's request.
        return {
            **self.params,
            "CallSid": rec.sid,
            "AccountSid": rec.account_sid,
            "From": rec.from_,
            "To": rec.to,
            "CallStatus": rec.status,
            "Direction": rec.direction,
            "ApiVersion": "2010-04-01",
            **({"ParentCallSid": rec.parent_call_sid} if rec.parent_call_sid else {}),
        }
