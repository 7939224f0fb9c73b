"""The end-to-end harness in outbound mode: the service listens on `[outbound] listen`,
and the stand-in's `icall_out` extension (README's outbound dialplan) connects each
call to it with `socket host:port async full`."""

from __future__ import annotations

import socket
from datetime import datetime

import pytest

from tests.e2e.conftest import WEDNESDAY_11, Harness


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


class OutboundHarness(Harness):
    """Places calls into `icall_out` instead of the inbound park extension."""

    def __init__(self, tmp_path, switch, crm, cdr, **overrides: str):
        overrides.setdefault("ICALL_OUTBOUND_LISTEN", f"127.0.0.1:{free_port()}")
        super().__init__(tmp_path, switch, crm, cdr, **overrides)

    def start(self) -> OutboundHarness:
        super().start()
        assert self.service.outbound is not None
        self.switch.switch.outbound_target = ("127.0.0.1", self.service.outbound.port)
        return self

    def place(self, caller: str, dtmf: str = "none", at: datetime = WEDNESDAY_11,
              dest: str = "icall_out", **variables: str) -> str:
        uuid = self.switch.place_call(caller_id=caller, dest=dest,
                                      variables={"fake_dtmf": dtmf, **variables})
        self.clocks[uuid] = at
        self._gone_event(uuid)
        return uuid

    def place_inbound(self, caller: str, dtmf: str = "none", at: datetime = WEDNESDAY_11) -> str:
        return Harness.place(self, caller, dtmf, at)


@pytest.fixture
def harness(tmp_path, switch, crm, cdr_sink):
    """Replaces conftest's `harness` in a module that imports it: the same tests, with
    every call reaching icall through `socket`."""
    made: list[OutboundHarness] = []

    def make(**overrides: str) -> OutboundHarness:
        h = OutboundHarness(tmp_path, switch, crm, cdr_sink, **overrides).start()
        made.append(h)
        return h

    yield make
    for h in made:
        h.stop()
