"""One inbound ESL client connection (mod_event_socket's listener). Runs as an asyncio
task on the switch's event-loop thread.

Replies are written synchronously while a command is handled, so a command's reply
always precedes the events it causes (as on the wire in the captures).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from fakeswitch import wire
from fakeswitch.events import Event, Subscription

if TYPE_CHECKING:
    from fakeswitch.server import FakeSwitch

logger = logging.getLogger(__name__)

# FreeSWITCH kills a listener after this many events it could not queue.
MAX_LOST_EVENTS = 500
MAX_BUFFERED_BYTES = 64 * 1024 * 1024


class Listener:
    """Protocol state of one client. ``commands`` maps a command word to its handler."""

    def __init__(self, server: FakeSwitch, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.sw = server.switch
        self.reader = reader
        self.writer = writer
        self.sub = Subscription()
        self.authed = False
        self.closed = False
        self.frames_sent = 0
        self.lost_events = 0
        self.parser = wire.CommandParser()

    # -- output ----------------------------------------------------------------------
    def send(self, frame: bytes) -> None:
        if self.closed:
            return
        faults = self.server.faults
        self.frames_sent += 1
        faults.write(self, frame)

    def wants(self, name: str, subclass: str | None) -> bool:
        return self.authed and not self.closed and self.sub.wants_name(name, subclass)

    def offer(self, event: Event) -> None:
        if not self.wants(event.name, event.subclass) or not self.sub.passes_filters(event):
            return
        transport = self.writer.transport
        if transport.get_write_buffer_size() > MAX_BUFFERED_BYTES:
            self.lost_events += 1
            if self.lost_events > MAX_LOST_EVENTS:
                logger.warning("listener lost %d events, killing it", self.lost_events)
                self.close()
            return
        self.send(event.json() if self.sub.format == "json" else event.plain())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self in self.sw.listeners:
            self.sw.listeners.remove(self)
        self.writer.close()

    # -- input -----------------------------------------------------------------------
    async def run(self) -> None:
        peer = self.writer.get_extra_info("peername")
        if not self.server.allowed(peer[0] if peer else ""):
            self.send(wire.rude_rejection())
            await self._drain_and_close()
            return
        self.sw.listeners.append(self)
        self.send(wire.auth_request())
        try:
            while not self.closed:
                await self.server.faults.before_read(self)
                data = await self.reader.read(65536)
                if not data:
                    break
                for command in self.parser.feed(data):
                    await self.server.faults.before_reply(self, command)
                    if self.closed:
                        break
                    await self.handle(command)
        except (ConnectionError, OSError):
            pass
        except Exception:
            logger.exception("listener failed")
        finally:
            self.close()

    async def _drain_and_close(self) -> None:
        try:
            await self.writer.drain()
        except (ConnectionError, OSError):
            pass
        self.close()

    async def handle(self, command: wire.Command) -> None:
        from fakeswitch import commands

        word = command.line.split(" ", 1)[0].lower()
        if self.server.faults.error_for(word):
            self.send(wire.command_reply(f"-ERR {word} refused by fault injection"))
            return
        if not self.authed:
            await commands.pre_auth(self, command)
            return
        handler = commands.HANDLERS.get(word)
        if handler is None:
            self.send(wire.command_reply("-ERR command not found"))
            return
        await handler(self, command)
