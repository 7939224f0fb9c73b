"""WriteIntake: where call actors leave their DbWrites without waking the DbWriter.

Most writes (a call's row, its steps) wait up to `[database] commit_interval_ms` for
others to share their commit anyway, so telling the DbWriter each of them only woke
its thread to put the write on a list: about six wake-ups a call, and on a virtual
machine a wake-up costs tens of microseconds of CPU (bench.wakeup_bench). A write put
here waits in a deque; the DbWriter takes everything there when its gather wait ends.
The writer is woken (told `Drain`) only when nothing else would bring it: no gather
wait is on (`armed` is False; a retry wait while the database is away does not arm
it, so writes still count against `backlog_max` at once), the write must be committed
at once (a CDR, a failure), or a batch is full.

It is still a message to an actor: the order is kept, the writer alone turns writes
into rows, and its acks come after the commit, as before. The intake outlives a
writer that dies: writes left here are taken by its replacement (`bind`), and the
calls send their unacknowledged writes again anyway (the writer's keys make repeats
harmless). `put` raises ActorDeadError while no writer runs, like a tell.

Threads: `put` runs in any thread; `take` and `armed` belong to the writer's thread.
Every step is one operation on a deque or an attribute, atomic under the GIL; the
writer disarms before it takes, so a write put meanwhile is either taken or wakes it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import pykka

from actors.messages import DbWrite

# Kinds the DbWriter commits at once, with whatever waits beside them (so they wake it
# here): a process killed during the gather would lose them for good (a CDR comes after the channel is gone, a failure record
# when the flow broke), whereas a call's row and its steps also ride in the call's
# checkpoint on the channel (ivr.flow: the records since the checkpoint before last)
# and are written again by a successor. A commit, and SQLite's fsync, per call row
# was a third of the writer's CPU.
# A claim (a process taking a call over) and a close (a call that ended unseen) too: the
# first must be in before the process that lost the call ends it.
COMMITTED_AT_ONCE = frozenset({"cdr", "failure", "claim", "close"})


@dataclass(frozen=True)
class Drain:
    """To the DbWriter: take what waits in the intake."""


class WriteIntake:
    def __init__(self, batch_size: int = 200):
        self._writes: deque[DbWrite] = deque()
        self._writer: Any = None  # the DbWriter's ref (see bind)
        self.batch_size = batch_size
        # True while the writer will take the intake on its own (a flush is queued or a
        # gather wait is on): a put then needs no wake-up.
        self.armed = False

    def bind(self, writer: Any) -> None:
        """`writer` (a DbWriter's ref) takes the writes from now on."""
        self._writer = writer
        self.armed = False

    def put(self, write: DbWrite) -> None:
        """Leave `write` for the writer; raises ActorDeadError if none runs."""
        writer = self._writer
        if writer is None or not writer.is_alive():
            raise pykka.ActorDeadError(f"no DbWriter takes {write.kind} write {write.seq}")
        self._writes.append(write)
        if not self.armed or write.kind in COMMITTED_AT_ONCE or len(self._writes) >= self.batch_size:
            self.armed = True  # one Drain is enough until the writer disarms
            writer.tell(Drain())

    def take(self) -> list[DbWrite]:
        """The writer's thread: everything waiting, oldest first."""
        writes = self._writes
        taken = []
        while writes:
            taken.append(writes.popleft())
        return taken

    def __len__(self) -> int:
        return len(self._writes)
