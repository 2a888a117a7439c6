"""Executing instruction documents: one small handler per verb, in a registry.

A handler returns ``None`` (go on with the next verb), ``STOP`` (the
document ends the call), or a :class:`Goto` (continue with another document:
a Redirect, or the answer of a Dial or Message ``action`` URL). Adding a verb
is one handler here plus its class in ``protocol/instructions``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Union

import structlog

from protocol import messages as m
from protocol.calls import DIAL_STATUS_OF, CallStatus
from protocol.instructions import Dial, Hangup, Message, Pause, Redirect, Reject, Verb, resolve_url
from protocol.instructions import InstructionError

from .ringing import Ringer
from .run import SHUTDOWN_REASON, CallRun

if TYPE_CHECKING:
    from .fetcher import FetchedInstructions
    from .service import MessageRun, SignalingService

log = structlog.get_logger(__name__)

# Warnings sent to a caller leg (call_warning frames); the codes are documented
# in docs/instructions.md.
WARN_MEDIA_SKIPPED = 13000
WARN_VERB_NOT_FOR_CONTEXT = 13001


@dataclass(frozen=True)
class Goto:
    fetched: FetchedInstructions


class _Stop:
    pass


STOP = _Stop()
Outcome = Union[None, Goto, _Stop]
Run = Union[CallRun, "MessageRun"]
Handler = Callable[["Executor", Any, Any, str], Awaitable[Outcome]]
HANDLERS: dict[type[Verb], Handler] = {}


def handles(verb_cls: type[Verb]) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[verb_cls] = fn
        return fn

    return register


class Executor:
    def __init__(self, service: SignalingService) -> None:
        self.service = service

    async def execute(self, run: Run, fetched: FetchedInstructions) -> str:
        """Run a document to its end; returns why it ended."""
        while True:
            outcome: Outcome = None
            for verb in fetched.instructions.verbs:
                if isinstance(run, CallRun) and run.shutdown:
                    return SHUTDOWN_REASON  # the drain ran out: no further verb starts
                if isinstance(run, CallRun) and run.caller_gone:
                    return "caller-hangup"
                if isinstance(run, CallRun) and not isinstance(verb, (Reject, Redirect)):
                    await run.answer()
                handler = HANDLERS.get(type(verb))
                if handler is None:
                    outcome = await self._media(run, verb)
                else:
                    outcome = await handler(self, run, verb, fetched.url)
                if outcome is not None:
                    break
            if isinstance(outcome, Goto):
                fetched = outcome.fetched
                continue
            return "hangup" if outcome is STOP else "instructions-ended"

    async def _media(self, run: Run, verb: Verb) -> Outcome:
        """Say/Play/Gather/Record go to a caller leg that declared media; else skipped."""
        tag = type(verb).__name__
        if isinstance(run, CallRun) and run.caller.media and run.caller.is_client:
            await self.service.tell_caller_media(run, verb)
            return None
        await self.warn(run, WARN_MEDIA_SKIPPED, f"<{tag}> skipped: the caller's leg has no media capability")
        return None

    async def warn(self, run: Run, code: int, message: str) -> None:
        log.warning("instruction skipped", call_sid=getattr(run, "sid", None), code=code, detail=message)
        if isinstance(run, CallRun) and run.caller.is_client:
            await self.service.tell_caller(run, m.CallWarning(call=run.sid, code=code, message=message))

    async def follow(self, run: Run, base: str, url: str, method: str, extra: dict[str, str]) -> Outcome:
        """Request an action/redirect URL and continue with its document."""
        svc = self.service
        try:
            target = resolve_url(base, url)
        except InstructionError as exc:
            return await svc.instructions_failed(run, exc.error_code, str(exc))
        run.redirects += 1
        if run.redirects > svc.config.signaling.max_redirects:
            return await svc.instructions_failed(run, 11215, f"more than {svc.config.signaling.max_redirects} redirects")
        fetched = await svc.fetch(run, target, method, None, "POST", extra)
        return STOP if fetched is None else Goto(fetched)


@handles(Redirect)
async def _redirect(ex: Executor, run: Run, verb: Redirect, base: str) -> Outcome:
    return await ex.follow(run, base, verb.url, verb.method, {})


@handles(Hangup)
async def _hangup(ex: Executor, run: Run, verb: Hangup, base: str) -> Outcome:
    return STOP


@handles(Reject)
async def _reject(ex: Executor, run: Run, verb: Reject, base: str) -> Outcome:
    if isinstance(run, CallRun):
        run.end_reason = verb.reason
    return STOP


@handles(Pause)
async def _pause(ex: Executor, run: Run, verb: Pause, base: str) -> Outcome:
    if not isinstance(run, CallRun):
        return None
    svc = ex.service
    deadline = svc.clock.time() + verb.length
    while True:
        ev = await svc.next_event(run, deadline)
        if ev is None:
            return None
        if ev.event == "shutdown":
            return STOP
        if ev.session_id == run.caller.session_id and ev.event == "hangup":
            run.caller_gone = True
            if ev.request_id is not None:
                await svc.deliver(ev.node_id, ev.session_id, m.Ok(id=ev.request_id))
            return STOP
        await svc.refuse_stray(ev, answered_elsewhere=False)


@handles(Message)
async def _message(ex: Executor, run: Run, verb: Message, base: str) -> Outcome:
    svc = ex.service
    to = verb.to or run.reply_to
    sender = verb.from_ or run.reply_from
    related = run.sid if isinstance(run, CallRun) else None
    direction = "outbound-call" if isinstance(run, CallRun) else "outbound-reply"
    send = svc.delivery.send(
        run.account, to, sender, verb.body or "", tuple(verb.media_urls), direction=direction, related_call_sid=related,
        status_callback=verb.status_callback,
    )
    if verb.action is None:
        svc.spawn(send)  # nothing waits on the outcome: the document goes on
        return None
    record = await svc.delivery.settled(await send)
    return await ex.follow(run, base, verb.action, verb.method, {"MessageSid": record.sid, "MessageStatus": record.status})


@handles(Dial)
async def _dial(ex: Executor, run: Run, verb: Dial, base: str) -> Outcome:
    svc = ex.service
    if not isinstance(run, CallRun):
        await ex.warn(run, WARN_VERB_NOT_FOR_CONTEXT, "<Dial> has no meaning for a message; skipped")
        return None
    ringer = Ringer(svc, run)
    groups = [list(verb.nouns)] if not verb.sequential else [[noun] for noun in verb.nouns]
    outcome = None
    unreachable: list[str] = []  # identities rung in vain, for the missed-call fallback
    for group in groups:
        if run.shutdown:
            return STOP  # the drain ran out between two groups: nobody else is rung
        targets = [t for noun in group if (t := await svc.dial_target(run, noun, verb.caller_id)) is not None]
        outcome = await ringer.ring(targets, verb.timeout)
        if outcome.status in (CallStatus.IN_PROGRESS, CallStatus.CANCELED):
            break
        unreachable.extend(t.identity for t in targets if t.identity)
    assert outcome is not None
    bridged = False
    child = outcome.child
    if outcome.status is CallStatus.IN_PROGRESS and outcome.child and outcome.callee:
        child = await ringer.bridge(outcome.child, outcome.callee, verb.time_limit)
        bridged = True
    if run.shutdown:
        # Ended by this node's drain: no missed-call SMS and no action request
        # (its answer could not continue the call, and the process is going away).
        return STOP
    dial_status = DIAL_STATUS_OF[CallStatus(child.status) if bridged and child else outcome.status]
    if not bridged and verb.action is None and outcome.status is not CallStatus.CANCELED:
        for identity in dict.fromkeys(unreachable):
            svc.spawn(svc.delivery.missed_call(run, identity, outcome.reason))
    if verb.action is None:
        return STOP if run.caller_gone else None
    extra = {
        "DialCallStatus": dial_status,
        "DialBridged": "true" if bridged else "false",
        **({"DialCallSid": child.sid} if child else {}),
        **({"DialCallDuration": str(child.duration or 0)} if bridged and child else {}),
    }
    if run.caller_gone:
        # Twilio requests the action even after the caller hung up, so the app
        # learns the outcome; whatever it answers cannot continue the call.
        await svc.fetch(run, resolve_url(base, verb.action), verb.method, None, "POST", extra)
        return STOP
    return await ex.follow(run, base, verb.action, verb.method, extra)


__all__ = ["Executor", "Goto", "STOP", "HANDLERS"]
