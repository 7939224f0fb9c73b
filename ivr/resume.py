"""Resuming a call from its checkpoint on the channel: what to write, and how to read
the channel before acting on it. Thread-free, like the rest of `ivr/`.

The checkpoint is the channel variable `icall_ckpt`, compact JSON written just before
the commands of the batch that changed the call's state, in the call's own command
stream: by the api `uuid_setvar` (the switch runs no application for it and fires no
event), and for the hand-off by a `set` with event-lock (see `handoff_never_ran`):

    {"v": 1, "s": state, "g": generation, "p": path, "n": records written so far,
     "w": [[event_uuid, app, arg, label], ...] the commands the state waits on,
     "d": the flow's own data, "h": 1 when handed off, "x": [app, arg] the hand-off,
     "i": the channel's Caller-Profile-Index when the hand-off was written,
     "a": 1 when written by uuid_setvar, "r": [[seq, kind, fields], ...] the records
     not yet committed when it was written (a successor writes them again)}

Every later event of the call carries it (`variable_icall_ckpt`), which is why it holds
no more than that.

Which channel fields are read to know where a call is (FreeSWITCH, `uuid_dump <uuid>
json`, all read from the live session):

- `variable_<flow_variable>`: the call is one of ours at all;
- `variable_icall_ckpt`: the checkpoint; `"h": 1` means handed off (never touched);
- `variable_current_application` / `variable_current_application_data`: the last
  application the session started (switch_core_session_exec sets both on start and
  never clears them), so: not one of ours (fifo, a destination's apps) means someone
  else has the call; our awaited command's name *and* data means it is running or has
  run; anything else (our checkpoint `set`) means it has not started;
- `variable_current_loop`: the loop counter of a command sent with `sendmsg`, set
  before the app starts and cleared once it returns (switch_ivr_parse_event): its
  absence is the one proof that our command ended whatever its result (a menu ended
  without a valid entry leaves the `read_result` a failed try in progress leaves too).
  The command is a new one each time: a checkpoint `set` runs before each, so a match
  is never an earlier run of the same command;
- while it is present, what the apps leave tells how far they are:
  `variable_current_application_response` (cleared when an app starts, set by
  playback when it ends), `variable_read_result` (cleared at the start of each
  play_and_get_digits try, `success` once a valid entry ended it),
  `variable_originate_disposition` (set when a bridge's originate returns).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ivr.event import Event

CHECKPOINT_VARIABLE = "icall_ckpt"
# Set by the dialplan to the id of its dead-man `sched_transfer` (see README): icall
# cancels that task, by id, when it takes the call.
DEADMAN_VARIABLE = "icall_deadman_id"
VERSION = 1

# Applications icall runs on a call it controls, or the park dialplan runs before it;
# a channel whose last application is anything else (fifo, a destination's dialplan)
# belongs to someone else now.
OUR_APPS = frozenset({"park", "answer", "set", "export", "sched_transfer", "sched_cancel",
                      "playback", "play_and_get_digits", "bridge", "transfer", "hangup"})

# What a look at a channel found (see `look`); REENTER: outbound, a handed-off call the
# switch offered again.
SKIP, START, RESUME, REENTER = "skip", "start", "resume", "reenter"
# The channel's caller profile number: each transfer gives the channel a new profile.
PROFILE_INDEX = "Caller-Profile-Index"
# Where an awaited command stands (see `progress`).
NOT_STARTED, RUNNING, COMPLETED, TALKING = "not_started", "running", "completed", "talking"


def encode(checkpoint: dict[str, Any]) -> str:
    return json.dumps(checkpoint, separators=(",", ":"))


def decode(text: str | None) -> dict[str, Any] | None:
    """The checkpoint, or None when there is none or it is not ours to read."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) and value.get("v") == VERSION else None


@dataclass(frozen=True)
class Verdict:
    action: str  # SKIP, START or RESUME
    reason: str
    checkpoint: dict[str, Any] | None = None


def look(channel: Event, flow_variable: str, flow: str, final_state: str,
         offered: bool = False, written: dict[str, Any] | None = None) -> Verdict:
    """Decide, from a channel dump, whether a controller may act on this call, in either
    mode. Inbound, a parked channel may belong to someone else: it must carry
    `flow_variable` = `flow` and run none but our apps. `offered` (outbound mode): the
    dialplan's `socket` gave the call to us, and while it runs the channel runs nothing
    else, so only the checkpoint decides, and a handed-off call offered again came back
    into the IVR (a queue or a time condition sent it to the socket extension): it
    re-enters. In both, a hand-off that never ran is sent (`handoff_never_ran`).
    `written`: the last checkpoint the controller that had the call wrote, when it is
    known (the actor whose socket closed, a dead handler's): newer than the channel's,
    it never ran, nor did anything queued behind it (one command stream, in order),
    unless it is still on its way ("q": a dead handler's commands, which its
    Commander sends all the same): then the transfer will run, and is not sent twice."""
    if not offered and channel.variable(flow_variable) != flow:
        return Verdict(SKIP, f"{flow_variable} is not {flow}")
    checkpoint = decode(channel.variable(CHECKPOINT_VARIABLE))
    app = channel.variable("current_application") or ""
    if written is not None and written.get("x") and _generation(written) > _generation(checkpoint):
        if written.get("q"):
            return Verdict(SKIP, "handed off: the mark and its transfer are on their way", written)
        return Verdict(RESUME, "handed off, but the hand-off mark never reached the switch", written)
    if checkpoint is not None and (checkpoint.get("h") or checkpoint.get("s") == final_state):
        if (offered or app in OUR_APPS) and handoff_never_ran(checkpoint, channel):
            return Verdict(RESUME, "handed off, but the hand-off never ran", checkpoint)
        if offered:
            return Verdict(REENTER, "handed off before, offered again", checkpoint)
        # Never touched again, but still listened to: its hangup writes the CDR.
        return Verdict(SKIP, f"handed off ({app or 'no application'})", checkpoint)
    if not offered and app not in OUR_APPS:
        return Verdict(SKIP, f"running {app}, not ours")
    if checkpoint is None:
        return Verdict(START, "a new call on its own socket" if offered else "parked, never touched")
    return Verdict(RESUME, f"in {checkpoint.get('s')}", checkpoint)


def handoff_never_ran(checkpoint: dict[str, Any], channel: Event) -> bool:
    """The hand-off mark was written but its command (a transfer) never ran: the
    controller died between writing it and sending the transfer (both are sent back to
    back), or the transfer went out on a socket that closed before it ran. Either the
    mark is the last thing the session ran (inbound, parked), or the channel still has
    the caller profile it had when the mark was written: every transfer gives it a new
    one (outbound, back on the dialplan's next `socket`, which changes no profile).
    Asked only of a channel that runs nothing but ours."""
    if not checkpoint.get("x"):
        return False
    if checkpoint_ran_last(channel):
        return True
    written_in = checkpoint.get("i")
    return written_in is not None and channel.get(PROFILE_INDEX) == str(written_in)


def _generation(checkpoint: dict[str, Any] | None) -> int:
    return int(checkpoint.get("g") or 0) if checkpoint is not None else -1


def progress(app: str, arg: str, channel: Event) -> str:
    """Where an awaited command stands, judged from the channel's fields (module doc)."""
    current = channel.variable("current_application") or ""
    if current != app or (channel.variable("current_application_data") or "") != arg:
        if current not in OUR_APPS and answered_behind_checkpoint(app, channel):
            return COMPLETED
        return NOT_STARTED
    if channel.variable("current_loop") is None:
        # Its execute loop is over: ended, whatever its result (a menu without a
        # valid entry, a failed ring, a conversation over).
        return COMPLETED
    if app == "playback":
        return COMPLETED if channel.variable("current_application_response") else RUNNING
    if app == "play_and_get_digits":
        # A failed try also leaves read_result behind while the next one is coming:
        # only success is proof of the end.
        return COMPLETED if channel.variable("read_result") == "success" else RUNNING
    if app == "bridge":
        disposition = channel.variable("originate_disposition")
        if not disposition:
            return RUNNING
        return TALKING if disposition in ("SUCCESS", "ANSWER") else COMPLETED
    return RUNNING


def answered_behind_checkpoint(app: str, channel: Event) -> bool:
    """The command queued behind the checkpoint ran and ended with a clear answer (a
    valid entry, a ring that failed), though the channel has moved on since (outbound:
    the dialplan's next `socket` runs, after the socket closed under the command). The
    switch appends a variable set again at the end of the channel's list, so an answer
    listed after `icall_ckpt` was set after the checkpoint ran: by that command, the
    only one queued behind it. A menu that ended without a valid entry, or was cut
    short, is no clear answer: it is played again."""
    if app == "play_and_get_digits":
        name = "read_result"
        answered = channel.variable(name) == "success"
    elif app == "bridge":
        name = "originate_disposition"
        answered = channel.variable(name) not in (None, "", "SUCCESS", "ANSWER")
    else:
        return False
    order = [key for key in channel.headers if key.startswith("variable_")]
    answer, checkpoint = "variable_" + name, "variable_" + CHECKPOINT_VARIABLE
    return answered and answer in order and checkpoint in order and \
        order.index(answer) > order.index(checkpoint)


def running_bound_s(app: str, arg: str, command_timeout_s: float, per_try_s: float) -> float:
    """How long a command found running on resume may still run: a play_and_get_digits
    has at most `tries` tries of `timeout` plus its prompts (a failed try's read_result
    looks the same as a failed end, so past this bound it had ended unseen)."""
    if app == "play_and_get_digits":
        words = arg.split()
        try:
            tries, timeout_ms = int(words[2]), int(words[3])
        except (IndexError, ValueError):
            return command_timeout_s
        return min(command_timeout_s, tries * (timeout_ms / 1000 + per_try_s))
    return command_timeout_s


def maybe_queued(checkpoint: dict[str, Any], channel: Event) -> bool:
    """An awaited command found not started may be queued on the channel right behind
    the checkpoint that names it: the checkpoint's `set` ran last, or it was written
    by uuid_setvar, which leaves no trace among the applications (so whether the
    commands behind it have reached the channel cannot be told from it). Not when the
    channel is in a fresh `socket` (outbound mode, offered again): what the closed
    socket had queued is not run there, so the command is issued again at once."""
    if checkpoint_ran_last(channel):
        return True
    return bool(checkpoint.get("a")) and channel.variable("current_application") != "socket"


def setvar_value(text: str) -> str:
    """`text` as the value of `uuid_setvar <uuid> <name> <value>`: the switch splits
    that argument on blanks and then strips single quotes and backslash escapes from
    it (switch_separate_string), so a backslash and a quote are escaped to survive."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


def checkpoint_ran_last(channel: Event) -> bool:
    """The last application the session started is our checkpoint `set`: the commands
    queued right behind it were sent, and may not have started yet."""
    return channel.variable("current_application") == "set" and \
        (channel.variable("current_application_data") or "").startswith(CHECKPOINT_VARIABLE + "=")

