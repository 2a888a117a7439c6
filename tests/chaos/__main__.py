"""``python -m tests.chaos [--rounds N] [--write]``: the fault suite at a chosen
size (``make chaos``). ``--write`` puts the figures in the ``faults`` section of
docs/reliability.md; without it they are only printed."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import shlex
import sys
import tempfile
from pathlib import Path

from .report import render, write
from .scenario import Scenario


async def main(rounds: int, do_write: bool, command: str) -> int:
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        scenario = Scenario(Path(tmp), rounds, log=lambda line: print(line, flush=True))
        try:
            await scenario.start()
            figures = await scenario.run()
        except BaseException:
            if scenario.cluster is not None:
                print(scenario.cluster.logs(40), file=sys.stderr)
            raise
        finally:
            await scenario.close()
    section = render(figures, command, datetime.date.today().isoformat())
    print(section)
    if do_write:
        write(section)
    return 0 if figures.lost == 0 and figures.duplicated == 0 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.chaos")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="write the figures into docs/reliability.md")
    args = parser.parse_args()
    command = "make chaos" if args.write else "python -m tests.chaos " + shlex.join(sys.argv[1:])
    sys.exit(asyncio.run(main(args.rounds, args.write, command)))
