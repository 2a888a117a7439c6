from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import messages as m
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.presence import Status


def refused(obj: dict[str, Any]) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        m.parse_client_frame(obj)
    return info.value


def test_register_parses_every_field() -> None:
    frame = m.parse_client_frame(
        {
            "type": "register",
            "token": "t",
            "status": "away",
            "text": "lunch",
            "priority": 5,
            "capabilities": ["voice", "voice", "video"],
            "resume": "SE" + "a" * 32,
            "id": "r1",
            "future_field": True,
        }
    )
    assert frame == m.Register(
        id="r1", token="t", status=Status.AWAY, text="lunch", priority=5, capabilities=("voice", "video"), resume="SE" + "a" * 32
    )


@pytest.mark.parametrize(
    ("obj", "code", "names"),
    [
        ({"type": "register"}, ErrorCode.FRAME_INVALID_FIELD, "token"),
        ({"type": "register", "token": 5}, ErrorCode.FRAME_INVALID_FIELD, "token"),
        ({"type": "register", "token": "x" * 9000}, ErrorCode.FRAME_INVALID_FIELD, "token"),
        ({"type": "register", "token": "t", "resume": "nope"}, ErrorCode.FRAME_INVALID_FIELD, "resume"),
        ({"type": "register", "token": "t", "status": "offline"}, ErrorCode.STATUS_INVALID, "offline"),
        ({"type": "presence", "status": "sleeping"}, ErrorCode.STATUS_INVALID, "sleeping"),
        ({"type": "presence"}, ErrorCode.FRAME_INVALID_FIELD, "status"),
        ({"type": "presence", "priority": 500}, ErrorCode.FRAME_INVALID_FIELD, "priority"),
        ({"type": "presence", "priority": True}, ErrorCode.FRAME_INVALID_FIELD, "priority"),
        ({"type": "presence", "text": "x" * 257}, ErrorCode.FRAME_INVALID_FIELD, "text"),
        ({"type": "presence", "capabilities": ["Voice"]}, ErrorCode.FRAME_INVALID_FIELD, "capabilities"),
        ({"type": "presence", "capabilities": "voice"}, ErrorCode.FRAME_INVALID_FIELD, "capabilities"),
        ({"type": "subscribe"}, ErrorCode.FRAME_INVALID_FIELD, "identities"),
        ({"type": "subscribe", "identities": []}, ErrorCode.FRAME_INVALID_FIELD, "identities"),
        ({"type": "subscribe", "identities": ["a"] * 101}, ErrorCode.FRAME_INVALID_FIELD, "100"),
        ({"type": "subscribe", "identities": ["bad name"]}, ErrorCode.IDENTITY_INVALID, "bad name"),
        ({"type": "subscribe", "identities": ["client:bob"]}, ErrorCode.IDENTITY_INVALID, "client:"),
        ({"type": "ping", "id": {"a": 1}}, ErrorCode.FRAME_INVALID_FIELD, "id"),
        ({"type": "ping", "id": "x" * 65}, ErrorCode.FRAME_INVALID_FIELD, "id"),
        ({"type": "ping", "id": 2**64}, ErrorCode.FRAME_INVALID_FIELD, "id"),
        ({"type": "update_token"}, ErrorCode.FRAME_INVALID_FIELD, "token"),
        ({"type": "dance"}, ErrorCode.FRAME_UNKNOWN_TYPE, "dance"),
    ],
)
def test_bad_fields_are_named(obj: dict[str, Any], code: ErrorCode, names: str) -> None:
    exc = refused(obj)
    assert exc.error is code
    assert names in exc.message


@given(st.dictionaries(st.sampled_from(["token", "status", "text", "priority", "capabilities", "resume", "id", "identities"]),
                       st.none() | st.booleans() | st.integers() | st.text(max_size=10) | st.lists(st.text(max_size=5), max_size=3)),
       st.sampled_from(sorted(m.CLIENT_FRAMES)))
def test_parsing_only_raises_protocol_errors(fields: dict[str, Any], frame_type: str) -> None:
    try:
        frame = m.parse_client_frame({**fields, "type": frame_type})
    except RemoteProtocolError:
        return
    assert frame.TYPE == frame_type


def test_server_frames_drop_none_but_presence_keeps_last_seen() -> None:
    assert m.Ok().to_wire() == {"type": "ok"}
    assert m.Error(code=1, message="x").to_wire() == {"type": "error", "code": 1, "message": "x", "fatal": False}
    update = m.PresenceUpdate(identity="a", status="offline").to_wire()
    assert update["last_seen"] is None and update["type"] == "presence_update"
