"""The cancel token: parents cancel children, sleeps end at once, finished work detaches."""

import threading
import time

import pytest

from core.resilience.cancel import CancelToken
from core.resilience.errors import Cancelled


def test_parent_cancels_children_and_detached_children_are_let_go():
    batch = CancelToken()
    jobs = [CancelToken(parent=batch) for _ in range(3)]
    jobs[0].detach()
    assert len(batch._children) == 2
    batch.cancel("paused")
    assert not jobs[0].is_set()
    assert jobs[1].is_set() and jobs[1].reason == "paused"
    with pytest.raises(Cancelled, match="paused"):
        jobs[2].raise_if_cancelled()


def test_a_child_of_a_cancelled_parent_starts_cancelled():
    batch = CancelToken()
    batch.cancel("stop")
    assert CancelToken(parent=batch).is_set()


def test_wait_wakes_when_cancelled_from_another_thread():
    token = CancelToken()
    threading.Timer(0.05, token.cancel).start()
    t0 = time.monotonic()
    assert token.wait(10) is True
    assert time.monotonic() - t0 < 5
