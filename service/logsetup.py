"""Logging for journald: stderr, one line per record with level, logger, thread name
and the call UUID when the thread serves one call. Under systemd (JOURNAL_STREAM set)
journald stamps the time itself, so the line carries none.

SIGUSR1 writes every thread's stack to the log, for a service that seems stuck.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Mapping

from actors.logcontext import current_call_uuid


class _CallFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        uuid = current_call_uuid()
        record.call = f" [{uuid}]" if uuid else ""
        return True


def setup_logging(level: str = "info", environ: Mapping[str, str] | None = None) -> None:
    environ = os.environ if environ is None else environ
    stamp = "" if environ.get("JOURNAL_STREAM") else "%(asctime)s "
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{stamp}%(levelname)-7s %(name)s [%(threadName)s]%(call)s %(message)s"))
    handler.addFilter(_CallFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    _set_level(level)


def _set_level(level: str) -> None:
    root = logging.getLogger()
    root.setLevel(level.upper())
    # pykka logs every actor start/stop at debug: keep it quiet unless asked for.
    logging.getLogger("pykka").setLevel(max(root.level, logging.INFO))


def set_log_level(level: str) -> None:
    """`[logging] level` changed by a reload (service.reload); any thread."""
    logging.getLogger("service.reload").info("log level now %s", level)  # before: it may hide this
    _set_level(level)


def log_thread_stacks() -> None:
    """Log the traceback of every live thread (the SIGUSR1 handler)."""
    logger = logging.getLogger(__name__)
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        stack = "".join(traceback.format_stack(frame))
        logger.warning("thread %s (%s):\n%s", names.get(ident, "?"), ident, stack)


def install_stack_dump_on_sigusr1() -> None:
    signal.signal(signal.SIGUSR1, lambda _sig, _frame: log_thread_stacks())
