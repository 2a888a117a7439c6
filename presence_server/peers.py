"""Which of the nodes this one shares calls with have died.

A call runs on one signaling node and relays between sessions held by
gateway nodes. When one of those processes is killed, nothing it could have
said ("this call is over") is ever said: the other party would wait for the
call until someone hung up by hand. So each node, once per heartbeat, probes
the mailboxes of the nodes it shares calls with (a publish answers how many
processes listen at an address, and a killed process's subscription ends
with its connection), and ends the calls of a node that nobody has answered
for at least ``dead_after`` seconds.

Why a probe and not only the node registry: the registry lists a killed node
for three heartbeats, and an empty Redis restart empties it for everyone at
once. Why ``dead_after`` and at least two probes: right after a Redis
restart every process is re-subscribing (within half a second), and a single
unanswered probe then proves nothing. A probe that fails because Redis
itself is away gives no verdict either way.
"""

from __future__ import annotations

from typing import Iterable

from .clock import Clock
from .engines.ports import EngineUnavailable
from .mailbox import Mailbox

MIN_DEAD_AFTER = 2.0  # seconds; longer than a bus takes to subscribe again after a Redis restart


class PeerWatch:
    def __init__(self, mailbox: Mailbox, clock: Clock, dead_after: float) -> None:
        self.mailbox = mailbox
        self.clock = clock
        self.dead_after = max(dead_after, MIN_DEAD_AFTER)
        # node id -> (first unanswered probe, unanswered probes since)
        self._silent: dict[str, tuple[float, int]] = {}

    async def check(self, nodes: Iterable[str]) -> list[str]:
        """Probe each of ``nodes`` once; return those now judged dead (each once:
        a node judged dead is forgotten, as are nodes no longer asked about)."""
        wanted = set(nodes) - {self.mailbox.node_id}
        self._silent = {n: v for n, v in self._silent.items() if n in wanted}
        dead: list[str] = []
        for node in sorted(wanted):
            try:
                reached = await self.mailbox.probe(node)
            except EngineUnavailable:
                return dead  # Redis is away: no verdict on anyone this round
            if reached:
                self._silent.pop(node, None)
                continue
            now = self.clock.monotonic()
            since, count = self._silent.get(node, (now, 0))
            count += 1
            if count >= 2 and now - since >= self.dead_after:
                del self._silent[node]
                dead.append(node)
            else:
                self._silent[node] = (since, count)
        return dead
