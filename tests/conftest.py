from __future__ import annotations

from typing import AsyncIterator

import pytest

from tests.helpers.servers import RunningServer, start_server


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    """A real server on a free port (every role, embedded engine, manual clock),
    with two accounts; the first has identity alice with a phone."""
    running = await start_server()
    try:
        yield running
    finally:
        await running.node.stop()
