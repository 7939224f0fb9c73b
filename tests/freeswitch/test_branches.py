"""Every branch of the flow on a real FreeSWITCH, in both modes: the callers of
bench.scenarios (keys with uuid_recv_dtmf, each at its prompt) placed at once; each
call's path as the switch ran it, its row and its one CDR."""

from __future__ import annotations

import pytest

from bench.scenarios import REAL_SWITCH_EXTENSIONS, caller_id, lab_scenarios
from tests.freeswitch.conftest import CALL_TIMEOUT_S

pytestmark = pytest.mark.freeswitch
SCENARIOS = lab_scenarios(REAL_SWITCH_EXTENSIONS)


@pytest.mark.parametrize(("mode", "dest"), [("inbound", "fsm"), ("outbound", "icall_out")])
def test_every_branch_takes_its_path_and_leaves_one_row_and_one_cdr(lab, icall, cdr_sink, mode, dest):
    one = icall(outbound=mode == "outbound")
    one.start()
    calls = [lab.place(s, dest, caller_id(s, n)) for n, s in enumerate(SCENARIOS)]
    for call in calls:
        assert call.ended.wait(CALL_TIMEOUT_S), f"{call.scenario.name} never ended: {call.path}"

    wrong = [(c.scenario.name, c.path) for c in calls if not c.went_right()]
    assert not wrong, wrong
    repeated = [(c.scenario.name, c.path) for c in calls if c.collapsed_path()[1]]
    assert not repeated, f"a prompt played twice: {repeated}"
    for call in calls:
        row = one.wait_recorded(call.uuid, cdr_sink)
        assert row["hangup_cause"] == call.hangup_cause == "NORMAL_CLEARING", (call.scenario.name, row)
        assert cdr_sink.accept_counts()[call.uuid] == 1
        assert call.sockets <= 1 and call.parks == 1, call.scenario.name
    assert not one.errors(), one.errors()
