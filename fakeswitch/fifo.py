"""mod_fifo stand-in (only ``in``: callers waiting). Runs on the event-loop thread."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fakeswitch import media

if TYPE_CHECKING:
    from fakeswitch.channel import Channel
    from fakeswitch.switch import Switch


async def run_caller(sw: Switch, chan: Channel, dest: str) -> None:
    await sw.execute(chan, "answer", "")
    why = await media.wait(chan, None)
    del why
