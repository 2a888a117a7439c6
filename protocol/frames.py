"""Frame codecs: the two WebSocket subprotocols and their size limit.

``presence.v1.json`` carries UTF-8 JSON in text frames, ``presence.v1.msgpack``
msgpack in binary frames; both carry the same objects. Decoding is where
outside bytes first meet the product, so every failure here becomes a
:class:`RemoteProtocolError` with a code, never another exception.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import msgpack

from .errors import ErrorCode, RemoteProtocolError

JSON_SUBPROTOCOL = "presence.v1.json"
MSGPACK_SUBPROTOCOL = "presence.v1.msgpack"
SUBPROTOCOLS = (JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL)
DEFAULT_MAX_FRAME_BYTES = 64 * 1024

_json_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _no_constant(name: str) -> Any:
    # JSON has no NaN or Infinity; Python's decoder accepts them unless told not to.
    raise ValueError(f"{name} is not JSON")


def _decode_json(data: str | bytes) -> Any:
    return json.loads(data, parse_constant=_no_constant)


def _encode_json(obj: Any) -> str:
    return _json_encoder.encode(obj)


def _decode_msgpack(data: str | bytes) -> Any:
    if isinstance(data, str):
        raise TypeError("text")
    # strict_map_key: only str/bytes map keys; raw=False: strings come out as str.
    return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)


def _encode_msgpack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


@dataclass(frozen=True)
class Codec:
    subprotocol: str
    binary: bool  # True: binary WebSocket frames; False: text frames
    encode: Callable[[Any], str | bytes]
    _decode: Callable[[str | bytes], Any]

    def decode(self, data: str | bytes, *, max_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> dict[str, Any]:
        """Decode one frame into an object with a string ``type``.

        Raises RemoteProtocolError for frames of the wrong kind, too large,
        undecodable, not an object, or without a type.
        """
        if isinstance(data, str) == self.binary:
            raise RemoteProtocolError(
                ErrorCode.WRONG_FRAME_KIND,
                f"{self.subprotocol} takes {'binary' if self.binary else 'text'} frames",
            )
        size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            raise RemoteProtocolError(ErrorCode.FRAME_TOO_LARGE, f"frame is {size} bytes; the limit is {max_bytes}")
        try:
            obj = self._decode(data)
        except RecursionError:
            raise RemoteProtocolError(ErrorCode.FRAME_UNDECODABLE, "frame is nested too deeply") from None
        except Exception as exc:  # json, msgpack and unicode errors of every kind
            raise RemoteProtocolError(ErrorCode.FRAME_UNDECODABLE, f"cannot decode frame: {type(exc).__name__}") from None
        if not isinstance(obj, dict):
            raise RemoteProtocolError(ErrorCode.FRAME_NOT_OBJECT, f"frame is a {_kind(obj)}, not an object")
        if not isinstance(obj.get("type"), str):
            raise RemoteProtocolError(ErrorCode.FRAME_MISSING_TYPE)
        return obj


def _kind(obj: object) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}.get(
        type(obj), type(obj).__name__
    )


JSON_CODEC = Codec(JSON_SUBPROTOCOL, False, _encode_json, _decode_json)
MSGPACK_CODEC = Codec(MSGPACK_SUBPROTOCOL, True, _encode_msgpack, _decode_msgpack)
CODECS = {JSON_SUBPROTOCOL: JSON_CODEC, MSGPACK_SUBPROTOCOL: MSGPACK_CODEC}


def codec_for(subprotocol: str | None) -> Codec | None:
    return CODECS.get(subprotocol or "")
