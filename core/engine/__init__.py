"""Batches, jobs, worker processes, the checkpoint store and events."""

from __future__ import annotations

import os

#: Supervisors beyond the number of workers. With one job more in flight than there are workers, a worker that
#: finishes a stage finds another job's next stage already waiting instead of idling through its supervisor's
#: bookkeeping (a fsynced commit, events, the next stage's plan: ~5 ms per stage, ~2% of a run). Here, in the
#: package's light __init__, so the window can size its thread pool without importing the engine.
EXTRA_SUPERVISORS = 1


def supervisors_for(workers: int, extra: int = EXTRA_SUPERVISORS) -> int:
    """How many supervisors a run with ``workers`` worker processes gets (the CLI's threads, the window's)."""
    return max(1, workers) + max(0, extra)


def usable_cpus() -> int:
    """The cores this process may run on (its CPU affinity, as a container or ``taskset`` sets it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def workers_to_run(requested: int, jobs: int | None = None) -> int:
    """Worker processes worth starting for ``requested``: at most one per usable core, and no more than
    there are ``jobs`` (when known).

    Each worker is a CPU-bound Python process holding a few hundred MB once its libraries are loaded: more
    workers than cores only wait for the cores while multiplying the memory (``--workers 1000`` on two cores
    once exhausted 24 GB while its workers were still starting).
    """
    n = max(1, min(int(requested), usable_cpus()))
    return max(1, min(n, jobs)) if jobs is not None and jobs > 0 else n
