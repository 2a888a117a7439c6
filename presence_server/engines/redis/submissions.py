"""The redis engine's carrier submissions.

A submission is a msgpack string at ``ps:sub:<n>:<provider>:<id>`` (global: a
delivery report names the provider and its id, not the account), and each
message lists its submissions' ids in the order added
(``ps:{AC}:subs:<message sid>``). The two are in different hash slots, so
``add`` lists the id first (once, however often it is retried) and then stores
the submission (``SET NX``): a crash between leaves a listed id with nothing
stored, which ``of_message`` skips and a retried ``add`` completes - never a
stored submission its message does not list. ``of_message`` returns only
submissions of that message. ``report`` is a compare-and-set loop, so
concurrent reports of one id are applied one after the other and each sees
the other's result.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
from redis.asyncio import Redis

from ..outbound import Submission
from .keys import KeySpace, as_text, submission_id
from .outbound_scripts import COMPARE_AND_SET, LIST_ONCE
from .scripts import Scripts, unavailable_on_redis_errors

REPORT_STATUSES = ("sent", "delivered", "undelivered", "failed")
FINAL = frozenset({"delivered", "undelivered", "failed"})
# Compare-and-set attempts before giving up (each lost one means another report
# of the same id was applied in between).
_CAS_ATTEMPTS = 50


def _encode(submission: Submission) -> bytes:
    packed: bytes = msgpack.packb(dataclasses.asdict(submission), use_bin_type=True)
    return packed


def _decode(raw: Any) -> Submission:
    return Submission(**msgpack.unpackb(raw, raw=False))


def apply_report(before: Submission, status: str, error_code: int | None, at: float) -> Submission:
    """The submission after a delivery report; ``before`` itself when the report
    changes nothing: a duplicate (the same status, and the same error code or none
    given), or 'sent' after a final status."""
    if status == before.status and (error_code is None or error_code == before.error_code):
        return before
    if status == "sent" and before.status in FINAL:
        return before
    return dataclasses.replace(before, status=status, error_code=error_code, reported_at=at)


class RedisSubmissionStore:
    def __init__(self, client: Redis, keys: KeySpace, scripts: Scripts) -> None:
        self._redis = client
        self._keys = keys
        self._scripts = scripts

    @unavailable_on_redis_errors
    async def add(self, submission: Submission) -> bool:
        key = self._keys.submission(submission.provider, submission.provider_message_id)
        listed = self._keys.submissions_of(submission.account_sid, submission.message_sid)
        sid = submission_id(submission.provider, submission.provider_message_id)
        encoded = _encode(submission)
        await self._scripts.call(LIST_ONCE, [listed], [sid])
        if await self._redis.set(key, encoded, nx=True):
            return True
        stored = await self._redis.get(key)
        if stored is not None:
            other = _decode(stored)
            if (other.account_sid, other.message_sid) != (submission.account_sid, submission.message_sid):
                # The id is another message's: this message must not list it.
                await self._redis.lrem(listed, 0, sid)
        return False

    @unavailable_on_redis_errors
    async def find(self, provider: str, provider_message_id: str) -> Submission | None:
        raw = await self._redis.get(self._keys.submission(provider, provider_message_id))
        return None if raw is None else _decode(raw)

    @unavailable_on_redis_errors
    async def report(
        self, provider: str, provider_message_id: str, status: str, error_code: int | None, at: float
    ) -> tuple[Submission, Submission] | None:
        if status not in REPORT_STATUSES:
            raise ValueError(f"a delivery report's status is one of {REPORT_STATUSES}, not {status!r}")
        key = self._keys.submission(provider, provider_message_id)
        for _ in range(_CAS_ATTEMPTS):
            raw = await self._redis.get(key)
            if raw is None:
                return None
            before = _decode(raw)
            after = apply_report(before, status, error_code, at)
            if after == before:
                return before, before
            if await self._scripts.call(COMPARE_AND_SET, [key], [raw, _encode(after)]):
                return before, after
        raise RuntimeError(f"submission {provider}:{provider_message_id}: too many concurrent reports")

    @unavailable_on_redis_errors
    async def of_message(self, account_sid: str, message_sid: str) -> list[Submission]:
        ids = await self._redis.lrange(self._keys.submissions_of(account_sid, message_sid), 0, -1)
        if not ids:
            return []
        # One GET each, pipelined: the submissions are in many hash slots (MGET needs one).
        prefix = self._keys.submission_prefix()
        pipe = self._redis.pipeline(transaction=False)
        for i in ids:
            pipe.get(prefix + as_text(i))
        found = [_decode(raw) for raw in await pipe.execute() if raw is not None]
        return [s for s in found if (s.account_sid, s.message_sid) == (account_sid, message_sid)]
