"""Outbound mode: what to do with a call the switch hands over on its own socket.
Thread-free, like the rest of `ivr/`.

In inbound mode a controller must look before it acts: a parked channel may belong to
someone else. In outbound mode the dialplan's `socket` app has given the call to us,
and while that app runs the channel runs nothing else (its `current_application` is
`socket`), so only the checkpoint on the channel decides (the same look,
`ivr.resume.look`, told the call was offered):

- none: a new call, the flow starts;
- a live state: an icall process that had the call is gone (killed, restarted) and the
  dialplan offered the call again (README: a second `socket`); the flow resumes it
  where the checkpoint says, and goes on numbering its records after the last one, so
  nothing is recorded twice;
- handed off or final: the call came back into the IVR (a queue or a time condition
  sent it to the socket extension again); the flow re-enters, as a CHANNEL_PARK in its
  final state does in inbound mode; unless the hand-off never ran (the channel never
  left the socket extension): it is sent now.
"""

from __future__ import annotations

from ivr.event import Event

# The CDR's cause when a call's socket closed and the call never came back to icall.
SOCKET_LOST_CAUSE = "UNKNOWN (hangup not seen: its socket closed)"


def park_of(channel: Event) -> Event:
    """The channel data as the CHANNEL_PARK a flow re-enters on."""
    return Event({**channel.headers, "Event-Name": "CHANNEL_PARK"}, "")
