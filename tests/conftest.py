import os
import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# numba's on-disk cache is not safe against several processes writing it at once (a corrupt
# index segfaults librosa): each test session, and the workers it starts, get their own.
os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="stave-numba-")
os.environ.setdefault("STAVE_CONFIG_DIR", tempfile.mkdtemp(prefix="stave-config-"))

import pytest

from core.resilience.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
