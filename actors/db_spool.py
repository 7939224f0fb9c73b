"""SpoolKeeper: the DbWriter's side of its spool (storage.spool): what to log, what to
count, and spool failures turned into answers the writer can act on.

A spool that fails to take a batch answers False (the writer keeps the batch in memory
or refuses the write). A spool that fails to be read or emptied is set aside until
the next batch it takes: its rows stay in the file, and a later run writes them.

Threads: the DbWriter's only, except `known_waiting` (any thread: it reads one number).
"""

from __future__ import annotations

import logging

from actors.messages import DbWrite
from storage.spool import Spool, Spooled, SpoolError

logger = logging.getLogger(__name__)


class SpoolKeeper:
    def __init__(self, spool: Spool, database: str):
        self._spool = spool
        self._database = database  # for messages, password masked
        self._set_aside = False
        self._spilling = False  # writes went to the spool since it was last empty
        self.last_error = ""
        self.counts = {"spilled": 0, "drained": 0}

    def left_over(self) -> bool:
        """At start: did an earlier run leave writes in the spool?"""
        waiting = self.waiting()
        if waiting:
            self._spilling = True
            logger.warning("DbWriter: %d writes left in the spool %s by an earlier run; "
                           "writing them to %s", waiting, self._spool.path, self._database)
        return bool(waiting)

    def known_waiting(self) -> int:
        """`waiting()` as last known, without I/O: safe from any thread."""
        return 0 if self._set_aside else self._spool.known_count()

    def waiting(self) -> int:
        """Writes in the spool still to be written to the database."""
        if self._set_aside:
            return 0
        try:
            return self._spool.count()
        except SpoolError as exc:
            self._fail("read", exc)
            return 0

    def add(self, writes: list[DbWrite], database_error: str) -> bool:
        """Spool these writes in one transaction; False (logged) if the spool failed."""
        if not self._spilling:
            logger.warning("DbWriter: database %s is not keeping up (%s): moving the oldest "
                           "writes to the spool %s", self._database, database_error or "slow",
                           self._spool.path)
        try:
            self._spool.add([(w.call_uuid, w.seq, w.kind, w.fields) for w in writes])
        except SpoolError as exc:
            self._fail("write", exc)
            return False
        self._spilling = True
        self._set_aside = False
        self.last_error = ""
        self.counts["spilled"] += len(writes)
        return True

    def oldest(self, limit: int) -> list[Spooled]:
        try:
            return self._spool.oldest(limit)
        except SpoolError as exc:
            self._fail("read", exc)
            return []

    def remove(self, ids: list[int], written: int) -> None:
        """Forget spooled writes the database has committed (`written` of them; the
        rest were rejected)."""
        try:
            self._spool.remove(ids)
        except SpoolError as exc:
            # They stay in the file and are written again later: harmless, as every
            # write is idempotent.
            self._fail("empty", exc)
            return
        self.counts["drained"] += written
        if self._spilling and self._spool.count() == 0:
            self._spilling = False
            logger.warning("DbWriter: the spool is empty: every spooled write is in %s "
                           "(%d spilled, %d written from it since start)", self._database,
                           self.counts["spilled"], self.counts["drained"])

    def close(self) -> None:
        self._spool.close()

    def _fail(self, doing: str, exc: SpoolError) -> None:
        text = str(exc)
        if text != self.last_error:
            logger.error("DbWriter: cannot %s the spool: %s", doing, text)
        self.last_error = text
        if doing != "write":
            self._set_aside = True
