"""`icall run`: the process around the Service — logging, signals, systemd, metrics.

SIGTERM or SIGINT stops the service cleanly (actors stopped in reverse start order);
SIGUSR1 logs every thread's stack. Under systemd, READY=1 is sent once the actors are
up and the watchdog is fed only while the supervisor answers.
"""

from __future__ import annotations

import logging
import signal
import threading

from actors.logsetup import install_stack_dump_on_sigusr1, setup_logging
from actors.metrics import MetricsServer
from actors.service import Service
from actors.systemd import Watchdog, notify
from ivr.config import Config

logger = logging.getLogger("icall")


def run_service(config: Config) -> int:
    setup_logging(config.logging.level)
    install_stack_dump_on_sigusr1()
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        logger.info("%s received: stopping", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    service = Service(config)
    watchdog = Watchdog(service.health)
    metrics = MetricsServer(config.metrics.listen, service.stats, service.health) if config.metrics.listen else None
    try:
        logger.info("icall starting (config %s, FreeSWITCH %s:%d)", config.source,
                    config.freeswitch.host, config.freeswitch.port)
        service.start()
        if metrics is not None:
            metrics.start()
        watchdog.start()
        notify("READY=1\nSTATUS=running")
        logger.info("icall ready")
        while not stop_requested.wait(1.0):
            pass
        notify("STOPPING=1")
    finally:
        watchdog.stop()
        if metrics is not None:
            metrics.stop()
        service.stop()
        logger.info("icall stopped")
    return 0
