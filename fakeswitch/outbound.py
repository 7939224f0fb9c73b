"""Outbound-mode sessions (``socket host:port async full``). Not implemented yet."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fakeswitch.channel import Channel
    from fakeswitch.switch import Switch


async def run_socket(sw: Switch, chan: Channel, sync: bool) -> None:
    sw.hangup(chan, "DESTINATION_OUT_OF_ORDER")
