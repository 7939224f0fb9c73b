"""Outbound mode: a call whose socket closed as icall handed it off, offered again on
the dialplan's second `socket` (the one look of both modes, ivr.resume.look)."""

from __future__ import annotations

from actors.channel_link import ChannelLink
from tests.e2e.conftest import WAIT_S, is_checkpoint
from tests.e2e.outbound_harness import harness  # noqa: F401  (every call through `socket`)
from tests.e2e.test_branches import MAIN_MENU, WELCOME
from tests.waiting import wait_until

HANDOFF = ("transfer", "fifo_hst XML new_sales")


def test_a_hand_off_sent_on_a_socket_that_closed_before_it_ran_is_sent_again_not_welcomed_again(
        harness, monkeypatch):  # noqa: F811
    """The hand-off mark ran on the switch, the transfer behind it never came: the call
    is back in the same extension (its caller profile unchanged), so icall sends the
    transfer instead of welcoming the caller again."""
    h = harness()
    real_execute = ChannelLink.execute
    lost: list[str] = []

    def transfer_lost_with_its_socket(link, call_uuid, app, arg, *args, **kwargs):
        if app == "transfer" and not lost:
            # The hand-off mark went out; the transfer never reaches the switch, whose
            # side of the socket closes (a dying worker's).
            lost.append(arg)
            assert wait_until(lambda: handed_off_on_the_channel(call_uuid), WAIT_S)
            assert h.switch.close_outbound(call_uuid)
            return
        real_execute(link, call_uuid, app, arg, *args, **kwargs)

    def handed_off_on_the_channel(call_uuid: str) -> bool:
        return any(is_checkpoint(*c) and '"h":1' in c[1] for c in h.switch.call_record(call_uuid).commands)

    monkeypatch.setattr(ChannelLink, "execute", transfer_lost_with_its_socket)
    uuid = h.place("5551001", "1")
    r = h.finish(uuid)
    assert lost == [HANDOFF[1]]
    assert r.commands == [WELCOME, MAIN_MENU, HANDOFF], "transferred, not welcomed again"
    assert ("ReEntry", "2") not in r.steps
    assert h.switch.call_record(uuid).transferred_to == "fifo_hst"
    assert r.row["hangup_cause"] == "NORMAL_CLEARING"
