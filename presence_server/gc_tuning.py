"""The garbage collector's settings for a long-running server process.

CPython's cyclic collector walks every container object of the generations it
collects. A server holds two kinds: what start-up made (modules, the
configuration, compiled patterns, the account registry: ~200,000 objects)
which lives as long as the process, and per-session and per-request objects
which come and go. With the default settings the start-up objects are walked
again by every full collection, and a gen-0 collection runs every 700 net
container allocations (a registration allocates a few hundred, a fan-out to
1,000 subscribers thousands), so collections are both frequent and, once the
heap is large, long: the first benchmarks measured full collections of 90 ms
(the p99 of a 1,000-subscriber fan-out) and 0.15-0.58 s during connection storms.

So, once the node has started:

- ``gc.freeze()`` moves everything alive into the permanent generation, which
  no collection walks again (the objects stay alive; nothing leaks).
- gen 0 collects after GEN0_THRESHOLD net allocations instead of 700: a young
  collection walks at most that many objects (a millisecond or two), a few
  times a second under load rather than hundreds, and far fewer objects that
  are garbage a moment later survive into the older generations only because a
  collection happened to catch them in flight.
- The older generations keep CPython's ratios (10 and 10), and full
  collections keep CPython's own brake (only once the objects that survived
  since the last one are a quarter of the long-lived ones).
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 20_000


def settle_after_start() -> None:
    """Call once the process has started (everything loaded, listening)."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
