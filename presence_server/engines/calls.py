"""The call store port: call records, Twilio-compatible when rendered."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from email.utils import format_datetime
from datetime import datetime, timezone
from typing import Any, Protocol

API_VERSION = "2010-04-01"


def rfc2822(ts: float | None) -> str | None:
    if ts is None:
        return None
    return format_datetime(datetime.fromtimestamp(ts, tz=timezone.utc))


@dataclass(frozen=True)
class CallRecord:
    sid: str
    account_sid: str
    from_: str
    to: str
    status: str = "queued"
    direction: str = "inbound"  # inbound | outbound-api | outbound-dial
    parent_call_sid: str | None = None
    start_time: float | None = None  # when answered
    end_time: float | None = None
    answered_by_session: str | None = None
    error_code: int | None = None
    error_message: str | None = None
    date_created: float = 0.0
    date_updated: float = 0.0

    @property
    def duration(self) -> int | None:
        if self.start_time is None or self.end_time is None:
            return None
        return int(round(self.end_time - self.start_time))

    def to_api(self) -> dict[str, Any]:
        duration = self.duration
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "parent_call_sid": self.parent_call_sid,
            "from": self.from_,
            "to": self.to,
            "status": self.status,
            "direction": self.direction,
            "start_time": rfc2822(self.start_time),
            "end_time": rfc2822(self.end_time),
            "duration": None if duration is None else str(duration),
            "date_created": rfc2822(self.date_created),
            "date_updated": rfc2822(self.date_updated),
            "api_version": API_VERSION,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{self.sid}.json",
        }

    def replace(self, **changes: Any) -> CallRecord:
        return dataclasses.replace(self, **changes)


class CallStore(Protocol):
    async def create(self, record: CallRecord) -> None:
        """Store a new call (its sid must be new: ValueError otherwise)."""

    async def update(self, account_sid: str, sid: str, **changes: Any) -> CallRecord | None:
        """Change fields of a call of this account (None: no such call)."""

    async def update_if(self, account_sid: str, sid: str, expected_status: str, **changes: Any) -> CallRecord | None:
        """Like update, but only while the call's status is ``expected_status``,
        checked and written in one step: of several processes moving the same
        call from one status, exactly one does (None: not applied, or no such call)."""

    async def get(self, account_sid: str, sid: str) -> CallRecord | None:
        """A call of this account; another account's sid is None, as unknown."""

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
        """Newest first."""
