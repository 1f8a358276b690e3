"""The cyclic garbage collector, set for a server that holds hundreds of streams.

Python's defaults (a young collection every 2,000 allocations, a middle one every
ten of those) suit short scripts. In a server streaming 500 answers they paused
the event loop for 7-11 ms twice a second and for ~100 ms twice a run (full
collections that walked every object Django and the modules made at start-up),
and every chunk in flight waited for each pause (docs/performance.md,
docs/decisions/0016-garbage-collector.md). Reference counting still frees
almost everything at once; only reference cycles wait for a collection.
"""

import gc

# Young collections every 50,000 net allocations, middle ones every 20 of those,
# full ones every 10 middle ones (and, as always, only once the objects that
# survived since the last full one are a quarter of those it kept).
THRESHOLDS = (50_000, 20, 10)


def settle_after_start_up() -> None:
    """Collect once, keep what start-up made out of every later collection
    (`gc.freeze`), and collect less often. Called once the process is ready."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
