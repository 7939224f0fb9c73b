"""A small HTTP endpoint for monitoring: GET /metrics and GET /health.

/metrics answers in the Prometheus text format, one gauge per numeric stat
(`icall_<name> <value>`; names ending in `_total` are declared counters).
/health answers 200 "ok: <reason>" or 503 "unhealthy: <reason>", so a load balancer
or a curl in a cron job can tell a stuck service from a working one.

The server runs in a thread named `metrics`, each request in a short-lived daemon
thread; `stats()` and `health()` are called from those request threads and must be
bounded (Service asks its actors with a timeout).
"""

from __future__ import annotations

import logging
import math
import re
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

_TEXT = "text/plain; charset=utf-8"
_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
_NOT_A_NAME_CHAR = re.compile(r"[^a-zA-Z0-9_]")


def render_prometheus(stats: dict[str, Any], prefix: str = "icall_") -> str:
    """Numeric stats as Prometheus text; anything else (strings, None, dicts) is left out."""
    lines = []
    for name in sorted(stats):
        value = stats[name]
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int | float) or (isinstance(value, float) and math.isnan(value)):
            continue
        metric = prefix + _NOT_A_NAME_CHAR.sub("_", str(name))
        kind = "counter" if metric.endswith("_total") else "gauge"
        lines.append(f"# TYPE {metric} {kind}")
        lines.append(f"{metric} {value}")
    return "\n".join(lines) + "\n" if lines else ""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The listen address is the operator's choice; a restart must not wait for TIME_WAIT.
    allow_reuse_address = True

    def __init__(self, listen: tuple[str, int], stats: Callable[[], dict],
                 health: Callable[[], tuple[bool, str]]):
        if ":" in listen[0]:
            self.address_family = socket.AF_INET6
        self.stats = stats
        self.health = health
        super().__init__(listen, _Handler)


class _Handler(BaseHTTPRequestHandler):
    """Runs in a per-request thread."""

    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._metrics()
        elif path == "/health":
            self._health()
        else:
            self._reply(404, "not found: try /metrics or /health\n")

    def _metrics(self) -> None:
        try:
            body = render_prometheus(self.server.stats())
        except Exception:  # thread edge: one failed scrape must not kill the endpoint
            logger.exception("collecting stats for /metrics failed")
            self._reply(500, "stats unavailable\n")
            return
        self._reply(200, body, _PROMETHEUS)

    def _health(self) -> None:
        try:
            healthy, reason = self.server.health()
        except Exception:  # thread edge: a failing health check is an unhealthy service
            logger.exception("health check for /health failed")
            healthy, reason = False, "health check raised"
        if healthy:
            self._reply(200, f"ok: {reason}\n")
        else:
            self._reply(503, f"unhealthy: {reason}\n")

    def _reply(self, status: int, body: str, content_type: str = _TEXT) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class signature
        # Scrapers call every few seconds: access lines belong at debug level.
        logger.debug("%s %s", self.address_string(), format % args)


class MetricsServer:
    """The /metrics and /health endpoint. `start()`/`stop()` run in the caller's thread.

    The socket is bound in `start()`, so a busy port fails there (OSError) rather than
    in a background thread; `port` is the bound port (useful with port 0).
    """

    def __init__(self, listen: tuple[str, int], stats: Callable[[], dict],
                 health: Callable[[], tuple[bool, str]]):
        self.listen = listen
        self._stats = stats
        self._health = health
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("MetricsServer is not started")
        return self._server.server_address[1]

    def start(self) -> None:
        self._server = _Server(self.listen, self._stats, self._health)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="metrics", daemon=True)
        self._thread.start()
        logger.info("metrics and health endpoint on http://%s:%d/", self.listen[0], self.port)

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._server is None:
            return
        # shutdown() waits for serve_forever to notice, at most one poll_interval.
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._server = None
        self._thread = None
