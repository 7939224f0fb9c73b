"""The commands' Event-UUIDs: UUID-shaped, never repeated, from any thread."""

from __future__ import annotations

import threading
import uuid

from service.app import new_event_id


def test_event_ids_read_as_uuids_and_do_not_repeat_across_threads():
    seen: list[list[str]] = [[] for _ in range(4)]

    def make(into: list[str]) -> None:
        into.extend(new_event_id() for _ in range(5000))

    threads = [threading.Thread(target=make, args=(ids,)) for ids in seen]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    ids = [one for ids in seen for one in ids]
    assert len(ids) == 20000 and len(set(ids)) == 20000
    assert all(str(uuid.UUID(one)) == one for one in ids[:100])
