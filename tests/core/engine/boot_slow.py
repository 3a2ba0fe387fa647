"""Imported by a worker's initializer in tests: the worker takes a while to start (slow imports, cold disk)."""

import time

time.sleep(float(__import__("os").environ.get("STAVE_TEST_BOOT_S", "2.5")))
