"""The sales queue as a real mod_fifo queue: what the seed's db_pbx:process kept.
The caller's fifo::info events are recorded, including bridge-caller-stop, which
today's mod_fifo sends after the caller's CHANNEL_HANGUP_COMPLETE."""

from __future__ import annotations

from storage.models import FifoEvent
from tests.e2e.conftest import WAIT_S
from tests.waiting import wait_until


def fifo_actions(h, uuid: str) -> list[str]:
    rows = FifoEvent.select().where(FifoEvent.call_uuid == uuid).order_by(FifoEvent.seq).execute(h.db)
    return [row.action for row in rows]


def picked_up_by_an_agent(harness, switch) -> list[str]:
    """A sales caller queued, then served by an agent who talks 1 s: the call's fifo
    actions, once the call is over (checked to have gone through the queue)."""
    switch.set_fifo_queue("fifo_sales", "real")
    h = harness()
    uuid = h.place("5551200", "2")
    assert switch.wait_fifo(uuid, "push", timeout=WAIT_S)
    switch.agent_pickup("sales", talk_s=1.0)
    r = h.finish(uuid)
    assert r.commands[-1] == ("transfer", "fifo_sales XML new_sales")
    assert r.row["hangup_cause"] == "NORMAL_CLEARING"
    actions = fifo_actions(h, uuid)
    assert actions[0] == "push"
    assert "bridge-caller-start" in actions
    return actions


def test_an_agent_picking_up_a_queued_sales_call_is_recorded(harness, switch):
    actions = picked_up_by_an_agent(harness, switch)
    assert actions[-1] == "bridge-caller-stop", "the stop arrives after hangup and must still be kept"


def test_a_caller_giving_up_in_the_queue_is_recorded_as_an_abort(harness, switch):
    switch.set_fifo_queue("fifo_sales", "real")
    h = harness()
    # The caller gives up 8 s (unscaled) after answering: well after reaching the queue.
    uuid = h.place("5551201", "2", fake_hangup_after_s="8")
    r = h.finish(uuid)
    assert fifo_actions(h, uuid) == ["push", "abort"]
    assert r.row["ended_at"] is not None


def queued_then_sent_back(h, switch, extension: str):
    """A caller who chose 1 (the real fifo_hst queue), sent back to `extension` once
    queued, chooses 1 again, queues again and hangs up: the call's result."""
    switch.set_fifo_queue("fifo_hst", "real")
    uuid = h.place("5551210", "1|1")
    assert switch.wait_fifo(uuid, "push", timeout=WAIT_S)
    reply = h.service.services.commander_proxy().api(f"uuid_transfer {uuid} {extension} XML default").get(timeout=5)
    assert reply.startswith("+OK"), reply
    assert wait_until(lambda: fifo_actions(h, uuid).count("push") == 2, WAIT_S), \
        (fifo_actions(h, uuid), switch.call_record(uuid).events[-20:], switch.call_record(uuid).commands)
    switch.hangup(uuid)
    return h.finish(uuid)


def test_a_queued_caller_sent_back_into_the_ivr_starts_the_flow_again_as_a_re_entry(harness, switch):
    """An agent (or the queue's orbit) sends the caller back to the IVR's extension
    with `uuid_transfer`: the second CHANNEL_PARK starts the flow again, recorded as a
    re-entry, and the caller's second choice counts."""
    r = queued_then_sent_back(harness(), switch, "fsm")
    welcome, menu, queue = ("playback", "new_sales/1000.wav"), r.commands[1], ("transfer", "fifo_hst XML new_sales")
    assert menu[0] == "play_and_get_digits"
    assert r.commands == [welcome, menu, queue, welcome, menu, queue]
    assert ("ReEntry", "2") in r.steps and r.steps.count(("MainMenu", "1")) == 2
    assert r.row["hangup_cause"] == "NORMAL_CLEARING"
