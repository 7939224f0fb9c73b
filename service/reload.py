"""`systemctl reload icall` (SIGHUP): read the ini file again and apply what can change live.

The file is read and validated whole (ivr.config.load_config). A broken file changes
nothing: every error is logged as `section/key: message` and the service goes on with
the settings it has. A valid one is split in two:

- what new calls use ([ivr] prompts, menus, patterns and destinations, [schedule],
  [crm], [cdr], [logging] level ...) goes to the Service, which hands it to each actor
  at a safe point in the actor's own thread (Service.apply_config); a live call keeps
  the settings it started with;
- what only a restart can change (`RESTART_ONLY`) is named in one warning and keeps
  its old value in the configuration applied.

Each successful reload makes a new generation of the configuration (1 at start);
`/metrics` shows it and counts the reloads by result.

Threads: `Reloader.reload` runs in the main thread (SIGHUP) or a worker's control
thread (the main process's `reload` line); a lock keeps two reloads apart.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ivr.config import Config, ConfigError, load_config

logger = logging.getLogger(__name__)

# Sections no reload changes, and single keys. Why each cannot change live:
RESTART_ONLY_SECTIONS = frozenset({
    "freeswitch",  # the event and command connections are open with these
    "database",  # the DbWriter, its spool and the time-condition source hold them
})
RESTART_ONLY_KEYS = frozenset({
    ("service", "node"),  # claims, rows and metric labels carry it
    ("service", "workers"),  # the processes are started
    ("service", "cpu"),  # the threads are pinned at start
    ("ivr", "flow"),  # the reader's event filter and the routes match on these
    ("ivr", "flow_variable"),
    ("outbound", "listen"),  # the listening socket is bound
    # The outbound server holds these (who may connect, how long connect's answer
    # may take, what each socket is asked for).
    ("outbound", "allow"),
    ("outbound", "connect_timeout_s"),
    ("outbound", "linger_s"),
    ("metrics", "listen"),  # the HTTP server is bound
})


def restart_only(section: str, key: str) -> bool:
    return section in RESTART_ONLY_SECTIONS or (section, key) in RESTART_ONLY_KEYS


def settle(old: Config, new: Config) -> tuple[Config, list[str], list[str]]:
    """What a reload applies: `new`, with every key only a restart can change kept as
    in `old`. Returns that configuration, the live keys that changed and the
    restart-only keys that changed (each as `section/key`)."""
    before = {(section, key): value for section, key, value in old.items()}
    values: dict[str, dict[str, Any]] = {}
    changed: list[str] = []
    held: list[str] = []
    for section, key, value in new.items():
        was = before.get((section, key), value)
        keep = restart_only(section, key) or _switches_cdr_delivery(section, key, was, value)
        if value != was:
            (held if keep else changed).append(f"{section}/{key}")
        values.setdefault(section, {})[key] = was if keep else value
    return Config(values, new.source), changed, held


def _switches_cdr_delivery(section: str, key: str, was: Any, value: Any) -> bool:
    """`[cdr] url` from empty to set (or back): the DbWriter decides at start whether
    CDRs go into the outbox at all. One endpoint for another is a live change."""
    return (section, key) == ("cdr", "url") and bool(was) != bool(value)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    generation: int
    errors: tuple[str, ...] = ()

    def answer(self) -> str:
        """The line a worker sends its main process (service.workers)."""
        if self.ok:
            return f"reloaded {self.generation}"
        return "failed " + "; ".join(self.errors).replace("\n", " ")


class Reloader:
    """Reads `path` again on `reload()` and hands the result to `apply`."""

    def __init__(self, config: Config, apply: Callable[[Config], None],
                 environ: Mapping[str, str] | None = None,
                 prepare: Callable[[Config], Config] = lambda config: config,
                 on_level: Callable[[str], None] | None = None, path: str | None = None):
        """`config`: the one the service started with; `path`: the file read again
        (default: the one `config` came from). `environ`: its overrides (default: this
        process's). `prepare`: what the process does to a loaded configuration before
        use (a worker's own spool path). `on_level`: sets the log level."""
        self.config = config
        self.path = path or config.source
        self._apply = apply
        self._environ = environ
        self._prepare = prepare
        self._on_level = on_level
        self._lock = threading.Lock()
        self.generation = 1
        self.results = {"applied": 0, "failed": 0}

    def readings(self) -> dict[str, float]:
        """For /metrics (the scrape thread): plain ints, read whole."""
        return {"generation": self.generation, "reloads_applied": self.results["applied"],
                "reloads_failed": self.results["failed"]}

    def reload(self) -> Outcome:
        with self._lock:
            return self._reload()

    def _reload(self) -> Outcome:
        path = self.path
        logger.info("reloading the configuration from %s", path)
        try:
            loaded = self._prepare(load_config(path, os.environ if self._environ is None else self._environ))
        except ConfigError as exc:
            self.results["failed"] += 1
            logger.error("reload refused: %d problem(s) in %s; nothing changed, generation %d "
                         "stays in force", len(exc.errors), path, self.generation)
            for error in exc.errors:
                logger.error("  %s", error)
            return Outcome(False, self.generation, tuple(exc.errors))
        config, changed, held = settle(self.config, loaded)
        if held:
            logger.warning("reload: %s changed in %s but only a restart applies %s "
                           "(systemctl restart icall); the old value%s stay%s in force",
                           ", ".join(held), path, "it" if len(held) == 1 else "them",
                           "" if len(held) == 1 else "s", "s" if len(held) == 1 else "")
        self._apply(config)
        if self._on_level is not None and config.logging.level != self.config.logging.level:
            self._on_level(config.logging.level)
        self.config = config
        self.generation += 1
        self.results["applied"] += 1
        logger.info("configuration generation %d in force for new calls: %s", self.generation,
                    ", ".join(changed) + " changed" if changed else "nothing else changed")
        return Outcome(True, self.generation)
