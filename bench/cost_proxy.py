"""A counting proxy between FreeSWITCH and a controller: what each makes the other read.

Every connection accepted on --listen is joined to --target; bytes are counted both
ways, and the switch's side of the stream is split into ESL frames (Content-Type,
and for events their Event-Name, the Application of a CHANNEL_EXECUTE_COMPLETE, the
size of `variable_icall_ckpt`), the controller's side into commands (first word;
`sendmsg` by its execute-app-name, `api` by its api name). --switch-side says which
end is the switch: `accept` for outbound mode (the switch's `socket` app connects to
the proxy), `connect` for inbound mode (the controller logs in through the proxy).

    .venv/bin/python -m bench.cost_proxy --listen 127.0.0.1:8185 --target 127.0.0.1:8184
        --switch-side accept --out counts.json

On SIGTERM/SIGINT it writes the totals (JSON) to --out and exits. A measuring tool,
not a test; one asyncio thread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from urllib.parse import unquote


class Totals:
    def __init__(self) -> None:
        self.connections = 0
        self.switch_bytes = 0  # written by the switch
        self.controller_bytes = 0  # written by the controller
        self.frames: Counter[str] = Counter()  # by Content-Type
        self.events: Counter[str] = Counter()  # by Event-Name (and Application)
        self.commands: Counter[str] = Counter()
        self.event_bytes: Counter[str] = Counter()
        self.ckpt_bytes = 0  # variable_icall_ckpt carried by events (decoded length)
        self.ckpt_events = 0

    def as_dict(self) -> dict:
        return {"connections": self.connections, "switch_bytes": self.switch_bytes,
                "controller_bytes": self.controller_bytes, "frames": dict(self.frames),
                "events": dict(self.events), "event_bytes": dict(self.event_bytes),
                "commands": dict(self.commands),
                "ckpt_bytes": self.ckpt_bytes, "ckpt_events": self.ckpt_events}


def frames(buf: bytearray) -> Iterator[tuple[str, dict[str, str], bytes]]:
    """Whole frames taken off the front of `buf`: (first line, headers, body). A
    command's body length is `content-length`, a frame's `Content-Length`."""
    while True:
        end = buf.find(b"\n\n")
        if end < 0:
            return
        lines = buf[:end].decode("utf-8", "replace").split("\n")
        headers = dict(line.split(": ", 1) for line in lines if ": " in line)
        length = int(headers.get("Content-Length", headers.get("content-length", "0")) or 0)
        if len(buf) < end + 2 + length:
            return
        body = bytes(buf[end + 2:end + 2 + length])
        del buf[:end + 2 + length]
        yield lines[0], headers, body


class SwitchStream:
    """Splits what the switch wrote into frames."""

    def __init__(self, totals: Totals):
        self.totals, self.buf = totals, bytearray()

    def feed(self, data: bytes) -> None:
        self.buf += data
        for _, headers, body in frames(self.buf):
            kind = headers.get("Content-Type", "?")
            self.totals.frames[kind] += 1
            if kind == "text/event-plain":
                self.event(body.decode("utf-8", "replace"), len(body))

    def event(self, text: str, size: int) -> None:
        head = text.split("\n\n", 1)[0]
        headers = dict(line.split(": ", 1) for line in head.split("\n") if ": " in line)
        name = headers.get("Event-Name", "?")
        if name == "CHANNEL_EXECUTE_COMPLETE":
            name += ":" + unquote(headers.get("Application", ""))
        elif name == "CUSTOM":
            name += ":" + unquote(headers.get("Event-Subclass", ""))
        self.totals.events[name] += 1
        self.totals.event_bytes[name] += size
        ckpt = headers.get("variable_icall_ckpt")
        if ckpt is not None:
            self.totals.ckpt_events += 1
            self.totals.ckpt_bytes += len(unquote(ckpt))


class ControllerStream:
    """Splits what the controller wrote into commands."""

    def __init__(self, totals: Totals):
        self.totals, self.buf = totals, bytearray()

    def feed(self, data: bytes) -> None:
        self.buf += data
        for first, headers, _ in frames(self.buf):
            words = first.split()
            what = words[0] if words else "?"
            if what == "sendmsg":
                what += ":" + headers.get("execute-app-name", headers.get("call-command", "?"))
                if headers.get("execute-app-arg", "").startswith("icall_ckpt="):
                    what += ":icall_ckpt"
            elif what in ("api", "bgapi") and len(words) > 1:
                what += ":" + words[1]
            self.totals.commands[what] += 1


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stream, count) -> None:
    try:
        while data := await reader.read(65536):
            count(len(data))
            stream.feed(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except OSError:
            pass


async def serve(args: argparse.Namespace, totals: Totals, stop: asyncio.Event) -> None:
    host, port = args.target.rsplit(":", 1)

    async def joined(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        totals.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return

        def from_switch(n: int) -> None:
            totals.switch_bytes += n

        def from_controller(n: int) -> None:
            totals.controller_bytes += n

        if args.switch_side == "accept":  # the switch connected to us
            down = pump(reader, up_writer, SwitchStream(totals), from_switch)
            up = pump(up_reader, writer, ControllerStream(totals), from_controller)
        else:
            down = pump(up_reader, writer, SwitchStream(totals), from_switch)
            up = pump(reader, up_writer, ControllerStream(totals), from_controller)
        await asyncio.gather(down, up)

    lhost, lport = args.listen.rsplit(":", 1)
    server = await asyncio.start_server(joined, lhost, int(lport))
    print("READY", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--switch-side", choices=("accept", "connect"), required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    totals = Totals()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(args, totals, stop)

    asyncio.run(run())
    with open(args.out, "w") as out:
        json.dump(totals.as_dict(), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
