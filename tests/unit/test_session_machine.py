"""The sans-I/O server session: every rule without a socket or an event loop."""

from __future__ import annotations

import json

from protocol.errors import ErrorCode
from protocol.frames import JSON_CODEC, MSGPACK_CODEC
from protocol.messages import Ping, Register, SetPresence
from protocol.session import FrameAccepted, FrameRefused, ServerSession, SessionLimits, SessionState, TokenExpiring

LIMITS = SessionLimits(max_frame_bytes=1024, rate=10, burst=5, register_timeout=10, heartbeat=25, idle_timeout=60, token_warning=30)


def frame(**obj: object) -> str:
    return json.dumps(obj)


def registered(now: float = 0.0, expires: float = 1000.0) -> ServerSession:
    sess = ServerSession(JSON_CODEC, LIMITS, now)
    assert isinstance(sess.receive(frame(type="register", token="t"), now), FrameAccepted)
    sess.registered(expires)
    return sess


def test_only_register_or_bye_before_register_and_others_are_fatal() -> None:
    sess = ServerSession(JSON_CODEC, LIMITS, 0)
    result = sess.receive(frame(type="ping", id=1), 0)
    assert isinstance(result, FrameRefused) and result.error.error is ErrorCode.NOT_REGISTERED
    assert result.fatal and result.request_id == 1 and sess.state is SessionState.CLOSED


def test_register_then_requests() -> None:
    sess = registered()
    assert sess.state is SessionState.REGISTERED
    result = sess.receive(frame(type="ping", id="p"), 1)
    assert isinstance(result, FrameAccepted) and result.frame == Ping(id="p")
    result = sess.receive(frame(type="presence", status="busy"), 1)
    assert isinstance(result, FrameAccepted) and isinstance(result.frame, SetPresence)


def test_second_register_is_refused_but_not_fatal() -> None:
    sess = registered()
    result = sess.receive(frame(type="register", token="t", id=7), 1)
    assert isinstance(result, FrameRefused) and result.error.error is ErrorCode.ALREADY_REGISTERED
    assert not result.fatal and result.request_id == 7 and sess.state is SessionState.REGISTERED


def test_bad_frames_are_refused_and_the_session_goes_on() -> None:
    sess = registered()
    for now, (data, code) in enumerate([
        ("{not json", ErrorCode.FRAME_UNDECODABLE),
        ("[1]", ErrorCode.FRAME_NOT_OBJECT),
        (frame(kind="x"), ErrorCode.FRAME_MISSING_TYPE),
        (frame(type="dance", id="d"), ErrorCode.FRAME_UNKNOWN_TYPE),
        (frame(type="presence", priority="high"), ErrorCode.FRAME_INVALID_FIELD),
        (b"binary", ErrorCode.WRONG_FRAME_KIND),
    ]):
        result = sess.receive(data, float(now))
        assert isinstance(result, FrameRefused) and result.error.error is code, data
        assert not result.fatal
    assert sess.state is SessionState.REGISTERED


def test_oversized_frame_is_fatal() -> None:
    sess = registered()
    result = sess.receive(frame(type="ping", pad="x" * 2000), 1)
    assert isinstance(result, FrameRefused) and result.error.error is ErrorCode.FRAME_TOO_LARGE and result.fatal


def test_rate_limit_answers_then_closes_when_it_goes_on() -> None:
    sess = registered()
    outcomes = []
    for i in range(20):
        outcomes.append(sess.receive(frame(type="ping", id=i), 5.0))
        if sess.state is SessionState.CLOSED:
            break
    accepted = [o for o in outcomes if isinstance(o, FrameAccepted)]
    limited = [o for o in outcomes if isinstance(o, FrameRefused) and o.error.error is ErrorCode.RATE_LIMITED]
    closing = [o for o in outcomes if isinstance(o, FrameRefused) and o.error.error is ErrorCode.RATE_LIMIT_CLOSE]
    assert len(accepted) == 5 and len(limited) == 5 and len(closing) == 1 and closing[0].fatal
    assert limited[0].request_id == 5  # the refused request is named


def test_rate_limit_recovers_with_time() -> None:
    sess = registered()
    for i in range(7):
        sess.receive(frame(type="ping"), 1.0)
    assert isinstance(sess.receive(frame(type="ping"), 2.0), FrameAccepted)


def test_register_timeout() -> None:
    sess = ServerSession(MSGPACK_CODEC, LIMITS, 100.0)
    assert sess.deadline() == 110.0
    assert sess.tick(109.0) is None
    event = sess.tick(110.0)
    assert isinstance(event, FrameRefused) and event.error.error is ErrorCode.REGISTER_TIMEOUT and event.fatal


def test_idle_timeout_moves_with_frames() -> None:
    sess = registered(0, expires=10_000)
    sess.receive(frame(type="ping"), 50)
    assert sess.tick(100) is None
    assert sess.deadline() == 110
    event = sess.tick(110)
    assert isinstance(event, FrameRefused) and event.error.error is ErrorCode.IDLE_TIMEOUT


def test_token_warning_once_then_expiry() -> None:
    sess = registered(0, expires=100)
    assert sess.deadline() == 60  # idle at 60 comes first
    sess.receive(frame(type="ping"), 55)
    assert sess.deadline() == 70  # the warning, 30 s ahead of expiry
    event = sess.tick(70)
    assert isinstance(event, TokenExpiring) and event.seconds_left == 30
    assert sess.tick(71) is None  # warned once
    sess.receive(frame(type="ping"), 99)
    event = sess.tick(100)
    assert isinstance(event, FrameRefused) and event.error.error is ErrorCode.TOKEN_EXPIRED


def test_renewal_resets_the_warning() -> None:
    sess = registered(0, expires=100)
    sess.receive(frame(type="ping"), 55)
    assert isinstance(sess.tick(70), TokenExpiring)
    sess.token_renewed(1000)
    sess.receive(frame(type="ping"), 90)
    assert sess.tick(100) is None
    assert sess.deadline() == 150  # idle again, the warning is 970


def test_bye_closes() -> None:
    sess = registered()
    assert isinstance(sess.receive(frame(type="bye"), 1), FrameAccepted)
    assert sess.state is SessionState.CLOSED and sess.deadline() is None


def test_register_frame_round_trip_in_msgpack() -> None:
    sess = ServerSession(MSGPACK_CODEC, LIMITS, 0)
    result = sess.receive(MSGPACK_CODEC.encode({"type": "register", "token": "abc"}), 0)
    assert isinstance(result, FrameAccepted) and result.frame == Register(token="abc")


def test_garbage_counts_against_the_rate_limit() -> None:
    sess = registered()
    outcomes = []
    for _ in range(20):
        outcomes.append(sess.receive("{garbage", 5.0))
        if sess.state is SessionState.CLOSED:
            break
    codes = [o.error.error for o in outcomes if isinstance(o, FrameRefused)]
    assert codes[:5] == [ErrorCode.FRAME_UNDECODABLE] * 5
    assert codes[5:10] == [ErrorCode.RATE_LIMITED] * 5 and codes[-1] is ErrorCode.RATE_LIMIT_CLOSE


def test_out_of_state_frames_are_refused_on_their_type_alone() -> None:
    sess = ServerSession(JSON_CODEC, LIMITS, 0)
    result = sess.receive(frame(type="presence", status="not-a-status"), 0)
    assert isinstance(result, FrameRefused) and result.error.error is ErrorCode.NOT_REGISTERED and result.fatal
