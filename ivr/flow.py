"""The flow behaviour: a gen_statem-like base class for call flows (the seed's wish for
a "gen_fs_fsm behaviour").

A flow is plain Python with no threads, sockets or clocks of its own. The CallActor
hands it what happened (the CHANNEL_PARK, every later event of the call, messages from
other actors, timer expiries, refused commands) and carries out the effects it returns
(`ivr.effects`). Each entry point returns the effects of that one happening, in order.

Writing a flow:
- one method per state, named like the state; it is handed an `Enter`, a `Completed`,
  a `Timeout` or an `Info` and uses `match` on it, so the entry actions sit beside the
  state's other handlers; `goto(state)` takes effect when the method returns, then the
  new state's method gets `Enter`;
- `execute(app, arg, await_as=label)` sends a dialplan app and returns its Event-UUID;
  the switch echoes that id as Application-UUID on CHANNEL_EXECUTE_COMPLETE, and the
  completion is delivered as `Completed(label, event)` to whatever state the call is in.
  Completions are matched by that id only: never by app name, never by waiting;
- every awaited command gets a guard timer (`[ivr] command_timeout_s`), started once the
  handler has settled the state; a timer carries the state generation it was started
  in, so a timer that fires after a state change is recognised and dropped;
- a command that times out or that the switch refuses sends the call to
  `[ivr] safe_destination` and ends the flow in its final state;
- hangup and `fifo::info` are handled once for every state (`handle_common`); after
  CHANNEL_HANGUP no command is sent and pending waits are abandoned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from ivr import resume
from ivr.config import Config
from ivr.effects import (
    CancelTimer,
    Checkpoint,
    Effect,
    Execute,
    Finished,
    Hangup,
    ReadChannel,
    Record,
    StartTimer,
)
from ivr.event import Event
from ivr.timecond import TimeCondition

logger = logging.getLogger(__name__)

GUARD_PREFIX = "command:"
# A resumed call whose awaited command was found not started, right behind the checkpoint
# naming it: the command is most likely queued on the channel. The channel is read again
# after this grace; only a command still not started then is issued again.
QUEUED_PREFIX = "queued:"
QUEUED_GRACE_S = 2.0
# The applications whose completions the event link filters out: no flow waits on
# one. `set` carries the bridge settings and the hand-off's checkpoint (the others are
# written by uuid_setvar, which is no application); `answer` is the dialplan's, before it parks the call into the flow, so its
# completion belonged to no call yet and cost the supervisor a wake-up a call.
UNAWAITED_APPS = ("set", "answer")
# The CDR's hangup cause when the channel vanished while the event link was down.
LOST_HANGUP_CAUSE = "UNKNOWN (hangup not seen: event link down)"
# ... and when it ended while no icall ran (a restart, a crash, a stop).
UNSEEN_HANGUP_CAUSE = "UNKNOWN (hangup not seen: icall not running)"
# An outbound call handed off before a restart, alive at the new process's look but
# gone before its events were let through on the event link (the call actor's watch).
ENDED_UNWATCHED_CAUSE = "UNKNOWN (hangup not seen: it ended while icall was starting)"


# Per try of a prompt found running on resume: its sound files and the bad-input prompt.
RESUME_SLACK_S = 5.0


class FlowError(Exception):
    """A flow used against its own rules (an unknown state, an unknown flow name)."""


@dataclass(frozen=True, slots=True)
class FlowContext:
    """What a flow may ask of the world, all of it without blocking."""

    config: Config
    now: Callable[[], datetime]  # aware datetime, in the schedule's zone
    time_conditions: Callable[[], Iterable[TimeCondition]]  # current DB override rows
    new_id: Callable[[], str]  # a fresh UUID string for Event-UUIDs
    # Keep each call's notes in `Flow.history` (the demo and the tests read them). The
    # service keeps them only when someone reads them: two dozen lines a call, which
    # otherwise only the DEBUG log shows.
    keep_history: bool = True
    # Told the rescue's step (CommandTimeout...) when the flow sends a call to the safe
    # destination: /metrics counts them (icall_calls_rescued_total). Call-actor thread.
    rescued: Callable[[str], None] | None = None


# --- what a state method is handed


@dataclass(frozen=True)
class Enter:
    previous: str


@dataclass(frozen=True)
class Completed:
    """The CHANNEL_EXECUTE_COMPLETE of a command awaited under `label`."""

    label: str
    event: Event

    @property
    def response(self) -> str:
        return self.event.get("Application-Response", "") or ""

    def variable(self, name: str) -> str | None:
        return self.event.variable(name)


@dataclass(frozen=True)
class Timeout:
    name: str


@dataclass(frozen=True)
class Info:
    message: object


Happening = Enter | Completed | Timeout | Info


@dataclass(frozen=True)
class Command:
    """A command this flow sent; `label` is set when a state waits for its completion."""

    app: str
    arg: str
    label: str | None = None
    rescue: bool = False
    guard_s: float | None = None  # None: `[ivr] command_timeout_s`

    def __str__(self) -> str:
        return f"{self.app} {self.arg}".rstrip()


@dataclass(frozen=True, slots=True)
class CallInfo:
    """Who called, as the CHANNEL_PARK told it (mod_fifo later swaps the caller id on
    the channel, so the CDR takes these rather than the hangup event's)."""

    caller_id: str = ""
    caller_name: str = ""
    destination: str = ""
    started_at: float | None = None

    @classmethod
    def from_park(cls, event: Event) -> CallInfo:
        return cls(
            caller_id=event.get("Caller-Caller-ID-Number", "") or "",
            caller_name=event.get("Caller-Caller-ID-Name", "") or "",
            destination=event.get("Caller-Destination-Number", "") or "",
            started_at=microseconds(event.get("Caller-Channel-Created-Time")),
        )


class Flow:
    """Base of every call flow. One instance per call; used by one thread at a time
    (the CallActor's)."""

    name = "flow"
    states: tuple[str, ...] = ()
    initial_state = ""
    final_state = ""

    def __init__(self, uuid: str, ctx: FlowContext):
        self.uuid = uuid
        self.ctx = ctx
        self.state = ""
        self.finished = False
        self.hung_up = False
        self.hangup_cause = ""
        # A fifo::info event of this call was seen: the queue may still send events
        # after its hangup (mod_fifo's bridge-caller-stop follows the caller's
        # CHANNEL_HANGUP_COMPLETE), so its handler lingers for them.
        self.queue_seen = False
        self.history: list[str] = []
        self.path: list[str] = []
        self.call = CallInfo()
        self._generation = 0
        self._next_state: str | None = None
        self._effects: list[Effect] = []
        self._sent: dict[str, Command] = {}  # every command not yet completed
        self._awaited: dict[str, Command] = {}  # those a state waits for
        self._unguarded: list[str] = []  # awaited, guard timer not yet started
        self._talking: set[str] = set()  # awaited bridges that were answered (CHANNEL_BRIDGE)
        # Records emitted: a resumed actor numbers its writes after them. Those not yet
        # committed ride in the channel's checkpoint (the CallActor adds them: it holds
        # the DbWriter's acks), so a successor writes them again (idempotent by seq).
        self._records = 0
        self._written: tuple[str, tuple[str, ...]] | None = None  # (state, awaited) checkpointed
        # The last checkpoint written, as written, without its records (its JSON: a few
        # hundred bytes); read back only by a dying handler, whose unacknowledged writes
        # its successor inherits directly.
        self._last_written: str | None = None
        self._resumed: set[str] = set()  # awaited commands a resumed flow did not start itself
        self._queued: set[str] = set()  # ... and found not started, maybe queued (QUEUED_PREFIX)
        self.entries = 1  # how many times the call has entered the flow (see on_event)
        # The channel's caller profile as this entry found it (resume.PROFILE_INDEX): a
        # hand-off mark carries it, so a successor sees whether the transfer ever ran.
        self._profile_index = ""

    # --- entry points (the CallActor's thread)

    def start(self, park_event: Event) -> list[Effect]:
        """The call's CHANNEL_PARK: enter the initial state."""
        self.call = CallInfo.from_park(park_event)
        self._profile_index = park_event.get(resume.PROFILE_INDEX, "") or ""
        self._cancel_deadman(park_event)
        self.goto(self.initial_state)
        return self._outcome()

    def on_event(self, event: Event) -> list[Effect]:
        """Every event with this call's Unique-ID."""
        if event.uuid != self.uuid:
            self.note(f"ignored {event.name} of another channel {event.uuid}")
        elif event.name == "CHANNEL_PARK" and self.state == self.final_state and not self.hung_up:
            if self._profile_index and event.get(resume.PROFILE_INDEX) == self._profile_index:
                # The park of this very entry (outbound: the `socket` that just offered
                # the call parks it); a call sent back into the IVR has a new profile.
                self.note("the park of this entry, not a re-entry")
            else:
                self._reenter(event)
        elif self.handle_common(event):
            pass
        elif event.name == "CHANNEL_EXECUTE_COMPLETE":
            self._complete(event)
        elif event.name == "CHANNEL_BRIDGE":
            self._bridged()
        return self._outcome()

    def on_info(self, message: object) -> list[Effect]:
        """A message from another actor (handle_info)."""
        self.handle_info(message)
        return self._outcome()

    def on_timer(self, name: str, generation: int) -> list[Effect]:
        if generation != self._generation or self.hung_up:
            self.note(f"stale timer {name} (generation {generation}) dropped")
        elif name.startswith(QUEUED_PREFIX):
            if name[len(QUEUED_PREFIX):] in self._queued:
                self._effects.append(ReadChannel())
        elif name.startswith(GUARD_PREFIX):
            event_uuid = name[len(GUARD_PREFIX):]
            command = self._awaited.get(event_uuid)
            if command is None:
                self.note(f"stale timer {name} dropped: its command completed")
            elif event_uuid in self._talking:
                self.note(f"guard of {command} dropped: answered, talk time is not guarded")
            elif event_uuid in self._resumed:
                # It had ended while no one listened (its completion is lost): play the
                # state's prompt again, once; a second silence is a real fault.
                self._resumed.discard(event_uuid)
                self._awaited.pop(event_uuid, None)
                self._sent.pop(event_uuid, None)
                self.note(f"{command}: ended while no controller listened; issued again")
                self.reissue(command)
            elif command.rescue:
                self.note(f"rescue never completed: {command}")
                self.hang_up("NORMAL_TEMPORARY_FAILURE")
            else:
                timeout_s = self._guard_s(command)
                self.rescue("CommandTimeout", f"{command}: not completed within {timeout_s:g} s")
        else:
            self.dispatch(Timeout(name))
        return self._outcome()

    def on_channel(self, channel: Event) -> list[Effect]:
        """The channel read again (`ReadChannel`): each awaited command that was maybe
        queued is now running, ended, or was never sent and is issued now."""
        for event_uuid in sorted(self._queued):
            self._queued.discard(event_uuid)
            command = self._awaited.get(event_uuid)
            if command is None or self.hung_up:
                continue
            where = resume.progress(command.app, command.arg, channel)
            self.note(f"read again: {command} {where}")
            if where == resume.NOT_STARTED:
                self._awaited.pop(event_uuid, None)
                self._sent.pop(event_uuid, None)
                self.reissue(command)
            else:
                self._found(event_uuid, command, where, channel)
        return self._outcome()

    def on_command_failed(self, event_uuid: str, reply: str, uncertain: bool = False) -> list[Effect]:
        """The switch refused a command (or it could not be sent). `uncertain`: its
        reply was lost, so it may be running; nothing else may be started on the
        channel, so its completion is awaited, guarded like any awaited command, and
        the channel is read after QUEUED_GRACE_S: a command the switch never took is
        then sent again (the link dropped as it was written), not left to its guard."""
        command = self._sent.get(event_uuid)
        if uncertain and command is not None and not self.hung_up:
            self.note(f"outcome unknown, awaiting its completion: {command}: {reply}")
            if event_uuid not in self._awaited:
                self._awaited[event_uuid] = command
                self._unguarded.append(event_uuid)
            self._queued.add(event_uuid)
            self._effects.append(StartTimer(QUEUED_PREFIX + event_uuid, QUEUED_GRACE_S, self._generation))
            return self._outcome()
        self._sent.pop(event_uuid, None)
        self._awaited.pop(event_uuid, None)
        if command is None:
            self.note(f"refusal of an unknown command {event_uuid}: {reply}")
        elif self.hung_up:
            self.note(f"failed after hangup: {command}: {reply}")
        elif command.rescue:
            # Even the safe destination was refused: hanging up beats leaving the
            # caller parked in silence.
            self.note(f"rescue failed: {command}: {reply}")
            self.hang_up("NORMAL_TEMPORARY_FAILURE")
        else:
            self.rescue("CommandFailed", f"{command}: {reply}")
        return self._outcome()

    def on_channel_gone(self, cause: str = LOST_HANGUP_CAUSE,
                        seen_gone_at: float | None = None) -> list[Effect]:
        """The channel no longer exists, yet its hangup never reached us: the event link
        was down when it happened, and FreeSWITCH does not replay events. Close the call
        as a hangup of unknown cause, so its CDR is still written; `seen_gone_at` (epoch
        seconds), when icall found the channel gone, is the best end time known."""
        if not self.finished:
            self.note("the channel is gone; its hangup was lost while the link was down")
            headers = {"Event-Name": "CHANNEL_HANGUP_COMPLETE", "Unique-ID": self.uuid,
                       "Hangup-Cause": self.hangup_cause or cause}
            if seen_gone_at is not None:
                headers["variable_end_uepoch"] = str(int(seen_gone_at * 1_000_000))
            self.handle_common(Event(headers))
        return self._outcome()

    def handler_checkpoint(self) -> dict[str, Any]:
        """What a dying handler hands its replacement: the last checkpoint written (a
        consistent point: the handler may have died inside a transition) and the caller
        (whom the channel's variables no longer name once mod_fifo swapped the ids)."""
        written = resume.decode(self._last_written)
        if written is None:
            return {**self.checkpoint(), "c": asdict(self.call)}
        # "q": the commands it waits on were handed to the command path, which sends them
        # even though this handler died: found not started, they are queued.
        return {**written, "c": asdict(self.call), "q": 1}

    def checkpoint(self) -> dict[str, Any]:
        """The compact JSON-able snapshot written on the channel (`ivr.resume`)."""
        snapshot: dict[str, Any] = {
            "v": resume.VERSION, "s": self.state, "g": self._generation, "p": list(self.path),
            "n": self._records, "e": self.entries,
            "w": [[uuid, c.app, c.arg, c.label] for uuid, c in self._awaited.items()],
            "d": self.flow_data(),
        }
        if self.state == self.final_state:
            snapshot["h"] = 1
        return snapshot

    def resume(self, checkpoint: dict[str, Any], channel: Event) -> list[Effect]:
        """Take over a call in the state its checkpoint names, after a restart or the
        death of its actor. `channel` is its `uuid_dump`: it says whether the command the
        state waits on has not started (sent again: the caller never heard it), is still
        running (waited for; if its completion never comes within the guard, it ended
        unseen and is issued again once), or has ended (its completion is taken from the
        channel's variables). Nothing is started while an app of ours runs."""
        self.call = CallInfo.from_park(channel)
        self._profile_index = channel.get(resume.PROFILE_INDEX, "") or ""
        self._restore(checkpoint)
        self.state = str(checkpoint.get("s") or self.initial_state)
        self.note(f"resumed in {self.state}")
        if self.state == self.final_state:  # handed off, but the hand-off never ran
            app, arg = checkpoint.get("x") or ("", "")
            if app:
                self.execute(app, arg, lock=True)
            return self._outcome()
        self.resume_data()
        waits = checkpoint.get("w") or []
        if not waits:
            self.dispatch(Enter(self.state))  # a state that waits on a timer: enter it again
        self._written = (self.state, tuple(str(w[0]) for w in waits))  # on the channel already
        sent = bool(checkpoint.get("q"))
        for event_uuid, app, arg, label in waits:
            self._resume_wait(str(event_uuid), app, arg, label, channel, sent, checkpoint)
        return self._outcome()

    def resume_after_failure(self, checkpoint: dict[str, Any]) -> None:
        """Take over a call whose handler kept dying: the supervisor has sent the caller
        to the safe destination, so this flow only listens, in its final state: the
        hangup still writes the CDR and fifo events still land. A checkpoint that could
        not be taken may hold no more than the state."""
        self._restore(checkpoint)
        self.state = self.final_state
        self.path.append(self.state)
        self._written = (self.state, ())
        self.note(f"resumed in {self.state} after a failure in {checkpoint.get('s', '?')}")

    # --- for subclasses: the verbs of a flow

    def reissue(self, command: Command) -> None:
        """Send again, with event-lock, an awaited command a resumed call never heard
        (or that ended unseen). A flow whose command needs others before it (a bridge's
        settings) sends those too."""
        self.execute(command.app, command.arg, lock=True, await_as=command.label,
                     guard_s=command.guard_s)

    def goto(self, state: str) -> None:
        """Move to `state` when the current handler returns."""
        if state not in self.states:
            raise FlowError(f"{self.name}: no state {state!r}")
        self._next_state = state

    def execute(self, app: str, arg: str = "", lock: bool = False,
                await_as: str | None = None, rescue: bool = False,
                guard_s: float | None = None) -> str:
        """Send a dialplan app; returns its Event-UUID ("" when the call is gone).
        An awaited command is guarded for `guard_s` (default `[ivr] command_timeout_s`);
        an awaited `bridge` only until it is answered: talk time is never guarded.
        A `set` or an `answer` cannot be awaited (UNAWAITED_APPS): the event link leaves
        their completions at the switch (actors.esl.subscription_commands)."""
        if app in UNAWAITED_APPS and await_as:
            raise FlowError(f"{self.name}: the completion of {app!r} is never delivered; do not await it")
        command = Command(app, arg, await_as, rescue, guard_s)
        if self.hung_up:
            self.note(f"not sent after hangup: {command}")
            return ""
        event_uuid = self.ctx.new_id()
        self._effects.append(Execute(app, arg, event_uuid, lock))
        if app not in UNAWAITED_APPS:  # its completion never comes to be matched
            self._sent[event_uuid] = command
        if await_as:
            self._awaited[event_uuid] = command
            self._unguarded.append(event_uuid)
        self.note(f"execute {command}")
        return event_uuid

    def hang_up(self, cause: str = "NORMAL_CLEARING") -> None:
        if not self.hung_up:
            self.emit(Hangup(cause))
            self.note(f"hangup {cause}")

    def emit(self, effect: Effect) -> None:
        """Any other effect (a CRM lookup...), returned in order with the rest."""
        self._effects.append(effect)

    def start_timer(self, name: str, delay_s: float) -> None:
        """A state timeout: stale once the state changes."""
        self.emit(StartTimer(name, delay_s, self._generation))
        self.note(f"timer {name} {delay_s:g} s")

    def record(self, kind: str, **fields: Any) -> None:
        self._records += 1
        self.emit(Record(kind, {"uuid": self.uuid, **fields}))

    def record_step(self, step: str, value: str = "") -> None:
        """A step of the call, as the seed's db_pbx:log wrote it."""
        self.record("step", step=step, value=value, at=self.ctx.now().timestamp())
        self.note(f"step {step} {value}".rstrip())

    def rescue(self, step: str, why: str) -> None:
        """Give up on the flow: the call goes to the safe destination."""
        self._awaited.clear()
        self._unguarded.clear()
        self._talking.clear()
        self.record_step(step, why)
        if self.ctx.rescued is not None:
            self.ctx.rescued(step)
        self.execute("transfer", self.ctx.config.ivr.safe_destination, rescue=True)
        self.goto(self.final_state)

    def dispatch(self, happened: Happening) -> None:
        """Hand `happened` to the current state, then follow any transitions."""
        getattr(self, self.state)(happened)
        self._settle()

    def unexpected(self, happened: Happening) -> None:
        self.note(f"{self.state}: nothing to do for {happened!r}")

    def note(self, line: str) -> None:
        if self.ctx.keep_history:
            self.history.append(line)
        logger.debug("%s %s", self.uuid, line)

    # --- for subclasses: hooks

    def handle_common(self, event: Event) -> bool:
        """What every state treats alike; True when `event` was taken care of."""
        if event.name == "CUSTOM" and event.subclass == "fifo::info":
            self.queue_seen = True
            self._record_fifo(event)
            return True
        if event.name == "CHANNEL_HANGUP":
            self._note_hangup(event)
            return True
        if event.name == "CHANNEL_HANGUP_COMPLETE":
            self._note_hangup(event)
            if not self.finished:
                self.record("cdr", **self.cdr_fields(event))
                self.emit(Finished())
                self.finished = True
                self.note("finished")
            return True
        return self.finished

    def handle_info(self, message: object) -> None:
        self.note(f"info ignored: {message!r}")

    def flow_data(self) -> dict[str, Any]:
        """The subclass's own JSON-able data, for `checkpoint`."""
        return {}

    def restore_data(self, data: dict[str, Any]) -> None:
        """The inverse of `flow_data`, for `resume` and `resume_after_failure`."""

    def resume_data(self) -> None:
        """Called when a call is resumed, before its wait is taken up again: work that was
        in flight in the dead handler (a CRM lookup) is asked for again here."""

    def reenter_data(self) -> None:
        """Called when a call comes back into the flow (see `on_event`): forget the
        previous pass's choices."""

    def cdr_fields(self, event: Event) -> dict[str, Any]:
        return {
            "caller_id": self.call.caller_id,
            "caller_name": self.call.caller_name,
            "destination": self.call.destination,
            "started_at": microseconds(event.variable("start_uepoch")) or self.call.started_at,
            "answered_at": microseconds(event.variable("answer_uepoch")),
            "ended_at": microseconds(event.variable("end_uepoch")),
            "duration_s": whole(event.variable("duration")),
            "billsec_s": whole(event.variable("billsec")),
            "hangup_cause": event.get("Hangup-Cause") or self.hangup_cause,
            "final_state": self.state,
            "crm_extension": None,
            "path": list(self.path),
        }

    # --- the machinery

    def _complete(self, event: Event) -> None:
        event_uuid = event.get("Application-UUID", "") or ""
        command = self._sent.pop(event_uuid, None)
        if command is None:
            return  # the dialplan's own apps, or another controller's
        response = event.get("Application-Response", "") or ""
        self.note(f"complete {command.app}: {response}")
        self._talking.discard(event_uuid)
        if self._awaited.pop(event_uuid, None) is not None:
            self._effects.append(CancelTimer(GUARD_PREFIX + event_uuid))
            self.dispatch(Completed(command.label or "", event))

    def _bridged(self) -> None:
        """CHANNEL_BRIDGE: the callee answered an awaited bridge. Its completion now
        comes when the conversation ends, however long that is, so its guard (which
        covered the ringing) no longer applies."""
        for event_uuid, command in self._awaited.items():
            if command.app == "bridge" and event_uuid not in self._talking:
                self._talking.add(event_uuid)
                self._effects.append(CancelTimer(GUARD_PREFIX + event_uuid))  # talk is not guarded
                self.note(f"bridged: {command}")
                self._mark_handed_off()

    def _mark_handed_off(self) -> None:
        """The caller talks to someone else now: a successor (after a restart) must
        never touch the call, only listen to it until its hangup, which writes the CDR."""
        snapshot = self.checkpoint()
        snapshot["h"] = snapshot["a"] = 1
        self._last_written = resume.encode(snapshot)
        self._effects.append(Checkpoint(self._last_written, self.ctx.new_id()))

    def _guard_s(self, command: Command) -> float:
        return command.guard_s if command.guard_s is not None else self.ctx.config.ivr.command_timeout_s

    def _note_hangup(self, event: Event) -> None:
        if self.hung_up:
            return
        self.hung_up = True
        self.hangup_cause = event.get("Hangup-Cause", "") or ""
        self.note(f"hangup by the channel: {self.hangup_cause} in {self.state}")
        abandoned = ", ".join(str(c) for c in self._awaited.values())
        if abandoned:
            self.note(f"abandoned: {abandoned}")
        self._awaited.clear()
        self._unguarded.clear()
        self._talking.clear()

    def _record_fifo(self, event: Event) -> None:
        action = event.get("FIFO-Action", "") or ""
        headers = {k: v for k, v in event.headers.items()
                   if k.startswith("FIFO-") or k in FIFO_CONTEXT_HEADERS}
        self.record("fifo", action=action, fifo_name=event.get("FIFO-Name", "") or "",
                    at=microseconds(event.get("Event-Date-Timestamp")), headers=headers)
        self.note(f"fifo {action}")

    def _settle(self) -> None:
        while self._next_state is not None:
            previous, self.state = self.state, self._next_state
            self._next_state = None
            self._generation += 1
            self.path.append(self.state)
            self.note(f"{previous or 'start'} -> {self.state}")
            getattr(self, self.state)(Enter(previous))

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        known = {name: value for name, value in (checkpoint.get("c") or {}).items()
                 if name in CallInfo.__dataclass_fields__}
        if known:  # a handler's checkpoint carries the caller; the channel's does not
            self.call = CallInfo(**known)
        self.path = list(checkpoint.get("p") or [])
        self._records = int(checkpoint.get("n") or 0)
        self.entries = int(checkpoint.get("e") or 1)
        self._generation = int(checkpoint.get("g") or 0) + 1
        self.restore_data(checkpoint.get("d") or {})

    def _resume_wait(self, event_uuid: str, app: str, arg: str, label: str | None,
                     channel: Event, sent: bool, checkpoint: dict[str, Any]) -> None:
        ivr = self.ctx.config.ivr
        if app == "bridge":  # its guard covers the ringing, as when it was sent
            command = Command(app, arg, label, guard_s=ivr.ring_timeout_s + ivr.command_timeout_s)
        else:
            command = Command(app, arg, label, guard_s=resume.running_bound_s(
                app, arg, ivr.command_timeout_s, RESUME_SLACK_S))
        where = resume.progress(app, arg, channel)
        self.note(f"resume: {command} {where}")
        self._sent[event_uuid] = command
        self._awaited[event_uuid] = command
        if where == resume.NOT_STARTED and sent:
            # A handler that died in this process had handed it to the command path,
            # which sends it still: it will run, so it is waited for like a running one.
            where = resume.RUNNING
        elif where == resume.NOT_STARTED and resume.maybe_queued(checkpoint, channel):
            self._queued.add(event_uuid)
            self._effects.append(StartTimer(QUEUED_PREFIX + event_uuid, QUEUED_GRACE_S,
                                            self._generation))
            return
        elif where == resume.NOT_STARTED:
            del self._sent[event_uuid], self._awaited[event_uuid]
            self.reissue(command)
            return
        self._found(event_uuid, command, where, channel)

    def _found(self, event_uuid: str, command: Command, where: str, channel: Event) -> None:
        """An awaited command of a resumed call found running or ended on the channel."""
        if where == resume.COMPLETED:
            self._complete(Event({**channel.headers, "Event-Name": "CHANNEL_EXECUTE_COMPLETE",
                                  "Application": command.app, "Application-Data": command.arg,
                                  "Application-UUID": event_uuid}))
            return
        if where == resume.TALKING:
            self._talking.add(event_uuid)
        else:
            self._resumed.add(event_uuid)
        self._unguarded.append(event_uuid)

    def _reenter(self, park: Event) -> None:
        """The call was transferred back into the IVR's park extension (a queue's orbit,
        an agent, a time condition): it starts the flow again, recorded as a re-entry."""
        self.entries += 1
        self._profile_index = park.get(resume.PROFILE_INDEX, "") or ""
        self.note(f"re-entry {self.entries}")
        self.record_step("ReEntry", str(self.entries))
        self.reenter_data()
        self._sent.clear()
        self._awaited.clear()
        self._unguarded.clear()
        self._talking.clear()
        self._queued.clear()
        self._cancel_deadman(park)
        self.goto(self.initial_state)
        self._settle()

    def _cancel_deadman(self, park: Event) -> None:
        """The dialplan's dead-man transfer (README) is cancelled by its task id, first
        thing, in the call's own command stream."""
        task_id = park.variable(resume.DEADMAN_VARIABLE)
        if task_id and task_id.isdigit():
            self._effects.append(Execute("sched_cancel", task_id, self.ctx.new_id(), lock=True))

    def _checkpoint_effect(self) -> None:
        """After a batch that changed the state or what it waits on, queue the checkpoint
        before the batch's first command (event-lock: it never runs inside an app). A
        batch that ends the flow without a command (an answered bridge ending) has
        nothing to hand off and writes none."""
        key = (self.state, tuple(self._awaited))
        if self.hung_up or key == self._written:
            return
        commands = [i for i, e in enumerate(self._effects) if isinstance(e, Execute)]
        final = self.state == self.final_state
        if final and (not commands or any(isinstance(e, Hangup) for e in self._effects)):
            # Nothing handed off (an answered bridge ending), or a hangup: were we to die
            # before it, the previous checkpoint leads a successor to the same hangup.
            return
        self._written = key
        snapshot = self.checkpoint()
        if final:
            handoff = self._effects[commands[-1]]
            assert isinstance(handoff, Execute)
            snapshot["x"] = [handoff.app, handoff.arg]
            if self._profile_index:
                snapshot["i"] = self._profile_index
        else:
            snapshot["a"] = 1  # written by api: see resume.maybe_queued
        self._last_written = resume.encode(snapshot)
        checkpoint = Checkpoint(self._last_written, self.ctx.new_id(), handoff=final)
        self._effects.insert(commands[0] if commands else len(self._effects), checkpoint)

    def _outcome(self) -> list[Effect]:
        self._settle()
        self._checkpoint_effect()
        for event_uuid in self._unguarded:
            command = self._awaited.get(event_uuid)
            if command is not None:
                self._effects.append(StartTimer(GUARD_PREFIX + event_uuid,
                                                self._guard_s(command), self._generation))
        self._unguarded.clear()
        effects, self._effects = self._effects, []
        return effects


# Headers kept with a fifo row besides FIFO-*: who the caller was bridged to, and the
# queue's own view of the caller.
FIFO_CONTEXT_HEADERS = ("Other-Leg-Unique-ID", "variable_fifo_status",
                        "variable_fifo_serviced_uuid", "variable_fifo_target")


def microseconds(value: str | None) -> float | None:
    """A FreeSWITCH microsecond timestamp as epoch seconds; None for 0 or missing."""
    try:
        number = int(value or 0)
    except ValueError:
        return None
    return number / 1_000_000 if number > 0 else None


def whole(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None

