"""One CRM lookup over HTTP: the request, its retries, and the answer's validation.

`CrmClient.fetch(caller_id, deadline)` runs in a CrmFetcher worker thread and blocks
for at most the time left until `deadline` (per-attempt timeouts are cut to fit, the
body is read in pieces with the deadline checked between them). It never raises for
anything the CRM does: every outcome is a `Lookup` (extension or None, and why).

Only connection errors, timeouts and 5xx answers are retried (tenacity, exponential
backoff with jitter), and only while the deadline leaves room for another attempt.
An answer is an extension only if it fully matches the configured extension pattern:
a CRM that says `801,sofia/gateway/x/900` gets nothing dialled.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace
from urllib.parse import urlencode, urlsplit

import urllib3
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from ivr import commands

logger = logging.getLogger(__name__)

# Another attempt is only worth starting with at least this much time left.
MIN_ATTEMPT_S = 0.05
READ_CHUNK_BYTES = 8192


class CrmError(Exception):
    """A lookup that produced no extension; `reason` is what the call's log shows."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class CrmUnavailable(CrmError):
    """The CRM could not be asked or did not answer (connection, timeout, 5xx): retried,
    and counted by the circuit breaker."""


class CrmBadAnswer(CrmError):
    """The CRM answered, but not with an extension we may dial: never retried."""


@dataclass(frozen=True)
class Lookup:
    """What one lookup came to. `reachable` feeds the breaker; `cacheable` answers
    (an extension, or the CRM's explicit "no such caller") may be remembered."""

    extension: str | None
    reason: str
    reachable: bool
    cacheable: bool = False


class _PastDeadline(stop_base):
    """Tenacity's stop: the client is closing, or the next attempt would start too
    near the lookup's deadline (the second argument of `CrmClient._attempt`)."""

    def __init__(self, closing: threading.Event):
        self._closing = closing

    def __call__(self, retry_state: RetryCallState) -> bool:
        deadline = retry_state.args[1]
        wake_at = time.monotonic() + (retry_state.upcoming_sleep or 0.0)
        return self._closing.is_set() or wake_at + MIN_ATTEMPT_S >= deadline


class CrmClient:
    """Holds the one urllib3 connection pool; any number of worker threads call `fetch`."""

    def __init__(self, crm: SimpleNamespace, extension_pattern: str):
        self.crm = crm
        self._extension_pattern = extension_pattern
        self._url = crm.base_url.rstrip("/") + crm.path
        # The CRM is one host: a pool for it alone, asked by path. A PoolManager would
        # parse the URL and look its pool up again on every lookup (a fifth of a
        # lookup's CPU, measured at 20 calls/s).
        self._pool = urllib3.connection_from_url(self._url, maxsize=crm.max_concurrent, block=True,
                                                 retries=False)
        parts = urlsplit(self._url)
        self._path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        self._accept = "application/json" if crm.response_format == "json" else "text/plain"
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self.requests_made = 0
        # One Retrying for every lookup (tenacity keeps each thread's state apart, and
        # the deadline travels as `_attempt`'s argument): one built per lookup formed a
        # reference cycle with its thread-local state, ~20 objects a call left for the
        # rare full garbage collection, and icall's memory grew ~80 KB/s at 20 calls/s.
        self._retrying = Retrying(
            stop=stop_after_attempt(crm.attempts) | _PastDeadline(self._closing),
            wait=wait_exponential_jitter(multiplier=crm.backoff_initial_s, max=crm.backoff_max_s,
                                         jitter=crm.backoff_initial_s),
            retry=retry_if_exception_type(CrmUnavailable),
            sleep=self._back_off,
            reraise=True,
        )

    def close(self) -> None:
        """Cut retry back-offs short and drop idle connections. Any thread."""
        self._closing.set()
        self._pool.close()

    def _path_for(self, caller_id: str) -> str:
        """The lookup's path and query, the caller id percent-encoded (UTF-8)."""
        separator = "&" if "?" in self._path else "?"
        return f"{self._path}{separator}{urlencode({self.crm.caller_id_param: caller_id})}"

    def fetch(self, caller_id: str, deadline: float) -> Lookup:
        """Ask the CRM about `caller_id`, retrying within `deadline` (monotonic)."""
        try:
            extension, reason = self._retrying(self._attempt, caller_id, deadline)
        except CrmUnavailable as exc:
            return Lookup(None, exc.reason, reachable=False)
        except CrmBadAnswer as exc:
            # The reason quotes the CRM's answer, which may echo the caller id: it goes
            # to the log and the call's record, so the caller id is masked in it.
            reason = _without(caller_id, exc.reason)
            logger.warning("CRM answer refused: %s", reason)
            logger.debug("CRM answer refused for caller id %r: %s", caller_id, exc.reason)
            return Lookup(None, reason, reachable=True)
        return Lookup(extension, reason, reachable=True, cacheable=True)

    def _back_off(self, seconds: float) -> None:
        """Tenacity's pause between attempts, cut short by `close`. The fetching thread."""
        self._closing.wait(seconds)

    def _attempt(self, caller_id: str, deadline: float) -> tuple[str | None, str]:
        left_s = deadline - time.monotonic()
        if left_s < MIN_ATTEMPT_S:
            raise CrmUnavailable("deadline passed")
        timeout = urllib3.Timeout(connect=min(self.crm.connect_timeout_s, left_s),
                                  read=min(self.crm.read_timeout_s, left_s))
        with self._lock:
            self.requests_made += 1
        try:
            response = self._pool.urlopen(
                "GET", self._path_for(caller_id), timeout=timeout, redirect=False,
                preload_content=False, headers={"Accept": self._accept, "User-Agent": "icall"})
        except urllib3.exceptions.NewConnectionError as exc:  # a TimeoutError subclass!
            raise CrmUnavailable(f"connection failed: {_short(exc)}") from None
        except urllib3.exceptions.TimeoutError:
            raise CrmUnavailable("timeout") from None
        except urllib3.exceptions.HTTPError as exc:
            raise CrmUnavailable(f"connection failed: {_short(exc)}") from None
        try:
            return self._judge(response, deadline)
        except urllib3.exceptions.TimeoutError:
            raise CrmUnavailable("timeout") from None
        except urllib3.exceptions.HTTPError as exc:
            raise CrmUnavailable(f"connection failed: {_short(exc)}") from None
        finally:
            response.release_conn()

    def _judge(self, response: urllib3.BaseHTTPResponse, deadline: float) -> tuple[str | None, str]:
        status = response.status
        try:
            # Read even when unused: the connection goes back to the pool and must not
            # hold half a body. (A body over the cap closes the connection instead.)
            body = self._read_capped(response, deadline)
        except CrmBadAnswer:
            if status == 200:
                raise
            body = b""
        if status >= 500:
            raise CrmUnavailable(f"http {status}")
        if status == 404:
            return None, "not found"
        if status != 200:
            raise CrmBadAnswer(f"http {status}")
        media_type = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if self.crm.response_format == "json":
            if media_type != "application/json" and not media_type.endswith("+json"):
                raise CrmBadAnswer(f"content type {media_type or 'missing'!r}, expected JSON")
            value = self._json_value(body)
        else:
            if media_type not in ("", "text/plain"):
                raise CrmBadAnswer(f"content type {media_type!r}, expected text/plain")
            value = _text(body)
        if not value:
            raise CrmBadAnswer("empty answer")
        if not commands.matches(self._extension_pattern, value):
            raise CrmBadAnswer(f"not an extension: {value[:40]!r}")
        return value, "found"

    def _read_capped(self, response: urllib3.BaseHTTPResponse, deadline: float) -> bytes:
        """The body, refusing (unread) anything longer than max_body_bytes."""
        cap = self.crm.max_body_bytes
        announced = response.headers.get("Content-Length")
        if announced is not None and announced.isdigit() and int(announced) > cap:
            response.close()  # not reading it: the connection cannot be reused
            raise CrmBadAnswer(f"answer too large ({announced} bytes announced)")
        body = bytearray()
        while len(body) <= cap:
            if time.monotonic() >= deadline:
                response.close()
                raise CrmUnavailable("deadline passed while reading")
            piece = response.read(min(READ_CHUNK_BYTES, cap + 1 - len(body)))
            if not piece:
                return bytes(body)
            body += piece
        response.close()
        raise CrmBadAnswer(f"answer too large (over {cap} bytes)")

    def _json_value(self, body: bytes) -> str:
        try:
            document = json.loads(body)
        except ValueError:
            raise CrmBadAnswer("not JSON") from None
        if not isinstance(document, dict):
            raise CrmBadAnswer("JSON answer is not an object")
        value = document.get(self.crm.json_field)
        if value is None:
            raise CrmBadAnswer(f"JSON answer has no {self.crm.json_field!r}")
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise CrmBadAnswer(f"JSON {self.crm.json_field!r} is not a string or number")
        return str(value).strip()


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CrmBadAnswer("answer is not UTF-8 text") from None


def _without(caller_id: str, text: str) -> str:
    """`text` with the caller id masked (personal data stays out of INFO/WARNING logs)."""
    return text.replace(caller_id, "<caller id>") if caller_id else text


def _short(exc: Exception) -> str:
    """The innermost reason of a urllib3 error, without its pool/URL boilerplate."""
    reason = getattr(exc, "reason", None) or exc
    return str(reason)[:120]
