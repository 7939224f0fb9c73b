"""mod_fifo stand-in: the ``fifo`` app, run on the switch's event-loop thread.

Held to the fifo_real_* captures (tests/captures/README.md, "mod_fifo captures"):

* ``fifo <name> in`` (caller): push (FIFO-Slot 0), hold music (PLAYBACK_START of
  ``fifo_music``), then either
  - an agent picks it up: caller_pop, PLAYBACK_STOP (break), CHANNEL_EXECUTE_COMPLETE of
    ``fifo ... in`` (``_none_``), CS_HIBERNATE for the whole bridge, no further app; or
  - the caller's far end hangs up while queued: PLAYBACK_STOP (done), abort with
    ``variable_fifo_status: ABORTED``, then the usual hangup.
* ``fifo <name> out nowait`` (consumer, the agent's leg): consumer_start, caller_pop,
  consumer_pop, channel-consumer-start, bridge-consumer-start, bridge-caller-start,
  CHANNEL_BRIDGE (consumer leg only); when either side hangs up, the other is hung up by
  the bridge, the caller's CHANNEL_HANGUP_COMPLETE comes first, then CHANNEL_UNBRIDGE,
  channel-consumer-stop, bridge-consumer-stop, bridge-caller-stop (caller in
  CS_REPORTING), consumer_stop, then CHANNEL_EXECUTE_COMPLETE of ``fifo ... out``.
  With nobody waiting, ``nowait`` fires consumer_start and consumer_stop and returns
  (not recorded; the shape follows mod_fifo's loop).

A caller's queue entry (``Waiting``) carries the hand-over between the caller's task and
the consumer's task as futures, so each leg's events come from its own task in the
recorded order. ``fake_talk_s`` on the agent's call hangs the agent up that many
(scaled) seconds after the bridge, as ``FakeSwitch.agent_pickup`` uses.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fakeswitch import media
from fakeswitch.channel import now_us

if TYPE_CHECKING:
    from fakeswitch.channel import Channel
    from fakeswitch.switch import Switch

DOMAIN = "127.0.0.1"
HOLD_MUSIC = "tone_stream://%(1000,4000,440)"
FIFO_CALL = ("mod_fifo.c", "fifo_function")
BRIDGE_CALL = ("switch_ivr_bridge.c", "switch_ivr_multi_threaded_bridge")
PLAY_CALL = ("switch_ivr_play_say.c", "switch_ivr_play_file")
# mod_fifo.c line of each FIFO-Action, as recorded.
LINES = {
    "push": 2743, "abort": 2866, "consumer_start": 2983, "caller_pop": 3224,
    "consumer_pop": 3242, "channel-consumer-start": 3378, "bridge-consumer-start": 3392,
    "bridge-caller-start": 3403, "channel-consumer-stop": 3461, "bridge-consumer-stop": 3489,
    "bridge-caller-stop": 3499, "consumer_stop": 3632,
}  # fmt: skip


def queue_name(dest: str) -> str:
    """``fifo_real_sales``, ``fifo_sales``, ``fifo_agent_sales`` or ``sales`` ->
    ``sales@127.0.0.1`` (the recorded dialplan's ``sales@$${domain}``)."""
    name = dest
    for prefix in ("fifo_agent_", "fifo_real_", "fifo_"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    return name if "@" in name else f"{name}@{DOMAIN}"


class Waiting:
    """One caller in a queue, and the hand-over between its task and the consumer's."""

    def __init__(self, loop: asyncio.AbstractEventLoop, chan: Channel) -> None:
        self.chan = chan
        self.consumer: Channel | None = None
        self.hibernating = loop.create_future()  # the caller left its app (True) or died (False)
        self.reported = loop.create_future()  # the caller's CHANNEL_HANGUP_COMPLETE has fired
        self.released = loop.create_future()  # bridge-caller-stop sent: the caller may be destroyed


def _stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _settle(future: asyncio.Future, value: bool = True) -> None:
    if not future.done():
        future.set_result(value)


def _times(prefix: str, us: int) -> list[tuple[str, str]]:
    return [(f"{prefix}-us", str(us)), (f"{prefix}-ms", str(us // 1000)),
            (f"{prefix}-s", str(us // 1_000_000))]


def fire_info(sw: Switch, chan: Channel, name: str, action: str,
              extra: Sequence[tuple[str, str | None]] | None = None) -> None:
    """A CUSTOM fifo::info event: Event-Subclass first, channel data, FIFO-* last (a None
    value adds no header, see Event)."""
    chan.record.fifo_actions.append(action)
    sw.fire_chan(chan, "CUSTOM", FIFO_CALL + (LINES[action],), subclass="fifo::info",
                 pre=[("Event-Subclass", "fifo::info")],
                 post=[("FIFO-Name", name), ("FIFO-Action", action)] + list(extra or []))
    for callback in list(chan.on_fifo):
        callback(chan, action)


async def app_fifo(sw: Switch, chan: Channel, arg: str) -> str:
    """``fifo <name> in`` or ``fifo <name> out [wait|nowait]``."""
    words = arg.split()
    if len(words) < 2 or words[1] not in ("in", "out"):
        return "_none_"  # the count/usage forms are not modelled
    name = queue_name(words[0].split("!")[0])
    if words[1] == "in":
        return await _caller(sw, chan, name)
    return await _consumer(sw, chan, name)


# -- the caller's side ----------------------------------------------------------------
async def _caller(sw: Switch, chan: Channel, name: str) -> str:
    waiting = Waiting(sw.loop, chan)
    queue = sw.fifos.setdefault(name, deque())
    queue.append(waiting)
    fire_info(sw, chan, name, "push", [("FIFO-Slot", "0")])
    stamp = _stamp()
    for key, value in (("fifo_position", str(len(queue))), ("fifo_priority", "0"),
                       ("fifo_status", "WAITING"), ("fifo_timestamp", stamp),
                       ("fifo_push_timestamp", stamp)):
        chan.set_var(key, value)
    music = chan.variables.get("fifo_music", HOLD_MUSIC)
    music_headers = [("Playback-File-Type", music.split(":", 1)[0]), ("Playback-File-Path", music)]
    sw.fire_chan(chan, "PLAYBACK_START", PLAY_CALL + (1649,), post=music_headers)
    started = sw.loop.time()
    why = await media.wait_until(chan, lambda: waiting.consumer is not None or bool(chan.pending_transfer),
                                 run_nested=sw.nested_runner(chan))
    chan.set_playback_position(int((sw.loop.time() - started) / sw.time_scale * 8000))
    status = "done" if why == media.HANGUP else "break"
    sw.fire_chan(chan, "PLAYBACK_STOP", PLAY_CALL + (2023,),
                 post=music_headers + [("Playback-Status", status)])
    if why == media.HANGUP or waiting.consumer is None:
        # Hung up, or transferred out of the queue (uuid_transfer, as an agent sending
        # the caller back): the wait ends unserved, reported as an abort; after a
        # transfer the dialplan runs the transfer's extension (Switch.execute).
        _leave_unserved(sw, chan, name, queue, waiting)
        if why == media.HANGUP:
            raise media.Hangup
        return "_none_"
    # After this app's CHANNEL_EXECUTE_COMPLETE the channel hibernates (Switch.execute).
    chan.after_app = lambda: _hibernate(sw, chan, waiting)
    return "_none_"


def _leave_unserved(sw: Switch, chan: Channel, name: str, queue: deque, waiting: Waiting) -> None:
    if waiting in queue:
        queue.remove(waiting)
    chan.set_var("fifo_status", "ABORTED")
    chan.set_var("fifo_timestamp", _stamp())
    fire_info(sw, chan, name, "abort")
    _settle(waiting.hibernating, False)


async def _hibernate(sw: Switch, chan: Channel, waiting: Waiting) -> None:
    """CS_HIBERNATE until the bridge ends; the consumer's task fires the bridge events."""
    sw.set_state(chan, "CS_HIBERNATE")
    chan.destroy_hold = waiting.released
    chan.on_reported.append(lambda _chan: _settle(waiting.reported))
    _settle(waiting.hibernating, chan.alive)
    await media.wait_until(chan, lambda: False)
    raise media.Hangup


# -- the consumer's side --------------------------------------------------------------
async def _consumer(sw: Switch, chan: Channel, name: str) -> str:
    fire_info(sw, chan, name, "consumer_start")
    queue = sw.fifos.get(name, deque())
    waiting = next((w for w in queue if w.chan.alive), None)
    if waiting is None:
        fire_info(sw, chan, name, "consumer_stop")
        return "_none_"
    queue.remove(waiting)
    caller = waiting.chan
    fire_info(sw, caller, name, "caller_pop")
    chan.set_var("fifo_status", "WAITING")
    chan.set_var("fifo_timestamp", _stamp())
    fire_info(sw, chan, name, "consumer_pop", [("FIFO-Caller-UUID", caller.uuid)])
    caller.set_var("fifo_serviced_by", chan.uuid)
    caller.set_var("fifo_serviced_uuid", chan.uuid)
    waiting.consumer = chan
    caller.rt.wake(media.READY)
    try:
        if await waiting.hibernating:
            await _bridge(sw, chan, waiting, name)
        else:
            fire_info(sw, chan, name, "consumer_stop")
    finally:
        _settle(waiting.released)
    if not chan.alive:
        raise media.Hangup
    return "_none_"


def _swap_profiles(consumer: Channel, caller: Channel) -> None:
    """mod_fifo gives both legs new caller profiles: the caller shows the agent's caller
    id (its own becomes the callee), and each leg gets the other's Other-Leg block."""
    caller.profile_index += 1
    caller.profile_created_us = now_us()
    caller.transfer_source = None
    caller.callee_name, caller.callee_number = caller.orig_name, caller.orig_number
    caller.caller_name, caller.caller_number = consumer.caller_name, consumer.caller_number
    consumer.profile_index += 1
    consumer.callee_number = "default"
    consumer.other_leg_headers = caller.as_other_leg("originatee")
    caller.other_leg_headers = consumer.as_other_leg("originator")


async def _bridge(sw: Switch, consumer: Channel, waiting: Waiting, name: str) -> None:
    caller = waiting.chan
    cid: list[tuple[str, str | None]] = [("FIFO-Caller-CID-Name", consumer.callee_name),
                                         ("FIFO-Caller-CID-Number", consumer.callee_number)]
    _swap_profiles(consumer, caller)
    start_us = now_us()
    for leg, role, target in ((consumer, "consumer", caller), (caller, "caller", consumer)):
        for key, value in (("fifo_status", "TALKING"), ("fifo_timestamp", _stamp()),
                           ("fifo_epoch_start_bridge", str(start_us // 1_000_000)),
                           ("fifo_target", target.uuid), ("fifo_role", role)):
            leg.set_var(key, value)
    fire_info(sw, consumer, name, "channel-consumer-start", [("FIFO-Type", "onhook"), *cid])
    fire_info(sw, consumer, name, "bridge-consumer-start")
    fire_info(sw, caller, name, "bridge-caller-start")
    for leg, role, target in ((consumer, "consumer", caller), (caller, "caller", consumer)):
        for key, value in (("signal_bond", target.uuid), ("fifo_initiated_bridge", "true"),
                           ("fifo_bridge_role", role), ("last_bridge_to", target.uuid),
                           ("bridge_channel", target.name), ("bridge_uuid", target.uuid)):
            leg.set_var(key, value)
        leg.bridged_us = start_us
    bridge_ids = [("Bridge-A-Unique-ID", consumer.uuid), ("Bridge-B-Unique-ID", caller.uuid)]
    sw.fire_chan(consumer, "CHANNEL_BRIDGE", BRIDGE_CALL + (1689,), after_core=bridge_ids)
    sw.set_state(caller, "CS_EXCHANGE_MEDIA")
    caller.record.bridged_to = consumer.caller_number
    talk_s = consumer.variables.get("fake_talk_s")
    if talk_s:
        sw.loop.call_later(sw.scaled(float(talk_s)), sw.hangup, consumer, "NORMAL_CLEARING")
    caller.on_hangup.append(lambda _chan: consumer.rt.wake(media.READY))
    await media.wait_until(consumer, lambda: not caller.alive)
    talk_us = now_us() - start_us
    caller.set_var("last_bridge_hangup_cause", "NORMAL_CLEARING")
    sw.hangup(caller, "NORMAL_CLEARING")  # the bridge ends the other side (no-op if gone)
    await waiting.reported
    for key, value in (("last_sent_callee_id_name", caller.caller_name or ""),
                       ("last_sent_callee_id_number", caller.caller_number),
                       ("last_bridge_role", "originator"),
                       ("bridge_hangup_cause", "NORMAL_CLEARING")):
        consumer.set_var(key, value)
    sw.fire_chan(consumer, "CHANNEL_UNBRIDGE", BRIDGE_CALL + (1879,), after_core=bridge_ids)
    fire_info(sw, consumer, name, "channel-consumer-stop", [("FIFO-Type", "onhook")]
              + _times("FIFO-Consumer-Bridge-Time", start_us)
              + _times("FIFO-Consumer-Talk-Time", talk_us)
              + _times("FIFO-Consumer-Hold-Time", 0))
    fire_info(sw, consumer, name, "bridge-consumer-stop")
    fire_info(sw, caller, name, "bridge-caller-stop",
              _times("FIFO-Caller-Talk-Time", talk_us) + _times("FIFO-Caller-Hold-Time", 0))
    for key, value in (("fifo_epoch_stop_bridge", str(now_us() // 1_000_000)),
                       ("fifo_bridge_seconds", str(talk_us // 1_000_000)),
                       ("fifo_status", "WAITING"), ("fifo_timestamp", _stamp())):
        consumer.set_var(key, value)
    fire_info(sw, consumer, name, "consumer_stop")
