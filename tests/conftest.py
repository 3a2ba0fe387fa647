import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest

from core.resilience.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
