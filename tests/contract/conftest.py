"""The engine contract suite: every test here runs against every engine.

The redis engine joins the ``engine`` parameter list when it is built (see
the README's "not built yet"); until then the suite holds the embedded engine
to the contract that the redis engine will have to meet.
"""

from __future__ import annotations

from typing import AsyncIterator

import pytest

from presence_server.engines.memory import MemoryEngine
from presence_server.engines.ports import Engine


@pytest.fixture(params=["memory"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    eng: Engine = MemoryEngine()
    await eng.start()
    try:
        yield eng
    finally:
        await eng.close()
