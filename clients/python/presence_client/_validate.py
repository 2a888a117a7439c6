"""Argument checks for the public API.

Wrong types raise TypeError, wrong values ValueError, each naming the
argument; the limits come from ``protocol`` so the SDK refuses exactly what
the server would, before a frame is sent.
"""

from __future__ import annotations

import math
from typing import Any, Iterable
from urllib.parse import urlsplit

from protocol.addresses import identity_problem
from protocol.messages import MAX_TOKEN_LENGTH
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
