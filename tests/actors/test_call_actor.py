"""A CallActor that replaces a dead one: it resends what was not acknowledged and
numbers its own writes after the dead actor's last one (a reused number would be
taken for a repeat by the writer's idempotent keys and dropped)."""

from __future__ import annotations

import json
import queue
import re
import time
import uuid as uuidlib
from datetime import datetime
from zoneinfo import ZoneInfo

import pykka

from actors.call_actor import CallActor, CallServices
from actors.messages import ChannelCommand, ChannelCommands, DbAck, DbWrite, EslEvent
from actors.reporting import Cause
from actors.timers import TimerService
from ivr.config import load_config
from ivr.effects import CrmAnswer, Execute
from ivr.event import Event
from ivr.flow import FlowContext
from ivr.flows import make_flow
from ivr.resume import CHECKPOINT_VARIABLE
from tests.ivr.calls import CallScript
from tests.waiting import wait_until

WAIT_S = 10
CALL = "5f1c0d7e-0000-4000-8000-000000000001"


class Writer(pykka.ThreadingActor):
    """Stands in for the DbWriter: hands every write to the test, acks it (unless
    `ack` is False: then the test does)."""

    def __init__(self, seen: queue.Queue, ack: bool = True):
        super().__init__()
        self.seen, self.ack = seen, ack

    def on_receive(self, message):
        if isinstance(message, DbWrite):
            if message.reply_to is not None and self.ack:  # acked before the test sees it
                message.reply_to.tell(DbAck(message.call_uuid, message.seq))
            self.seen.put(message)


class Idle(pykka.ThreadingActor):
    """Commander, CRM and supervisor: nothing is asked of them in this test."""

    def execute(self, *args, **kwargs):
        pass

    def hangup(self, *args, **kwargs):
        pass

    def on_receive(self, message):
        pass


class Commander(pykka.ThreadingActor):
    """Stands in for the Commander: hands each command and its `since` to the test."""

    def __init__(self, seen: queue.Queue):
        super().__init__()
        self.seen = seen

    def execute(self, call_uuid, app, arg, event_uuid, lock=False, reply_to=None, since=None):
        self.seen.put((Execute(app, arg, event_uuid, lock), since))

    def hangup(self, call_uuid, cause="NORMAL_CLEARING", reply_to=None, since=None):
        self.seen.put((("hangup", cause), since))

    def api(self, command):
        self.seen.put((("api", command), None))
        return "+OK"

    def on_receive(self, message):
        if isinstance(message, ChannelCommand):  # what a call actor tells the Commander
            message.deliver(self)
        elif isinstance(message, ChannelCommands):  # a batch's commands, in order
            for command in message.commands:
                command.deliver(self)


def flow_context(config) -> FlowContext:
    """A weekday morning (office hours), no time conditions, fresh ids."""
    return FlowContext(config=config, now=lambda: datetime(2026, 11, 25, 10, tzinfo=ZoneInfo("UTC")),
                       time_conditions=lambda: (), new_id=lambda: str(uuidlib.uuid4()))


def test_a_replacement_resends_inherited_writes_and_numbers_its_own_after_them():
    config = load_config(None, {"ICALL_FREESWITCH_PASSWORD": "x", "ICALL_IVR_HANGUP_LINGER_S": "0"})
    seen: queue.Queue = queue.Queue()
    timers = TimerService()
    timers.start()
    idle = Idle.start()
    services = CallServices(config=config, supervisor=idle, commander=idle,
                            db_writer=Writer.start(seen), crm=idle, timers=timers)
    ctx = flow_context(config)
    flow = make_flow("icall", CALL, ctx)
    flow.resume_after_failure({"state": "main_menu_wait_dtmf", "path": ["welcome", "main_menu"]})
    inherited = DbWrite(CALL, 1_000_001, "failure", {"uuid": CALL, "state": "main_menu", "error": "boom"})
    try:
        ref = CallActor.start(CALL, flow, services, None, (inherited,), 7)
        resent = seen.get(timeout=WAIT_S)
        assert (resent.seq, resent.kind) == (1_000_001, "failure")
        # The replacement must receive the ack of what it resends.
        resent.reply_to.tell(DbAck(CALL, 1_000_001))
        assert ref.proxy().unacked_writes().get(timeout=WAIT_S) == []

        ref.tell(EslEvent(Event({"Event-Name": "CHANNEL_HANGUP_COMPLETE", "Unique-ID": CALL,
                                 "Hangup-Cause": "NORMAL_CLEARING"})))
        cdr = seen.get(timeout=WAIT_S)
        assert (cdr.kind, cdr.seq) == ("cdr", 8)
    finally:
        timers.stop()


def next_command(commands: queue.Queue):
    """The next command the flow sent, checkpoint writes (`uuid_setvar ... icall_ckpt`,
    `set icall_ckpt=...`) left out: they go before a state's commands and are never timed."""
    while True:
        command, since = commands.get(timeout=WAIT_S)
        if isinstance(command, tuple) and command[0] == "api":
            continue
        if not command.arg.startswith(CHECKPOINT_VARIABLE + "="):
            return command, since
        assert since is None


def setvar_checkpoint(entry) -> dict:
    """The checkpoint of an `api uuid_setvar <uuid> icall_ckpt <value>` the test Commander
    saw, its value unescaped as the switch does (resume.setvar_value)."""
    (kind, command), _ = entry
    assert kind == "api", entry
    _, uuid, name, value = command.split(" ", 3)
    assert (uuid, name) == (CALL, CHECKPOINT_VARIABLE)
    return json.loads(re.sub(r"\\(.)", r"\1", value))


def test_the_checkpoint_goes_by_uuid_setvar_ahead_of_its_batch_carrying_only_unacknowledged_writes():
    """Every later event of the call carries the checkpoint: a write the DbWriter has
    acknowledged no longer rides in it, and none carries the call's uuid again."""
    config = load_config(None, {"ICALL_FREESWITCH_PASSWORD": "x", "ICALL_IVR_HANGUP_LINGER_S": "0"})
    commands: queue.Queue = queue.Queue()
    writes: queue.Queue = queue.Queue()
    timers = TimerService()
    timers.start()
    idle = Idle.start()
    services = CallServices(config=config, supervisor=idle, commander=Commander.start(commands),
                            db_writer=Writer.start(writes, ack=False), crm=idle, timers=timers)
    script = CallScript(CALL, caller_id="5551002")
    try:
        ref = CallActor.start(CALL, make_flow("icall", CALL, flow_context(config)), services, script.park())
        first = setvar_checkpoint(commands.get(timeout=WAIT_S))
        welcome, _ = commands.get(timeout=WAIT_S)
        assert welcome.app == "playback", "the checkpoint is set before its batch's command"
        call_row = writes.get(timeout=WAIT_S)
        assert [[seq, kind] for seq, kind, _ in first["r"]] == [[call_row.seq, "call"]]
        assert "uuid" not in first["r"][0][2] and first["r"][0][2]["caller_id"] == "5551002"
        call_row.reply_to.tell(DbAck(CALL, call_row.seq))
        ref.tell(EslEvent(script.complete(welcome)))
        second = setvar_checkpoint(commands.get(timeout=WAIT_S))
        assert second["s"] == "main_menu_wait_dtmf"
        assert call_row.seq not in [seq for seq, _, _ in second.get("r", [])], "acknowledged: not carried"
    finally:
        timers.stop()


def test_the_first_command_of_a_park_is_timed_as_takeover_and_of_each_event_as_reaction():
    config = load_config(None, {"ICALL_FREESWITCH_PASSWORD": "x", "ICALL_IVR_HANGUP_LINGER_S": "0"})
    commands: queue.Queue = queue.Queue()
    timers = TimerService()
    timers.start()
    idle = Idle.start()
    services = CallServices(config=config, supervisor=idle, commander=Commander.start(commands),
                            db_writer=Writer.start(queue.Queue()), crm=idle, timers=timers)
    ctx = flow_context(config)
    script = CallScript(CALL, caller_id="5551002")
    try:
        ref = CallActor.start(CALL, make_flow("icall", CALL, ctx), services, script.park(),
                              parked_read_at=12.5)
        welcome, since = next_command(commands)
        assert (welcome.app, since) == ("playback", Cause("takeover", 12.5))
        ref.tell(CrmAnswer(CALL, "801", "found"))

        before = time.monotonic()
        completion = EslEvent(script.complete(welcome))
        ref.tell(completion)
        menu, since = next_command(commands)
        assert menu.app == "play_and_get_digits"
        assert since.kind == "reaction" and before <= since.at <= time.monotonic()
        # pykka's loop holds the last message while the actor waits: the event (~3 KB
        # off the wire) must not stay alive with it for the rest of the call.
        assert completion.event is None

        # Digit 2 with a CRM extension: the transfer prompt, then (once it has played)
        # four `set`s and the bridge, all caused by one event. Only the first of those
        # carries the cause: the others queue behind it in the Commander.
        ref.tell(EslEvent(script.complete(menu, "2", menu_number="2", read_result="success")))
        prompt, since = next_command(commands)
        assert (prompt.arg, since.kind) == ("new_sales/1002.wav", "reaction")
        ref.tell(EslEvent(script.complete(prompt)))
        caused = [next_command(commands) for _ in range(5)]
        assert [command.app for command, _ in caused] == ["set", "set", "set", "set", "bridge"]
        assert caused[0][1] is not None and caused[0][1].kind == "reaction"
        assert [since for _, since in caused[1:]] == [None] * 4
    finally:
        timers.stop()


def with_a_dead_commander(seen: queue.Queue) -> tuple[CallServices, FlowContext, TimerService]:
    """Services whose Commander has died (and is not replaced yet); writes go to `seen`."""
    config = load_config(None, {"ICALL_FREESWITCH_PASSWORD": "x", "ICALL_IVR_HANGUP_LINGER_S": "0"})
    timers = TimerService()
    timers.start()
    idle = Idle.start()
    dead = Idle.start()
    dead.stop()
    services = CallServices(config=config, supervisor=idle, commander=dead,
                            db_writer=Writer.start(seen), crm=idle, timers=timers)
    ctx = flow_context(config)
    return services, ctx, timers


def test_a_command_the_dead_commander_cannot_take_reaches_the_flow_as_a_refusal():
    """A Commander that stays dead (no replacement within ~2 s): the call's command is
    a refusal the flow hears (it sends the caller to safety), never a silent loss."""
    seen: queue.Queue = queue.Queue()
    services, ctx, timers = with_a_dead_commander(seen)
    try:
        CallActor.start(CALL, make_flow("icall", CALL, ctx), services, CallScript(CALL).park())
        steps = []
        while "CommandFailed" not in steps:
            write = seen.get(timeout=WAIT_S)
            if write.kind == "step":
                steps.append(write.fields["step"])
        assert "-ERR no Commander" in write.fields["value"]
    finally:
        timers.stop()


def test_a_command_whose_commander_died_goes_out_on_the_replacement():
    seen: queue.Queue = queue.Queue()
    commands: queue.Queue = queue.Queue()
    services, ctx, timers = with_a_dead_commander(seen)
    try:
        CallActor.start(CALL, make_flow("icall", CALL, ctx), services, CallScript(CALL).park())
        services.commander = Commander.start(commands)  # what the supervisor does on ServiceDied
        welcome, _ = next_command(commands)
        assert (welcome.app, welcome.arg) == ("playback", "new_sales/1000.wav")
        steps = []
        while not seen.empty():
            write = seen.get_nowait()
            steps += [write.fields["step"]] if write.kind == "step" else []
        assert "CommandFailed" not in steps
    finally:
        timers.stop()


def lingering_call(linger_s: str, seen: queue.Queue, commands: queue.Queue | None = None,
                   ) -> tuple[CallServices, FlowContext, TimerService]:
    """Services with a real timer thread and `[ivr] hangup_linger_s` = `linger_s`;
    writes go to `seen` and are acknowledged at once, commands to `commands` if given."""
    config = load_config(None, {"ICALL_FREESWITCH_PASSWORD": "x", "ICALL_IVR_HANGUP_LINGER_S": linger_s})
    timers = TimerService()
    timers.start()
    idle = Idle.start()
    commander = Commander.start(commands if commands is not None else queue.Queue())
    services = CallServices(config=config, supervisor=idle, commander=commander,
                            db_writer=Writer.start(seen), crm=idle, timers=timers)
    ctx = flow_context(config)
    return services, ctx, timers


def hang_up_and_wait_for_cdr(ref: pykka.ActorRef, script: CallScript, seen: queue.Queue,
                             *before: Event) -> DbWrite:
    """Tell the call `before`, then its hangup; return its CDR once written."""
    for event in (*before, script.hangup(), script.hangup_complete()):
        ref.tell(EslEvent(event))
    while True:
        write = seen.get(timeout=WAIT_S)
        if write.kind == "cdr":
            return write


def test_a_call_that_never_queued_stops_once_its_cdr_is_acknowledged_not_after_the_linger():
    seen: queue.Queue = queue.Queue()
    services, ctx, timers = lingering_call("600", seen)
    script = CallScript(CALL)
    try:
        ref = CallActor.start(CALL, make_flow("icall", CALL, ctx), services, script.park())
        hang_up_and_wait_for_cdr(ref, script, seen)
        # Nothing more comes for a call that never entered a queue: its thread and
        # memory go now, not after the configured 600 s.
        assert ref.actor_stopped.wait(WAIT_S)
    finally:
        timers.stop()


def test_a_call_that_went_through_a_queue_lingers_for_the_queues_late_events():
    seen: queue.Queue = queue.Queue()
    services, ctx, timers = lingering_call("1.5", seen)
    script = CallScript(CALL)
    try:
        ref = CallActor.start(CALL, make_flow("icall", CALL, ctx), services, script.park())
        hang_up_and_wait_for_cdr(ref, script, seen, script.fifo("push"))
        # Past the quick look a call that never queued would take, it is still there:
        # mod_fifo's bridge-caller-stop comes after the caller's hangup, and is heard.
        assert not ref.actor_stopped.wait(0.6)
        ref.tell(EslEvent(script.fifo("bridge-caller-stop")))
        actions = []
        while "bridge-caller-stop" not in actions:
            write = seen.get(timeout=WAIT_S)
            if write.kind == "fifo":
                actions.append(write.fields["action"])
        assert actions[-1] == "bridge-caller-stop"
        assert ref.actor_stopped.wait(WAIT_S), "and it stops after hangup_linger_s"
    finally:
        timers.stop()


def test_a_stopped_call_leaves_no_timer_behind_holding_its_actor():
    """Its guard timers run for `[ivr] command_timeout_s` (120 s): left in the timer
    heap, each would hold the ended call's ActorRef and mailbox that long."""
    seen: queue.Queue = queue.Queue()
    services, ctx, timers = lingering_call("0.1", seen)
    script = CallScript(CALL)
    try:
        ref = CallActor.start(CALL, make_flow("icall", CALL, ctx), services, script.park())
        assert wait_until(lambda: timers.pending() > 0, WAIT_S)  # the welcome prompt's guard
        hang_up_and_wait_for_cdr(ref, script, seen)
        assert ref.actor_stopped.wait(WAIT_S)
        assert timers.pending() == 0
    finally:
        timers.stop()


def test_a_live_call_forgets_its_acknowledged_writes_as_it_records_more():
    # Kept until the call's end, every committed row of a long call stayed in memory.
    commands: queue.Queue = queue.Queue()
    writes: queue.Queue = queue.Queue()
    services, ctx, timers = lingering_call("0", writes, commands)
    script = CallScript(CALL, caller_id="5551002")
    try:
        ref = CallActor.start(CALL, make_flow("icall", CALL, ctx), services, script.park())
        welcome, _ = next_command(commands)
        first = writes.get(timeout=WAIT_S)  # the call's row, acked by the Writer as taken
        ref.tell(EslEvent(script.complete(welcome)))  # the main menu: more steps recorded
        while writes.get(timeout=WAIT_S).seq <= first.seq:
            pass
        ref.proxy().state().get(timeout=WAIT_S)  # the actor has handled the completion
        actor = services.call_actors[ref.actor_urn]
        assert first.seq not in set(actor._unacked)
    finally:
        timers.stop()


def test_the_guard_of_a_completed_command_is_cancelled_on_the_timer_service():
    commands: queue.Queue = queue.Queue()
    services, ctx, timers = lingering_call("0", queue.Queue(), commands)
    script = CallScript(CALL, caller_id="5551002")
    try:
        ref = CallActor.start(CALL, make_flow("icall", CALL, ctx), services, script.park())
        welcome, _ = next_command(commands)
        ref.proxy().state().get(timeout=WAIT_S)  # its guard is scheduled
        guard = services.call_actors[ref.actor_urn]._named_timers[f"command:{welcome.event_uuid}"]
        assert guard.ref is not None
        ref.tell(EslEvent(script.complete(welcome)))
        next_command(commands)  # the main menu: the completion was handled
        ref.proxy().state().get(timeout=WAIT_S)
        assert guard.ref is None and guard.message is None
    finally:
        timers.stop()
