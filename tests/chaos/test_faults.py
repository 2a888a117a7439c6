"""The fault suite in its bounded form (``CHAOS_ROUNDS`` rounds, default 1):
every fault once, each followed by its invariants (scenario.py); at the end,
nothing accepted was lost or duplicated. Never writes the docs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.redis_server import redis_available

from .report import render
from .scenario import FAULTS, Scenario


async def test_every_fault_keeps_sessions_presence_calls_and_messages_right(tmp_path: Path) -> None:
    if not redis_available():
        pytest.fail("redis-server is not installed (make test installs it from Debian's packages)")
    rounds = int(os.environ.get("CHAOS_ROUNDS", "1"))
    scenario = Scenario(tmp_path, rounds)
    try:
        await scenario.start()
        figures = await scenario.run()
    except BaseException:
        if scenario.cluster is not None:
            print(scenario.cluster.logs(40))
        raise
    finally:
        await scenario.close()
    print(render(figures, f"CHAOS_ROUNDS={rounds} pytest tests/chaos", "this run"))
    assert dict(figures.faults) == {kind: rounds for kind in FAULTS}
    assert figures.accepted > 0 and figures.delivered == figures.accepted
    assert figures.lost == 0 and figures.duplicated == 0
    # Every call in flight at a fault was followed to its end.
    assert len([c for c in figures.calls if c[0] not in ("instructions_hang", "carrier_failing")]) == 3 * (len(FAULTS) - 2) * rounds
