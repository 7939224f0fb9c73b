"""Several switches, one database (issue 14): two stand-ins, an `icall run` process
beside each, one PostgreSQL (or MariaDB). Both units upgrade the schema at once; 200
calls arrive over both at 20/s; the CDR endpoint stops answering for part of the run,
and meanwhile one icall is SIGKILLed while it holds claimed CDRs, then restarted as
systemd would. Afterwards every call has its row, once, naming its node, and the
endpoint's own count says every CDR was accepted exactly once: the dead icall's
claimed CDRs were posted by another only after their lease ran out."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from fakeswitch import FakeSwitch
from fakeswitch.fake_cdr import FakeCdrSink
from fakeswitch.fake_crm import FakeCrm, Reply
from storage.db import open_database
from storage.migrations import LATEST, schema_version
from storage.models import Call, CdrOutbox, utc_now
from tests.e2e.cluster import ROOT, IcallNode, upgrade_command
from tests.e2e.conftest import USERS
from tests.storage.conftest import backend  # noqa: F401 - the fixture, used below
from tests.waiting import wait_until

CALLS = 200
RATE = 20.0
WAIT_S = 60  # two icalls, two stand-ins and a database on a shared 2-core machine
HANG_AT, ENDPOINT_BACK_AT = 50, 150  # the endpoint stops answering between these calls
RESTART_AFTER_S = 2.0  # systemd's RestartSec, shortened


@pytest.fixture
def switches():
    made = [FakeSwitch(port=0, password="ClueCon", time_scale=0.05, users=USERS) for _ in range(2)]
    for switch in made:
        switch.start()
    yield made
    for switch in made:
        switch.stop()


def _upgrade_at_once(nodes: list[IcallNode]) -> list[str]:
    """Both units' `icall db upgrade` (ExecStartPre) started together; their outputs."""
    runs = [subprocess.Popen(upgrade_command(node.config), cwd=ROOT, env=node.environ(), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for node in nodes]
    outputs = [run.communicate(timeout=WAIT_S)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    return outputs


def _claims_of(db, node: str) -> list[CdrOutbox]:
    return list(CdrOutbox.select().where(CdrOutbox.claimed_by.startswith(f"{node}#"),
                                         CdrOutbox.claimed_until > utc_now(),
                                         CdrOutbox.delivered_at.is_null()).execute(db))


def test_two_icalls_on_one_database_write_each_call_once_and_post_each_cdr_once(
        backend, switches, tmp_path):  # noqa: F811 - the pytest fixture
    if backend.kind == "sqlite":
        pytest.skip("SQLite is one host's database: several nodes share PostgreSQL or MariaDB")
    with FakeCrm({}) as crm, FakeCdrSink() as sink:
        nodes = [IcallNode(tmp_path, name, switch, backend.url, crm.url, sink.url + "/cdr")
                 for name, switch in zip(("node-a", "node-b"), switches, strict=True)]
        node_a, node_b = nodes
        outputs = _upgrade_at_once(nodes)
        assert sum(f"upgraded from version 0 to {LATEST}" in out for out in outputs) == 1, outputs
        db = open_database(backend.url)
        try:
            assert schema_version(db) == LATEST
            for node in nodes:
                node.start(WAIT_S)
            report = _run_calls(db, nodes, sink)
            _check(db, nodes, sink, report)
        finally:
            for node in nodes:
                node.stop(WAIT_S)
            db.close()


def _run_calls(db, nodes: list[IcallNode], sink: FakeCdrSink) -> dict:
    node_a, node_b = nodes
    placed: dict[str, IcallNode] = {}
    pace = threading.Event()  # never set: paces the calls at RATE
    hang_started = killed_at = None
    claimed_at_kill: list[CdrOutbox] = []
    claim_end_mono = 0.0
    for n in range(CALLS):
        node = nodes[n % 2]
        placed[node.switch.place_call(caller_id=f"55{n:05d}", variables={"fake_dtmf": "1"})] = node
        if n == HANG_AT:
            sink.default = Reply(hang=True)  # accepts the connection, never answers
            hang_started = time.monotonic()
        # Kill node-b once the rounds it began before the hang are over (one POST
        # timeout) and it holds claims it took while nothing is answered.
        if (hang_started and killed_at is None and time.monotonic() > hang_started + 1.5
                and (claims := _claims_of(db, node_b.node))):
            node_b.kill(WAIT_S)
            killed_at = time.monotonic()
            claimed_at_kill = _claims_of(db, node_b.node) or claims
            last_end = max(row.claimed_until for row in claimed_at_kill)
            claim_end_mono = time.monotonic() + (last_end - utc_now()).total_seconds()
        if killed_at and node_b.process and node_b.process.poll() is not None \
                and time.monotonic() > killed_at + RESTART_AFTER_S:
            node_b.start(WAIT_S)
        if n == ENDPOINT_BACK_AT:
            sink.default = Reply(status=200, body=b'{"ok": true}', content_type="application/json")
        pace.wait(1 / RATE)
    assert killed_at is not None, "node-b never held claimed CDRs while the endpoint hung"
    if node_b.process is not None and node_b.process.poll() is not None:
        node_b.start(WAIT_S)
    return {"placed": placed, "claimed_at_kill": claimed_at_kill, "killed_at": killed_at,
            "claim_end_mono": claim_end_mono}


def _check(db, nodes: list[IcallNode], sink: FakeCdrSink, report: dict) -> None:
    placed: dict[str, IcallNode] = report["placed"]
    for uuid, node in placed.items():
        assert node.switch.wait_hangup(uuid, timeout=WAIT_S), f"call {uuid} on {node.node} never ended"
    # Every call actor gone and every write committed: the outbox holds all it will.
    assert wait_until(lambda: all(node.idle() for node in nodes), WAIT_S), "an icall never settled"
    outbox = lambda: {row.call_uuid: row for row in CdrOutbox.select().execute(db)}  # noqa: E731
    assert wait_until(lambda: all(r.delivered_at for r in outbox().values())
                      and sink.unique_keys() >= set(outbox()), WAIT_S), "CDRs left undelivered"

    rows = {row.uuid: row.node for row in Call.select(Call.uuid, Call.node).execute(db)}
    missing = [u for u in placed if u not in rows]
    wrong_node = {u: rows[u] for u, node in placed.items() if u in rows and rows[u] != node.node}
    counts = sink.accept_counts()
    cdrs = set(outbox())
    repeats = {key: n for key, n in counts.items() if n > 1}
    claimed = {row.call_uuid for row in report["claimed_at_kill"]}
    posted_at = {}
    for request in sink.requests:
        key = request.headers.get("Idempotency-Key")
        if key in claimed:
            posted_at.setdefault(key, []).append(request.received_at)
    print(f"\ncluster on {type(db).__name__}: {len(placed)} calls placed, {len(rows)} call rows "
          f"({len(missing)} missing, {len(wrong_node)} with another node), {len(cdrs)} CDRs, "
          f"{len(set(counts))} accepted, {sum(counts.values()) - len(counts)} accepted more than once, "
          f"{sink.total_posts()} POSTs; {len(claimed)} claimed by node-b when it was killed")

    assert not missing and not wrong_node and len(rows) == len(placed)
    assert set(counts) == cdrs and not repeats, f"accepted more than once: {repeats}"
    assert claimed and claimed <= set(counts)
    # node-b is dead from killed_at: a POST of one of its claimed CDRs after that and
    # before its claim ran out would be another poster ignoring the claim.
    early = [t - report["killed_at"] for key in claimed for t in posted_at.get(key, [])
             if report["killed_at"] < t < report["claim_end_mono"] - 0.1]
    assert not early, f"claimed CDRs posted {early} s after the kill, before their lease ran out"
