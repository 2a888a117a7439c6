"""atheris harness: frames_json (the rule and the input mapping: tests/fuzz/targets.py, bytes_frames_json).

    python -m tests.fuzz.harness.fuzz_frames_json [libFuzzer flags] [corpus dirs | crash file]

``make fuzz`` (tests/fuzz/run.py) runs it with a time limit and the seed corpus.
"""

from __future__ import annotations

from tests.fuzz.harness import instrumented, run

with instrumented():
    from tests.fuzz.targets import bytes_frames_json


def test_one_input(data: bytes) -> None:
    bytes_frames_json(data)


if __name__ == "__main__":
    run(test_one_input)
