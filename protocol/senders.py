"""Choosing the From of a message from a messaging service's sender pool.

A pool holds phone numbers (E.164) and alphanumeric sender IDs ("ACME").
The choice, for a given To:

1. a *sticky* sender (the one this conversation already used) if it is still
   in the pool, so the recipient sees one number per conversation;
2. never an alphanumeric sender towards +1 (US, Canada and the rest of the
   NANP), where carriers drop them, unless the pool has nothing else;
3. with *geomatch*, a local number first: same area code (NANP), then the
   same country, since local numbers are answered more and filtered less;
4. among the candidates left, one picked by hashing the To, so the same To
   keeps getting the same sender without anything stored, and different Tos
   spread evenly over the pool.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Final

from .routing import country_of

_ALPHANUMERIC = re.compile(r"[A-Za-z0-9 ]{1,11}")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_NANP: Final = "+1"


def is_alphanumeric_sender(value: str) -> bool:
    """1 to 11 ASCII letters, digits and spaces, at least one a letter (GSM 03.40 TP-OA)."""
    return _ALPHANUMERIC.fullmatch(value) is not None and any(ch.isalpha() for ch in value)


def pick_sender(pool: Sequence[str], to: str, *, sticky: str | None = None, geomatch: bool = True) -> str:
    """The sender to use from ``pool`` for a message to ``to`` (ValueError if the pool is empty)."""
    if not pool:
        raise ValueError("the sender pool is empty")
    if sticky is not None and sticky in pool:
        return sticky

    candidates = list(pool)
    if to.startswith(_NANP):
        numbers = [sender for sender in candidates if not is_alphanumeric_sender(sender)]
        candidates = numbers or candidates

    if geomatch and _E164.fullmatch(to):
        candidates = _most_local(candidates, to)
    return _by_hash(candidates, to)


def _most_local(candidates: list[str], to: str) -> list[str]:
    if to.startswith(_NANP):
        # The area code, not the country: phonenumbers has no region for
        # numbers it cannot place (the fictional 555-01xx), while the area
        # code of any +1 number is its next three digits.
        area = to[:5]
        same_area = [s for s in candidates if s.startswith(area) and _E164.fullmatch(s)]
        if same_area:
            return same_area
    country = country_of(to)
    if country is not None:
        same_country = [s for s in candidates if country_of(s) == country]
        if same_country:
            return same_country
    return candidates


def _by_hash(candidates: list[str], to: str) -> str:
    # Rendezvous hashing: each sender gets a score from (To, sender) and the
    # highest wins. Unlike "hash(To) mod len(pool)", adding or removing a
    # sender moves only the Tos that go to that sender, and the pool's order
    # does not matter. crc32 is linear, so two senders' crc32s differ by a
    # constant for every To; the murmur3 finaliser breaks that, or the
    # comparison would favour some senders over others.
    to_hash = zlib.crc32(to.encode())
    return max(candidates, key=lambda sender: (_fmix32(to_hash ^ zlib.crc32(sender.encode())), sender))


def _fmix32(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)
