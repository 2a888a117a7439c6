"""The signaling role: incoming requests in, instructions executed, clients rung.

Every incoming communication request - a call placed by a client app, a
carrier's inbound call or message, a call created over REST - ends in the
same place: its instruction URL is fetched and the document executed. This
role reaches client sessions only through the engine (presence store to find
them, the bus to talk to the gateway nodes holding them), never through the
gateway's objects, so it runs unchanged as a separate process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Coroutine

import structlog

from protocol import messages as m
from protocol.addresses import new_sid
from protocol.calls import CallEvent, CallStatus
from protocol.errors import ErrorCode
from protocol.instructions import Client, Number, Verb
from protocol.presence import SessionPresence

from ..accounts import Account, AccountRegistry, Webhook
from ..clock import Clock
from ..config import Config
from ..engines.calls import CallRecord, CallStore
from ..engines.ports import MessageRecord, MessageStore
from ..mailbox import Mailbox
from ..messaging.service import MessagingService
from ..presence.service import PresenceService
from ..tasks import TaskSet
from ..webhooks import WebhookSender
from .capacity import CallLimitReached, Draining
from .delivery import Delivery
from .executor import STOP, Executor
from .fetcher import FetchError, FetchedInstructions, InstructionFetcher
from .ringing import RingTarget, Ringer, next_event_or_timeout, ringable
from .run import SHUTDOWN_REASON, CallRun, Leg, LegEvent, Replies

log = structlog.get_logger(__name__)

# Call statuses as status-callback events (final statuses are all 'completed').
_CALLBACK_EVENT = {CallStatus.INITIATED: "initiated", CallStatus.RINGING: "ringing", CallStatus.IN_PROGRESS: "answered"}


@dataclass
class MessageRun(Replies):
    """An incoming message's instructions being executed (no call, no legs)."""

    account: Account
    record: MessageRecord
    params: dict[str, str] = field(default_factory=dict)
    redirects: int = 0

    def instruction_params(self) -> dict[str, str]:
        rec = self.record
        params = {
            "MessageSid": rec.sid,
            "SmsSid": rec.sid,
            "SmsMessageSid": rec.sid,
            "AccountSid": rec.account_sid,
            "From": rec.from_,
            "To": rec.to,
            "Body": rec.body,
            "NumMedia": str(len(rec.media_urls)),
            "NumSegments": str(rec.num_segments),
            "ApiVersion": "2010-04-01",
        }
        params.update({f"MediaUrl{i}": url for i, url in enumerate(rec.media_urls)})
        return params


class SignalingService:
    def __init__(
        self,
        *,
        config: Config,
        accounts: AccountRegistry,
        presence: PresenceService,
        calls: CallStore,
        messages: MessageStore,
        mailbox: Mailbox,
        fetcher: InstructionFetcher,
        webhooks: WebhookSender,
        messaging: MessagingService,
        clock: Clock,
    ) -> None:
        self.config = config
        self.accounts = accounts
        self.presence = presence
        self.calls = calls
        self.messages = messages
        self.mailbox = mailbox
        self.fetcher = fetcher
        self.webhooks = webhooks
        self.messaging = messaging
        self.clock = clock
        self.delivery = Delivery(self)
        self.executor = Executor(self)
        self._routes: dict[str, CallRun] = {}  # call or child call sid -> its run
        self._active: set[str] = set()  # calls in progress on this node (for the limit)
        self._tasks = TaskSet("signaling")
        # Set by drain(): new calls are refused; set again when the last call ends.
        self.draining = False
        self._idle = asyncio.Event()
        mailbox.on("place_call", self._on_place_call)
        mailbox.on("call_event", self._on_call_event)

    # -- plumbing used by the ringer, the executor and delivery ---------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._tasks.spawn(coro)

    def route(self, call_sid: str, run: CallRun) -> None:
        self._routes[call_sid] = run
        if run.sid == call_sid:
            self._active.add(call_sid)

    async def next_event(self, run: CallRun, deadline: float) -> LegEvent | None:
        sleep = asyncio.ensure_future(self.clock.sleep(max(0.0, deadline - self.clock.time())))
        return await next_event_or_timeout(run.events, sleep)

    async def deliver(self, node_id: str, session_id: str, frame: m.ServerFrame) -> bool:
        """False when nobody listens at that node (it died; its sessions' leases
        have not run out yet): the frame is lost."""
        return await self.mailbox.send(node_id, "deliver", session=session_id, frame=frame.to_wire())

    async def tell_caller(self, run: CallRun, frame: m.ServerFrame) -> None:
        if run.caller.is_client and run.caller.node_id and run.caller.session_id:
            await self.deliver(run.caller.node_id, run.caller.session_id, frame)

    async def tell_caller_media(self, run: CallRun, verb: Verb) -> None:
        """Hand a media verb to a caller leg that plays media itself."""
        if run.caller.is_client and run.caller.node_id and run.caller.session_id:
            await self.mailbox.send(
                run.caller.node_id, "deliver", session=run.caller.session_id,
                frame={"type": "call_media", "call": run.sid, "verb": type(verb).__name__, "attributes": _verb_fields(verb)},
            )

    async def refuse(self, ev: LegEvent, code: ErrorCode, message: str) -> None:
        await self.deliver(ev.node_id, ev.session_id, m.Error(code=code.code, message=message, id=ev.request_id))

    async def refuse_stray(self, ev: LegEvent, *, answered_elsewhere: bool) -> None:
        """An event from a session that is not (or no longer) a party of the call."""
        if ev.event == "accept" and answered_elsewhere:
            await self.refuse(ev, ErrorCode.CALL_ANSWERED_ELSEWHERE, "the call was answered on another device")
        elif ev.event in ("accept", "reject", "signal") or ev.request_id is not None:
            await self.refuse(ev, ErrorCode.CALL_STATE_INVALID, f"'{ev.event}' does not apply to this call now")

    async def present_sessions(self, account_sid: str, identity: str) -> list[SessionPresence]:
        (snap,) = await self.presence.query(account_sid, [identity])
        return [s for s in snap.presence.sessions if not s.lingering]

    def status_callback(self, run: CallRun, status: CallStatus) -> None:
        event = _CALLBACK_EVENT.get(status, "completed" if status.final else None)
        if run.status_callback is None or event is None or event not in run.status_callback_events:
            return
        params = {**run.instruction_params(), "CallbackSource": "call-progress-events", "Timestamp": str(self.clock.time())}
        if run.record.duration is not None:
            params["CallDuration"] = str(run.record.duration)
        self.webhooks.send_soon(run.status_callback, run.status_callback_method, params, run.account.auth_token)

    def leg_status_callback(self, run: CallRun, target: RingTarget, record: CallRecord) -> None:
        """A Dial noun's statusCallback, for its own leg (child call)."""
        status = CallStatus(record.status)
        event = _CALLBACK_EVENT.get(status, "completed" if status.final else None)
        if target.status_callback is None or event is None or event not in target.status_callback_events:
            return
        params = {
            "CallSid": record.sid, "ParentCallSid": run.sid, "AccountSid": record.account_sid, "From": record.from_,
            "To": record.to, "CallStatus": record.status, "Direction": record.direction, "ApiVersion": "2010-04-01",
            "CallbackSource": "call-progress-events", "Timestamp": str(self.clock.time()),
        }
        if record.duration is not None:
            params["CallDuration"] = str(record.duration)
        self.webhooks.send_soon(target.status_callback, target.status_callback_method, params, run.account.auth_token)

    async def fetch(
        self, run: CallRun | MessageRun, url: str, method: str, fallback_url: str | None, fallback_method: str, extra: dict[str, str]
    ) -> FetchedInstructions | None:
        """Fetch a document for this run; on failure the run ends with the error."""
        params = {**run.instruction_params(), **extra}
        fetch = self.fetcher.fetch_with_fallback(url, method, fallback_url, fallback_method, params, run.account.auth_token)
        try:
            if isinstance(run, CallRun):
                # The drain may run out while the customer's server takes its time
                # (up to 15 s): the call ends then, not when the answer comes.
                return await _unless_stopped(fetch, run.stopping)
            return await fetch
        except FetchError as exc:
            await self.instructions_failed(run, exc.code, exc.message)
            return None

    async def instructions_failed(self, run: CallRun | MessageRun, code: int, message: str) -> Any:
        log.warning("instructions failed", call_sid=run.sid, code=code, detail=message)
        if isinstance(run, CallRun):
            run.record = (await self.calls.update(run.account.sid, run.sid, error_code=code, error_message=message)) or run.record
            await run.move(CallEvent.FAIL)
        return STOP

    # -- dialling ------------------------------------------------------------------------------

    async def dial_target(self, run: CallRun, noun: Client | Number, caller_id: str | None) -> RingTarget | None:
        """A child call for one Dial noun and the sessions to ring for it; None
        for a carrier number (no voice provider can carry it)."""
        identity = noun.identity if isinstance(noun, Client) else run.account.identity_for_phone(noun.number)
        params = {p.name: p.value for p in noun.parameters} if isinstance(noun, Client) else {}
        to = f"client:{identity}" if identity else noun.number  # type: ignore[union-attr]
        now = self.clock.time()
        child = CallRecord(
            sid=new_sid("CA"), account_sid=run.account.sid, from_=caller_id or run.record.from_, to=to,
            direction="outbound-dial", parent_call_sid=run.sid, date_created=now, date_updated=now,
        )
        if identity is None:
            child = child.replace(status="failed", error_code=13227, error_message="no voice provider can reach this number", end_time=now)
            await self.calls.create(child)
            log.info("carrier dial leg failed: no voice provider", call_sid=child.sid)
            return None
        sessions = [s for s in await self.present_sessions(run.account.sid, identity) if ringable(s)]
        # Stored by the ringer, already initiated: one write for its creation and its start.
        return RingTarget(
            child=child, sessions=sessions, params=params, identity=identity, status_callback=noun.status_callback,
            status_callback_method=noun.status_callback_method,
            status_callback_events=frozenset(noun.status_callback_event), stored=False,
        )

    # -- dead gateways ------------------------------------------------------------------------------

    def _runs(self) -> list[CallRun]:
        return list({id(run): run for run in self._routes.values()}.values())

    def call_peers(self) -> set[str]:
        """The gateway nodes holding the sessions of the calls in progress here."""
        nodes = {node for run in self._runs() for _, node in run.invited.values()}
        nodes.update(run.caller.node_id for run in self._runs() if run.caller.is_client and run.caller.node_id)
        return nodes

    def peer_gone(self, node_id: str) -> int:
        """A gateway node died (peers.py): its sessions' legs end as if their
        connections had dropped (``connection_lost``), so the other party of each
        call is told, instead of waiting for the call's time limit. Returns how
        many legs ended."""
        ended = 0
        for run in self._runs():
            if run.caller.is_client and run.caller.node_id == node_id and run.caller.session_id:
                run.events.put_nowait(LegEvent("hangup", run.sid, run.caller.session_id, node_id, reason="connection_lost"))
                ended += 1
            for session_id, (call_sid, node) in list(run.invited.items()):
                if node == node_id:
                    del run.invited[session_id]
                    run.events.put_nowait(LegEvent("undeliverable", call_sid, session_id, node_id))
                    ended += 1
        return ended

    # -- entry points ------------------------------------------------------------------------------

    @property
    def active_calls(self) -> int:
        return len(self._active)

    def _check_capacity(self) -> None:
        if self.draining:
            raise Draining()
        if len(self._active) >= self.config.signaling.max_concurrent_calls:
            raise CallLimitReached()

    async def _new_call(self, account: Account, from_: str, to: str, direction: str, **kw: Any) -> CallRecord:
        self._check_capacity()
        now = self.clock.time()
        record = CallRecord(sid=new_sid("CA"), account_sid=account.sid, from_=from_, to=to, direction=direction, date_created=now, date_updated=now, **kw)
        await self.calls.create(record)
        return record

    async def _run_call(self, run: CallRun, webhook: Webhook) -> None:
        """Fetch the call's instructions and execute them to the end."""
        self.route(run.sid, run)
        run.task = asyncio.current_task()
        try:
            # An inbound call rings while its instructions are fetched (its first
            # request says CallStatus=ringing); the first verb that needs an
            # answered call answers it, so a leading <Reject> leaves it busy.
            await run.move(CallEvent.START, CallEvent.RING)
            fetched = await self.fetch(run, webhook.url, webhook.method, webhook.fallback_url, webhook.fallback_method, {})
            reason = "failed"
            if fetched is not None:
                reason = await self.executor.execute(run, fetched)
            await self._finish(run, reason)
        except Exception:
            log.exception("call failed", call_sid=run.sid)
            await run.move(CallEvent.FAIL)
            await self.tell_caller(run, m.CallProgress(call=run.sid, status="completed", reason="failed"))
        except asyncio.CancelledError:
            await self._finish_cancelled(run)
            raise
        finally:
            await self._end_run(run)

    async def _end_run(self, run: CallRun) -> None:
        """The call is over: forget its routes, and answer whatever request about
        it was still queued (an accept that raced the end, say)."""
        for sid in [s for s, r in self._routes.items() if r is run]:
            del self._routes[sid]
        self._active.discard(run.sid)
        if not self._active:
            self._idle.set()
        while not run.events.empty():
            ev = run.events.get_nowait()
            if ev.request_id is not None or ev.event in ("accept", "signal"):
                await self.refuse(ev, ErrorCode.CALL_NOT_FOUND, "the call has ended")

    async def _finish(self, run: CallRun, reason: str) -> None:
        if run.shutdown and run.record.status in ("initiated", "ringing"):
            await run.move(CallEvent.CANCEL)  # ended by the drain before anything answered it
            reason = SHUTDOWN_REASON
        elif run.end_reason is not None and run.record.status in ("initiated", "ringing"):
            await run.move(CallEvent.REJECT)  # <Reject> before anything answered: busy
            reason = run.end_reason
        elif run.record.status in ("initiated", "ringing"):
            await run.move(CallEvent.ANSWER, CallEvent.HANGUP)  # a document of only Redirects and Reject-free flow
        elif run.record.status == "in-progress":
            await run.move(CallEvent.HANGUP)
        if run.shutdown:
            reason = SHUTDOWN_REASON  # whatever the run was doing when the drain ran out
        elif run.record.status == "failed" or run.record.error_code is not None:
            reason = "failed"  # the instructions failed, before or after the call was answered
        await self.tell_caller(run, m.CallProgress(call=run.sid, status="completed", reason=reason))

    async def _finish_cancelled(self, run: CallRun) -> None:
        """The run's task was cancelled: by the drain's last resort (a run that
        did not end within DRAIN_STOP_WAIT of being stopped), or by close().
        Its call still ends properly when the drain stopped it; a plain close
        (no drain) leaves it to the gateways' signaling_lost, as before."""
        if run.shutdown:
            with contextlib.suppress(Exception):
                await self._finish(run, SHUTDOWN_REASON)

    def _on_place_call(self, msg: dict[str, Any]) -> None:
        self.spawn(self._place_call(msg))

    async def _place_call(self, msg: dict[str, Any]) -> None:
        """A client app placed a call: its token's outgoing application decides."""
        account = self.accounts.account(msg["account"])
        caller = Leg(f"client:{msg['identity']}", msg["session"], msg["from_node"], media="media" in msg.get("capabilities", []))
        webhook = account.application_webhook(msg["application_sid"]) if account else None
        if account is None or webhook is None:
            await self.deliver(caller.node_id or "", caller.session_id or "", m.Error(
                code=ErrorCode.CALL_DESTINATION_INVALID.code, id=msg.get("request_id"),
                message="the token's outgoing application does not exist or has no voice_url",
            ))
            return
        try:
            record = await self._new_call(account, caller.address, msg["to"], "inbound")
        except Draining:
            await self._refuse_placed_call(msg, caller)
            return
        except CallLimitReached:
            await self.deliver(caller.node_id or "", caller.session_id or "", m.Error(
                code=ErrorCode.CALL_LIMIT.code, message=ErrorCode.CALL_LIMIT.message, id=msg.get("request_id"),
            ))
            return
        app = account.applications[msg["application_sid"]]
        run = CallRun(self, record, account, caller, params=dict(msg.get("params") or {}), status_callback=app.status_callback, status_callback_method=app.status_callback_method)
        await self.deliver(caller.node_id or "", caller.session_id or "", m.CallCreated(id=msg.get("request_id"), call=record.sid))
        await self._run_call(run, webhook)

    def _on_call_event(self, msg: dict[str, Any]) -> None:
        ev = LegEvent(
            event=msg["event"], call_sid=msg["call"], session_id=msg["session"], node_id=msg["from_node"],
            request_id=msg.get("request_id"), reason=msg.get("reason"), payload=msg.get("payload"),
        )
        run = self._routes.get(ev.call_sid)
        # Events name their session's account; the gateway's own 'undeliverable'
        # notice names only the session this node invited.
        if run is None or (ev.event != "undeliverable" and run.account.sid != msg.get("account")):
            if ev.request_id is not None or ev.event in ("accept", "signal"):
                self.spawn(self.refuse(ev, ErrorCode.CALL_NOT_FOUND, "no such call in progress"))
            return
        run.events.put_nowait(ev)

    async def ingress_call(self, account: Account, from_: str, to: str, sdp: str | None) -> CallRecord:
        """A carrier hands over an inbound call to one of the account's numbers."""
        webhook = account.voice_webhook(to)
        assert webhook is not None, "the route checks the number has a voice URL"
        record = await self._new_call(account, from_, to, "inbound")
        number = account.numbers[to]
        app = account.applications.get(number.application_sid or "")
        hooks = number if number.status_callback or app is None else app
        run = CallRun(
            self, record, account, Leg(from_), sdp=sdp,
            status_callback=hooks.status_callback, status_callback_method=hooks.status_callback_method,
        )
        self.spawn(self._run_call(run, webhook))
        return record

    async def ingress_message(self, account: Account, from_: str, to: str, body: str, media: tuple[str, ...]) -> MessageRecord:
        """A carrier hands over an inbound message: its number's sms_url decides."""
        now = self.clock.time()
        record = MessageRecord(
            sid=new_sid("MM" if media else "SM"), account_sid=account.sid, to=to, from_=from_, body=body, media_urls=media,
            direction="inbound", status="received", channel="mms" if media else "sms", date_created=now, date_updated=now, date_sent=now,
        )
        await self.messages.create(record)
        webhook = account.sms_webhook(to)
        if webhook is not None:
            self.spawn(self._run_message(MessageRun(account, record), webhook))
        return record

    async def _run_message(self, run: MessageRun, webhook: Webhook) -> None:
        fetched = await self.fetch(run, webhook.url, webhook.method, webhook.fallback_url, webhook.fallback_method, {})
        if fetched is not None:
            await self.executor.execute(run, fetched)

    async def rest_call(
        self, account: Account, *, to: str, from_: str, webhook: Webhook, timeout: int,
        status_callback: str | None, status_callback_method: str, status_callback_events: frozenset[str],
    ) -> CallRecord:
        """A call created over REST: ring ``to``; when answered, run ``webhook``'s instructions on it."""
        record = await self._new_call(account, from_, to, "outbound-api")
        run = CallRun(self, record, account, Leg(from_), status_callback=status_callback,
                      status_callback_method=status_callback_method, status_callback_events=status_callback_events)
        self.spawn(self._ring_then_run(run, webhook, timeout))
        return record

    async def _ring_then_run(self, run: CallRun, webhook: Webhook, timeout: int) -> None:
        self.route(run.sid, run)
        run.task = asyncio.current_task()
        try:
            await run.move(CallEvent.START)
            identity = run.record.to[len("client:"):] if run.record.to.startswith("client:") else run.account.identity_for_phone(run.record.to)
            if identity is None:
                await self.instructions_failed(run, 13227, "no voice provider can reach this number")
                return
            sessions = [s for s in await self.present_sessions(run.account.sid, identity) if ringable(s)]
            # The call itself is the one rung (no child call), so its own record moves.
            target = RingTarget(child=run.record, sessions=sessions, identity=identity)
            outcome = await Ringer(self, run).ring([target], timeout)
            run.record = (await self.calls.get(run.account.sid, run.sid)) or run.record
            if outcome.status is not CallStatus.IN_PROGRESS or outcome.callee is None:
                self.status_callback(run, CallStatus(run.record.status))
                return
            # The answered client is now the party the instructions talk to.
            run.caller = outcome.callee
            self.status_callback(run, CallStatus.IN_PROGRESS)
            fetched = await self.fetch(run, webhook.url, webhook.method, webhook.fallback_url, webhook.fallback_method, {})
            reason = "failed" if fetched is None else await self.executor.execute(run, fetched)
            await self._finish(run, reason)
        except asyncio.CancelledError:
            await self._finish_cancelled(run)
            raise
        finally:
            await self._end_run(run)

    # -- draining (a graceful stop) ------------------------------------------------------------

    async def _refuse_placed_call(self, msg: dict[str, Any], caller: Leg) -> None:
        """A client's call reached this node while it drains. A gateway that can
        re-offer it (``reoffer`` in its message) gets it back and offers it to
        another signaling node; an older one's client is told 10016 (temporary:
        placing the call again reaches another node, this one has left the registry)."""
        if msg.get("reoffer"):
            fields = {k: v for k, v in msg.items() if k not in ("from_node", "kind")}
            await self.mailbox.send(caller.node_id or "", "place_call_refused", **fields)
            return
        await self.deliver(caller.node_id or "", caller.session_id or "", m.Error(
            code=ErrorCode.ENGINE_UNAVAILABLE.code, message="this signaling node is shutting down; place the call again",
            id=msg.get("request_id"),
        ))

    async def drain(self, timeout: float) -> int:
        """A graceful stop: refuse new calls from now on, let the calls in
        progress go on for up to ``timeout`` seconds (returning as soon as the
        last one ends), then end those still running for both parties
        ('server_shutdown'), their records final through the state table.
        Returns how many calls the drain had to end."""
        self.draining = True
        self._idle.clear()
        if self._active:
            log.info("draining calls", calls=len(self._active), timeout=timeout)
            waiter = asyncio.ensure_future(self._idle.wait())
            sleep = asyncio.ensure_future(self.clock.sleep(timeout))
            try:
                await asyncio.wait({waiter, sleep}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                sleep.cancel()
        runs = [run for run in self._runs() if run.sid in self._active]
        if not runs:
            return 0
        log.warning("drain time over; ending the calls still in progress", calls=len(runs))
        for run in runs:
            run.stop()
        # Each run ends at its next wait (ringing, the bridge, a Pause, a fetch),
        # in a few store writes. One stuck elsewhere (a Message action waiting
        # for its delivery) is cancelled, and still finished (_finish_cancelled).
        tasks = {run.task for run in runs if run.task is not None and not run.task.done()}
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=DRAIN_STOP_WAIT)
            if late:
                # Cancelled once (not cancel_and_wait, which cancels again): each
                # catches it and finishes its call, which takes a few writes.
                log.warning("calls did not end when stopped; cancelling them", calls=len(late))
                for task in late:
                    task.cancel()
                await asyncio.wait(late, timeout=DRAIN_STOP_WAIT)
        return len(runs)

    async def close(self) -> None:
        await self._tasks.close()


# Seconds, in real time, that calls stopped by the drain get to end by
# themselves (a few store writes and frames each) before they are cancelled.
DRAIN_STOP_WAIT = 5.0


async def _unless_stopped(fetch: Coroutine[Any, Any, FetchedInstructions], stopping: asyncio.Event) -> FetchedInstructions | None:
    """``fetch``'s answer, or None once ``stopping`` is set first (the fetch is cancelled)."""
    if stopping.is_set():
        fetch.close()
        return None
    task = asyncio.ensure_future(fetch)
    stopped = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


def _verb_fields(verb: Verb) -> dict[str, Any]:
    """A verb's plain attributes, for a client leg that renders media itself."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(verb):
        value = getattr(verb, f.name)
        if isinstance(value, (str, int, float, bool)) or value is None:
            out[f.name] = value
    return out
