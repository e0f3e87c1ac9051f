"""How the operator process runs Python's garbage collector.

The index keeps a few dozen tracked objects per job (its assessment: a status model with
conditions, its admission view), so a queue of 20,000 jobs is about half a million of them.
With the interpreter's default first-generation threshold (700 allocations) the temporaries
of every assessment outlive a collection or two, are promoted, and keep triggering full
collections that walk the whole index: at 20,000 pending jobs those took 40 % of the CPU of
assessing them, and the share grows with the queue (`python -m benchmarks.pending_cycles`,
RESULTS.md). With a first generation of 10,000 the temporaries die young and a full
collection comes only after the long-lived objects really grew by a quarter.
"""

from __future__ import annotations

import gc

GC_THRESHOLDS = (10_000, 10, 10)


def tune_garbage_collection() -> None:
    """Apply GC_THRESHOLDS, and freeze what is alive at start (modules, classes, the
    libraries' tables): no collection ever needs to walk it again."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
