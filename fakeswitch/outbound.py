"""Outbound mode: the ``socket <host:port> [async] full`` app and its session, run on the
switch's event-loop thread. Held to the outbound_* captures:

* The switch connects to the target; the client's ``connect`` gets the unframed
  CHANNEL_DATA dump (``Reply-Text: %2BOK%0A``, ``Socket-Mode: async|static``,
  ``Control: full`` last).
* ``myevents`` subscribes to the session's own events of the types in
  events.MYEVENTS (a second one: ``-ERR aready enabled.``).
* ``linger`` (forever, ``Linger-Time: -1``), ``linger N`` (close N seconds, scaled by
  time_scale, after the notice) or none (close at hangup); ``exit`` -> ``+OK bye``, the
  notice with ``Content-Disposition: disconnect`` and EOF.
* ``sendmsg`` without a UUID targets the session; ``getvar <name>`` answers the value as
  Reply-Text (``-ERR command not found`` when unset).
* async: the channel parks (CHANNEL_PARK shortly after ``connect``) and runs queued
  messages; at hangup CHANNEL_UNPARK, CHANNEL_EXECUTE_COMPLETE(socket) with the last
  app's response, the teardown up to CHANNEL_HANGUP_COMPLETE, then the notice.
* sync (``fsm_out_sync``): a sendmsg execute runs in the socket loop, its ``+OK`` comes
  when the app ends and the app's events follow the reply; ``async: true`` gets ``+OK``
  but never runs; after CHANNEL_HANGUP only the notices come.

Modelled from mod_event_socket.c (socket_function, listener_run), not recorded: an
unreachable target makes the app return at once, and a client that closes the socket
while the call is up ends the park (the listener clears CF_CONTROLLED); either way the
dialplan goes on with its next action, and the channel hangs up when there is none.
That next action is where a safe dialplan sends the caller when the controller is gone.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from fakeswitch import media, wire
from fakeswitch.listener import Listener
from fakeswitch.switch import CONTROLLER_GONE

if TYPE_CHECKING:
    from fakeswitch.channel import Channel
    from fakeswitch.events import Event
    from fakeswitch.switch import Switch
    from fakeswitch.wire import Command

logger = logging.getLogger(__name__)

DEFAULT_TARGET = ("127.0.0.1", 8084)  # the recorded dialplan's target
# The recorded switch parked about 20 ms after connect, after the client's myevents. The
# stand-in parks as soon as the client subscribes, or after this long at the latest, so a
# client on a loaded machine still sees the CHANNEL_PARK (a sendmsg sent before it waits).
PARK_AFTER_CONNECT_S = 0.5


class OutboundSession(Listener):
    """The listener of one outbound connection, bound to its channel (``session``)."""

    def __init__(self, server, reader, writer, chan: Channel, sync: bool) -> None:
        super().__init__(server, reader, writer)
        self.authed = True
        self.session = chan
        self.session_uuid = chan.uuid
        self.sync = sync
        self.connected = asyncio.Event()
        self.subscribed = asyncio.Event()
        self.myevents = False
        self.linger_s: float | None = None  # None: no linger; -1: until exit
        self.session_over = False  # no more of the channel's events reach this socket
        self.held: list[Event] | None = None  # sync mode: events wait for the reply
        self.finished = server.switch.loop.create_future()  # the socket closed

    # -- events ------------------------------------------------------------------------
    def wants(self, name: str, subclass: str | None) -> bool:
        if self.session_over:
            return False
        return super().wants(name, subclass)

    def offer(self, event) -> None:
        if self.held is not None:
            self.held.append(event)
            return
        super().offer(event)

    def end_session(self) -> None:
        """The channel is done: linger or say goodbye, as the client asked."""
        if self.session_over or self.closed:
            return
        self.session_over = True
        uuid = self.session.uuid
        if self.linger_s is None:
            self.goodbye()
            return
        linger = "-1" if self.linger_s < 0 else str(int(self.linger_s))
        self.send(wire.linger_notice([
            ("Controlled-Session-UUID", uuid), ("Content-Disposition", "linger"),
            ("Channel-Name", self.session.name), ("Linger-Time", linger),
            ("Content-Length", "0")]))
        if self.linger_s >= 0:
            self.sw.loop.call_later(self.sw.scaled(self.linger_s), self.goodbye)

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        if not self.finished.done():
            self.finished.set_result(True)
        chan = self.session
        if chan.alive and chan.parked:
            # The controller is gone: the park ends, the socket app returns; with
            # socket_resume the reset cuts the app that runs (mod_event_socket.c sets
            # CS_RESET; seen on a real switch: a menu ends at once with read_result failure).
            if chan.variables.get("socket_resume") == "true":
                chan.rt.cut = True
                chan.rt.cuts += 1
            chan.rt.inbox.append({CONTROLLER_GONE: "true", "event-lock": "true"})
            chan.rt.wake("controller gone")

    def reply(self, text: str) -> None:
        self.send(wire.command_reply(text))

    def goodbye(self) -> None:
        if self.closed:
            return
        self.send(wire.disconnect_notice([("Controlled-Session-UUID", self.session.uuid),
                                          ("Content-Disposition", "disconnect")]))
        self.close()

    # -- commands ----------------------------------------------------------------------
    async def handle(self, command: Command) -> None:
        word = command.line.split(" ", 1)[0].lower()
        if word == "sendmsg" and self.sync and _rest(command) in ("", self.session.uuid) \
                and not self.server.faults.error_for(word):
            await sync_sendmsg(self, command)
            return
        handler = SESSION_HANDLERS.get(word)
        if handler is None or self.server.faults.error_for(word):
            await super().handle(command)  # the inbound commands (sendmsg, api, event, ...)
            return
        await handler(self, command)


def _rest(command: Command) -> str:
    return command.line.split(" ", 1)[1].strip() if " " in command.line else ""


async def cmd_connect(session: OutboundSession, command: Command) -> None:
    sw, chan = session.sw, session.session
    headers = sw.clock.core_headers("CHANNEL_DATA", ("mod_event_socket.c", "parse_command", 2029))
    headers += chan.profile_headers("Channel") + chan.full_headers()
    headers += [("Content-Type", "command/reply"), ("Reply-Text", "+OK\n"),
                ("Socket-Mode", "static" if session.sync else "async"), ("Control", "full")]
    session.send(wire.connect_reply(headers))
    session.connected.set()


async def cmd_myevents(session: OutboundSession, command: Command) -> None:
    if session.myevents:
        session.reply("-ERR aready enabled.")
        return
    words = _rest(command).split()
    if words and words[0].lower() in ("plain", "json", "xml"):
        session.sub.format = words[0].lower()
    session.myevents = True
    session.sub.subscribe_myevents(session.session.uuid)
    session.reply("+OK Events Enabled")
    session.subscribed.set()


async def cmd_linger(session: OutboundSession, command: Command) -> None:
    rest = _rest(command)
    if rest.isdigit():
        session.linger_s = float(rest)
        session.reply(f"+OK will linger {rest} seconds")
    else:
        session.linger_s = -1
        session.reply("+OK will linger")


async def cmd_nolinger(session: OutboundSession, command: Command) -> None:
    session.linger_s = None
    session.reply("+OK will not linger")


async def cmd_getvar(session: OutboundSession, command: Command) -> None:
    value = session.session.variables.get(_rest(command))
    session.reply(value if value else "-ERR command not found")


async def cmd_exit(session: OutboundSession, command: Command) -> None:
    session.reply("+OK bye")
    session.goodbye()


async def sync_sendmsg(session: OutboundSession, command: Command) -> None:
    """sendmsg on a sync socket: the app runs here, in the session's socket loop."""
    sw, chan = session.sw, session.session
    if not chan.alive:
        session.reply(f"-ERR invalid session id [{chan.uuid}]")
        return
    message = dict(command.headers)
    if message.get("async", "").lower() == "true":
        # Queued for a session thread that is busy in this socket loop: it never runs.
        session.reply("+OK")
        return
    if message.get("call-command", "execute") == "hangup":
        session.reply("+OK")
        sw.hangup(chan, message.get("hangup-cause", "NORMAL_CLEARING"))
        return
    message["_command"] = command.line
    session.held = []
    try:
        await sw.run_message(chan, message)
    except media.Hangup:
        pass
    finally:
        held, session.held = session.held, None
    session.reply("+OK")
    for event in held:
        session.offer(event)


SESSION_HANDLERS = {
    "connect": cmd_connect, "myevents": cmd_myevents, "linger": cmd_linger,
    "nolinger": cmd_nolinger, "getvar": cmd_getvar, "exit": cmd_exit,
}  # fmt: skip


# -- the socket app -------------------------------------------------------------------
def _settle(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(True)


async def app_socket(sw: Switch, chan: Channel, arg: str) -> str:
    """``socket host:port [async] [full]``: connect out and hand the channel over."""
    words = arg.split()
    host, _, port = (words[0] if words else "").rpartition(":")
    sync = "async" not in words[1:]
    chan.set_var("socket_host", host)
    server = sw.server
    try:
        reader, writer = await asyncio.open_connection(host, int(port))
    except (OSError, ValueError) as exc:
        logger.info("outbound socket to %s failed: %s", arg, exc)
        return chan.last_response  # the dialplan goes on with its next action
    assert server is not None, "a Switch runs only inside a FakeSwitch"
    session = OutboundSession(server, reader, writer, chan, sync)
    server.track(session)
    sw.listeners.append(session)
    reading = sw.loop.create_task(session.serve())
    reading.add_done_callback(lambda _task: server.untrack(session))
    hung = sw.loop.create_future()
    chan.on_hangup.append(lambda _chan: _settle(hung))
    if sync:
        chan.on_hangup.append(lambda _chan: sw.loop.call_soon(session.end_session))
    else:
        chan.on_reported.append(lambda _chan: session.end_session())
    connected = sw.loop.create_task(session.connected.wait())
    await asyncio.wait([connected, session.finished, hung], return_when=asyncio.FIRST_COMPLETED)
    connected.cancel()
    if session.connected.is_set() and chan.alive and not sync:
        subscribed = sw.loop.create_task(session.subscribed.wait())
        await asyncio.wait([subscribed, session.finished], timeout=PARK_AFTER_CONNECT_S,
                           return_when=asyncio.FIRST_COMPLETED)
        subscribed.cancel()
        if session.finished.done():
            return chan.last_response  # the controller left before the park
        await sw.park(chan)
        sw.fire_chan(chan, "CHANNEL_UNPARK", ("switch_ivr.c", "switch_ivr_park", 1213))
    elif chan.alive:
        # The socket loop is the session thread: it ends with the call or the socket.
        await asyncio.wait([session.finished, hung], return_when=asyncio.FIRST_COMPLETED)
    return chan.last_response
