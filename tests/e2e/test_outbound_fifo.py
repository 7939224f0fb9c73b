"""The real mod_fifo queue in outbound mode: the caller's fifo::info events reach the
call over its own socket (`myevents` alone carries no CUSTOM event: icall adds
`event plain CUSTOM fifo::info`), so the queue's rows are kept as in inbound mode."""

from __future__ import annotations

from tests.e2e.outbound_harness import harness  # noqa: F401  (every call through `socket`)
from tests.e2e.test_fifo import (  # noqa: F401  (collected here in outbound mode)
    picked_up_by_an_agent,
    test_a_caller_giving_up_in_the_queue_is_recorded_as_an_abort,
)


def test_an_agent_picking_up_a_queued_sales_call_is_recorded_up_to_the_hangup(harness, switch):  # noqa: F811
    # What differs from inbound mode: mod_fifo's bridge-caller-stop comes after the
    # caller's CHANNEL_HANGUP_COMPLETE, and the stand-in's socket, as recorded, carries
    # nothing of the channel after its linger notice.
    picked_up_by_an_agent(harness, switch)
