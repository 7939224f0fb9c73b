"""A fake CDR endpoint: a real HTTP server on loopback that accepts POSTed JSON CDRs.

It records every POST (body, parsed JSON, `Idempotency-Key`) and tells apart what the
endpoint *accepted* from what it merely received, so a test can assert "every CDR
delivered exactly once" the way a real idempotent endpoint would see it: each key
accepted once, however many times it was sent.

Fault knobs: `down(True)` answers 503 to everything; `refuse()` / `reopen()` close and
reopen the listening socket; `script([...])` gives the next requests these replies;
`default` sets the behaviour of the rest (all `Reply` values from fake_crm).

Threads: as FakeCrm (a serving thread plus one thread per request).
Manual use: `python -m fakeswitch.fake_cdr --listen 127.0.0.1:8091`.
"""

from __future__ import annotations

import argparse
import json
import threading
from collections import Counter, deque
from typing import Any

from fakeswitch.fake_crm import LoopbackServer, Reply, Request, _Handler, parse_listen


class FakeCdrSink(LoopbackServer):
    """Accepts POST <any path> with a JSON body; 2xx means accepted (recorded by key)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.default = Reply(status=200, body=b'{"ok": true}', content_type="application/json")
        self._script: deque[Reply] = deque()
        self._down = False
        self._accepted: dict[str, Any] = {}
        self._accept_counts: Counter[str] = Counter()

    def down(self, is_down: bool = True) -> None:
        """While down, every request is answered 503 (and not accepted)."""
        with self._lock:
            self._down = is_down

    def script(self, replies: list[Reply]) -> None:
        with self._lock:
            self._script.extend(replies)

    # --- what the endpoint saw (any thread)

    def total_posts(self) -> int:
        return sum(1 for r in self.requests if r.method == "POST")

    def unique_keys(self) -> set[str]:
        """Keys the endpoint accepted (answered 2xx to)."""
        with self._lock:
            return set(self._accepted)

    def accept_counts(self) -> Counter[str]:
        """How many times each key was answered 2xx: all 1 means exactly once."""
        with self._lock:
            return Counter(self._accept_counts)

    def accepted(self, key: str) -> Any:
        """The first accepted JSON body for `key`."""
        with self._lock:
            return self._accepted[key]

    def wait_for_accepted(self, count: int, timeout_s: float = 10.0) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: len(self._accepted) >= count, timeout_s)

    def answer(self, handler: _Handler, request: Request) -> None:
        with self._lock:
            if self._down:
                reply = Reply(status=503, body=b"down", content_type="text/plain")
            else:
                reply = self._script.popleft() if self._script else self.default
        if request.method != "POST":
            handler.send(Reply(status=405, content_type="text/plain"), b"POST only")
            return
        try:
            document = json.loads(request.body)
        except ValueError:
            handler.send(Reply(status=400, content_type="text/plain"), b"not JSON")
            return
        key = request.headers.get("Idempotency-Key", "")
        accepting = 200 <= reply.status < 300 and not (reply.hang or reply.drop)
        if accepting and key:
            with self._lock:
                self._accepted.setdefault(key, document)
                self._accept_counts[key] += 1
                self._lock.notify_all()
        body = reply.body.encode() if isinstance(reply.body, str) else (reply.body or b"")
        handler.send(reply, body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fakeswitch.fake_cdr",
                                     description="A fake CDR endpoint accepting POSTed JSON.")
    parser.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 8091))
    args = parser.parse_args(argv)
    sink = FakeCdrSink(host=args.listen[0], port=args.listen[1]).start()
    print(f"fake CDR endpoint on {sink.url}; Ctrl-C stops it", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sink.stop()
        print(f"{sink.total_posts()} posts, {len(sink.unique_keys())} unique keys accepted")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
