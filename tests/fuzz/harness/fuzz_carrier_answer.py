"""atheris harness: carrier_answer, against a real server and carrier API (tests/fuzz/webhooks.py, bytes_carrier_answer).

    python -m tests.fuzz.harness.fuzz_carrier_answer [libFuzzer flags] [corpus dirs | crash file]

``make fuzz`` (tests/fuzz/run.py) runs it with a time limit and the seed corpus.
"""

from __future__ import annotations

from tests.fuzz.harness import instrumented, quiet_logs, run

with instrumented():
    from tests.fuzz.webhooks import WebhookRig, bytes_carrier_answer

RIG: WebhookRig | None = None


def test_one_input(data: bytes) -> None:
    global RIG
    if RIG is None:  # started on the first input: after atheris.Setup, with the logs quiet
        quiet_logs()
        RIG = WebhookRig().start()
    bytes_carrier_answer(RIG, data)


if __name__ == "__main__":
    run(test_one_input)
