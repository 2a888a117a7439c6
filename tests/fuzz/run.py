"""``make fuzz``: the Hypothesis suite once, then every atheris harness for a while.

    python -m tests.fuzz.run [--seconds 60] [--only tokens smpp] [--no-docs]

For each parser the harness runs in a subprocess with libFuzzer's
``-max_total_time``; a crash (any artifact: ``crash-``, ``timeout-`` for a
hang, ``oom-``) is counted, kept under ``build/fuzz/<parser>/artifacts/``,
and the harness is restarted for the rest of its time, so one crash does not
hide the next. The inputs tried are libFuzzer's own count, summed over the
restarts. The working corpus (what the fuzzer found interesting) grows under
``build/fuzz/<parser>/corpus``; the committed seeds in ``tests/fuzz/corpus``
are only read.

The figures go to ``build/fuzz/results.json`` and, unless ``--no-docs``, into
the fuzzing section of ``docs/reliability.md``. Reproduce one crash with
``python -m tests.fuzz.harness.fuzz_<parser> <artifact file>``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BUILD = ROOT / "build" / "fuzz"
DOC = ROOT / "docs" / "reliability.md"
PARSERS = ("frames_json", "frames_msgpack", "tokens", "instructions", "webhooks", "carrier_answer", "smpp", "config")
ARTIFACT_PREFIXES = ("crash-", "timeout-", "oom-", "leak-", "slow-unit-")
MAX_RESTARTS = 20  # a harness that crashes at once on every start is reported, not looped on forever


@dataclass
class Run:
    parser: str
    seconds: float
    executions: int
    crashes: int
    corpus: int
    seeds: int
    coverage: int  # libFuzzer's "cov:" (instrumented edges) at the end
    artifacts: list[str]


def _count(pattern: str, text: str) -> list[int]:
    return [int(m) for m in re.findall(pattern, text)]


def fuzz(parser: str, seconds: float) -> Run:
    work = BUILD / parser
    corpus, artifacts = work / "corpus", work / "artifacts"
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in artifacts.iterdir()}
    seeds = HERE / "corpus" / parser
    executions, coverage, restarts = 0, 0, 0
    deadline = time.monotonic() + seconds
    log = (work / "fuzz.log").open("w")
    while (remaining := int(deadline - time.monotonic())) >= 1 and restarts < MAX_RESTARTS:
        command = [
            sys.executable, "-m", f"tests.fuzz.harness.fuzz_{parser}",
            f"-max_total_time={remaining}", "-timeout=10", "-rss_limit_mb=2048", "-max_len=8192",
            "-print_final_stats=1", f"-artifact_prefix={artifacts}/", f"-dict={HERE / 'dicts' / f'{parser}.dict'}",
            str(corpus), str(seeds),
        ]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, errors="replace", timeout=remaining + 120)
        output = done.stdout + done.stderr
        log.write(f"$ {' '.join(command)}\n{output}\n")
        executions += sum(_count(r"stat::number_of_executed_units:\s+(\d+)", output)) or max(_count(r"Done (\d+) runs", output), default=0)
        coverage = max([coverage, *_count(r"\bcov: (\d+)", output)])
        if "ERROR: libFuzzer" not in output and "Uncaught Python exception" not in output:
            break  # ran out its time
        restarts += 1
    log.close()
    new = sorted(p.name for p in artifacts.iterdir() if p.name not in before and p.name.startswith(ARTIFACT_PREFIXES))
    return Run(parser, seconds, executions, len(new), sum(1 for _ in corpus.iterdir()), sum(1 for _ in seeds.iterdir()), coverage,
               [str((artifacts / n).relative_to(ROOT)) for n in new])


def hypothesis_figures() -> dict[str, object]:
    counts = BUILD / "hypothesis.json"
    counts.unlink(missing_ok=True)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/fuzz"], cwd=ROOT,
                          env={**os.environ, "FUZZ_COUNTS": str(counts)}, capture_output=True, text=True)
    summary = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    return {
        "passed": done.returncode == 0,
        "summary": summary,
        "seconds": round(time.monotonic() - started, 1),
        "examples": json.loads(counts.read_text()) if counts.exists() else {},
    }


# -- docs/reliability.md ---------------------------------------------------------------------

WHAT = {
    "frames_json": ("`presence.v1.json` text frames", "`protocol/session.py` `ServerSession.receive` (codec, then `protocol/messages.py`)"),
    "frames_msgpack": ("`presence.v1.msgpack` binary frames", "the same session, msgpack codec"),
    "tokens": ("access tokens (JWT)", "`protocol/tokens.py` `verify_token`, with HS256, ES256, EdDSA, revoked and foreign keys"),
    "instructions": ("instruction XML", "`protocol/instructions` `parse_instructions` (defusedxml)"),
    "webhooks": ("carrier webhooks", "`POST /v1/Ingress/{provider}/Status|Messages|Voice` on a real server (aiohttp's body and header parsing included)"),
    "carrier_answer": ("carrier API answers", "the `http` provider reading a real carrier server's status and body"),
    "smpp": ("SMPP 3.4 byte stream", "`protocol/smpp` `PduStream`, then receipts and MO reassembly for each `deliver_sm`"),
    "config": ("config files", "`presence_server/config.py` `load_config` (tomllib, pydantic, `PRESENCE_*`)"),
}

FOUND = """\
Crashes found so far (the first runs, before the figures above), each fixed with a minimal
change and kept as a regression test (an `@example` of the test named, or a plain test):

| found by | input | was | fix | regression |
|---|---|---|---|---|
| Hypothesis | `missed_call_template = "{from.x}"` or `"{from[x]}"` | `AttributeError` / `TypeError` out of `load_config` | `config.py` refuses it as a config problem | `test_fuzz_config.py::test_mutated_configs_load_or_are_refused_naming_the_key` |
| Hypothesis | `server = 5` in the file and `PRESENCE_SERVER_PORT` set | `TypeError` in `apply_env` | a config problem naming the variable | same test |
| Hypothesis | `a = [[[[...` (100 000 deep) in the file, or in a `PRESENCE_*` value | `RecursionError` from `tomllib` | "not valid TOML: nested too deeply" / the value read as a string | `test_raw_files_load_or_are_refused` |
| Hypothesis | `class_shares = { urgent = nan, ... }` | silently accepted (NaN compares false) | refused: shares must be positive | `test_fuzz_config.py::test_nan_class_shares_are_refused` |
| Hypothesis | a JSON delivery report nested 100 000 deep | HTTP 500 (`RecursionError` in the JSON decoder) | 400 "the body is not valid JSON" | `test_fuzz_webhooks.py::test_raw_webhook_bodies_are_refused_with_the_json_error` |
| Hypothesis | a carrier answering HTTP 200 with `[[[[...` (60 000 deep) | the provider's "failed unexpectedly" path (an exception logged as a bug) | read as "no JSON object" (30008) | `test_carrier_answers_become_send_results` |
| atheris | `Authorization: Basic` followed by non-ASCII text | HTTP 500 on every authenticated route (`base64` raises `ValueError`, not `binascii.Error`) | `http/auth.py` treats it as no credentials: 401 | `test_fuzz_webhooks.py::test_non_ascii_credentials_are_refused_not_a_server_error`, `corpus/webhooks/regression-*` |
| atheris | an SMPP receipt with `sub:¹` (Latin-1 superscript: `isdigit()` but not `int()`) | `ValueError` in `parse_receipt`; the adapter answered a transient error, so the SMSC would keep redelivering the receipt | `smpp/receipts.py` reads only ASCII digits | `test_fuzz_smpp.py::test_delivery_receipts_parse_or_are_refused`, `corpus/smpp/regression-*` |
"""


def render(runs: list[Run], hypo: dict[str, object], seconds: float) -> str:
    examples: dict[str, int] = hypo.get("examples", {})  # type: ignore[assignment]
    when = datetime.date.today().isoformat()
    machine = f"{platform.machine()}, {os.cpu_count()} cores shared with other work, CPython {platform.python_version()}"
    lines = [
        "## 1. Fuzzing",
        "",
        "Every parser that takes outside bytes is held to one rule: an input is either accepted, or",
        "refused with the parser's documented error carrying a precise code and a short message",
        "(at most 512 characters, so that a refusal never echoes an attacker's megabytes). Any other",
        "exception, an unknown code, an empty message, an HTTP 5xx, or a hang counts as a crash. The",
        "rule lives in one module, `tests/fuzz/targets.py` (`tests/fuzz/webhooks.py` for the HTTP",
        "targets), which both kinds of fuzzing call, so they cannot disagree about what a crash is.",
        "Where an encoder exists, encode then decode must give back what was encoded (frames both",
        "ways, minted tokens, every SMPP PDU, a loaded config dumped and loaded again).",
        "",
        "| target | outside bytes | fed to |",
        "|---|---|---|",
        *(f"| `{p}` | {WHAT[p][0]} | {WHAT[p][1]} |" for p in PARSERS),
        "",
        "**Bounded form, in `make test`**: `tests/fuzz/test_fuzz_*.py`, Hypothesis properties over",
        "structured near-valid inputs (mutations of valid frames, tokens signed with the real keys",
        "over random headers and claims, XML with random verbs, attributes and nesting, PDUs with",
        "random lengths and fields, configs with retyped and missing keys) plus raw bytes; a shared",
        "`fuzz` profile (`tests/fuzz/conftest.py`) with a fixed number of examples per test.",
        "",
        f"Inputs per parser in one run of `pytest tests/fuzz` ({hypo.get('summary')}, {hypo.get('seconds')} s wall on {machine}):",
        "",
        "| target | Hypothesis inputs per run |",
        "|---|---|",
        *(f"| `{p}` | {examples.get(p, 0):,} |" for p in PARSERS),
        f"| **total** | **{sum(examples.values()):,}** |",
        "",
        f"**Longer form, `make fuzz`** (`FUZZ_SECONDS ?= 60` per target): coverage-guided with",
        "[atheris](https://pypi.org/project/atheris/) (libFuzzer), `tests/fuzz/harness/fuzz_<target>.py`,",
        "instrumenting `protocol`, `presence_server` and the targets. It starts from the seed corpus",
        "committed in `tests/fuzz/corpus/<target>/` with a dictionary per target (`tests/fuzz/dicts/`,",
        "both written by `python -m tests.fuzz.seeds`), and keeps what it finds in `build/fuzz/`.",
        f"Last run: {when}, {seconds:g} s per target, on {machine}.",
        "",
        "| target | inputs tried | crashes | corpus (seeds) | edges covered | command |",
        "|---|---|---|---|---|---|",
        *(f"| `{r.parser}` | {r.executions:,} | {r.crashes} | {r.corpus} ({r.seeds}) | {r.coverage} | "
          f"`python -m tests.fuzz.run --only {r.parser} --seconds {r.seconds:g}` |" for r in runs),
        f"| **total** | **{sum(r.executions for r in runs):,}** | **{sum(r.crashes for r in runs)}** | | | `make fuzz FUZZ_SECONDS={seconds:g}` |",
        "",
        "A crash's input is kept as `build/fuzz/<target>/artifacts/crash-*` and replays with",
        "`python -m tests.fuzz.harness.fuzz_<target> <file>`; each one found is fixed and becomes a",
        "regression test (an `@example` or a plain test in `tests/fuzz`).",
        "",
        FOUND.rstrip(),
    ]
    return "\n".join(lines)


def write_doc(section: str) -> None:
    text = DOC.read_text()
    start, end = "<!-- section: fuzzing -->", "<!-- end: fuzzing -->"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    DOC.write_text(f"{head}{start}\n{section}\n{end}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("FUZZ_SECONDS", 60)), help="per target")
    parser.add_argument("--only", nargs="*", choices=PARSERS, default=list(PARSERS),
                        help="these targets (none: just rewrite the doc from build/fuzz/results.json)")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/reliability.md")
    parser.add_argument("--no-hypothesis", action="store_true", help="skip the Hypothesis run (its figures stay as last recorded)")
    args = parser.parse_args()
    BUILD.mkdir(parents=True, exist_ok=True)
    results_file = BUILD / "results.json"
    previous = json.loads(results_file.read_text()) if results_file.exists() else {}

    hypo = previous.get("hypothesis", {}) if args.no_hypothesis else hypothesis_figures()
    print(f"hypothesis: {hypo.get('summary')} in {hypo.get('seconds')} s; inputs {hypo.get('examples')}", flush=True)

    runs = {r["parser"]: Run(**r) for r in previous.get("atheris", [])}
    for name in args.only:
        run = fuzz(name, args.seconds)
        runs[name] = run
        print(f"{name:15} {run.executions:>10,} inputs  {run.crashes} crashes  corpus {run.corpus} (seeds {run.seeds})  cov {run.coverage}", flush=True)
        for artifact in run.artifacts:
            print(f"    {artifact}", flush=True)
    ordered = [runs[p] for p in PARSERS if p in runs]
    results_file.write_text(json.dumps({"hypothesis": hypo, "seconds": args.seconds, "atheris": [asdict(r) for r in ordered]}, indent=2) + "\n")
    if not args.no_docs:
        write_doc(render(ordered, hypo, args.seconds))
        print(f"wrote the fuzzing section of {DOC.relative_to(ROOT)}")
    crashed = sum(r.crashes for r in ordered) > 0 or not hypo.get("passed", False)
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
