"""TimeConditionSource: the time-condition rows, in memory, for calls that cannot wait.

A call deciding its route reads `current()`: a tuple swapped in one assignment, so any
thread may read it at any time without a lock and without touching the database. One
thread of its own re-reads the table every `[database] timecond_refresh_s` and when
asked (`refresh()`, e.g. after `icall timecond add`). If the database is down it keeps
the last list it read and says so once in the log (and once more when it is back).

Threads: `start`, `stop`, `refresh` run in the caller's thread; `current` in any;
everything else in the source's own thread, on its own connection.
"""

from __future__ import annotations

import logging
import threading
import time

from peewee import DatabaseError

from ivr.timecond import TimeCondition
from storage.db import close_quietly, open_database, redact
from storage.models import TimeConditionRow

logger = logging.getLogger(__name__)


class TimeConditionSource:
    """The current time conditions, refreshed in the background; see module doc."""

    def __init__(self, config, interval_s: float | None = None):
        self._url = config.database.url
        self._interval_s = interval_s if interval_s is not None else config.database.timecond_refresh_s
        self._snapshot: tuple[TimeCondition, ...] = ()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._progress = threading.Condition()
        self._requested = 0  # refreshes asked for
        self._served = 0  # refreshes attempted (successful or not)
        self._database_down = False
        self._thread: threading.Thread | None = None
        self.loaded_at: float | None = None  # time.time() of the last successful read

    def start(self) -> None:
        """Start the refresh thread; the first read begins at once."""
        self._thread = threading.Thread(target=self._run, name="TimeConditions", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.error("time-condition thread did not stop within %.1fs", timeout_s)

    def current(self, name: str | None = None) -> tuple[TimeCondition, ...]:
        """The conditions last read (those called `name`, if given). Never blocks."""
        snapshot = self._snapshot
        if name is None:
            return snapshot
        return tuple(c for c in snapshot if c.name == name)

    def refresh(self, timeout_s: float = 10.0) -> bool:
        """Re-read now and wait (up to timeout_s) for that read; True if it succeeded."""
        with self._progress:
            self._requested += 1
            wanted = self._requested
        self._wake.set()
        with self._progress:
            done = self._progress.wait_for(lambda: self._served >= wanted, timeout_s)
        return done and not self._database_down

    # --- the source's own thread

    def _run(self) -> None:
        db = open_database(self._url)
        try:
            while not self._stopping.is_set():
                with self._progress:
                    serving = self._requested
                self._wake.clear()
                try:
                    self._load(db)
                except Exception:  # thread edge: keep the last snapshot and carry on
                    logger.exception("time conditions: unexpected error while reading")
                with self._progress:
                    self._served = max(self._served, serving)
                    self._progress.notify_all()
                self._wake.wait(self._interval_s)
        finally:
            close_quietly(db)

    def _load(self, db) -> None:
        try:
            db.connect(reuse_if_open=True)
            rows = list(TimeConditionRow.select().order_by(TimeConditionRow.id).execute(db))
        except DatabaseError as exc:
            close_quietly(db)
            if not self._database_down:
                logger.warning(
                    "time conditions: cannot read %s (%s); calls use the %d conditions read before",
                    redact(self._url), exc, len(self._snapshot),
                )
            self._database_down = True
            return
        conditions = []
        for row in rows:
            try:
                conditions.append(row.to_value())
            except ValueError as exc:
                logger.warning("time conditions: row %s ignored: %s", row.id, exc)
        if self._database_down:
            logger.warning("time conditions: database %s readable again", redact(self._url))
        self._database_down = False
        self._snapshot = tuple(conditions)
        self.loaded_at = time.time()
