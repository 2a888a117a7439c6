"""The product's server under observation, for the profiles:

    python [-X tracemalloc=25] -m bench._memserver OUT_DIR presence-server-args...

* with tracemalloc on, each SIGUSR1 writes a snapshot to OUT_DIR/N.snap (N = 0,
  1, ...), so the load generator can take one before and one after opening its
  sessions and compare them: which lines hold an idle session's memory
  (``bench.idle --profile``; py-spy shows CPU, not memory);
* always, the garbage collector's pauses are timed (``gc.callbacks``), and
  each SIGUSR2 writes them to OUT_DIR/gc-N.json: collections and seconds per
  generation, and the longest pause.

The server itself is started exactly as ``presence-server`` would be; nothing
of it is changed.
"""

from __future__ import annotations

import gc
import json
import signal
import sys
import time
import tracemalloc
from pathlib import Path
from types import FrameType


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    count = 0

    def dump(signum: int, frame: FrameType | None) -> None:
        nonlocal count
        tracemalloc.take_snapshot().dump(str(out / f"{count}.snap.tmp"))
        (out / f"{count}.snap.tmp").rename(out / f"{count}.snap")
        count += 1

    pauses = {"collections": [0, 0, 0], "seconds": [0.0, 0.0, 0.0], "longest": 0.0, "longest_generation": -1}
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = time.perf_counter() - started[0]
        g = info["generation"]
        pauses["collections"][g] += 1  # type: ignore[index]
        pauses["seconds"][g] += took  # type: ignore[index]
        if took > pauses["longest"]:  # type: ignore[operator]
            pauses["longest"], pauses["longest_generation"] = took, g

    gc_count = 0

    def dump_gc(signum: int, frame: FrameType | None) -> None:
        nonlocal gc_count
        (out / f"gc-{gc_count}.json.tmp").write_text(json.dumps({**pauses, "objects": len(gc.get_objects())}))
        (out / f"gc-{gc_count}.json.tmp").rename(out / f"gc-{gc_count}.json")
        gc_count += 1

    gc.callbacks.append(on_gc)
    signal.signal(signal.SIGUSR2, dump_gc)
    if tracemalloc.is_tracing():
        signal.signal(signal.SIGUSR1, dump)
    from presence_server.cli import main as cli_main

    return int(cli_main(sys.argv[2:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
