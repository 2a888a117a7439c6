from __future__ import annotations

import json

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.frames import JSON_CODEC, MSGPACK_CODEC, codec_for

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
frames = st.dictionaries(st.text(max_size=8), json_values, max_size=5).map(lambda d: {**d, "type": "x"})


@given(frames)
def test_json_round_trip(frame: dict) -> None:
    assert JSON_CODEC.decode(JSON_CODEC.encode(frame)) == frame


@given(frames)
def test_msgpack_round_trip(frame: dict) -> None:
    assert MSGPACK_CODEC.decode(MSGPACK_CODEC.encode(frame)) == frame


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_protocol_errors(data: bytes) -> None:
    for codec, payload in ((MSGPACK_CODEC, data), (JSON_CODEC, data.decode("latin-1"))):
        try:
            obj = codec.decode(payload)
        except RemoteProtocolError:
            continue
        assert isinstance(obj, dict) and isinstance(obj["type"], str)


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_arbitrary_text_only_raises_protocol_errors(data: str) -> None:
    try:
        JSON_CODEC.decode(data)
    except RemoteProtocolError:
        pass


def _code(codec, data) -> ErrorCode:  # type: ignore[no-untyped-def]
    with pytest.raises(RemoteProtocolError) as info:
        codec.decode(data, max_bytes=100)
    return info.value.error


def test_each_defect_has_its_code() -> None:
    assert _code(JSON_CODEC, "{nope") is ErrorCode.FRAME_UNDECODABLE
    assert _code(JSON_CODEC, "[1, 2]") is ErrorCode.FRAME_NOT_OBJECT
    assert _code(JSON_CODEC, '{"kind": "x"}') is ErrorCode.FRAME_MISSING_TYPE
    assert _code(JSON_CODEC, '{"type": 5}') is ErrorCode.FRAME_MISSING_TYPE
    assert _code(JSON_CODEC, json.dumps({"type": "x", "pad": "a" * 200})) is ErrorCode.FRAME_TOO_LARGE
    assert _code(JSON_CODEC, b'{"type": "x"}') is ErrorCode.WRONG_FRAME_KIND
    assert _code(MSGPACK_CODEC, '{"type": "x"}') is ErrorCode.WRONG_FRAME_KIND
    assert _code(MSGPACK_CODEC, b"\xc1") is ErrorCode.FRAME_UNDECODABLE
    assert _code(MSGPACK_CODEC, msgpack.packb({1: 2})) is ErrorCode.FRAME_UNDECODABLE  # non-string keys
    assert _code(JSON_CODEC, '{"type": "x", "n": NaN}') is ErrorCode.FRAME_UNDECODABLE
    assert _code(JSON_CODEC, "[" * 50 + "]" * 50) is ErrorCode.FRAME_NOT_OBJECT


def test_deep_nesting_is_refused_not_crashing() -> None:
    deep = '{"type": "x", "a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(RemoteProtocolError) as info:
        JSON_CODEC.decode(deep, max_bytes=1 << 20)
    assert info.value.error is ErrorCode.FRAME_UNDECODABLE


def test_size_counts_utf8_bytes() -> None:
    frame = json.dumps({"type": "x", "t": "é" * 40}, ensure_ascii=False)
    assert len(frame) < 100 < len(frame.encode())
    assert _code(JSON_CODEC, frame) is ErrorCode.FRAME_TOO_LARGE


def test_codec_lookup() -> None:
    assert codec_for("presence.v1.json") is JSON_CODEC
    assert codec_for("presence.v1.msgpack") is MSGPACK_CODEC
    assert codec_for(None) is None and codec_for("other") is None
