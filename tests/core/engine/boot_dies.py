"""Imported by a worker's initializer in tests: the worker dies as it starts (as when its libraries crash on import)."""

import os

os._exit(3)
