"""Outbound calls alive at a restart: a caller handed off (queued) while icall is
stopped and started again. The new process holds no socket for the call and its event
link's filter (`variable_ivr_app`) does not match an outbound call: it must listen to
the call's events all the same, so the hangup writes the CDR with its real cause, and
the call stops counting against `[ivr] max_concurrent_calls`."""

from __future__ import annotations

from storage.models import Call
from tests.e2e.conftest import WAIT_S
from tests.e2e.outbound_harness import OutboundHarness
from tests.waiting import wait_until


def _listening(h: OutboundHarness, uuid: str) -> bool:
    """The call has an actor that has looked at it and listens, in the final state."""
    assert h.service.supervisor is not None
    ref = h.service.supervisor.proxy().call_ref(uuid).get(timeout=WAIT_S)
    return ref is not None and ref.proxy().state().get(timeout=WAIT_S) == "final_loop"


def _filtered(switch, uuid: str) -> bool:
    return any(("Unique-ID", uuid) in listener.sub.filters and not getattr(listener, "session_uuid", None)
               for listener in list(switch.switch.listeners))


def test_an_outbound_call_queued_across_a_restart_gets_its_cdr_with_the_real_cause_and_frees_its_slot(
        tmp_path, switch, crm, cdr_sink):
    switch.set_fifo_queue("fifo_sales", "real")
    first = OutboundHarness(tmp_path, switch, crm, cdr_sink).start()
    uuid = first.place("5551201", "2")
    assert switch.wait_fifo(uuid, "push", timeout=WAIT_S), "the caller never reached the queue"
    assert first.service.reader is not None
    first.service.reader.stop()  # icall is gone (the call's row stays open)
    first.stop()
    again = OutboundHarness(tmp_path, switch, crm, cdr_sink).start()
    try:
        assert wait_until(lambda: _listening(again, uuid), WAIT_S), \
            "the restarted icall does not listen to the queued call"
        assert again.service.stats()["calls_live"] == 1
        assert wait_until(lambda: _filtered(switch, uuid), WAIT_S), "the event link never let its events in"
        switch.hangup(uuid, "NORMAL_CLEARING")  # the caller gives up, later
        assert switch.wait_hangup(uuid, timeout=WAIT_S)
        assert wait_until(lambda: Call.select().where(Call.uuid == uuid).get(again.db).hangup_cause
                          is not None, WAIT_S), "the call was never closed"
        assert Call.select().where(Call.uuid == uuid).get(again.db).hangup_cause == "NORMAL_CLEARING"
        assert cdr_sink.wait_for_accepted(1, timeout_s=WAIT_S)
        assert cdr_sink.accepted(uuid)["hangup_cause"] == "NORMAL_CLEARING"
        assert wait_until(lambda: again.service.stats()["calls_live"] == 0, WAIT_S), "the call still holds a slot"
    finally:
        again.stop()
