"""`systemctl reload icall` as systemd sends it (SIGHUP to the main process) to the
unit's own `icall run`, under load on the stand-in: the service lives, no call is
touched, the calls after it use the new prompt; a broken file after it changes
nothing; with two workers both report their result."""

from __future__ import annotations

import http.client
import re
import signal
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fakeswitch import FakeSwitch
from tests.e2e.outbound_harness import free_port
from tests.service import test_workers
from tests.service.conftest import ROOT, service_env, write_config
from tests.service.test_run import upgrade_database
from tests.service.unit_file import local_command, service_settings, unit_environment
from tests.waiting import wait_until

TIMEOUT_S = 60.0
switch = test_workers.switch  # the fixture: the stand-in at full speed, a call lasting ~4 s
OPEN_ALL_DAY = {"timezone": "UTC", "weekday_open": "00:00-24:00", "weekend_open": "00:00-24:00",
                "evening": "closed"}
WELCOME = ("playback", "new_sales/1000.wav")
GOODBYE = ("playback", "new_sales/9003.wav")
# What each key leads to with the CRM disabled (write_config): a queue, or goodbye.
ENDINGS = {"1": [("transfer", "fifo_hst XML new_sales")], "2": [("transfer", "fifo_sales XML new_sales")],
           "none": [GOODBYE]}


def main_menu(sound: str) -> tuple[str, str]:
    return ("play_and_get_digits", f"1 1 3 5000 # new_sales/{sound} new_sales/9004.wav menu_number [1-5]")


@pytest.fixture
def icall_with(tmp_path, switch, run_icall):
    """Start the unit's ExecStart on a config.ini the test rewrites; returns (process,
    rewrite(**sections), metrics port)."""
    metrics_port = free_port()

    def rewrite(**sections: dict[str, str]):
        return write_config(tmp_path / "config.ini", switch.port, schedule=OPEN_ALL_DAY,
                            metrics={"listen": f"127.0.0.1:{metrics_port}"}, **sections)

    def start(**sections: dict[str, str]):
        state = tmp_path / "state"
        state.mkdir(exist_ok=True)
        config = rewrite(**sections)
        settings = service_settings()
        env = service_env(state, **unit_environment(settings))
        upgrade_database(config, env)
        icall = run_icall(local_command(settings["ExecStart"][0], config), env, ROOT)
        icall.wait_for_line(r"icall ready", TIMEOUT_S)
        return icall, rewrite, metrics_port

    return start


def scrape(port: int, name: str) -> dict[tuple, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        body = connection.getresponse().read().decode()
    finally:
        connection.close()
    return {tuple(sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(body) for sample in family.samples
            if sample.name == name}


def place_wave(switch: FakeSwitch, count: int, first: int) -> dict[str, str]:
    """`count` calls, the keys cycling through ENDINGS: uuid -> key."""
    keys = list(ENDINGS)
    placed = {}
    for n in range(count):
        key = keys[n % len(keys)]
        placed[switch.place_call(caller_id=f"5553{first + n:03d}", variables={"fake_dtmf": key})] = key
    return placed


def assert_each_call_went_its_way(switch: FakeSwitch, calls: dict[str, str], sound: str) -> None:
    for uuid in calls:
        assert switch.wait_hangup(uuid, timeout=TIMEOUT_S), uuid
    wrong = {uuid: commands for uuid, key in calls.items()
             if (commands := [c for c in switch.call_record(uuid).commands if not c[1].startswith("icall_ckpt=")])
             != [WELCOME, main_menu(sound), *ENDINGS[key]]}
    assert wrong == {}, wrong


def test_a_sighup_under_load_reloads_and_touches_no_call_and_a_broken_file_then_changes_nothing(
        icall_with, switch):
    icall, rewrite, metrics_port = icall_with()
    before = place_wave(switch, 18, 0)
    # Every call of the wave is live: parked and handled, none ended.
    assert wait_until(lambda: all(switch.call_record(u).commands for u in before), TIMEOUT_S)
    live_at_reload = sum(switch.call_record(u).hangup_cause is None for u in before)
    rewrite(ivr={"sound_main_menu": "1011.wav"})
    icall.process.send_signal(signal.SIGHUP)
    icall.wait_for_line(r"configuration generation 2 in force for new calls: ivr/sound_main_menu changed",
                        TIMEOUT_S)
    after = place_wave(switch, 9, 100)
    assert_each_call_went_its_way(switch, before, "1001.wav")
    assert_each_call_went_its_way(switch, after, "1011.wav")
    assert icall.process.poll() is None, icall.stderr()
    assert scrape(metrics_port, "icall_config_generation") == {(): 2.0}

    rewrite(ivr={"sound_main_menu": "1021.wav", "menu_trys": "2"}, crm={"attempts": "zero"})
    icall.process.send_signal(signal.SIGHUP)
    icall.wait_for_line(r"reload refused: 2 problem\(s\) in .*config\.ini; nothing changed", TIMEOUT_S)
    icall.wait_for_line(r"crm/attempts: expected a whole number, got 'zero'", TIMEOUT_S)
    assert icall.matching(r"ivr/menu_trys: unknown key \(did you mean 'menu_tries'\?\)")
    still = place_wave(switch, 3, 200)
    assert_each_call_went_its_way(switch, still, "1011.wav")
    assert scrape(metrics_port, "icall_config_generation") == {(): 2.0}
    assert scrape(metrics_port, "icall_config_reloads_total") == {(("result", "applied"),): 1.0,
                                                                 (("result", "failed"),): 1.0}
    status = icall.terminate(15)
    log = icall.stderr()
    assert status == 0 and "Traceback" not in log, log
    print(f"\nSIGHUP under load: {len(before)} calls placed before it ({live_at_reload} live at the "
          f"signal), {len(after)} after; calls touched: 0; prompt after it: new_sales/1011.wav")


def test_with_two_workers_the_main_process_passes_the_reload_on_and_each_worker_reports(
        icall_with, switch):
    outbound_port = free_port()
    switch.switch.outbound_target = ("127.0.0.1", outbound_port)
    sections = {"service": {"workers": "2"}, "outbound": {"listen": f"127.0.0.1:{outbound_port}"}}
    icall, rewrite, _ = icall_with(**sections)
    icall.wait_for_line(r"icall ready: 2 workers", TIMEOUT_S)
    rewrite(ivr={"sound_main_menu": "1011.wav"}, **sections)
    started = time.monotonic()
    icall.process.send_signal(signal.SIGHUP)
    for _ in range(2):
        icall.wait_for_line(r"worker \d reloaded the configuration: generation 2 in force", TIMEOUT_S)
    answered_s = time.monotonic() - started
    answered = {re.search(r"worker (\d)", line).group(1)
                for _, line in icall.matching(r"worker \d reloaded the configuration")}
    assert answered == {"0", "1"}
    uuid = switch.place_call(caller_id="5553300", dest="icall_out", variables={"fake_dtmf": "1"})
    assert switch.wait_hangup(uuid, timeout=TIMEOUT_S)
    assert main_menu("1011.wav") in switch.call_record(uuid).commands

    rewrite(ivr={"menu_trys": "2"}, **sections)
    icall.process.send_signal(signal.SIGHUP)
    icall.wait_for_line(r"ivr/menu_trys: unknown key", TIMEOUT_S)
    assert icall.terminate(30) == 0
    log = icall.stderr()
    assert not re.search(r"worker \d could not reload", log), "a broken file is not passed on"
    assert "Traceback" not in log, log
    print(f"\ntwo workers: both answered the reload within {answered_s:.2f} s of the SIGHUP")
