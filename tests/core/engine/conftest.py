"""Fixtures shared by the checkpoint-store tests (test_store*.py): one open store, one batch of jobs.

A conftest rather than an imported module so the ``store`` fixture reaches every store test without
an import that a test's ``store`` argument would shadow.
"""

from __future__ import annotations

import pytest

from core.engine.store import JobSpec, Store


@pytest.fixture
def store(tmp_path, clock):
    s = Store.open(tmp_path / "out", clock=clock)
    yield s
    s.close()


def batch_with_jobs(store: Store, n: int = 3) -> tuple[int, list[int]]:
    """A batch of ``n`` pending jobs (``/music/{i}.wav``); returns the batch id and the job ids in order."""
    batch = store.create_batch({"workers": 2}, ["/music"])
    ids = store.add_jobs(batch, [JobSpec(f"/music/{i}.wav", f"song{i}-abcd", size_bytes=100 + i) for i in range(n)])
    return batch, ids
