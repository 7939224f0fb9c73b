"""Outbound mode, the service process SIGKILLed while a caller waits in a queue and
started again: the queued caller's hangup, later, still gives the call its one CDR with
the real cause. Real processes (`icall run`), the stand-in in this process."""

from __future__ import annotations

import socket

from fakeswitch import FakeSwitch
from fakeswitch.fake_cdr import FakeCdrSink
from storage.db import open_database
from storage.models import Call, CdrOutbox
from tests.restart.test_kill_and_restart import start_icall, subprocess_db_upgrade
from tests.service.conftest import write_config
from tests.waiting import wait_until

WAIT_S = 60


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def _filtered(switch: FakeSwitch, uuid: str) -> bool:
    """An event connection (not a call's socket) lets this call's events through."""
    return any(("Unique-ID", uuid) in listener.sub.filters and not getattr(listener, "session_uuid", None)
               for listener in list(switch.switch.listeners))


def test_a_queued_outbound_caller_outliving_a_sigkilled_icall_gets_one_cdr_with_the_real_cause(tmp_path):
    switch = FakeSwitch(port=0, password="ClueCon", time_scale=0.05)
    switch.start()
    db_path = tmp_path / "icall.sqlite3"
    port = _free_port()
    try:
        with FakeCdrSink() as sink:
            config = write_config(tmp_path / "config.ini", switch.port, **{
                "database": {"url": f"sqlite:///{db_path}"},
                "outbound": {"listen": f"127.0.0.1:{port}"},
                "cdr": {"url": sink.url, "retry_min_s": "0.1"},
                "schedule": {"timezone": "UTC", "weekday_open": "00:00-24:00",
                             "weekend_open": "00:00-24:00", "evening": "closed"},
            })
            subprocess_db_upgrade(config, tmp_path)
            switch.switch.outbound_target = ("127.0.0.1", port)
            first = start_icall(config, tmp_path)
            uuid = switch.place_call(caller_id="5551201", dest="icall_out",
                                     variables={"fake_dtmf": "2", "fake_fifo": "real"})
            assert switch.wait_fifo(uuid, "push", timeout=WAIT_S), "the caller never reached the queue"
            first.process.kill()
            first.process.wait(10)
            second = start_icall(config, tmp_path)
            try:
                assert wait_until(lambda: _filtered(switch, uuid), WAIT_S), \
                    "the restarted icall does not listen to the queued call\n" + second.stderr()
                switch.hangup(uuid, "NORMAL_CLEARING")
                assert sink.wait_for_accepted(1, timeout_s=WAIT_S), second.stderr()
                assert sink.accepted(uuid)["hangup_cause"] == "NORMAL_CLEARING"
                db = open_database(f"sqlite:///{db_path}")
                row = Call.select().where(Call.uuid == uuid).get(db)
                assert (row.hangup_cause, row.caller_id) == ("NORMAL_CLEARING", "5551201")
                assert CdrOutbox.select().where(CdrOutbox.call_uuid == uuid).count(db) == 1
                db.close()
            finally:
                second.terminate()
    finally:
        switch.stop()
