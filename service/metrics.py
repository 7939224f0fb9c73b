"""A small HTTP endpoint for monitoring: GET /metrics and GET /health.

/metrics is the service's Prometheus registry (service.telemetry) as prometheus_client
encodes it: the Prometheus text format, or OpenMetrics when the scraper asks for it in
`Accept`, gzipped when it accepts gzip.
/health answers 200 "ok: <reason>" or 503 "unhealthy: <reason>", so a load balancer
or a curl in a cron job can tell a stuck service from a working one.

The server runs in a thread named `metrics`, each connection in a short-lived daemon
thread; the registry's collectors and `health()` are called from those threads and
must be bounded (Service asks its actors with a timeout). A connection is closed once
it has lasted `request_timeout_s` (10 s), requests and keep-alive together: an idle
or dribbling client would otherwise hold its thread for ever (a "metrics-deadline"
thread cuts it off, actors.http_deadline).
"""

from __future__ import annotations

import gzip
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from actors.http_deadline import RequestDeadlines

logger = logging.getLogger(__name__)

_TEXT = "text/plain; charset=utf-8"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The listen address is the operator's choice; a restart must not wait for TIME_WAIT.
    allow_reuse_address = True

    def __init__(self, listen: tuple[str, int], registry: CollectorRegistry,
                 health: Callable[[], tuple[bool, str]], request_timeout_s: float):
        if ":" in listen[0]:
            self.address_family = socket.AF_INET6
        self.registry = registry
        self.health = health
        self.request_timeout_s = request_timeout_s
        self.deadlines = RequestDeadlines("metrics")
        super().__init__(listen, _Handler)


class _Handler(BaseHTTPRequestHandler):
    """Runs in a per-request thread."""

    server: _Server
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Each wait for the client bounded, and the connection as a whole.
        self.connection.settimeout(self.server.request_timeout_s)
        self.server.deadlines.begin(self.server.request_timeout_s)
        self.server.deadlines.attach(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.deadlines.end()

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._metrics()
        elif path == "/health":
            self._health()
        else:
            self._reply(404, "not found: try /metrics or /health\n")

    def _metrics(self) -> None:
        encode, content_type = choose_encoder(self.headers.get("Accept", ""))
        try:
            body = encode(self.server.registry)
        except Exception:  # thread edge: one failed scrape must not kill the endpoint
            logger.exception("collecting metrics for /metrics failed")
            self._reply(500, "metrics unavailable\n")
            return
        if gzip_accepted(self.headers.get("Accept-Encoding", "")):
            self._send(200, gzip.compress(body), content_type, {"Content-Encoding": "gzip"})
        else:
            self._send(200, body, content_type)

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

    def _reply(self, status: int, body: str) -> None:
        self._send(status, body.encode("utf-8"), _TEXT)

    def _send(self, status: int, data: bytes, content_type: str,
              extra_headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class signature
        # Scrapers call every few seconds: access lines belong at debug level.
        logger.debug("%s %s", self.address_string(), format % args)


REQUEST_TIMEOUT_S = 10.0  # a scrape takes milliseconds; /health at most an ask's 5 s

# How often the idle server thread wakes to look for shutdown: each wake-up costs CPU
# beside the switch (actors.timed_recv); stopping waits for it at most this long.
_POLL_S = 1.0


class MetricsServer:
    """The /metrics and /health endpoint. `start()`/`stop()` run in the caller's thread.

    The socket is bound in `start()`, so a busy port fails there (OSError) rather than
    in a background thread; `port` is the bound port (useful with port 0).
    """

    def __init__(self, listen: tuple[str, int], registry: CollectorRegistry,
                 health: Callable[[], tuple[bool, str]], request_timeout_s: float = REQUEST_TIMEOUT_S):
        self.listen = listen
        self._registry = registry
        self._health = health
        self._request_timeout_s = request_timeout_s
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("MetricsServer is not started")
        return self._server.server_address[1]

    def start(self) -> None:
        self._server = _Server(self.listen, self._registry, self._health, self._request_timeout_s)
        self._server.deadlines.start()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": _POLL_S},
                                        name="metrics", daemon=True)
        self._thread.start()
        logger.info("metrics and health endpoint on http://%s:%d/", self.listen[0], self.port)

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._server is None:
            return
        # shutdown() waits for serve_forever to notice, at most one _POLL_S.
        self._server.shutdown()
        self._server.server_close()
        self._server.deadlines.stop()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._server = None
        self._thread = None
