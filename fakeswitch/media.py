"""Waiting on a channel's "media": timers that stand in for audio, woken early by DTMF,
uuid_break, hangup or a queued sendmsg. Runs on the switch's event-loop thread.

A parked FreeSWITCH channel reads its message queue on every audio frame; a playing app
does too, and runs a queued app *inside* itself unless the message carried
``event-lock: true`` (capture inbound_plain_event_lock). ``wait`` reproduces that.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fakeswitch.channel import Channel

HANGUP, BREAK, DTMF, TIMEOUT, MESSAGE = "hangup", "break", "dtmf", "timeout", "message"
READY = "ready"


class Hangup(Exception):
    """The channel went away while an app was running."""


class ChannelRuntime:
    """The loop-side mailbox of one channel."""

    def __init__(self) -> None:
        self.inbox: deque[dict[str, str]] = deque()
        self.dtmf = ""
        self.broken = False
        # The controller's socket closed under `socket_resume=true`: the switch resets the
        # channel (CS_RESET), which cuts the running app short, every try of it.
        self.cut = False
        self.cuts = 0  # how many times: keys a caller was to press into a cut app are dropped
        self.waiter: asyncio.Future | None = None
        self.task: asyncio.Task | None = None
        self.prompts_seen = 0
        self.last_prompt = ""  # the arg of the last prompt that pressed scenario keys

    def wake(self, reason: str) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(reason)


async def wait(chan: Channel, seconds: float | None, *, on_dtmf: bool = False,
               run_nested=None) -> str:
    """Wait up to ``seconds`` (None = forever) of media time; return why it ended.

    ``run_nested`` is a coroutine function called with each message that is not
    event-locked, so the message's app runs inside the current one.
    """
    rt = chan.rt
    loop = asyncio.get_running_loop()
    deadline = None if seconds is None else loop.time() + seconds
    while True:
        if not chan.alive:
            return HANGUP
        if rt.broken or rt.cut:
            rt.broken = False
            return BREAK
        if chan.pending_transfer:  # a transfer from outside (the scheduler) ends the wait
            return MESSAGE
        if on_dtmf and rt.dtmf:
            return DTMF
        if rt.inbox:
            if run_nested is None:
                return MESSAGE
            if not rt.inbox[0].get("event-lock", "").lower() == "true":
                await run_nested(rt.inbox.popleft())
                continue
        remaining = None if deadline is None else deadline - loop.time()
        if remaining is not None and remaining <= 0:
            return TIMEOUT
        fut = loop.create_future()
        rt.waiter = fut
        handle = None if remaining is None else loop.call_later(remaining, _fire, fut)
        try:
            await fut
        finally:
            rt.waiter = None
            if handle is not None:
                handle.cancel()


async def wait_until(chan: Channel, ready, *, run_nested=None) -> str:
    """Wait until ``ready()`` holds (READY) or the channel hangs up (HANGUP), however long.

    Whoever makes ``ready()`` true calls ``chan.rt.wake(...)``. Messages that are not
    event-locked run nested when ``run_nested`` is given; otherwise they stay queued (a
    hibernating FreeSWITCH session does not read its queue either).
    """
    rt = chan.rt
    loop = asyncio.get_running_loop()
    while True:
        if not chan.alive:
            return HANGUP
        if ready():
            return READY
        if run_nested is not None and rt.inbox and \
                rt.inbox[0].get("event-lock", "").lower() != "true":
            await run_nested(rt.inbox.popleft())
            continue
        fut = loop.create_future()
        rt.waiter = fut
        try:
            await fut
        finally:
            rt.waiter = None


def _fire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(TIMEOUT)
