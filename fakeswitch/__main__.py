"""``python -m fakeswitch --listen 127.0.0.1:8021 --password ClueCon [--time-scale X]
[--users 801=answer:2,802=noanswer] [--allow 127.0.0.1] [--outbound-target host:port]``"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from fakeswitch import FakeSwitch


def parse_users(text: str) -> dict[str, str]:
    users = {}
    for item in filter(None, text.split(",")):
        user, _, behaviour = item.partition("=")
        users[user.strip()] = behaviour.strip() or "answer:2"
    return users


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m fakeswitch", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:8021")
    parser.add_argument("--password", default="ClueCon")
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--users", default="", help="801=answer:2,802=noanswer")
    parser.add_argument("--allow", default="", help="comma-separated peer IPs")
    parser.add_argument("--outbound-target", default="")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(threadName)s %(name)s: %(message)s")
    host, _, port = args.listen.rpartition(":")
    target = None
    if args.outbound_target:
        t_host, _, t_port = args.outbound_target.rpartition(":")
        target = (t_host, int(t_port))
    sw = FakeSwitch(host=host, port=int(port), password=args.password,
                    time_scale=args.time_scale, users=parse_users(args.users),
                    allow=[a for a in args.allow.split(",") if a] or None,
                    outbound_target=target).start()
    logging.getLogger("fakeswitch").info("listening on %s:%d", host, sw.port)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    stopping.wait()
    sw.stop()


if __name__ == "__main__":
    main()
