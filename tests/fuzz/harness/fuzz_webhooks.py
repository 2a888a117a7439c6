"""atheris harness: webhooks, against a real server and carrier API (tests/fuzz/webhooks.py, bytes_webhooks).

    python -m tests.fuzz.harness.fuzz_webhooks [libFuzzer flags] [corpus dirs | crash file]

``make fuzz`` (tests/fuzz/run.py) runs it with a time limit and the seed corpus.
"""

from __future__ import annotations

from tests.fuzz.harness import instrumented, quiet_logs, run

with instrumented():
    from tests.fuzz.webhooks import WebhookRig, bytes_webhooks

RIG: WebhookRig | None = None


def test_one_input(data: bytes) -> None:
    global RIG
    if RIG is None:  # started on the first input: after atheris.Setup, with the logs quiet
        quiet_logs()
        RIG = WebhookRig().start()
    bytes_webhooks(RIG, data)


if __name__ == "__main__":
    run(test_one_input)
