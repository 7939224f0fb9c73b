"""The fake CRM and fake CDR endpoint keep their promises (other tests rely on them)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from fakeswitch.fake_cdr import FakeCdrSink
from fakeswitch.fake_crm import FakeCrm, Reply, parse_table


def get(url: str, timeout_s: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_the_fake_crm_answers_from_its_table_and_records_the_request():
    with FakeCrm({"5551000": "801"}) as crm:
        assert get(crm.url + "/voip/cdrs?caller_id=5551000") == (200, b"801")
        assert get(crm.url + "/voip/cdrs?caller_id=1") == (404, b"")
        first = crm.requests[0]
        assert (first.method, first.path, first.raw_query) == ("GET", "/voip/cdrs", "caller_id=5551000")


def test_a_script_of_replies_is_played_in_order_then_the_default():
    with FakeCrm({"5551000": "801"}) as crm:
        crm.script([Reply(status=503), Reply(body="999")])
        results = [get(crm.url + "/?caller_id=5551000") for _ in range(3)]
        assert results == [(503, b""), (200, b"999"), (200, b"801")]


def test_a_refusing_fake_refuses_and_a_reopened_one_answers_on_the_same_port():
    with FakeCrm({"5551000": "801"}) as crm:
        port = crm.port
        crm.refuse()
        with pytest.raises(urllib.error.URLError):
            get(crm.url + "/?caller_id=5551000", timeout_s=5)
        crm.reopen()
        assert crm.port == port
        assert get(crm.url + "/?caller_id=5551000") == (200, b"801")


def test_a_hanging_request_is_released_when_the_fake_stops():
    crm = FakeCrm().start()
    crm.default = Reply(hang=True)
    outcome: list[object] = []
    client = threading.Thread(target=lambda: outcome.append(_try_get(crm.url + "/?caller_id=1")))
    client.start()
    assert crm.wait_for_requests(1, timeout_s=10)
    stop_started = time.monotonic()
    crm.stop()
    client.join(timeout=10)
    assert not client.is_alive()
    assert time.monotonic() - stop_started < 5
    assert outcome and isinstance(outcome[0], Exception)  # closed without an answer


def _try_get(url: str) -> object:
    try:
        return get(url, timeout_s=30)
    except Exception as exc:  # the outcome under test is the exception itself
        return exc


def test_the_fake_cdr_sink_counts_accepted_keys_apart_from_posts():
    with FakeCdrSink() as sink:
        sink.down(True)
        assert _post(sink.url, "k1") == 503
        sink.down(False)
        assert _post(sink.url, "k1") == 200
        assert _post(sink.url, "k1") == 200
        assert _post(sink.url, "k2") == 200
        assert sink.total_posts() == 4
        assert sink.unique_keys() == {"k1", "k2"}
        assert sink.accept_counts() == {"k1": 2, "k2": 1}
        assert sink.accepted("k2") == {"n": "k2"}


def _post(url: str, key: str) -> int:
    request = urllib.request.Request(url + "/cdr", data=json.dumps({"n": key}).encode(),
                                     headers={"Idempotency-Key": key})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_table_option_reads_caller_extension_pairs():
    assert parse_table("5551000=801, 5551001=802,") == {"5551000": "801", "5551001": "802"}


def test_the_fake_crm_runs_from_the_command_line():
    process = subprocess.Popen(
        [sys.executable, "-m", "fakeswitch.fake_crm", "--listen", "127.0.0.1:0",
         "--table", "5551000=801"], stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # "fake CRM on http://127.0.0.1:PORT ..."
        url = line.split()[3].rstrip(";")
        assert get(url + "/voip/cdrs?caller_id=5551000") == (200, b"801")
    finally:
        process.terminate()
        process.wait(timeout=10)
