"""Outbound mode against peers that are not the switch, and the calls the port must not
take: an impostor claiming a live call's Unique-ID, a call over the limit whose transfer
is refused, a call whose `socket` reaches a process that is stopping. The impostor is a
real TCP client (tests.socket_peer) beside the stand-in's own sockets."""

from __future__ import annotations

import logging
import socket
import threading

from tests.e2e.conftest import WAIT_S
from tests.e2e.test_branches import MAIN_MENU, WELCOME
from tests.e2e.test_fifo import queued_then_sent_back
from tests.e2e.test_outbound import outbound, prompting, real_time_switch  # noqa: F401  (fixtures)
from tests.socket_peer import SocketPeer

QUEUE_HST = ("transfer", "fifo_hst XML new_sales")


def test_a_connection_claiming_a_live_calls_unique_id_gets_exit_and_nothing_of_the_call(
        outbound, real_time_switch, caplog):  # noqa: F811
    h = outbound(on=real_time_switch)
    caplog.set_level(logging.WARNING)
    uuid = h.place("5551003", "2")
    assert prompting(h, uuid), "the main menu never started"
    impostor = SocketPeer(h.service.outbound.port)
    peer = f"127.0.0.1:{impostor.sock.getsockname()[1]}"
    assert impostor.wait_for("connect", WAIT_S)
    impostor.answer_connect(uuid)
    assert impostor.wait_closed(WAIT_S), "the impostor was kept"
    assert "exit" in impostor.commands()
    assert not any(line.startswith("sendmsg") for line in impostor.commands()), impostor.commands()
    r = h.finish(uuid)
    # The call went on on its own socket: the menu's answer was acted on there.
    assert r.commands == [WELCOME, MAIN_MENU, ("transfer", "fifo_sales XML new_sales")]
    assert r.row["hangup_cause"] == "NORMAL_CLEARING"
    assert any("refused" in rec.getMessage() and peer in rec.getMessage() and uuid in rec.getMessage()
               for rec in caplog.records), "no warning names the impostor and the call"
    assert h.service.stats()["claims_refused"] == 1


def test_a_call_over_the_limit_whose_transfer_is_refused_goes_to_the_dialplans_next_action(
        outbound, real_time_switch):  # noqa: F811
    # An operator's dialplan names what follows `socket` for a caller icall cannot take
    # (README: the second `socket`, then the safe destination); a refused overflow
    # transfer lets the socket go so that it runs, instead of leaving the caller parked.
    h = outbound(on=real_time_switch, ICALL_IVR_MAX_CONCURRENT_CALLS="1",
                 ICALL_IVR_OVERFLOW_DESTINATION="fifo_cellphone XML new_sales")
    first = h.place("5551001", "2")
    assert prompting(h, first, "playback"), "the first call never started"
    real_time_switch.faults.error_commands = {"sendmsg"}
    try:
        second = h.place("5551002", "2")
        assert real_time_switch.wait_hangup(second, timeout=WAIT_S), "the caller was left parked"
    finally:
        real_time_switch.faults.error_commands = set()
    record = real_time_switch.call_record(second)
    # Both `socket`s overflowed; the dialplan's own transfer ran after the second.
    assert record.transferred_to == "fifo_sales"
    assert h.service.stats()["calls_overflowed"] == 2


def test_icall_stopping_closes_its_port_first_and_lets_a_late_connect_go_without_a_command(
        outbound):  # noqa: F811
    h = outbound()
    port = h.service.outbound.port
    late = SocketPeer(port)  # accepted; its `connect` answer comes while icall stops
    assert late.wait_for("connect", WAIT_S)
    stopping, go_on = threading.Event(), threading.Event()
    refused: list[bool] = []
    stop_supervisor = h.service._stop_supervisor

    def held_stop_supervisor() -> None:
        """The supervisor's stop, held while the test looks at the port."""
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            refused.append(False)
        except ConnectionRefusedError:
            refused.append(True)
        stopping.set()
        go_on.wait(WAIT_S)
        stop_supervisor()

    stops = h.service._stop_list
    stops[:] = [(name, held_stop_supervisor if name == "supervisor" else stop) for name, stop in stops]
    stopper = threading.Thread(target=h.service.stop, name="stopper")
    stopper.start()
    try:
        assert stopping.wait(WAIT_S)
        assert refused == [True], "the port still took calls while the service stopped"
        late.answer_connect("5e1f0c2a-0000-4000-8000-00000000000a", "5551001")
        assert late.wait_for("exit", WAIT_S)
        late.read()
        assert not any(line.startswith("sendmsg") for line in late.commands()), late.commands()
    finally:
        go_on.set()
        stopper.join(WAIT_S)
    assert h.service.stats().get("calls_started", 0) == 0



def test_a_queued_caller_sent_back_to_the_socket_extension_is_taken_on_the_new_socket(outbound, switch):  # noqa: F811
    """The hand-over the channel confirms: the transfer into the queue ended the `socket`
    app (its socket stays open to the hangup), so the call's next `socket` is the switch
    offering it again, not an impostor."""
    h = outbound()
    r = queued_then_sent_back(h, switch, "icall_out")
    assert r.commands == [WELCOME, MAIN_MENU, QUEUE_HST, WELCOME, MAIN_MENU, QUEUE_HST], (r.commands, r.steps)
    assert ("ReEntry", "2") in r.steps and r.steps.count(("MainMenu", "1")) == 2
    assert h.service.stats()["claims_refused"] == 0
