"""Batches, jobs, worker processes, the checkpoint store and events."""

#: Supervisors beyond the number of workers. With one job more in flight than there are workers, a worker that
#: finishes a stage finds another job's next stage already waiting instead of idling through its supervisor's
#: bookkeeping (a fsynced commit, events, the next stage's plan: ~5 ms per stage, ~2% of a run). Here, in the
#: package's light __init__, so the window can size its thread pool without importing the engine.
EXTRA_SUPERVISORS = 1


def supervisors_for(workers: int, extra: int = EXTRA_SUPERVISORS) -> int:
    """How many supervisors a run with ``workers`` worker processes gets (the CLI's threads, the window's)."""
    return max(1, workers) + max(0, extra)
