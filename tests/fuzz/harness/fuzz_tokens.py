"""atheris harness: tokens (the rule and the input mapping: tests/fuzz/targets.py, bytes_tokens).

    python -m tests.fuzz.harness.fuzz_tokens [libFuzzer flags] [corpus dirs | crash file]

``make fuzz`` (tests/fuzz/run.py) runs it with a time limit and the seed corpus.
"""

from __future__ import annotations

from tests.fuzz.harness import instrumented, run

with instrumented():
    from tests.fuzz.targets import bytes_tokens


def test_one_input(data: bytes) -> None:
    bytes_tokens(data)


if __name__ == "__main__":
    run(test_one_input)
