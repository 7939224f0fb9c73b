"""Originate and the recorded dialplan. Runs on the switch's event-loop thread.

Extensions (as in the capture lab's dialplan):

* ``default/fsm``: ``set ivr_app=icall``, ``answer``, ``park`` -- the inbound-mode call.
* ``default/fsm_out``: ``answer``, then ``socket <outbound_target> async full``;
  ``default/fsm_out_sync`` the same without ``async`` (see fakeswitch.outbound).
* ``default/icall_out``: the README's outbound extension: ``answer``, ``set
  socket_resume=true``, ``socket <outbound_target> async full`` twice (a call whose
  controller went away mid-call is offered once more, to be resumed from its
  checkpoint), then the safe destination ``transfer fifo_sales XML new_sales``.
* ``new_sales/fifo_*`` when configured real (see Switch.fifo_wanted): ``set fifo_music``,
  ``answer``, ``fifo <queue>@127.0.0.1 in``; ``new_sales/fifo_agent_<queue>``: ``answer``,
  ``fifo <queue>@127.0.0.1 out nowait`` (see fakeswitch.fifo).
* ``new_sales/{fifo_sales,fifo_hst,fifo_cellphone,Playcell_N,VM_N,Quit}``: ``answer``,
  ``playback new_sales/1002.wav``, ``hangup`` (NORMAL_CLEARING).
* ``default/silence``: ``answer``, ``park`` (used by the bgapi capture).
* anything else: hung up with NO_ROUTE_DESTINATION.

Scenario variables (originate ``{...}`` or FakeSwitch.place_call(variables=...)):
``origination_caller_id_number``, ``origination_caller_id_name``, ``origination_uuid``
(the A leg's uuid, as on FreeSWITCH), ``fake_dtmf=2|801|none|#`` (digits for the 1st, 2nd,
3rd ... play_and_get_digits/read), ``fake_hangup_after_s=N`` (the caller's far end, the
A leg, hangs up N scaled seconds after answer; in a real fifo queue that is an abort),
``fake_fifo=real|simple`` (this call's ``fifo_*`` transfers: a mod_fifo queue or the
recorded prompt-and-hangup), ``fake_deadman_s=N`` (extension ``fsm`` runs the README's
dead-man before ``park``: ``sched_transfer +N fifo_sales XML new_sales`` and
``set icall_deadman_id=${last_sched_id}``), ``fake_talk_s=S`` (on an agent's ``fifo_agent_<queue>`` call:
hang the agent up S scaled seconds after the bridge).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING

from fakeswitch import apps, fifo, outbound
from fakeswitch.channel import Channel, now_us

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from fakeswitch.switch import Switch

DEADMAN_DESTINATION = "fifo_sales XML new_sales"
NEW_SALES = re.compile(r"^(fifo_sales|fifo_hst|fifo_cellphone|Playcell_\d+|VM_\d+|Quit)$")
ORIGINATE = re.compile(r"^(?:\{(?P<vars>[^}]*)\})?(?P<dial>\S+)(?:\s+(?P<app>.*))?$")


class OriginateError(Exception):
    """originate failed; the message is the FreeSWITCH cause name."""


def parse_originate(arg: str) -> tuple[dict[str, str], str, str]:
    match = ORIGINATE.match(arg.strip())
    if not match:
        raise OriginateError("INVALID_ARGS")
    variables = {}
    for pair in (match.group("vars") or "").split(","):
        if "=" in pair:
            key, _, value = pair.partition("=")
            variables[key.strip()] = value.strip()
    return variables, match.group("dial"), (match.group("app") or "&park").strip()


def originate(sw: Switch, arg: str, on_answer=None) -> Channel:
    """Create a loopback call; return its B leg. Raises OriginateError."""
    variables, dial, _app = parse_originate(arg)
    if dial.startswith("user/"):
        user = dial[5:].split("@")[0]
        if user not in sw.users:
            raise OriginateError("USER_NOT_REGISTERED")
        raise OriginateError("NO_ANSWER")
    parts = dial.split("/")
    if parts[0] != "loopback" or len(parts) < 2:
        raise OriginateError("CHAN_NOT_IMPLEMENTED")
    ext, context = parts[1], parts[2] if len(parts) > 2 else "default"
    number = variables.get("origination_caller_id_number", "0000000000")
    name = variables.get("origination_caller_id_name")
    a_uuid = variables.get("origination_uuid") or sw.new_uuid()
    a_leg = Channel(a_uuid, f"loopback/{ext}-a", number, name, ext, context, "A")
    b_leg = Channel(sw.new_uuid(), f"loopback/{ext}-b", number, name, ext, context, "B")
    a_leg.other, b_leg.other = b_leg, a_leg
    for chan in (a_leg, b_leg):
        sw.session_count += 1
        v = chan.set_var
        v("direction", "inbound" if chan is b_leg else "outbound")
        v("uuid", chan.uuid)
        v("session_id", str(sw.session_count))
        v("channel_name", chan.name)
        for key, value in (("read_codec", "L16"), ("read_rate", "8000"),
                           ("write_codec", "L16"), ("write_rate", "8000")):
            v(key, value)
        for key, value in variables.items():
            if key != "origination_uuid" or chan is a_leg:
                v(key, value)
    a_leg.set_var("other_loopback_leg_uuid", b_leg.uuid)
    b_leg.set_var("other_loopback_leg_uuid", a_uuid)
    b_leg.set_var("loopback_leg", "B")
    b_leg.set_var("call_uuid", b_leg.uuid)
    sw.channels[a_uuid] = a_leg
    sw.channels[b_leg.uuid] = b_leg
    sw.records[b_leg.uuid] = b_leg.record
    if on_answer is not None:
        b_leg.on_answer.append(on_answer)
    b_leg.rt.task = sw.loop.create_task(run_b_leg(sw, b_leg))
    b_leg.rt.task.add_done_callback(_report_crash)
    return b_leg


def _report_crash(task: asyncio.Task) -> None:
    """A call's coroutine that dies of a bug would otherwise vanish without a word and
    leave its channel up forever; say so loudly."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("stand-in call task crashed", exc_info=task.exception())


def _codec_events(sw: Switch, chan: Channel) -> None:
    chan.state = "CS_NONE"
    for func, line in (("switch_core_session_set_read_codec", 300),
                       ("switch_core_session_set_write_codec", 471)):
        if sw.wanted("CODEC"):
            from fakeswitch.events import Event

            headers = sw.clock.core_headers("CODEC", ("switch_core_codec.c", func, line))
            headers += chan.channel_headers()[:10] + [
                ("Channel-Read-Codec-Name", "L16"), ("Channel-Read-Codec-Rate", "8000"),
                ("Channel-Read-Codec-Bit-Rate", "128000")]
            if line == 300:
                headers += [("channel-read-codec-name", "L16"), ("channel-read-codec-rate", "8000"),
                            ("channel-read-codec-bit-rate", "128000")]
            else:
                headers += [("Channel-Write-Codec-Name", "L16"), ("Channel-Write-Codec-Rate", "8000"),
                            ("Channel-Write-Codec-Bit-Rate", "128000"),
                            ("Channel-Write-Codec-Name", "L16"), ("Channel-Write-Codec-Rate", "8000"),
                            ("Channel-Write-codec-bit-rate", "128000")]
            sw.fire(Event("CODEC", headers))
        chan.record.events.append("CODEC")


async def run_b_leg(sw: Switch, chan: Channel) -> None:
    """The B leg's session thread: create, route, run extensions, tear down."""
    try:
        a_leg = chan.other
        assert a_leg is not None, "originate pairs every B leg with its A leg"
        sw.fire_chan(a_leg, "CHANNEL_CREATE",
                     ("switch_core_state_machine.c", "switch_core_session_run", 626))
        _codec_events(sw, chan)
        chan.state = "CS_INIT"
        sw.set_state(chan, "CS_INIT")
        sw.fire_chan(chan, "CHANNEL_CREATE",
                     ("switch_core_state_machine.c", "switch_core_session_run", 626))
        chan.state = "CS_ROUTING"
        sw.set_call_state(chan, "RINGING")
        sw.set_state(chan, "CS_ROUTING")
        sw.set_state(chan, "CS_EXECUTE")
        dest, context = chan.destination, chan.context
        while chan.alive:
            await run_extension(sw, chan, dest, context)
            if not chan.pending_transfer or not chan.alive:
                break
            dest, context = chan.pending_transfer
            chan.pending_transfer = None
            new_profile(sw, chan, dest, context)
        if chan.alive:
            sw.hangup(chan, "NORMAL_CLEARING")
    except apps.Hangup:
        pass
    await sw.finish(chan)


def transfer_profile(sw: Switch, chan: Channel, dest: str, context: str) -> None:
    """A transfer gives the channel a new caller profile at once (the transfer app's own
    CHANNEL_EXECUTE_COMPLETE already shows it)."""
    epoch = now_us() // 1_000_000
    source = f"{epoch}:{sw.new_uuid()}:bl_xfer:{dest}/{context}/XML"
    chan.rdnis = chan.destination
    chan.destination, chan.context, chan.dialplan = dest, context, "XML"
    chan.transfer_source = source
    chan.profile_index += 1
    chan.profile_created_us = now_us()
    chan.set_var("max_forwards", "69")
    chan.set_var("transfer_history", source)
    chan.set_var("transfer_source", source)


def new_profile(sw: Switch, chan: Channel, dest: str, context: str) -> None:
    """After a transfer: CS_ROUTING -> CS_EXECUTE as recorded."""
    original = chan.call_state
    chan.state = "CS_ROUTING"
    sw.set_call_state(chan, "RINGING")
    sw.set_state(chan, "CS_ROUTING")
    chan.state = "CS_EXECUTE"
    sw.set_call_state(chan, original)
    sw.set_state(chan, "CS_EXECUTE")


async def run_extension(sw: Switch, chan: Channel, dest: str, context: str) -> None:
    if context == "default" and dest == "fsm":
        steps = [("set", "ivr_app=icall"), ("answer", ""), ("park", "")]
        deadman_s = chan.variables.get("fake_deadman_s")
        if deadman_s:  # the README's dead-man: a scheduled transfer the controller cancels
            steps[2:2] = [("sched_transfer", f"+{deadman_s} {DEADMAN_DESTINATION}"),
                          ("set", "icall_deadman_id=${last_sched_id}")]
    elif context == "default" and dest == "silence":
        steps = [("answer", ""), ("park", "")]
    elif context == "default" and dest in ("fsm_out", "fsm_out_sync"):
        host, port = sw.outbound_target or outbound.DEFAULT_TARGET
        mode = "full" if dest == "fsm_out_sync" else "async full"
        steps = [("answer", ""), ("socket", f"{host}:{port} {mode}")]
    elif context == "default" and dest == "icall_out":
        host, port = sw.outbound_target or outbound.DEFAULT_TARGET
        socket_app = ("socket", f"{host}:{port} async full")
        steps = [("answer", ""), ("set", "socket_resume=true"), socket_app, socket_app,
                 ("transfer", DEADMAN_DESTINATION)]
    elif context == "new_sales" and dest.startswith("fifo_agent_"):
        steps = [("answer", ""), ("fifo", f"{fifo.queue_name(dest)} out nowait")]
    elif context == "new_sales" and dest.startswith("fifo_") and sw.fifo_wanted(chan, dest):
        steps = [("set", f"fifo_music={fifo.HOLD_MUSIC}"), ("answer", ""),
                 ("fifo", f"{fifo.queue_name(dest)} in")]
    elif context == "new_sales" and NEW_SALES.match(dest):
        steps = [("answer", ""), ("playback", "new_sales/1002.wav"), ("hangup", "")]
    else:
        sw.hangup(chan, "NO_ROUTE_DESTINATION")
        return
    for app, arg in steps:
        if not chan.alive or chan.pending_transfer:
            return
        await sw.execute(chan, app, arg)
