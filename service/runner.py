"""`icall run`: the process around the Service — logging, signals, systemd, metrics.

SIGTERM or SIGINT stops the service cleanly (actors stopped in reverse start order);
SIGHUP reads the configuration again (service.reload; with workers, the main process
passes it to each); SIGUSR1 logs every thread's stack. Under systemd, READY=1 is sent once the actors are
up and the watchdog is fed only while Service.health says healthy (the supervisor
answers, the ESL reader runs, the event link is not down too long).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import threading
import time

from ivr.config import INSTALLED_STATE_DIR, Config, default_state_dir
from service.affinity import pin_process
from service.app import Service
from service.logsetup import install_stack_dump_on_sigusr1, set_log_level, setup_logging
from service.metrics import MetricsServer
from service.open_files import fit_open_files
from service.reload import Reloader
from service.systemd import Watchdog, notify
from service.workers import WorkerPool, serve_control, worker_config
from storage.db import open_database, redact
from storage.migrations import SchemaError, check_schema
from storage.spool import SpoolError, adopt_orphans

logger = logging.getLogger(__name__)


EXIT_NEEDS_OPERATOR = 2  # the unit does not restart on it (RestartPreventExitStatus)


def schema_ready(config: Config) -> bool:
    """False (with the reason logged) when the database's schema is not this icall's:
    an operator must run `icall db upgrade`. A database that cannot be reached now is
    not that: the DbWriter keeps the rows and retries until it is back."""
    db = open_database(config.database.url)
    try:
        with db.connection_context():
            check_schema(db)
    except SchemaError as exc:
        logger.error("database %s: %s", redact(config.database.url), exc)
        return False
    except Exception as exc:  # unreachable or refusing: not fatal, see above
        logger.warning("database %s not reachable at start (%s); writes will wait for it",
                       redact(config.database.url), exc)
    return True


def _warn_if_the_cli_would_miss_the_database(config: Config) -> None:
    """An empty `[database] url` under a unit whose StateDirectory is not the shipped
    one: `icall timecond ...` from a shell (no $STATE_DIRECTORY) would open another file."""
    state_dir = default_state_dir(os.environ)
    defaulted = config.database.url == f"sqlite:///{state_dir / 'icall.sqlite3'}"
    if defaulted and state_dir != INSTALLED_STATE_DIR:
        logger.warning("database %s is in $STATE_DIRECTORY, not %s: `icall db|timecond|cdr` "
                       "run without that STATE_DIRECTORY will not find it; set [database] url "
                       "to this file", redact(config.database.url), INSTALLED_STATE_DIR)


def _adopt_orphan_spools(config: Config) -> None:
    """Writes spooled by workers that no longer run (`[service] workers` lowered) go
    into the spool of worker 0 (or the single process), before any writer starts."""
    try:
        moved = adopt_orphans(config.database.spool_path, config.service.workers)
    except SpoolError as exc:
        logger.error("cannot take over the spools of workers that no longer run: %s; their "
                     "writes stay in those files", exc)
        return
    if moved:
        logger.warning("%d writes spooled by workers that no longer run moved into the spool %s",
                       moved, config.database.spool_path)


# Young collections happen after this many container allocations (Python's default is
# 700). A call allocates thousands of short-lived objects that reference counting
# frees anyway, so the default ran a collection many times per call.
GC_YOUNG_THRESHOLD = 50_000


def tune_garbage_collector() -> None:
    """Once everything has started: the modules, actors and configuration built so far
    live as long as the process, so they are moved out of the collector's sight
    (`gc.freeze`), and young collections run less often. Measured with
    bench.side_by_side at 200/20: ~7 % less CPU per call."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def run_service(config: Config, worker: int | None = None, control_fd: int | None = None,
                listen_fd: int | None = None) -> int:
    """The service in this process; with `[service] workers` > 1 (and no `worker`),
    the main process of that many workers instead (service.workers). `worker` and
    `control_fd`: this process is worker number `worker` of such a main process;
    `listen_fd`: the outbound port's listening socket that main process shares."""
    # First thing: a SIGHUP's default action ends the process, calls and all.
    reload_requested = threading.Event()
    signal.signal(signal.SIGHUP, lambda _signum, _frame: reload_requested.set())
    setup_logging(config.logging.level)
    install_stack_dump_on_sigusr1()
    if worker is not None or config.service.workers == 1:
        pin_process(config.service.cpu, worker)  # before the service starts its threads
        fit_open_files(config)
    if worker is None and not schema_ready(config):
        return EXIT_NEEDS_OPERATOR
    if worker is None:
        _adopt_orphan_spools(config)
    else:
        config = worker_config(config, worker)
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        logger.info("%s received: stopping", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    if worker is None and config.service.workers > 1:
        return _run_main(config, stop_requested, reload_requested)
    # A worker other than the first takes outbound calls only (service.workers).
    listener = socket.socket(fileno=listen_fd) if listen_fd is not None else None
    service = Service(config, inbound=worker in (None, 0), listener=listener)
    watchdog = Watchdog(service.process_health)
    listen = config.metrics.listen
    if listen and worker:  # each worker serves its own /metrics and /health
        listen = (listen[0], listen[1] + worker)
    metrics = (MetricsServer(listen, service.telemetry.registry, service.health)
               if listen else None)
    reloader = Reloader(config, apply=lambda new: _apply(service, new), on_level=set_log_level,
                        prepare=(lambda new: worker_config(new, worker)) if worker is not None else _same)
    service.telemetry.watch("config", reloader.readings)
    try:
        logger.info("icall starting (config %s, FreeSWITCH %s:%d, database %s)", config.source,
                    config.freeswitch.host, config.freeswitch.port, redact(config.database.url))
        _warn_if_the_cli_would_miss_the_database(config)
        service.start()
        if metrics is not None:
            metrics.start()
        watchdog.start()
        tune_garbage_collector()
        notify("READY=1\nSTATUS=running")
        if control_fd is not None:
            serve_control(control_fd, service.process_health, stop_requested,
                          reload=lambda: reloader.reload().answer()).sendall(b"ready\n")
        logger.info("icall ready")
        while not stop_requested.wait(_LOOP_S):
            if reload_requested.is_set():
                reload_requested.clear()
                logger.info("SIGHUP received: reloading the configuration")
                reloader.reload()
        notify("STOPPING=1")
    finally:
        watchdog.stop()
        if metrics is not None:
            metrics.stop()
        service.stop()
        logger.info("icall stopped")
    return 0


_LOOP_S = 0.2  # how often the main thread looks for a stop or a reload asked for


def _same(config: Config) -> Config:
    return config


def _apply(service: Service, config: Config) -> None:
    """A reload in this process: to the service's actors; the open-file limit is
    fitted to the new numbers of calls and connections."""
    service.apply_config(config)
    fit_open_files(config)


def _run_main(config: Config, stop_requested: threading.Event, reload_requested: threading.Event) -> int:
    """The main process of `[service] workers` workers: start them, say READY=1 when
    all are up, look after them (service.workers) and feed the watchdog while the
    pool says every worker is healthy or being mended. A SIGHUP is checked here (a
    broken file is reported once, and not passed on), then passed to every worker,
    each of which reads the file again itself and answers."""
    count = config.service.workers
    try:
        pool = WorkerPool(config, count)
    except OSError as exc:  # the shared outbound port: taken, or not this machine's
        host, port = config.outbound.listen or ("?", 0)
        logger.error("outbound/listen: cannot listen on %s:%d (%s); no worker started",
                     host, port, exc.strerror or exc)
        return 1
    reloader = Reloader(config, apply=lambda _new: pool.reload(), on_level=set_log_level)
    watchdog = Watchdog(pool.unit_health)
    logger.info("icall starting %d workers (config %s)", count, config.source)
    try:
        pool.start()
        ready, shown = False, -1
        while not stop_requested.wait(_LOOP_S):
            if reload_requested.is_set():
                reload_requested.clear()
                logger.info("SIGHUP received: checking the configuration, then passing it to the workers")
                reloader.reload()
            pool.tick(time.monotonic())
            if not ready and pool.all_ready():
                ready, shown = True, count
                watchdog.start()
                notify(f"READY=1\nSTATUS=running {count} workers")
                logger.info("icall ready: %d workers", count)
            up = pool.ready_count()
            if ready and up != shown:  # what `systemctl status` shows
                notify(f"STATUS=running {count} workers" if up == count
                       else f"STATUS=running {up} of {count} workers (restarting the others)")
                shown = up
        notify("STOPPING=1")
    finally:
        watchdog.stop()
        pool.stop()
        logger.info("icall stopped")
    return 0
