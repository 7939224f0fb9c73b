"""Run by test_outbound_server in a process of its own: an OutboundServer out of file
descriptors (RLIMIT_NOFILE lowered to 64, the rest filled) with a connection waiting,
held for HELD_S; then descriptors are freed. Prints a JSON report on its last line."""

from __future__ import annotations

import json
import logging
import os
import resource
import socket
import threading
import time

from actors.outbound_server import OutboundServer
from tests.waiting import wait_until

HELD_S = 2.0


class Counting(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.accept_warnings = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "accept failed" in record.getMessage():
            self.accept_warnings += 1


def main() -> None:
    counting = Counting()
    logging.getLogger("actors.outbound_server").addHandler(counting)
    logging.getLogger("actors.outbound_server").setLevel(logging.INFO)
    calls: list = []
    server = OutboundServer(("127.0.0.1", 0), calls.append, send_timeout_s=2)
    server.start()
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    filler = []
    try:
        while True:
            filler.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    os.close(filler.pop())  # one for the caller's socket: the server gets none to accept it
    client = socket.create_connection(("127.0.0.1", server.port))
    wall_0, cpu_0 = time.monotonic(), time.process_time()
    threading.Event().wait(HELD_S)  # the window measured: nothing to await in it
    cpu_s, held_s = time.process_time() - cpu_0, time.monotonic() - wall_0
    warnings = counting.accept_warnings
    for fd in filler:
        os.close(fd)
    wait_until(lambda: server.accepted == 1, 10)
    print(json.dumps({"accept_warnings": warnings, "cpu_s": round(cpu_s, 3), "held_s": round(held_s, 3),
                      "accepted_after": server.accepted}))
    client.close()
    server.stop()


if __name__ == "__main__":
    main()
