"""Argument checks for the public API.

Wrong types raise TypeError, wrong values ValueError, each naming the
argument; the limits come from ``protocol`` so the SDK refuses exactly what
the server would, before a frame is sent.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit

from protocol.addresses import identity_problem
from protocol.messages import MAX_CALL_PARAMS, MAX_TOKEN_LENGTH, destination_problem
from protocol.presence import MAX_CAPABILITIES, MAX_TEXT_LENGTH, PRIORITY_RANGE, SETTABLE_STATUSES, Status, is_capability

ENCODINGS = ("json", "msgpack")
_SETTABLE = ", ".join(sorted(s.value for s in SETTABLE_STATUSES))


def url(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"url must be a string, not {type(value).__name__}")
    parts = urlsplit(value)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"url must be a ws:// or wss:// URL such as ws://127.0.0.1:8080/v1/connect, not {value!r}")
    return value


def encoding(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"encoding must be a string, not {type(value).__name__}")
    if value not in ENCODINGS:
        raise ValueError(f"encoding must be 'json' or 'msgpack', not {value!r}")
    return value


def token(value: object) -> str:
    """A token string (from the constructor or returned by the token callable)."""
    if not isinstance(value, str):
        raise TypeError(f"token must be a string, not {type(value).__name__}")
    if not value:
        raise ValueError("token is empty")
    if len(value) > MAX_TOKEN_LENGTH:
        raise ValueError(f"token is longer than {MAX_TOKEN_LENGTH} characters")
    return value


def status(value: object) -> str:
    if isinstance(value, Status):
        value = value.value
    if not isinstance(value, str):
        raise TypeError(f"status must be a string or a Status, not {type(value).__name__}")
    if value not in {s.value for s in SETTABLE_STATUSES}:
        raise ValueError(f"status must be one of {_SETTABLE} (offline is what an absent identity is), not {value!r}")
    return value


def text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"text must be a string, not {type(value).__name__}")
    if len(value) > MAX_TEXT_LENGTH:
        raise ValueError(f"text is longer than {MAX_TEXT_LENGTH} characters")
    return value


def priority(value: object) -> int:
    lo, hi = PRIORITY_RANGE
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"priority must be an integer, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"priority must be from {lo} to {hi}, not {value}")
    return value


def capabilities(value: object) -> tuple[str, ...]:
    # A bare string is iterable too; taking "voice" as v, o, i, c, e is never meant.
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"capabilities must be a list or tuple of names, not {type(value).__name__}")
    items = list(value)
    for item in items:
        if not is_capability(item):
            raise ValueError(
                f"capability {item!r} is not a name of 1-32 lowercase letters, digits, _ or -, starting with a letter"
            )
    unique = tuple(dict.fromkeys(items))
    if len(unique) > MAX_CAPABILITIES:
        raise ValueError(f"at most {MAX_CAPABILITIES} capabilities")
    return unique


def identities(values: tuple[Any, ...], *, what: str) -> tuple[str, ...]:
    if not values:
        raise ValueError(f"{what}() needs at least one identity")
    for value in values:
        if isinstance(value, (list, tuple, set, frozenset)):
            raise TypeError(f"{what}() takes identities as separate arguments: {what}(*identities)")
        problem = identity_problem(value)
        if problem:
            raise (TypeError if not isinstance(value, str) else ValueError)(f"{value!r}: {problem}")
    return tuple(dict.fromkeys(values))


def seconds(name: str, value: object, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'} seconds, not {value}")
    return float(value)


# The server's limits on a call frame's fields (protocol.messages.PlaceCall).
MAX_DESTINATION_LENGTH = 128
MAX_PARAM_NAME = 64
MAX_PARAM_VALUE = 1024


def destination(value: object) -> str:
    """A call's ``to``: ``client:<identity>``, a bare identity, or an E.164 number."""
    if not isinstance(value, str):
        raise TypeError(f"to must be a string ('client:bob', 'bob' or '+15551230001'), not {type(value).__name__}")
    if len(value) > MAX_DESTINATION_LENGTH:
        raise ValueError(f"to is longer than {MAX_DESTINATION_LENGTH} characters")
    problem = destination_problem(value)
    if problem:
        raise ValueError(f"to {value!r} is not 'client:<identity>', an identity or an E.164 number: {problem}")
    return value


def call_params(value: object) -> dict[str, str]:
    """Custom parameters of a call (sent to the instruction URL with the
    well-known ones): at most 20 string values."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"params must be a mapping of names to strings, not {type(value).__name__}")
    if len(value) > MAX_CALL_PARAMS:
        raise ValueError(f"params holds {len(value)} entries; at most {MAX_CALL_PARAMS}")
    out: dict[str, str] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not 0 < len(name) <= MAX_PARAM_NAME:
            raise ValueError(f"params name {name!r} must be a string of 1 to {MAX_PARAM_NAME} characters")
        if not isinstance(item, str):
            raise TypeError(f"params[{name!r}] must be a string, not {type(item).__name__}")
        if len(item) > MAX_PARAM_VALUE:
            raise ValueError(f"params[{name!r}] is longer than {MAX_PARAM_VALUE} characters")
        out[name] = item
    return out


def signal_payload(value: object) -> dict[str, Any]:
    """A signal payload: an object (dict with string keys) the codec can encode."""
    if not isinstance(value, Mapping):
        raise TypeError(f"payload must be a dict (e.g. {{'type': 'offer', 'sdp': ...}}), not {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise TypeError(f"payload keys must be strings, not {type(key).__name__}")
    return dict(value)


def max_pending(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("max_pending must be a positive integer")
    return value


def callback(name: str, value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable (a function or coroutine function), not {type(value).__name__}")
