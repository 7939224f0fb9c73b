"""Outbound mode: what to do with a call the switch hands over on its own socket.
Thread-free, like the rest of `ivr/`.

In inbound mode a controller must look before it acts (`ivr.resume.look`): a parked
channel may belong to someone else. In outbound mode the dialplan's `socket` app has
given the call to us, and while that app runs the channel runs nothing else (its
`current_application` is `socket`), so only the checkpoint on the channel decides:

- none: a new call, the flow starts;
- a live state: an icall process that had the call is gone (killed, restarted) and the
  dialplan offered the call again (README: a second `socket`); the flow resumes it
  where the checkpoint says, and goes on numbering its records after the last one, so
  nothing is recorded twice;
- handed off or final: the call came back into the IVR (a queue or a time condition
  sent it to the socket extension again); the flow re-enters, as a CHANNEL_PARK in its
  final state does in inbound mode.
"""

from __future__ import annotations

from ivr import resume
from ivr.event import Event

REENTER = "reenter"
# The CDR's cause when a call's socket closed and the call never came back to icall.
SOCKET_LOST_CAUSE = "UNKNOWN (hangup not seen: its socket closed)"


def look(channel: Event, final_state: str) -> resume.Verdict:
    """The verdict on a channel handed over by `socket` (its `connect` data)."""
    checkpoint = resume.decode(channel.variable(resume.CHECKPOINT_VARIABLE))
    if checkpoint is None:
        return resume.Verdict(resume.START, "a new call on its own socket")
    if checkpoint.get("h") or checkpoint.get("s") == final_state:
        return resume.Verdict(REENTER, "handed off before, offered again", checkpoint)
    return resume.Verdict(resume.RESUME, f"offered again in {checkpoint.get('s')}", checkpoint)


def park_of(channel: Event) -> Event:
    """The channel data as the CHANNEL_PARK a flow re-enters on."""
    return Event({**channel.headers, "Event-Name": "CHANNEL_PARK"}, "")
