"""Waiting for a state that no event announces (a counter, a row), bounded.

Where an event can be awaited, tests wait on it instead; this re-checks every 20 ms.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """True as soon as `predicate()` holds; False when `timeout_s` runs out first."""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        pause.wait(0.02)
    return True
