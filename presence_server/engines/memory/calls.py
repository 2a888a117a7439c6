"""The embedded engine's call records: in memory, the oldest finished ones
forgotten past a bound (calls are short-lived; message records are the ones
kept on disk)."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

from ..calls import CallRecord

FINAL = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})


class MemoryCallStore:
    def __init__(self, keep: int = 10_000) -> None:
        self._calls: collections.OrderedDict[str, CallRecord] = collections.OrderedDict()
        self._keep = keep

    async def create(self, record: CallRecord) -> None:
        if record.sid in self._calls:
            raise ValueError(f"call {record.sid} exists")
        self._calls[record.sid] = record
        if len(self._calls) > self._keep:
            # The oldest finished call: a lazy scan from the oldest end stops at
            # once in practice (calls finish roughly in creation order); copying
            # the whole store here cost most of the CPU at 400 calls/s.
            oldest_final = next((sid for sid, call in self._calls.items() if call.status in FINAL), None)
            if oldest_final is not None:
                del self._calls[oldest_final]

    async def update(self, account_sid: str, sid: str, **changes: Any) -> CallRecord | None:
        current = await self.get(account_sid, sid)
        if current is None:
            return None
        updated = dataclasses.replace(current, **changes)
        self._calls[sid] = updated
        return updated

    async def update_if(self, account_sid: str, sid: str, expected_status: str, **changes: Any) -> CallRecord | None:
        # No await between the check and the write: atomic on one event loop.
        current = self._calls.get(sid)
        if current is None or current.account_sid != account_sid or current.status != expected_status:
            return None
        updated = dataclasses.replace(current, **changes)
        self._calls[sid] = updated
        return updated

    async def get(self, account_sid: str, sid: str) -> CallRecord | None:
        call = self._calls.get(sid)
        return call if call is not None and call.account_sid == account_sid else None

    async def list(
        self,
        account_sid: str,
        *,
        status: str | None = None,
        to: str | None = None,
        from_: str | None = None,
        parent_call_sid: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[CallRecord]:
        out = [
            c
            for c in reversed(self._calls.values())
            if c.account_sid == account_sid
            and (status is None or c.status == status)
            and (to is None or c.to == to)
            and (from_ is None or c.from_ == from_)
            and (parent_call_sid is None or c.parent_call_sid == parent_call_sid)
        ]
        return out[offset : offset + limit]
