"""mod_event_socket's inbound commands, with the recorded reply texts. Each handler runs
on the switch's event-loop thread: ``await handler(listener, command)``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from fakeswitch import apis, wire
from fakeswitch.events import Event

if TYPE_CHECKING:
    from fakeswitch.listener import Listener
    from fakeswitch.wire import Command


def reply(listener: Listener, text: str, extra=None) -> None:
    listener.send(wire.command_reply(text, extra))


def _rest(command: Command) -> str:
    return command.line.split(" ", 1)[1].strip() if " " in command.line else ""


async def pre_auth(listener: Listener, command: Command) -> None:
    word = command.line.split(" ", 1)[0].lower()
    if word == "auth" and _rest(command) == listener.server.password:
        listener.authed = True
        reply(listener, "+OK accepted")
        return
    if word == "auth":
        reply(listener, "-ERR invalid")
        listener.send(wire.disconnect_notice())
        listener.close()
        return
    reply(listener, "-ERR command not found")


async def cmd_event(listener: Listener, command: Command) -> None:
    words = _rest(command).split()
    fmt = "plain"
    if words and words[0].lower() in ("plain", "json", "xml"):
        fmt = words.pop(0).lower()
    listener.sub.format = fmt
    listener.sub.subscribe(words)
    reply(listener, f"+OK event listener enabled {fmt}")


async def cmd_nixevent(listener: Listener, command: Command) -> None:
    listener.sub.unsubscribe(_rest(command).split())
    reply(listener, "+OK events nixed")


async def cmd_noevents(listener: Listener, command: Command) -> None:
    listener.sub.clear()
    reply(listener, "+OK no longer listening for events")


async def cmd_filter(listener: Listener, command: Command) -> None:
    rest = _rest(command)
    filters = listener.sub.filters
    if rest.startswith("delete"):
        header, _, value = rest[6:].strip().partition(" ")
        if header.lower() == "all" or not header:
            filters.clear()
            reply(listener, "+OK filter deleted.")
            return
        before = len(filters)
        filters[:] = [(h, v) for h, v in filters
                      if not (h.lower() == header.lower() and (not value or v == value))]
        if len(filters) == before:
            reply(listener, f"-ERR filter not found. [{header}]=[{value}]")
        else:
            reply(listener, f"+OK filter deleted. [{header}]=[{value}]")
        return
    header, _, value = rest.partition(" ")
    if not header or not value:
        reply(listener, "-ERR invalid syntax")
        return
    filters.append((header, value))
    reply(listener, f"+OK filter added. [{header}]=[{value}]")


async def cmd_myevents(listener: Listener, command: Command) -> None:
    # On an inbound socket without a uuid argument the recorded switch says this.
    if not _rest(command):
        reply(listener, "-ERR command not found")
        return
    listener.myevents_uuid = _rest(command).split()[-1]
    listener.sub.subscribe_myevents(listener.myevents_uuid)
    reply(listener, "+OK Events Enabled")


async def cmd_linger(listener: Listener, command: Command) -> None:
    reply(listener, "+OK will linger")


async def cmd_nolinger(listener: Listener, command: Command) -> None:
    reply(listener, "+OK will not linger")


async def cmd_exit(listener: Listener, command: Command) -> None:
    reply(listener, "+OK bye")
    listener.send(wire.disconnect_notice())
    listener.close()


async def cmd_api(listener: Listener, command: Command) -> None:
    rest = _rest(command)
    if not rest:
        reply(listener, "-ERR command not found")
        return
    name, _, arg = rest.partition(" ")
    if listener.server.faults.take(listener.server.faults.api_unanswered, name):
        return  # no reply: the client's wait for it times out
    if listener.server.faults.take(listener.server.faults.api_errors, name):
        listener.send(wire.api_response(f"-ERR {name} failed by fault injection\n"))
        return
    body = await apis.run(listener.sw, name, arg.strip())
    listener.send(wire.api_response(body))


async def cmd_bgapi(listener: Listener, command: Command) -> None:
    rest = _rest(command)
    if not rest:
        reply(listener, "-ERR command not found")
        return
    sw = listener.sw
    job_uuid = command.headers.get("Job-UUID") or sw.new_uuid()
    reply(listener, f"+OK Job-UUID: {job_uuid}", [("Job-UUID", job_uuid)])
    name, _, arg = rest.partition(" ")
    arg = arg.strip()

    async def job() -> None:
        body = await apis.run(sw, name, arg)
        headers = sw.clock.core_headers(
            "BACKGROUND_JOB", ("mod_event_socket.c", "api_exec", 1580))
        headers += [("Job-UUID", job_uuid), ("Job-Command", name), ("Job-Command-Arg", arg)]
        sw.fire(Event("BACKGROUND_JOB", headers, body))

    sw.loop.create_task(job())


async def cmd_sendmsg(listener: Listener, command: Command) -> None:
    sw = listener.sw
    target = _rest(command) or getattr(listener, "session_uuid", "")
    chan = sw.channels.get(target)
    if chan is None or not chan.alive:
        reply(listener, f"-ERR invalid session id [{target}]")
        return
    message = dict(command.headers)
    if not chan.record.received:
        chan.record.first_received_at = time.monotonic()
    chan.record.received.append((message.get("execute-app-name") or message.get("call-command", ""),
                                 chan.variables.get("icall_ckpt", "")))
    message["_command"] = command.line
    if command.body:
        message["_body"] = command.body
    sw.deliver(chan, message)
    reply(listener, "+OK")


HANDLERS = {
    "event": cmd_event,
    "nixevent": cmd_nixevent,
    "noevents": cmd_noevents,
    "filter": cmd_filter,
    "myevents": cmd_myevents,
    "linger": cmd_linger,
    "nolinger": cmd_nolinger,
    "exit": cmd_exit,
    "api": cmd_api,
    "bgapi": cmd_bgapi,
    "sendmsg": cmd_sendmsg,
}
