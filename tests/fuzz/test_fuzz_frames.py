"""Wire frames, both encodings, through the session the gateway runs (tests/fuzz/targets.py)."""

from __future__ import annotations

import json
from typing import Any

import msgpack
from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocol.frames import JSON_CODEC, MSGPACK_CODEC, Codec
from protocol.messages import SERVER_FRAMES, Error, PresenceUpdate, Registered
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.session import SessionState
from tests.fuzz.targets import CALL, MESSAGE, SESSION, VALID_FRAMES, Refused, feed_frame, new_session



def examples(n: int) -> settings:
    """The suite's ``fuzz`` profile (conftest.py) with this test's share of the time budget."""
    return settings(settings.get_profile("fuzz"), max_examples=n)

CODECS = st.sampled_from([JSON_CODEC, MSGPACK_CODEC])
scalars = (
    st.none() | st.booleans() | st.integers() | st.integers(-(2**64), 2**64) | st.floats()
    | st.text(max_size=40) | st.sampled_from(["", "available", "busy", "client:", "+1", CALL, MESSAGE, SESSION, "*"])
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=8)
FIELDS = sorted({k for f in VALID_FRAMES for k in f} | {"from", "sdp"})


@st.composite
def near_valid_frames(draw: st.DrawFn) -> dict[str, Any]:
    """A valid frame with some fields dropped, retyped or added."""
    frame = dict(draw(st.sampled_from(VALID_FRAMES)))
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["drop", "set", "add"]))
        if action == "drop" and frame:
            frame.pop(draw(st.sampled_from(sorted(frame))))
        elif action == "set":
            frame[draw(st.sampled_from(FIELDS))] = draw(values)
        else:
            frame[draw(st.text(max_size=10))] = draw(values)
    return frame


def encode_like_a_peer(codec: Codec, obj: Any) -> str | bytes:
    """What a (possibly sloppy) client library would put on the wire."""
    if codec is JSON_CODEC:
        return json.dumps(obj)  # NaN and Infinity included, as Python writes them
    return msgpack.packb(obj, use_bin_type=True)


def msgpack_able(obj: Any) -> bool:
    try:
        msgpack.packb(obj, use_bin_type=True)
    except (OverflowError, TypeError, ValueError):
        return False
    return True


@examples(300)
@given(CODECS, near_valid_frames())
def test_near_valid_frames_are_accepted_or_refused_with_a_code(codec: Codec, frame: dict[str, Any]) -> None:
    if codec is MSGPACK_CODEC and not msgpack_able(frame):
        frame = {k: v for k, v in frame.items() if msgpack_able(v)}
    # A register frame is read before registration; every other type after it.
    session = new_session(codec, registered=frame.get("type") != "register")
    outcome = feed_frame(session, encode_like_a_peer(codec, frame))
    if frame in VALID_FRAMES:
        assert outcome == "accepted"


@examples(300)
@given(CODECS, st.binary(max_size=300) | st.text(max_size=300))
@example(JSON_CODEC, "[" * 100_000)  # deeper than the JSON decoder's recursion limit
@example(JSON_CODEC, '{"type": "ping", "id": ' + "9" * 5000 + "}")  # over int()'s 4300-digit limit
@example(MSGPACK_CODEC, b"\x91" * 100_000)
@example(JSON_CODEC, b'{"type":"ping"}')  # a binary frame on the text subprotocol
@example(MSGPACK_CODEC, '{"type":"ping"}')
@example(JSON_CODEC, '{"type": "ping", "id": NaN}')
@example(MSGPACK_CODEC, b"\x82\xa4type\xa4ping\x01\x02")  # an integer map key
def test_raw_frames_are_accepted_or_refused_with_a_code(codec: Codec, data: str | bytes) -> None:
    feed_frame(new_session(codec), data)


@examples(80)
@given(CODECS, st.lists(near_valid_frames(), min_size=1, max_size=6))
def test_frame_sequences_from_the_first_frame_on(codec: Codec, frames: list[dict[str, Any]]) -> None:
    # Unregistered at first: the state rules (register first, once) are fuzzed as well.
    session = new_session(codec, registered=False)
    for frame in frames:
        if session.state is SessionState.CLOSED:  # the gateway closes the socket here
            break
        if codec is MSGPACK_CODEC and not msgpack_able(frame):
            continue
        outcome = feed_frame(session, encode_like_a_peer(codec, frame))
        if isinstance(outcome, Refused) and outcome.code == ErrorCode.NOT_REGISTERED.code:
            assert session.state is SessionState.CLOSED  # fatal: the close code says why


def test_oversized_frame_is_refused_before_it_is_decoded() -> None:
    for codec in (JSON_CODEC, MSGPACK_CODEC):
        session = new_session(codec)
        big = {"type": "ping", "pad": "x" * (session.limits.max_frame_bytes + 1)}
        outcome = feed_frame(session, encode_like_a_peer(codec, big))
        assert isinstance(outcome, Refused) and outcome.code == ErrorCode.FRAME_TOO_LARGE.code


# -- round trips: what we encode, we (and the SDKs) decode to the same object -------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=15,
)


@examples(120)
@given(CODECS, st.dictionaries(st.text(max_size=8), json_values, max_size=6), st.text(min_size=1, max_size=16))
def test_encode_then_decode_round_trips(codec: Codec, obj: dict[str, Any], frame_type: str) -> None:
    obj = {**obj, "type": frame_type}
    assert codec.decode(codec.encode(obj), max_bytes=10**7) == obj


server_frames = st.one_of(
    st.builds(Error.of, st.sampled_from(list(ErrorCode)).map(RemoteProtocolError), st.none() | st.integers(0, 2**31) | st.text(max_size=64)),
    st.builds(PresenceUpdate, identity=st.text(max_size=20), status=st.text(max_size=10), text=st.text(max_size=40),
              last_seen=st.none() | st.floats(0, 2e9), sessions=st.lists(st.dictionaries(st.text(max_size=5), json_values, max_size=3), max_size=3),
              version=st.integers(0, 2**53)),
    st.builds(Registered, session=st.just(SESSION), identity=st.text(max_size=20), heartbeat=st.floats(0, 100), resumed=st.booleans()),
    st.sampled_from(SERVER_FRAMES).map(lambda cls: cls()),
)


@examples(100)
@given(CODECS, server_frames)
def test_server_frames_round_trip_through_both_codecs(codec: Codec, frame: Any) -> None:
    wire = frame.to_wire()
    assert codec.decode(codec.encode(wire), max_bytes=10**7) == wire
