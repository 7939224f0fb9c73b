"""Fault knobs for tests, settable at run time from any thread (plain attribute writes,
read by the event-loop thread on each frame).

* ``drop_after_frames``: close a client's socket after it has been sent N frames.
* ``drop_at``: close when a named point is reached: ``"auth"``, ``"event"``, ``"api"``,
  ``"bgapi"``, ``"sendmsg"`` (the command word, before its reply).
* ``reply_delay_s``: wait this long before handling each command.
* ``hold_next``: ``(word, seconds)``: the next command with that word waits this long
  before it is handled (and so answered), once; the connection's later commands wait
  behind it, as they would behind a stuck listener thread of FreeSWITCH.
* ``error_commands``: command words answered with ``-ERR`` instead of being run.
* ``api_errors``: api name -> how many of its next calls answer ``-ERR`` (a switch too
  busy to list its channels, say); counted down, then served normally.
* ``api_unanswered``: api name -> how many of its next calls get no reply at all (a
  switch thread stuck on it); counted down.
* ``malformed``: the next frame is replaced by ``"bad_length"`` (Content-Length larger
  than the body, then close), ``"garbage"`` (header lines without a colon) or
  ``"truncated"`` (half the frame, then close); one-shot.
* ``split_at``: write every frame in chunks of this many bytes (a flush between each).
* ``listing_lag_s``: ``show channels`` leaves out channels younger than this (the real
  switch lists from its core database, which a queue fills a little after the fact).
* ``stop_reading``: stop reading client input (the client's writes back up); input
  already read waits unhandled until it is cleared.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fakeswitch.listener import Listener
    from fakeswitch.wire import Command


class Faults:
    def __init__(self) -> None:
        self.drop_after_frames: int | None = None
        self.drop_at: str | None = None
        self.reply_delay_s = 0.0
        self.hold_next: tuple[str, float] | None = None
        self.error_commands: set[str] = set()
        self.api_errors: dict[str, int] = {}
        self.api_unanswered: dict[str, int] = {}
        self.malformed: str | None = None
        self.split_at: int | None = None
        self.stop_reading = False
        self.listing_lag_s = 0.0
        self._resume = None  # asyncio.Event, created lazily on the loop

    def error_for(self, word: str) -> bool:
        return word in self.error_commands

    @staticmethod
    def take(counts: dict[str, int], name: str) -> bool:
        """True (and one fewer left) while `counts` has some left for `name`."""
        left = counts.get(name, 0)
        if left > 0:
            counts[name] = left - 1
        return left > 0

    def write(self, listener: Listener, frame: bytes) -> None:
        writer = listener.writer
        kind, self.malformed = self.malformed, None
        if kind == "bad_length":
            # Announces 100 bytes more than follow, then closes: the reader waits for them.
            writer.write(b"Content-Length: %d\nContent-Type: api/response\n\n" % (len(frame) + 100))
            writer.write(frame)
            listener.close()
            return
        if kind == "garbage":
            writer.write(b"this is not a header\n\x00\xff garbage\n\n")
        if kind == "truncated":
            writer.write(frame[: len(frame) // 2])
            listener.close()
            return
        if self.split_at:
            step = max(1, self.split_at)
            for i in range(0, len(frame), step):
                writer.write(frame[i : i + step])
        else:
            writer.write(frame)
        if self.drop_after_frames is not None and listener.frames_sent >= self.drop_after_frames:
            listener.close()

    async def hold_input(self, listener: Listener) -> None:
        """While ``stop_reading`` is set, leave input unhandled and the socket unread, so
        the client's writes back up in the kernel buffers (polled every 50 ms)."""
        if not self.stop_reading:
            return
        transport = listener.writer.transport
        # A stream's transport is typed write-only; a TCP connection's also reads.
        assert isinstance(transport, asyncio.ReadTransport), f"cannot pause {transport!r}"
        transport.pause_reading()
        try:
            while self.stop_reading and not listener.closed:
                await asyncio.sleep(0.05)
        finally:
            if not listener.closed:
                transport.resume_reading()

    async def before_reply(self, listener: Listener, command: Command) -> None:
        if self.reply_delay_s:
            await asyncio.sleep(self.reply_delay_s)
        word = command.line.split(" ", 1)[0].lower()
        if self.hold_next is not None and self.hold_next[0] == word:
            _, seconds = self.hold_next
            self.hold_next = None
            # In short sleeps, so that a closing listener (or switch) ends the hold.
            until = asyncio.get_running_loop().time() + seconds
            while not listener.closed and asyncio.get_running_loop().time() < until:
                await asyncio.sleep(0.05)
        if self.drop_at and self.drop_at == word:
            listener.close()
