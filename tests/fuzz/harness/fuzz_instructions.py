"""atheris harness: instructions (the rule and the input mapping: tests/fuzz/targets.py, bytes_instructions).

    python -m tests.fuzz.harness.fuzz_instructions [libFuzzer flags] [corpus dirs | crash file]

``make fuzz`` (tests/fuzz/run.py) runs it with a time limit and the seed corpus.
"""

from __future__ import annotations

from tests.fuzz.harness import instrumented, run

with instrumented():
    from tests.fuzz.targets import bytes_instructions


def test_one_input(data: bytes) -> None:
    bytes_instructions(data)


if __name__ == "__main__":
    run(test_one_input)
