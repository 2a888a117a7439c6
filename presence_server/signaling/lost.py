"""Finishing the records of calls whose signaling node died.

A killed signaling process cannot finish its calls' records, and nobody else
runs them: without this they would keep their last status (``ringing``,
``in-progress``) for ever. The gateways that end such a call for their
sessions (reason ``signaling_lost``, peers.py) know the call's sid; each
finishes the record it knows, and its parent call, through the state table
(the ``fail`` event: an answered call ``completed``, one not answered yet
``failed``), with ``end_time`` set.

Several gateways notice the same death (both parties', each of a callee's
devices'), so each move is a conditional update from the status read: of
all of them exactly one writes, and a record another process has finished
meanwhile is left alone.
"""

from __future__ import annotations

from typing import Iterable

import structlog

from protocol.calls import CallEvent, CallStatus, next_status

from ..clock import Clock
from ..engines.calls import CallStore

log = structlog.get_logger(__name__)

LOST_MESSAGE = "the signaling process running the call stopped answering"
_RETRIES = 3  # re-reads when another process changed the call between our read and write


async def finish_lost_call(calls: CallStore, clock: Clock, account_sid: str, sid: str) -> tuple[bool, str | None]:
    """Finish one call's record if it is not final yet. Returns whether this
    process finished it, and the call's parent sid (if any)."""
    for _ in range(_RETRIES):
        record = await calls.get(account_sid, sid)
        if record is None:
            return False, None
        status = CallStatus(record.status)
        new = next_status(status, CallEvent.FAIL)
        if status.final or new is None:
            return False, record.parent_call_sid
        now = clock.time()
        changes: dict[str, object] = {"status": new.value, "date_updated": now, "end_time": now}
        if new is CallStatus.FAILED and record.error_message is None:
            changes["error_message"] = LOST_MESSAGE
        if await calls.update_if(account_sid, sid, record.status, **changes) is not None:
            return True, record.parent_call_sid
    return False, None


async def finish_lost_calls(calls: CallStore, clock: Clock, lost: Iterable[tuple[str, str]]) -> int:
    """Finish the records of ``lost`` calls (account, sid) and of their parent
    calls; returns how many this process finished."""
    finished = 0
    seen: set[str] = set()
    todo = list(lost)
    while todo:
        account_sid, sid = todo.pop()
        if sid in seen:
            continue
        seen.add(sid)
        done, parent = await finish_lost_call(calls, clock, account_sid, sid)
        finished += done
        if parent is not None and parent not in seen:
            # A callee's gateway may be the only one that knows the call: its
            # caller is a carrier, or on a gateway that died too.
            todo.append((account_sid, parent))
    return finished
