"""A lookup leaves no reference cycle behind: each one used to build a tenacity
`Retrying` that formed a cycle with its thread-local state, ~20 objects a lookup left
for the rare full garbage collection (icall's memory grew ~80 KB/s at 20 calls/s)."""

from __future__ import annotations

import gc
import threading
import time

from actors.crm.http_client import CrmClient
from tests.crm.conftest import make_config

LOOKUPS = 200


def test_lookups_on_a_long_lived_worker_thread_leave_no_cyclic_garbage(crm):
    config = make_config(base_url=crm.url)
    client = CrmClient(config.crm, config.ivr.extension_pattern)
    answers: list[str | None] = []
    garbage: list[int] = []

    def worker() -> None:  # like the fetcher's pool threads, which live on
        client.fetch("5551000", deadline=_far())  # warm-up: connection, per-thread state
        gc.collect()
        gc.disable()
        try:
            for _ in range(LOOKUPS):
                answers.append(client.fetch("5551000", deadline=_far()).extension)
            garbage.append(gc.collect())
        finally:
            gc.enable()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=60)
    client.close()
    assert answers == ["801"] * LOOKUPS
    assert garbage and garbage[0] < LOOKUPS, f"{garbage} objects left in cycles by {LOOKUPS} lookups"


def _far() -> float:
    return time.monotonic() + 30.0
