from __future__ import annotations

import pytest

from protocol.calls import FINAL_STATUSES, TRANSITIONS, CallEvent, CallStatus, apply, next_status
from protocol.errors import LocalProtocolError


def test_happy_path() -> None:
    s = CallStatus.QUEUED
    for event in (CallEvent.START, CallEvent.RING, CallEvent.ANSWER, CallEvent.HANGUP):
        s = apply(s, event)
    assert s is CallStatus.COMPLETED and s.final


@pytest.mark.parametrize(
    ("event", "end"),
    [(CallEvent.REJECT, CallStatus.BUSY), (CallEvent.TIMEOUT, CallStatus.NO_ANSWER), (CallEvent.FAIL, CallStatus.FAILED), (CallEvent.CANCEL, CallStatus.CANCELED)],
)
def test_unanswered_endings(event: CallEvent, end: CallStatus) -> None:
    assert next_status(CallStatus.RINGING, event) is end


def test_final_statuses_take_no_event() -> None:
    for status in FINAL_STATUSES:
        for event in CallEvent:
            assert next_status(status, event) is None
    with pytest.raises(LocalProtocolError):
        apply(CallStatus.COMPLETED, CallEvent.ANSWER)


def test_answered_calls_cannot_be_answered_again_or_rejected() -> None:
    assert next_status(CallStatus.IN_PROGRESS, CallEvent.ANSWER) is None
    assert next_status(CallStatus.IN_PROGRESS, CallEvent.REJECT) is None


def test_every_target_is_a_status_and_every_path_ends() -> None:
    # From every status, some sequence of events reaches a final status.
    for status in CallStatus:
        seen, frontier = {status}, [status]
        while frontier:
            current = frontier.pop()
            for (src, _), dst in TRANSITIONS.items():
                if src is current and dst not in seen:
                    seen.add(dst)
                    frontier.append(dst)
        assert seen & FINAL_STATUSES, status
