"""What the actors report for monitoring, and a default that records nothing.

Actors are handed a `Telemetry` (through `CallServices.telemetry` or their
constructor). This base class does nothing, so actor unit tests and benchmarks need
no set-up; the service hands them `service.telemetry.PrometheusTelemetry`, which
turns each report into a Prometheus observation.

Every method is called on a hot path and must stay cheap: one histogram observation
(a few µs), no message, no I/O. Which thread calls each one is in its docstring.

Counts and levels an actor already keeps (a dict of counters, a queue's length) are
not pushed at all: the actor hands `watch` a function that reads them, and the scrape
thread calls it. Such a function must only read values that a single GIL-held
operation can read whole (`len()` of a container, `dict()` of a dict whose keys do not
change).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

# Returns current values by name; only the names service.telemetry declares are exported.
Reading = Callable[[], Mapping[str, Any]]


class Cause(NamedTuple):
    """Why a command is sent, and since when icall knew (a `time.monotonic()` value).

    kind "reaction": the call actor took an ESL event from its mailbox at `at`;
    kind "takeover": the ESL reader read the call's CHANNEL_PARK at `at`.
    """

    kind: str
    at: float


class Telemetry:
    """Records nothing. See the module docstring."""

    def command_written(self, cause: Cause, written_at: float) -> None:
        """The Commander wrote the first command `cause` led to. Commander thread."""

    def crm_answered(self, outcome: str, elapsed_s: float) -> None:
        """A CRM lookup was answered (`outcome`: see actors.crm.fetcher.lookup_outcome)
        `elapsed_s` after the fetcher took it. Whichever thread settled the lookup."""

    def db_committed(self, elapsed_s: float, writes: int) -> None:
        """The DbWriter committed one transaction holding `writes` writes. DbWriter thread."""

    def cdr_delivered(self, delay_s: float) -> None:
        """The CDR endpoint accepted a CDR `delay_s` after it entered the outbox.
        cdr-poster thread."""

    def call_rescued(self, step: str) -> None:
        """A flow sent its call to the safe destination (`step` says why: CommandTimeout,
        CommandFailed...). The call actor's thread."""

    def watch(self, source: str, read: Reading) -> None:
        """Have the scrape thread call `read()` for current values; a later `watch`
        with the same `source` replaces the earlier one (a replaced actor). Any thread."""


NO_TELEMETRY = Telemetry()
