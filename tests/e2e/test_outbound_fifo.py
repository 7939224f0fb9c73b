"""The real mod_fifo queue in outbound mode: the caller's fifo::info events reach the
call over its own socket (`myevents` alone carries no CUSTOM event: icall adds
`event plain CUSTOM fifo::info`), so the queue's rows are kept as in inbound mode."""

from __future__ import annotations

from tests.e2e.conftest import WAIT_S
from tests.e2e.outbound_harness import harness  # noqa: F401  (every call through `socket`)
from tests.e2e.test_fifo import (  # noqa: F401  (collected here in outbound mode)
    fifo_actions,
    test_a_caller_giving_up_in_the_queue_is_recorded_as_an_abort,
)


def test_an_agent_picking_up_a_queued_sales_call_is_recorded_up_to_the_hangup(harness, switch):  # noqa: F811
    # What differs from inbound mode: mod_fifo's bridge-caller-stop comes after the
    # caller's CHANNEL_HANGUP_COMPLETE, and the stand-in's socket, as recorded, carries
    # nothing of the channel after its linger notice.
    switch.set_fifo_queue("fifo_sales", "real")
    h = harness()
    uuid = h.place("5551200", "2")
    assert switch.wait_fifo(uuid, "push", timeout=WAIT_S)
    switch.agent_pickup("sales", talk_s=1.0)
    r = h.finish(uuid)
    assert r.commands[-1] == ("transfer", "fifo_sales XML new_sales")
    actions = fifo_actions(h, uuid)
    assert actions[0] == "push"
    assert "bridge-caller-start" in actions
    assert r.row["hangup_cause"] == "NORMAL_CLEARING"
