"""The fuzz suite's shared Hypothesis profile, and its count of inputs per parser.

Each test picks its own ``max_examples`` on top of the ``fuzz`` profile, so
that the whole directory stays within its 30-second budget on a small
machine; ``deadline=None`` because a single example may start an HTTP request.

With ``FUZZ_COUNTS=<path>`` set (``python -m tests.fuzz.run`` sets it), the
inputs each parser saw are written there as JSON when the session ends: the
"examples per parser per make test run" figure of docs/reliability.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.fuzz.targets import TRIED

settings.register_profile(
    "fuzz",
    deadline=None,
    # Near-valid inputs are built from large strategies on purpose; a slow or
    # big example is the point of fuzzing, not a health problem.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    print_blob=True,
)
FUZZ = settings.get_profile("fuzz")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    target = os.environ.get("FUZZ_COUNTS")
    if target and TRIED:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(json.dumps(dict(sorted(TRIED.items())), indent=2) + "\n")
