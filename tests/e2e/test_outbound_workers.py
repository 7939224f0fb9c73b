"""Two icall processes on one database and one outbound port, as `[service] workers`
run them: the switch drops a call's socket and the dialplan's second `socket` lands on
the other one, which takes the call over. The one that lost it must not write the
call's end ("hangup not seen: its socket closed") when its grace runs out: the call is
closed, and its one CDR posted, by the one that saw the hangup."""

from __future__ import annotations

import pytest

from storage.models import Call, CdrOutbox
from tests.e2e.conftest import WAIT_S
from tests.e2e.outbound_harness import OutboundHarness
from tests.e2e.test_outbound import prompting, real_time_switch  # noqa: F401 - the fixture
from tests.storage.tcp_proxy import TcpProxy
from tests.waiting import wait_until

CALLS = 3


# The first worker's grace: longer than the take-over takes (the claim is in first), and
# so short that its unseen CDR may be written before the claim (it is held back, then
# replaced by the real one).
@pytest.fixture(params=["1", "0.2"], ids=["grace 1 s", "grace 0.2 s"])
def two_workers(request, tmp_path, real_time_switch, crm, cdr_sink):  # noqa: F811 - the fixture
    """Workers a and b sharing a database; the switch reaches them through a proxy that
    a test points at one or the other (the kernel's SO_REUSEPORT choice, made by hand)."""
    made: list[OutboundHarness] = []
    for name in ("a", "b"):
        made.append(OutboundHarness(tmp_path, real_time_switch, crm, cdr_sink,
                                    STATE_DIRECTORY=str(tmp_path / f"state-{name}"),
                                    ICALL_OUTBOUND_SOCKET_GRACE_S=request.param).start())
    proxy = TcpProxy("127.0.0.1", _port(made[0]))
    real_time_switch.switch.outbound_target = ("127.0.0.1", proxy.port)
    yield made, proxy
    proxy.close()
    for h in made:
        h.stop()


def _accepted(h: OutboundHarness) -> int:
    assert h.service.outbound is not None
    return h.service.outbound.accepted


def _port(h: OutboundHarness) -> int:
    assert h.service.outbound is not None
    return h.service.outbound.port


def test_a_call_whose_second_socket_lands_on_another_worker_gets_one_cdr_with_the_real_cause(
        two_workers, real_time_switch, cdr_sink):  # noqa: F811 - the fixture
    (a, b), proxy = two_workers
    uuids = []
    for n in range(1, CALLS + 1):
        proxy.retarget("127.0.0.1", _port(a))
        uuid = a.place("5551003", "2|2")
        assert prompting(a, uuid), "the main menu never started"
        proxy.retarget("127.0.0.1", _port(b))
        assert real_time_switch.close_outbound(uuid)
        assert wait_until(lambda n=n: _accepted(b) == n, WAIT_S), "the second socket never reached b"
        uuids.append(uuid)
    for uuid in uuids:
        r = b.finish(uuid)  # b drove the call to its end
        assert a._gone_event(uuid).wait(WAIT_S), "worker a never let the call go"
        assert r.row is not None and r.row["hangup_cause"] == "NORMAL_CLEARING", r.row
        assert r.steps.count(("MainMenu", "2")) == 1
    assert cdr_sink.wait_for_accepted(CALLS, timeout_s=WAIT_S)
    for uuid in uuids:
        assert cdr_sink.accepted(uuid)["hangup_cause"] == "NORMAL_CLEARING", uuid
        assert cdr_sink.accept_counts()[uuid] == 1
        assert CdrOutbox.select().where(CdrOutbox.call_uuid == uuid).count(a.db) == 1
        row = Call.select().where(Call.uuid == uuid).get(a.db)
        assert row.claimed_by == b.service.claim, "worker b took the call over"
