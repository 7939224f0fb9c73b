"""fakeswitch: a FreeSWITCH stand-in speaking the real Event Socket protocol.

See fakeswitch.server.FakeSwitch (in-process API) and fakeswitch.dialplan (extensions and
per-call scenario variables). Shares no code with actors/, ivr/ or storage/.
"""

from fakeswitch.server import FakeSwitch, FakeSwitchError

__all__ = ["FakeSwitch", "FakeSwitchError"]
