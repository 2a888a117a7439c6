"""Ringing client sessions and bridging the call once one answers.

``ring`` invites every target session at once (the caller's first-to-accept
race); the first ``accept`` wins and every other ringing session gets a
``cancel``. ``bridge`` then relays ``signal`` payloads between the two legs,
in order, until either side hangs up.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from protocol import messages as m
from protocol.calls import CallEvent, CallStatus, next_status
from protocol.errors import ErrorCode
from protocol.presence import SessionPresence, Status

from ..engines.calls import CallRecord
from .run import SHUTDOWN_REASON, CallRun, Leg, LegEvent

if TYPE_CHECKING:
    from .service import SignalingService

log = structlog.get_logger(__name__)


def ringable(session: SessionPresence) -> bool:
    """A session that can take a call: connected (not lingering), declared
    voice, and not asking to be left alone."""
    return not session.lingering and "voice" in session.capabilities and session.status is not Status.DND


@dataclass
class RingTarget:
    """One dialled party (one child call) and the sessions that ring for it."""

    child: CallRecord
    sessions: list[SessionPresence]
    params: dict[str, str] = field(default_factory=dict)
    identity: str | None = None  # the client identity rung (for the missed-call fallback)
    # The noun's statusCallback: told of this leg's initiated/ringing/answered/completed.
    status_callback: str | None = None
    status_callback_method: str = "POST"
    status_callback_events: frozenset[str] = frozenset({"completed"})
    # False: the child call is not stored yet, and ring() stores it already
    # initiated (its creation and its start one write, not two).
    stored: bool = True


@dataclass(frozen=True)
class RingOutcome:
    status: CallStatus  # IN_PROGRESS (answered), BUSY, NO_ANSWER, FAILED, CANCELED
    reason: str  # answered | absent | no-answer | busy | rejected | caller-hangup | failed
    child: CallRecord | None = None
    callee: Leg | None = None


class Ringer:
    def __init__(self, service: SignalingService, run: CallRun) -> None:
        self.service = service
        self.run = run
        self._targets: dict[str, RingTarget] = {}  # child call sid -> its target

    async def _child_event(self, child: CallRecord, event: CallEvent, **changes: object) -> CallRecord:
        new = next_status(CallStatus(child.status), event)
        if new is None:
            return child
        svc = self.service
        now = svc.clock.time()
        if new is CallStatus.IN_PROGRESS:
            changes.setdefault("start_time", now)
        if new.final:
            changes.setdefault("end_time", now)
        updated = await svc.calls.update(child.account_sid, child.sid, status=new.value, date_updated=now, **changes) or child
        target = self._targets.get(child.sid)
        if target is not None and target.status_callback is not None:
            svc.leg_status_callback(self.run, target, updated)
        return updated

    async def _create_started(self, child: CallRecord) -> CallRecord:
        """Store a new child call as _child_event(START) would leave it, in one write."""
        svc = self.service
        started = child.replace(status=CallStatus.INITIATED.value, date_updated=svc.clock.time())
        await svc.calls.create(started)
        target = self._targets.get(child.sid)
        if target is not None and target.status_callback is not None:
            svc.leg_status_callback(self.run, target, started)
        return started

    async def _ok(self, ev: LegEvent) -> None:
        """Answer a request that carried an id (accept always gets its answer)."""
        if ev.request_id is not None or ev.event == "accept":
            await self.service.deliver(ev.node_id, ev.session_id, m.Ok(id=ev.request_id))

    async def ring(self, targets: list[RingTarget], timeout: float) -> RingOutcome:
        svc, run = self.service, self.run
        if not targets:
            return RingOutcome(CallStatus.FAILED, "failed")
        pending: dict[str, RingTarget] = {}  # session id -> its target
        nodes: dict[str, str] = {}
        for target in targets:
            svc.route(target.child.sid, run)
            self._targets[target.child.sid] = target
            if target.stored:
                target.child = await self._child_event(target.child, CallEvent.START)
            else:
                target.child = await self._create_started(target.child)
                target.stored = True
            for session in target.sessions:
                pending[session.session_id] = target
                nodes[session.session_id] = session.node_id
                run.invited[session.session_id] = (target.child.sid, session.node_id)
                delivered = await svc.deliver(
                    session.node_id,
                    session.session_id,
                    m.Invite(
                        call=target.child.sid,
                        parent_call=run.sid,
                        caller=target.child.from_,  # the Dial's callerId, else the caller
                        to=target.child.to,
                        params=target.params,
                        sdp=run.sdp,
                    ),
                )
                if not delivered:
                    # Nobody listens at the session's node: it died, and the session's
                    # lease has not run out yet. Not rung, as when a live gateway
                    # no longer has the session (its 'undeliverable' notice).
                    run.events.put_nowait(LegEvent("undeliverable", target.child.sid, session.session_id, session.node_id))
        for target in targets:
            if not target.sessions:  # nobody to ring for this one: it ends now, not at the timeout
                target.child = await self._child_event(target.child, CallEvent.TIMEOUT)
        if not pending:
            return RingOutcome(CallStatus.NO_ANSWER, "absent")

        answered: set[str] = set()
        rejected_reasons: list[str] = []
        told_ringing = False
        deadline = svc.clock.time() + timeout

        async def cancel_all(reason: str, event: CallEvent, keep: str | None = None) -> None:
            for sid, target in list(pending.items()):
                if sid != keep:
                    await svc.deliver(nodes[sid], sid, m.Cancel(call=target.child.sid, reason=reason))
            for target in {id(t): t for t in pending.values()}.values():
                if keep is None or pending.get(keep) is not target:
                    target.child = await self._child_event(target.child, event)

        while True:
            ev = await svc.next_event(run, deadline)
            if ev is None:
                await cancel_all("timeout", CallEvent.TIMEOUT)
                return RingOutcome(CallStatus.NO_ANSWER, "no-answer")
            if ev.event == "shutdown":  # this node's drain ran out: nobody answers any more
                await cancel_all(SHUTDOWN_REASON, CallEvent.CANCEL)
                return RingOutcome(CallStatus.CANCELED, SHUTDOWN_REASON)
            if ev.session_id == run.caller.session_id:
                if ev.event == "hangup":
                    run.caller_gone = True
                    await self._ok(ev)
                    await cancel_all("caller_hangup", CallEvent.CANCEL)
                    return RingOutcome(CallStatus.CANCELED, "caller-hangup")
                await svc.refuse(ev, ErrorCode.CALL_STATE_INVALID, "the call is not answered yet")
                continue
            target = pending.get(ev.session_id)
            if target is None or ev.call_sid != target.child.sid:
                await svc.refuse_stray(ev, answered_elsewhere=bool(answered))
                continue
            if ev.event == "ringing":
                await self._ok(ev)
                target.child = await self._child_event(target.child, CallEvent.RING)
                if not told_ringing:
                    told_ringing = True
                    await run.move(CallEvent.RING)
                    await svc.tell_caller(run, m.CallProgress(call=run.sid, status="ringing"))
            elif ev.event == "accept":
                answered.add(ev.session_id)
                callee = Leg(target.child.to, ev.session_id, ev.node_id, media=False)
                target.child = await self._child_event(target.child, CallEvent.ANSWER, answered_by_session=ev.session_id)
                await self._ok(ev)
                await cancel_all("answered_elsewhere", CallEvent.CANCEL, keep=ev.session_id)
                return RingOutcome(CallStatus.IN_PROGRESS, "answered", target.child, callee)
            elif ev.event in ("reject", "hangup", "undeliverable"):
                del pending[ev.session_id]
                if ev.event == "reject":
                    rejected_reasons.append(ev.reason or "rejected")
                if ev.event != "undeliverable":
                    await self._ok(ev)
                if not any(t is target for t in pending.values()):
                    end = CallEvent.REJECT if ev.event == "reject" else CallEvent.TIMEOUT
                    target.child = await self._child_event(target.child, end)
                if not pending:
                    if rejected_reasons:
                        return RingOutcome(CallStatus.BUSY, "busy" if "busy" in rejected_reasons else "rejected")
                    return RingOutcome(CallStatus.NO_ANSWER, "absent")
            elif ev.event == "signal":
                await svc.refuse(ev, ErrorCode.CALL_STATE_INVALID, "signal after accept, not before")

    async def bridge(self, child: CallRecord, callee: Leg, time_limit: float) -> CallRecord:
        """Relay between caller and callee until one hangs up; returns the ended child."""
        svc, run = self.service, self.run
        await run.move(CallEvent.ANSWER)
        await svc.tell_caller(run, m.CallProgress(call=run.sid, status="answered"))
        deadline = svc.clock.time() + time_limit
        caller_sid = run.caller.session_id
        while True:
            ev = await svc.next_event(run, deadline)
            if ev is None or ev.event == "shutdown":
                # The Dial's timeLimit, or this node's drain ran out: both parties are told.
                reason = "time_limit" if ev is None else SHUTDOWN_REASON
                await svc.deliver(callee.node_id or "", callee.session_id or "", m.HangupNotice(call=child.sid, reason=reason))
                await svc.tell_caller(run, m.HangupNotice(call=run.sid, reason=reason))
                return await self._child_event(child, CallEvent.HANGUP)
            from_caller = ev.session_id == caller_sid and ev.call_sid == run.sid
            from_callee = ev.session_id == callee.session_id and ev.call_sid == child.sid
            if not (from_caller or from_callee):
                await svc.refuse_stray(ev, answered_elsewhere=True)
                continue
            if ev.event == "signal":
                if from_caller:
                    await svc.deliver(callee.node_id or "", callee.session_id or "", m.SignalRelay(call=child.sid, payload=ev.payload or {}))
                elif run.caller.is_client:
                    await svc.tell_caller(run, m.SignalRelay(call=run.sid, payload=ev.payload or {}))
                else:
                    log.info("signal for a carrier leg dropped", call_sid=run.sid)
                await self._ok(ev)
            elif ev.event in ("hangup", "undeliverable"):
                reason = "connection_lost" if ev.reason == "connection_lost" or ev.event == "undeliverable" else "remote_hangup"
                if from_caller:
                    run.caller_gone = True
                    await svc.deliver(callee.node_id or "", callee.session_id or "", m.HangupNotice(call=child.sid, reason=reason))
                else:
                    await svc.tell_caller(run, m.HangupNotice(call=run.sid, reason=reason))
                if ev.event == "hangup":
                    await self._ok(ev)
                return await self._child_event(child, CallEvent.HANGUP)
            else:
                await svc.refuse(ev, ErrorCode.CALL_STATE_INVALID, f"'{ev.event}' does not apply to an answered call")


async def next_event_or_timeout(queue: asyncio.Queue[LegEvent], sleep: asyncio.Future[None]) -> LegEvent | None:
    """The next queued event, or None when ``sleep`` finishes first. An event
    that arrives as the timer fires is left in the queue, not lost."""
    getter = asyncio.ensure_future(queue.get())
    try:
        await asyncio.wait({getter, sleep}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleep.cancel()
    if getter.done():
        return getter.result()
    getter.cancel()
    try:
        await getter
    except asyncio.CancelledError:
        return None
    return getter.result()  # pragma: no cover - completed during cancellation
