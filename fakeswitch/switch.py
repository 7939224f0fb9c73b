"""The switch core: channels, event firing, app execution and channel life cycle.
Everything here runs on the one event-loop thread (see server.FakeSwitch).

Model: each ``originate ... loopback/<ext>/<context>`` makes two legs. The B leg
(``loopback/<ext>-b``) runs the dialplan and is the channel a controller drives; its
events follow the recordings. The A leg is simplified: it emits only CHANNEL_CREATE,
CHANNEL_ANSWER, CHANNEL_PARK, CHANNEL_HANGUP, CHANNEL_EXECUTE_COMPLETE(park),
CHANNEL_HANGUP_COMPLETE and CHANNEL_DESTROY, and hangs up with its partner.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid as uuidlib
from collections import deque
from typing import TYPE_CHECKING

from fakeswitch import apps, media
from fakeswitch.channel import CallRecord, Channel, now_us
from fakeswitch.events import Clock, Event

if TYPE_CHECKING:
    from fakeswitch.server import FakeSwitch

logger = logging.getLogger(__name__)

EXEC_CALL = ("switch_core_session.c", "switch_core_session_exec")
STATE_CALL = ("switch_channel.c", "switch_channel_perform_set_running_state", 2409)
CALLSTATE_CALL = ("switch_channel.c", "switch_channel_perform_set_callstate", 302)
DEFAULT_DURATIONS_S = {"1000.wav": 1.5, "1001.wav": 2.0, "1002.wav": 1.5, "9004.wav": 1.0}
SOUND_PREFIX = "/usr/share/freeswitch/sounds/"
# A message queued on a parked channel when its outbound socket closes: the park ends.
CONTROLLER_GONE = "_controller_gone"


class Switch:
    """Loop-thread state of the stand-in. Listeners register to receive events."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, time_scale: float = 1.0,
                 users: dict[str, str] | None = None, durations: dict[str, float] | None = None,
                 fifo_mode: str = "simple", fifo_queues: dict[str, str] | None = None) -> None:
        self.loop = loop
        self.time_scale = time_scale
        self.users = dict(users or {})
        self.durations = {**DEFAULT_DURATIONS_S, **(durations or {})}
        self.default_duration_s = 1.5
        self.fifo_mode = fifo_mode
        self.fifo_queues = dict(fifo_queues or {})  # "fifo_sales" or "sales" -> real|simple
        self.fifos: dict[str, deque] = {}  # queue name -> callers waiting (fifo.Waiting)
        self.clock = Clock()
        self.channels: dict[str, Channel] = {}
        self.records: dict[str, CallRecord] = {}
        self.listeners: list = []
        self.session_count = 0
        self.hangup_waiters: dict[str, list] = {}
        self.events_fired = 0
        self.outbound_target: tuple[str, int] | None = None
        # the FakeSwitch that owns this loop (outbound sessions need it)
        self.server: FakeSwitch | None = None
        # Apps started inside another app (a sendmsg without event-lock while one ran).
        self.nested_apps = 0
        self._sched: dict[str, tuple[str, asyncio.TimerHandle]] = {}  # task id -> (group, handle)
        self._sched_ids = 0

    # -- helpers -------------------------------------------------------------------
    def new_uuid(self) -> str:
        return str(uuidlib.uuid4())

    def scaled(self, seconds: float) -> float:
        return seconds * self.time_scale

    def file_duration(self, path: str) -> float:
        return self.durations.get(path, self.durations.get(path.rsplit("/", 1)[-1],
                                                           self.default_duration_s))

    def sound_path(self, arg: str) -> str:
        return arg if arg.startswith(("/", "tone_stream:")) else SOUND_PREFIX + arg

    # -- events --------------------------------------------------------------------
    def wanted(self, name: str, subclass: str | None = None) -> bool:
        return any(listener.wants(name, subclass) for listener in self.listeners)

    def fire(self, event: Event) -> None:
        self.events_fired += 1
        uid: str | None = None
        for listener in list(self.listeners):
            # An outbound session that only follows its own channel skips the others'
            # events before any header is read: with a socket per call, offering every
            # event to every session made the stand-in quadratic in live calls.
            bound = listener.bound_uuid()
            if bound is not None:
                if uid is None:
                    uid = (event.get("Unique-ID") or "").lower()
                if bound != uid:
                    continue
            listener.offer(event)

    def fire_chan(self, chan: Channel, name: str, calling: tuple, *, with_vars: bool = True,
                  pre: list | None = None, post: list | None = None,
                  after_core: list | None = None, subclass: str | None = None) -> None:
        chan.record.events.append(name)
        if not self.wanted(name, subclass):
            self.clock.sequence += 1  # the sequence still advances, as on a real switch
            self.events_fired += 1
            return
        headers = list(pre or []) + self.clock.core_headers(name, calling) + list(after_core or [])
        headers += chan.full_headers(with_vars) + list(post or [])
        self.fire(Event(name, headers, subclass=subclass))

    def set_state(self, chan: Channel, state: str) -> None:
        chan.state = state
        self.fire_chan(chan, "CHANNEL_STATE", STATE_CALL, with_vars=False)

    def set_call_state(self, chan: Channel, call_state: str) -> None:
        original, chan.call_state = chan.call_state, call_state
        from fakeswitch.channel import CALL_STATE_NUMBERS

        self.fire_chan(chan, "CHANNEL_CALLSTATE", CALLSTATE_CALL, with_vars=False, after_core=[
            ("Original-Channel-Call-State", original),
            ("Channel-Call-State-Number", str(CALL_STATE_NUMBERS[call_state])),
        ])

    # -- the scheduler (sched_transfer / sched_cancel) ----------------------------------
    def schedule(self, delay_s: float, action, group: str = "") -> int:
        self._sched_ids += 1
        task_id = str(self._sched_ids)

        def run() -> None:
            self._sched.pop(task_id, None)
            action()

        self._sched[task_id] = (group, self.loop.call_later(self.scaled(delay_s), run))
        return self._sched_ids

    def cancel_scheduled(self, task_or_group: str) -> None:
        for task_id, (group, handle) in list(self._sched.items()):
            if task_or_group in (task_id, group):
                handle.cancel()
                del self._sched[task_id]

    def expand(self, chan: Channel, arg: str) -> str:
        """``${name}`` of a channel variable, as switch_channel_expand_variables does
        (names the channel does not have are left as written)."""
        if "${" not in arg:
            return arg
        return re.sub(r"\$\{([^}]+)\}",
                      lambda m: chan.variables.get(m.group(1), m.group(0)), arg)

    # -- channel operations (called from apps, APIs and listeners) -------------------
    def answer(self, chan: Channel) -> None:
        if chan.answered_us:
            return
        chan.answered_us = now_us()
        chan.answer_state = "answered"
        self.fire_chan(chan, "CHANNEL_ANSWER",
                       ("switch_channel.c", "switch_channel_perform_mark_answered", 3848))
        if chan.other is not None and not chan.other.answered_us:
            chan.other.answered_us = chan.answered_us
            chan.other.answer_state = "answered"
            chan.other.call_state = "ACTIVE"
            self.fire_chan(chan.other, "CHANNEL_ANSWER",
                           ("switch_channel.c", "switch_channel_perform_mark_answered", 3848))
        self.set_call_state(chan, "ACTIVE")
        chan.set_var("endpoint_disposition", "ANSWER")
        after = chan.variables.get("fake_hangup_after_s")
        if after:
            # The caller (the loopback A leg, the far end) gives up.
            far_end = chan.other if chan.other is not None else chan
            self.loop.call_later(self.scaled(float(after)), self.hangup, far_end,
                                 "NORMAL_CLEARING")
        for callback in chan.on_answer:
            callback(chan)
        chan.on_answer.clear()

    def hangup(self, chan: Channel, cause: str = "NORMAL_CLEARING") -> None:
        """Start hanging a channel up; its task finishes the teardown events."""
        if not chan.alive:
            return
        chan.hangup_cause = cause
        chan.record.hangup_cause = cause
        chan.answer_state = "hangup"
        chan.hangup_us = now_us()
        self.fire_chan(chan, "CHANNEL_HANGUP",
                       ("switch_channel.c", "switch_channel_perform_hangup", 3447))
        chan.rt.wake(media.HANGUP)
        for hook in chan.on_hangup:
            hook(chan)
        if chan.rt.task is None:  # a leg without a dialplan task tears down at once
            self.loop.call_soon(self.teardown, chan)
        partner = chan.other
        if partner is not None and partner.alive:
            self.loop.call_soon(self.hangup, partner, "NORMAL_CLEARING")

    def teardown(self, chan: Channel) -> None:
        """CS_HANGUP -> CS_REPORTING -> CS_DESTROY with the recorded events."""
        self.report(chan)
        self.destroy(chan)

    async def finish(self, chan: Channel) -> None:
        """A session task's teardown: as ``teardown``, but CHANNEL_DESTROY waits for
        ``chan.destroy_hold`` when an app set one (mod_fifo's bridge-caller-stop)."""
        self.report(chan)
        if chan.destroy_hold is not None:
            await chan.destroy_hold
        self.destroy(chan)

    def report(self, chan: Channel) -> None:
        """CS_HANGUP -> CS_REPORTING, CDR variables, CHANNEL_HANGUP_COMPLETE (once)."""
        if chan.state in ("CS_REPORTING", "CS_DESTROY"):
            return
        self.set_state(chan, "CS_HANGUP")
        self.set_call_state(chan, "HANGUP")
        self.set_state(chan, "CS_REPORTING")
        chan.set_hangup_variables()
        self.fire_chan(chan, "CHANNEL_HANGUP_COMPLETE",
                       ("switch_core_state_machine.c", "switch_core_session_reporting_state", 943),
                       after_core=[("Hangup-Cause", chan.hangup_cause or "NORMAL_CLEARING")])
        for callback in chan.on_reported:
            callback(chan)

    def destroy(self, chan: Channel) -> None:
        """CHANNEL_DESTROY -> CS_DESTROY; the channel is gone (once)."""
        if chan.state == "CS_DESTROY":
            return
        self.fire_chan(chan, "CHANNEL_DESTROY",
                       ("switch_core_session.c", "switch_core_session_perform_destroy", 1588))
        self.set_state(chan, "CS_DESTROY")
        self.channels.pop(chan.uuid, None)
        for callback in self.hangup_waiters.pop(chan.uuid, []):
            callback(chan)

    def on_teardown(self, chan: Channel, callback) -> None:
        """Call ``callback(chan)`` once the channel is destroyed (at once if it is)."""
        if chan.state == "CS_DESTROY":
            callback(chan)
        else:
            self.hangup_waiters.setdefault(chan.uuid, []).append(callback)

    def fifo_wanted(self, chan: Channel, dest: str) -> bool:
        """Whether a ``fifo_*`` destination is a real mod_fifo queue for this call: the
        call's ``fake_fifo`` first, then the queue's setting (``fifo_sales`` or ``sales``),
        then ``fifo_real_*`` names, then the switch-wide ``fifo_mode``."""
        short = dest[len("fifo_"):]
        mode = (chan.variables.get("fake_fifo") or self.fifo_queues.get(dest)
                or self.fifo_queues.get(short)
                or ("real" if dest.startswith("fifo_real_") else self.fifo_mode))
        return mode == "real"

    def transfer(self, chan: Channel, dest: str, context: str) -> None:
        from fakeswitch import dialplan

        dialplan.transfer_profile(self, chan, dest, context)
        chan.pending_transfer = (dest, context)
        chan.rt.wake(media.MESSAGE)

    def queue_dtmf(self, chan: Channel, digits: str) -> None:
        for digit in digits:
            chan.rt.dtmf += digit
            self.fire_chan(chan, "DTMF",
                           ("switch_channel.c", "switch_channel_dequeue_dtmf", 678),
                           post=[("DTMF-Digit", digit), ("DTMF-Duration", "2000"),
                                 ("DTMF-Source", "APP")])
        chan.rt.wake(media.DTMF)

    def press_scenario_digits(self, chan: Channel) -> None:
        """Press the digits ``fake_dtmf`` lists for this prompt, shortly after it starts."""
        # A prompt played again (a controller that took the call over repeats it) gets
        # the keys the caller gave the first time: a caller repeats their choice.
        arg = chan.variables.get("current_application_data", "")
        if arg and arg == chan.rt.last_prompt:
            chan.rt.prompts_seen -= 1
        chan.rt.last_prompt = arg
        index = chan.rt.prompts_seen
        chan.rt.prompts_seen += 1
        plan = chan.variables.get("fake_dtmf", "").split("|")
        if index >= len(plan) or plan[index] in ("", "none"):
            return
        for i, digit in enumerate(plan[index]):
            self.loop.call_later(self.scaled(0.3 + 0.1 * i), self._press, chan, digit, chan.rt.cuts)

    def _press(self, chan: Channel, digit: str, cuts: int = 0) -> None:
        if chan.alive and chan.rt.cuts == cuts:  # not for a prompt cut short since
            self.queue_dtmf(chan, digit)

    # -- app execution -----------------------------------------------------------------
    async def execute(self, chan: Channel, app: str, arg: str, app_uuid: str | None = None,
                      record: bool = False) -> str:
        """Run one app with CHANNEL_EXECUTE / CHANNEL_EXECUTE_COMPLETE around it."""
        app_uuid = app_uuid or self.new_uuid()
        if record:
            chan.record.commands.append((app, arg))
        handler = apps.APPS.get(app)
        if handler is None:
            # switch_core_session_execute_application: "Invalid Application", the
            # channel is hung up with DESTINATION_OUT_OF_ORDER and no EXECUTE events fire.
            self.hangup(chan, "DESTINATION_OUT_OF_ORDER")
            raise apps.Hangup
        chan.variables.pop("current_application_response", None)
        chan.set_var("current_application", app)
        if arg:
            chan.set_var("current_application_data", arg)
        else:
            chan.variables.pop("current_application_data", None)
        data = [("Application-Data", arg)] if arg else []
        self.fire_chan(chan, "CHANNEL_EXECUTE", EXEC_CALL + (2949,),
                       post=[("Application", app)] + data + [("Application-UUID", app_uuid)])
        hung_up = None
        response = "_none_"
        try:
            response = await handler(self, chan, self.expand(chan, arg))
        except apps.Hangup as exc:
            hung_up = exc
        chan.last_response = response
        self.fire_chan(chan, "CHANNEL_EXECUTE_COMPLETE", EXEC_CALL + (2972,),
                       post=[("Application", app)] + data + [
                           ("Application-Response", response), ("Application-UUID", app_uuid)])
        if hung_up is not None and app != "park":
            raise hung_up
        if chan.after_app is not None:
            follow, chan.after_app = chan.after_app, None
            await follow()
        return response

    def nested_runner(self, chan: Channel):
        async def run(message: dict[str, str]) -> None:
            if message.get("call-command", "execute") == "execute":
                self.nested_apps += 1
                chan.record.nested.append(message.get("execute-app-name", ""))
            await self.run_message(chan, message)

        return run

    async def run_message(self, chan: Channel, message: dict[str, str]) -> None:
        """Act on one queued sendmsg (execute / hangup), then echo PRIVATE_COMMAND."""
        command = message.get("call-command", "execute")
        if command == "hangup":
            self.hangup(chan, message.get("hangup-cause", "NORMAL_CLEARING"))
            return
        if command == "execute":
            loops = int(message.get("loops", "1") or 1)
            event_uuid = message.get("Event-UUID")
            arg = message.get("execute-app-arg", "")
            kind = next((v for k, v in message.items() if k.lower() == "content-type"), "")
            if not arg and kind.lower() == "text/plain":
                arg = message.get("_body", "")  # as switch_ivr_parse_event takes it
            try:
                for loop in range(loops):
                    # switch_ivr_parse_event: the loop counter is set before each run
                    # and cleared once the loop is over.
                    chan.set_var("current_loop", str(loop + 1))
                    chan.set_var("total_loops", str(loops))
                    await self.execute(chan, message.get("execute-app-name", ""), arg,
                                       event_uuid, record=True)
            finally:
                chan.variables.pop("current_loop", None)
                chan.variables.pop("total_loops", None)
        pre = [("Command", message.get("_command", f"sendmsg {chan.uuid}"))]
        pre += [(k, v) for k, v in message.items() if not k.startswith("_")]
        if self.wanted("PRIVATE_COMMAND"):
            headers = pre + self.clock.core_headers(
                "PRIVATE_COMMAND", ("switch_ivr.c", "switch_ivr_parse_next_event", 804))
            headers += chan.full_headers(with_vars=False)
            chan.record.events.append("PRIVATE_COMMAND")
            self.fire(Event("PRIVATE_COMMAND", headers))

    def deliver(self, chan: Channel, message: dict[str, str]) -> None:
        """A sendmsg arrives from a listener: queue it and wake the channel."""
        chan.rt.inbox.append(message)
        chan.rt.wake(media.MESSAGE)

    async def park(self, chan: Channel) -> str:
        """The park loop: run queued messages until a transfer or a hangup."""
        self.fire_chan(chan, "CHANNEL_PARK", ("switch_ivr.c", "switch_ivr_park", 1002))
        if chan.other is not None and chan.other.alive and not chan.other.parked:
            chan.other.parked = True
            self.fire_chan(chan.other, "CHANNEL_PARK", ("switch_ivr.c", "switch_ivr_park", 1002))
        chan.parked = True
        for callback in chan.on_park:
            callback(chan)
        chan.on_park.clear()
        while True:
            chan.rt.cut = False  # a cut app has returned here: the park goes on to its end
            why = await media.wait(chan, None)
            if why == media.HANGUP:
                break
            if why == media.MESSAGE and chan.rt.inbox:
                message = chan.rt.inbox.popleft()
                if message.get(CONTROLLER_GONE):
                    break  # an outbound socket closed: the socket app returns (fakeswitch.outbound)
                try:
                    await self.run_message(chan, message)
                except apps.Hangup:
                    break
            if getattr(chan, "pending_transfer", None):
                self.fire_chan(chan, "CHANNEL_UNPARK", ("switch_ivr.c", "switch_ivr_park", 1213))
                break
        chan.parked = False
        return chan.last_response
