"""Dialplan applications with the semantics the captures show. Each is a coroutine run
on the switch's event-loop thread: ``await app(sw, chan, arg) -> Application-Response``.

Durations are media time scaled by ``sw.time_scale``; playback lengths come from
``sw.file_duration``. Per-call scenario variables (``fake_dtmf``) press digits during
prompts; see the package docstring.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from fakeswitch import fifo, media, outbound
from fakeswitch.media import Hangup

if TYPE_CHECKING:
    from fakeswitch.channel import Channel
    from fakeswitch.switch import Switch

PB_CALL = ("switch_ivr_play_say.c", "switch_ivr_play_file")


async def playback(sw: Switch, chan: Channel, arg: str, *, on_dtmf: bool = False) -> str:
    path = sw.sound_path(arg)
    chan.set_var("current_loop", chan.variables.pop("current_loop", "1"))
    chan.set_var("total_loops", chan.variables.pop("total_loops", "1"))
    sw.fire_chan(chan, "PLAYBACK_START", PB_CALL + (1649,), post=[("Playback-File-Path", path)])
    duration = sw.file_duration(arg)
    started = sw.loop.time()
    why = await media.wait(chan, sw.scaled(duration), on_dtmf=on_dtmf, run_nested=sw.nested_runner(chan))
    played_s = duration if why == media.TIMEOUT else (sw.loop.time() - started) / sw.time_scale
    samples = int(min(played_s, duration) * 8000)
    chan.set_playback_position(samples)
    if why == media.HANGUP:
        raise Hangup
    status = "done" if why == media.TIMEOUT else "break"
    sw.fire_chan(chan, "PLAYBACK_STOP", PB_CALL + (2023,),
                 post=[("Playback-File-Path", path), ("Playback-Status", status)])
    return "FILE PLAYED" if why == media.TIMEOUT else "PLAYBACK ERROR" if why == media.BREAK else "FILE PLAYED"


async def app_playback(sw: Switch, chan: Channel, arg: str) -> str:
    response = await playback(sw, chan, arg)
    chan.set_var("current_application_response", response)
    return response


async def _collect(sw: Switch, chan: Channel, max_digits: int, timeout_s: float,
                   terminators: str) -> tuple[str, str]:
    """Collect digits already pressed plus more until max, a terminator or the timeout."""
    digits = ""
    while True:
        while chan.rt.dtmf:
            digit, chan.rt.dtmf = chan.rt.dtmf[0], chan.rt.dtmf[1:]
            if digit in terminators:
                return digits, "term"
            digits += digit
            if len(digits) >= max_digits:
                return digits, "max"
        why = await media.wait(chan, sw.scaled(timeout_s), on_dtmf=True)
        if why == media.HANGUP:
            raise Hangup
        if why != media.DTMF:
            return digits, "timeout"


async def app_play_and_get_digits(sw: Switch, chan: Channel, arg: str) -> str:
    words = arg.split()
    min_d, max_d, tries, timeout_ms = (int(w) for w in words[:4])
    terminators, prompt, invalid = words[4], words[5], words[6]
    var = words[7] if len(words) > 7 else "pagd_input"
    regexp = words[8] if len(words) > 8 else r"\d+"
    chan.variables.pop(var, None)
    chan.variables.pop(f"{var}_invalid", None)
    sw.press_scenario_digits(chan)
    result = "failure"
    for _ in range(max(tries, 1)):
        chan.variables.pop("read_result", None)  # switch_ivr_read clears it at each try
        why = await playback(sw, chan, prompt, on_dtmf=True)
        del why
        digits, ended = await _collect(sw, chan, max_d, timeout_ms / 1000, terminators)
        if digits and min_d <= len(digits) <= max_d and re.fullmatch(regexp, digits):
            chan.set_var("read_result", "success")
            chan.set_var(var, digits)
            return "_none_"
        if digits:
            chan.set_var(f"{var}_invalid", digits)
            result = "failure"
        else:
            # A lone terminator is a "successful" read of nothing (capture, case 2).
            result = "success" if ended == "term" else "failure"
        chan.set_var("read_result", result)
        chan.rt.dtmf = ""
        await playback(sw, chan, invalid)
    chan.set_var("read_result", result)
    return "_none_"


async def app_read(sw: Switch, chan: Channel, arg: str) -> str:
    # read <min> <max> <file> <var> <timeout_ms> <terminators>
    words = arg.split()
    min_d, max_d, prompt, var = int(words[0]), int(words[1]), words[2], words[3]
    timeout_ms = int(words[4]) if len(words) > 4 else 5000
    terminators = words[5] if len(words) > 5 else "#"
    chan.variables.pop(var, None)
    sw.press_scenario_digits(chan)
    await playback(sw, chan, prompt, on_dtmf=True)
    digits, ended = await _collect(sw, chan, max_d, timeout_ms / 1000, terminators)
    if digits and len(digits) >= min_d:
        chan.set_var(var, digits)
        chan.set_var("read_result", "success")
    else:
        chan.set_var("read_result", "timeout" if ended == "timeout" else "failure")
    return "_none_"


async def app_set(sw: Switch, chan: Channel, arg: str) -> str:
    name, _, value = arg.partition("=")
    if value:
        chan.set_var(name, value)
    else:
        chan.variables.pop(name, None)
    return "_none_"


async def app_export(sw: Switch, chan: Channel, arg: str) -> str:
    name, _, value = arg.partition("=")
    chan.set_var(name, value)
    chan.set_var("export_vars", name)
    return "_none_"


async def app_answer(sw: Switch, chan: Channel, arg: str) -> str:
    sw.answer(chan)
    return "_none_"


async def app_sleep(sw: Switch, chan: Channel, arg: str) -> str:
    why = await media.wait(chan, sw.scaled(int(arg or 0) / 1000), run_nested=sw.nested_runner(chan))
    if why == media.HANGUP:
        raise Hangup
    return "_none_"


async def app_hangup(sw: Switch, chan: Channel, arg: str) -> str:
    sw.hangup(chan, arg or "NORMAL_CLEARING")
    return "_none_"


async def app_bridge(sw: Switch, chan: Channel, arg: str) -> str:
    """``bridge user/N``: only a registered user that answers succeeds."""
    target = arg.split("/", 1)[1] if arg.startswith("user/") else arg
    user = target.split("@")[0]
    chan.record.bridged_to = user
    chan.set_var("dialed_user", user)
    chan.set_var("dialed_domain", "127.0.0.1")
    sw.set_call_state(chan, "RING_WAIT")
    behaviour = sw.users.get(user)
    cause = None
    # `call_timeout` (set before the bridge) bounds the ringing, as on FreeSWITCH
    # (switch_ivr_originate reads it when the dial string names no leg_timeout).
    ring_limit_s = _seconds(chan.variables.get("call_timeout"))
    if behaviour is None:
        cause = "USER_NOT_REGISTERED"
    elif behaviour.startswith("noanswer"):
        ring_s = float(behaviour.split(":")[1]) if ":" in behaviour else 3.0
        why = await media.wait(chan, sw.scaled(min(ring_s, ring_limit_s or ring_s)))
        if why == media.HANGUP:
            raise Hangup
        cause = "NO_ANSWER"
    sw.set_call_state(chan, "ACTIVE")
    if cause:
        for name in ("originate_disposition", "DIALSTATUS", "originate_failed_cause"):
            chan.set_var(name, cause)
        if chan.variables.get("continue_on_fail", "false") not in ("true", cause):
            sw.hangup(chan, cause)
        return "_none_"
    assert behaviour is not None, "an unregistered user has a cause and returned above"
    talk_s = float(behaviour.split(":")[1]) if ":" in behaviour else 2.0
    chan.set_var("originate_disposition", "SUCCESS")
    chan.set_var("DIALSTATUS", "SUCCESS")
    callee_uuid = sw.new_uuid()
    chan.set_var("bridge_uuid", callee_uuid)
    chan.bridged_us = media_now_us()
    # The caller's leg is the bridge's A leg: CHANNEL_BRIDGE carries its Unique-ID and
    # variables (captures: fifo_real_bridge, where the agent's leg is the A leg).
    bridge_ids = [("Bridge-A-Unique-ID", chan.uuid), ("Bridge-B-Unique-ID", callee_uuid)]
    sw.fire_chan(chan, "CHANNEL_BRIDGE", fifo.BRIDGE_CALL + (1689,), after_core=bridge_ids)
    why = await media.wait(chan, sw.scaled(talk_s))
    if why != media.HANGUP:
        sw.fire_chan(chan, "CHANNEL_UNBRIDGE", fifo.BRIDGE_CALL + (1879,), after_core=bridge_ids)
    if why == media.HANGUP:
        raise Hangup
    chan.set_var("last_bridge_hangup_cause", "NORMAL_CLEARING")
    if chan.variables.get("hangup_after_bridge") == "true":
        sw.hangup(chan, "NORMAL_CLEARING")
    return "_none_"


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def media_now_us() -> int:
    from fakeswitch.channel import now_us

    return now_us()


async def app_sched_transfer(sw: Switch, chan: Channel, arg: str) -> str:
    """``sched_transfer +S <ext> [<dialplan> <context>]`` (mod_dptools): a transfer S
    (scaled) seconds from now, by the scheduler, whatever the channel runs then; the
    task id goes to ``last_sched_id``."""
    words = arg.split()
    if len(words) < 2 or not words[0].startswith("+"):
        return "_none_"
    dest, context = words[1], words[3] if len(words) > 3 else chan.context
    task_id = sw.schedule(float(words[0][1:]), lambda: sw.transfer(chan, dest, context)
                          if chan.alive else None)
    chan.set_var("last_sched_id", str(task_id))
    return "_none_"


async def app_sched_cancel(sw: Switch, chan: Channel, arg: str) -> str:
    """``sched_cancel <task id>``; with no argument, mod_dptools cancels every task in the
    channel's group (its uuid): the stand-in does the same for the tasks it scheduled."""
    sw.cancel_scheduled(arg.strip() or chan.uuid)
    return "_none_"


async def app_park(sw: Switch, chan: Channel, arg: str) -> str:
    return await sw.park(chan)


async def app_transfer(sw: Switch, chan: Channel, arg: str) -> str:
    words = arg.split()
    dest = words[0]
    context = words[2] if len(words) > 2 else chan.context
    chan.record.transferred_to = dest
    sw.transfer(chan, dest, context)
    return "_none_"


APPS = {
    "playback": app_playback,
    "play_and_get_digits": app_play_and_get_digits,
    "read": app_read,
    "set": app_set,
    "export": app_export,
    "answer": app_answer,
    "sleep": app_sleep,
    "hangup": app_hangup,
    "bridge": app_bridge,
    "park": app_park,
    "sched_transfer": app_sched_transfer,
    "sched_cancel": app_sched_cancel,
    "transfer": app_transfer,
    "fifo": fifo.app_fifo,
    "socket": outbound.app_socket,
}
