"""One inbound ESL client connection (mod_event_socket's listener). Runs as an asyncio
task on the switch's event-loop thread.

Replies are written synchronously while a command is handled, so a command's reply
always precedes the events it causes (as on the wire in the captures).

Back-pressure (DESIGN.md): events go straight to the socket while it keeps up; once the
socket's send buffer passes ``HIGH_WATER_BYTES`` they wait in the listener's own queue of
at most ``MAX_QUEUED_EVENTS`` (FreeSWITCH: 100,000). An event that finds the queue full
is lost; after ``MAX_LOST_EVENTS`` lost events the listener is killed (its socket
closed), as FreeSWITCH does: a slow reader is a dead reader. Module constants, read at
run time, so tests can lower them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from fakeswitch import wire
from fakeswitch.events import Event, Subscription

if TYPE_CHECKING:
    from fakeswitch.server import FakeSwitch

logger = logging.getLogger(__name__)

MAX_QUEUED_EVENTS = 100_000
MAX_LOST_EVENTS = 500  # FreeSWITCH kills a listener after this many events it could not queue
HIGH_WATER_BYTES = 256 * 1024


class Listener:
    """Protocol state of one client. ``commands`` maps a command word to its handler."""

    def __init__(self, server: FakeSwitch, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        assert server.switch is not None, "a listener exists only while the switch runs"
        self.sw = server.switch
        self.reader = reader
        self.writer = writer
        self.sub = Subscription()
        self.authed = False
        self.closed = False
        self.frames_sent = 0
        self.lost_events = 0
        self.queued: deque[bytes] = deque()  # events waiting for the socket to drain
        self._flusher: asyncio.Task | None = None
        self.parser = wire.CommandParser()
        self.myevents_uuid: str | None = None  # set by the myevents command
        writer.transport.set_write_buffer_limits(high=HIGH_WATER_BYTES)

    # -- output ----------------------------------------------------------------------
    def send(self, frame: bytes) -> None:
        if self.closed:
            return
        faults = self.server.faults
        self.frames_sent += 1
        faults.write(self, frame)

    def bound_uuid(self) -> str | None:
        """The one channel whose events this listener can pass, when its filters say
        so alone (``myevents``: a single ``Unique-ID`` filter); else None."""
        filters = self.sub.filters
        if len(filters) == 1 and filters[0][0] == "Unique-ID" and filters[0][1][:1] not in ("+", "-", "/", " "):
            return filters[0][1].lower()
        return None

    def wants(self, name: str, subclass: str | None) -> bool:
        return self.authed and not self.closed and self.sub.wants_name(name, subclass)

    def offer(self, event: Event) -> None:
        if not self.wants(event.name, event.subclass) or not self.sub.passes_filters(event):
            return
        frame = event.json() if self.sub.format == "json" else event.plain()
        if not self.queued and self.writer.transport.get_write_buffer_size() <= HIGH_WATER_BYTES:
            self.send(frame)
            return
        if len(self.queued) >= MAX_QUEUED_EVENTS:
            self.lost_events += 1
            if self.lost_events > MAX_LOST_EVENTS:
                logger.warning("listener lost %d events, killing it", self.lost_events)
                self.close()
            return
        self.queued.append(frame)
        if self._flusher is None:
            self._flusher = self.sw.loop.create_task(self._flush())

    async def _flush(self) -> None:
        """Hand queued events to the socket as it drains (the loop thread)."""
        try:
            while self.queued and not self.closed:
                await self.writer.drain()
                while self.queued and not self.closed and \
                        self.writer.transport.get_write_buffer_size() <= HIGH_WATER_BYTES:
                    self.send(self.queued.popleft())
        except (ConnectionError, OSError):
            self.close()
        finally:
            self._flusher = None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.queued.clear()
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
        await self.serve()

    async def serve(self) -> None:
        """Read and handle commands until the peer or the switch closes the socket."""
        try:
            while not self.closed:
                data = await self.reader.read(65536)
                if not data:
                    break
                await self.server.faults.hold_input(self)
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
