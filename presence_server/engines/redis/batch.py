"""The arguments of the ``create_batch`` script (queue_scripts.py): one account's
message records, their send jobs and their broadcast, stored in one atomic step.

One script (rather than MULTI/EXEC) because the existence checks and the writes
must be one step: a record, job or broadcast already stored refuses the whole
batch before anything is written. Every key it names is the account's (one
hash slot); the global keys - sid claims, the carrier-id index, the queue's
ready index - are written by messages.py around it (docs/redis.md, "Redis Cluster").
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from ..outbound import BroadcastRecord, SendJob
from ..ports import MessageRecord
from .calls import encode_fields
from .keys import BROADCAST, MESSAGE, KeySpace


_MESSAGE_FIELDS = [f.name for f in dataclasses.fields(MessageRecord)]


def number(value: float) -> str:
    """A time or amount as Redis (and Lua's tonumber) should read it: exactly."""
    return repr(float(value))


def batch_arguments(
    keys: KeySpace,
    account: str,
    records: Sequence[MessageRecord],
    jobs: Sequence[SendJob],
    broadcast: BroadcastRecord | None,
) -> tuple[list[str], list[Any]]:
    """(KEYS, ARGV) of CREATE_BATCH for one account's batch. Encodes every field
    first, so that a value that cannot be stored fails here, before anything is sent."""
    names: list[str] = [keys.queue_order(account), keys.queue_depth(account)]
    args: list[Any] = [len(records), len(jobs), "1" if broadcast is not None else "0"]
    for record in records:
        # Not dataclasses.asdict: its deep copy is most of the encoding time of a large batch.
        fields = encode_fields({name: getattr(record, name) for name in _MESSAGE_FIELDS})
        names += [
            keys.record(account, MESSAGE, record.sid),
            keys.record_index(account, MESSAGE),
            keys.record_seq(account, MESSAGE),
        ]
        flags = ""
        if record.broadcast_sid is not None:
            flags += "b"
            names.append(keys.broadcast_messages(account, record.broadcast_sid))
        if record.messaging_service_sid is not None:
            flags += "s"
            names.append(keys.last_sender(account, record.messaging_service_sid))
        args += [record.sid, number(record.date_created), flags, record.to, record.from_, len(fields) // 2, *fields]
    for job in jobs:
        names += [keys.queue_job(account, job.message_sid), keys.queue_due(account, job.priority)]
        args += [job.message_sid, job.priority, number(job.due_at), job.sender, job.attempt]
    if broadcast is not None:
        fields = encode_fields(dataclasses.asdict(broadcast))
        names += [
            keys.record(account, BROADCAST, broadcast.sid),
            keys.record_index(account, BROADCAST),
            keys.record_seq(account, BROADCAST),
        ]
        args += [broadcast.sid, number(broadcast.date_created), len(fields) // 2, *fields]
    return names, args
