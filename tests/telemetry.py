"""A Telemetry that keeps every report, for tests of what the actors report and when."""

from __future__ import annotations

import threading
from collections.abc import Callable

from actors.reporting import Cause, Reading, Telemetry


class RecordingTelemetry(Telemetry):
    """Every report in a list; any thread may report, a test waits with `wait_for`."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.commands: list[tuple[Cause, float]] = []
        self.crm: list[tuple[str, float]] = []
        self.commits: list[tuple[float, int]] = []
        self.cdrs: list[float] = []
        self.sources: dict[str, Reading] = {}

    def _add(self, reports: list, item: object) -> None:
        with self._changed:
            reports.append(item)
            self._changed.notify_all()

    def command_written(self, cause: Cause, written_at: float) -> None:
        self._add(self.commands, (cause, written_at))

    def crm_answered(self, outcome: str, elapsed_s: float) -> None:
        self._add(self.crm, (outcome, elapsed_s))

    def db_committed(self, elapsed_s: float, writes: int) -> None:
        self._add(self.commits, (elapsed_s, writes))

    def cdr_delivered(self, delay_s: float) -> None:
        self._add(self.cdrs, delay_s)

    def watch(self, source: str, read: Reading) -> None:
        with self._changed:
            self.sources[source] = read
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """True once `predicate()` holds (checked after each report); False on timeout."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout_s)
