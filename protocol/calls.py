"""Calls: the statuses app developers know, and the one table of how they change.

Each call (and each child call a ``<Dial>`` creates) moves through these
statuses. Everything that changes a call's status goes through
:func:`next_status`, so an event that does not fit the call's state (an
``accept`` for a call already answered elsewhere, a second hangup) is found
in one place and refused there.
"""

from __future__ import annotations

import enum

from .errors import LocalProtocolError, ErrorCode


class CallStatus(str, enum.Enum):
    QUEUED = "queued"
    INITIATED = "initiated"
    RINGING = "ringing"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {CallStatus.COMPLETED, CallStatus.BUSY, CallStatus.NO_ANSWER, CallStatus.FAILED, CallStatus.CANCELED}
)


class CallEvent(str, enum.Enum):
    START = "start"  # the request was taken: instructions are being fetched or the callee rung
    RING = "ring"  # at least one device rings
    ANSWER = "answer"  # a device accepted
    REJECT = "reject"  # every rung device declined
    TIMEOUT = "timeout"  # nobody answered in time
    FAIL = "fail"  # could not be placed (nobody to ring, instructions failed, ...)
    CANCEL = "cancel"  # the caller gave up before an answer
    HANGUP = "hangup"  # either side ended an answered call


# The transition table. A (status, event) pair not listed is refused.
TRANSITIONS: dict[tuple[CallStatus, CallEvent], CallStatus] = {
    (CallStatus.QUEUED, CallEvent.START): CallStatus.INITIATED,
    (CallStatus.QUEUED, CallEvent.CANCEL): CallStatus.CANCELED,
    (CallStatus.QUEUED, CallEvent.FAIL): CallStatus.FAILED,
    (CallStatus.INITIATED, CallEvent.RING): CallStatus.RINGING,
    (CallStatus.INITIATED, CallEvent.ANSWER): CallStatus.IN_PROGRESS,
    (CallStatus.INITIATED, CallEvent.REJECT): CallStatus.BUSY,
    (CallStatus.INITIATED, CallEvent.TIMEOUT): CallStatus.NO_ANSWER,
    (CallStatus.INITIATED, CallEvent.FAIL): CallStatus.FAILED,
    (CallStatus.INITIATED, CallEvent.CANCEL): CallStatus.CANCELED,
    (CallStatus.INITIATED, CallEvent.HANGUP): CallStatus.COMPLETED,
    (CallStatus.RINGING, CallEvent.RING): CallStatus.RINGING,
    (CallStatus.RINGING, CallEvent.ANSWER): CallStatus.IN_PROGRESS,
    (CallStatus.RINGING, CallEvent.REJECT): CallStatus.BUSY,
    (CallStatus.RINGING, CallEvent.TIMEOUT): CallStatus.NO_ANSWER,
    (CallStatus.RINGING, CallEvent.FAIL): CallStatus.FAILED,
    (CallStatus.RINGING, CallEvent.CANCEL): CallStatus.CANCELED,
    (CallStatus.IN_PROGRESS, CallEvent.HANGUP): CallStatus.COMPLETED,
    (CallStatus.IN_PROGRESS, CallEvent.FAIL): CallStatus.COMPLETED,
}


def next_status(status: CallStatus, event: CallEvent) -> CallStatus | None:
    """The status after ``event``, or None when the event does not apply."""
    return TRANSITIONS.get((status, event))


def apply(status: CallStatus, event: CallEvent) -> CallStatus:
    """Like :func:`next_status`, for callers that have already checked: a
    misfit here is our bug, not the peer's."""
    new = TRANSITIONS.get((status, event))
    if new is None:
        raise LocalProtocolError(ErrorCode.INTERNAL, f"call event {event.value} does not apply to status {status.value}")
    return new


# DialCallStatus, as the Dial action URL is told.
DIAL_STATUS_OF: dict[CallStatus, str] = {
    CallStatus.COMPLETED: "completed",
    CallStatus.IN_PROGRESS: "answered",
    CallStatus.BUSY: "busy",
    CallStatus.NO_ANSWER: "no-answer",
    CallStatus.FAILED: "failed",
    CallStatus.CANCELED: "canceled",
}
