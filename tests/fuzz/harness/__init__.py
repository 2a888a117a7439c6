"""Coverage-guided harnesses (atheris/libFuzzer), one per parser: ``fuzz_<parser>.py``.

The file names do not start with ``test_``, so pytest never collects them; they
run as ``python -m tests.fuzz.harness.fuzz_<parser>`` (``make fuzz`` runs them
all through ``tests/fuzz/run.py``). Each maps the fuzzer's bytes onto the same
target function - and so the same accept-or-refuse rule - as the Hypothesis
tests: ``tests/fuzz/targets.py`` and ``tests/fuzz/webhooks.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

# Our code, and nothing else, gets coverage instrumentation: libraries' branches
# (aiohttp, pydantic...) would drown the feedback in paths that are not ours.
INSTRUMENTED = ["protocol", "presence_server", "tests.fuzz"]


def instrumented() -> AbstractContextManager[Any]:
    import atheris

    return atheris.instrument_imports(include=INSTRUMENTED)


def quiet_logs() -> None:
    """The server's info lines, once per input, would cost more than the input itself."""
    from presence_server.logs import configure_logging

    configure_logging("json", "error")


def run(test_one_input: Callable[[bytes], None]) -> None:
    import atheris

    quiet_logs()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
