"""A reload under load, in process: calls in a menu, waiting for the CRM, in a queue
and talking go on exactly as they began; the calls after it use the new prompt and
the new CRM."""

from __future__ import annotations

import configparser
import time

import pytest

from fakeswitch.fake_crm import FakeCrm, Reply
from ivr.flow import Enter
from ivr.icall import IcallFlow
from service.reload import Reloader
from tests.e2e.conftest import CRM_TABLE, WAIT_S
from tests.e2e.test_branches import EXTN_MENU, GOODBYE, TRANSFERRING, WELCOME, bridge_commands
from tests.waiting import wait_until

MAIN_MENU = ("play_and_get_digits", "1 1 3 60000 # new_sales/1001.wav new_sales/9004.wav menu_number [1-5]")
NEW_MAIN_MENU = ("play_and_get_digits", "1 1 3 60000 # new_sales/1011.wav new_sales/9004.wav menu_number [1-5]")
SALES = ("transfer", "fifo_sales XML new_sales")
EXTN_MENU_LONG = (EXTN_MENU[0], EXTN_MENU[1].replace(" 5000 ", " 60000 "))


@pytest.fixture
def second_crm():
    with FakeCrm(CRM_TABLE) as server:
        yield server


def rewritten(h, path, changes: dict[str, dict[str, str]]) -> str:
    """The service's configuration as an ini file, with `changes`; the password comes
    from the environment, as under systemd."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(h.service.config.render())
    for section, keys in changes.items():
        for key, value in keys.items():
            parser[section][key] = value
    with open(path, "w", encoding="utf-8") as handle:
        parser.write(handle)
    return str(path)


def reloader_for(h, path, changes: dict[str, dict[str, str]]) -> Reloader:
    """A Reloader for the harness's service, reading `path` (written with `changes`)."""
    return Reloader(h.service.config, h.service.apply_config, environ={"ICALL_FREESWITCH_PASSWORD": "ClueCon"},
                    path=rewritten(h, path, changes))


def commands_of(h, uuid: str) -> list[tuple[str, str]]:
    return h.result(uuid).commands


def test_a_reload_under_load_touches_no_live_call_and_the_next_calls_use_the_new_prompt_and_crm(
        harness, switch, crm, second_crm, tmp_path):
    # A CRM read may take 10 s: the slow answer below comes on the first attempt.
    h = harness(ICALL_IVR_PROMPT_TIMEOUT_MS="60000", ICALL_IVR_CRM_GRACE_MS="30000",
                ICALL_CRM_READ_TIMEOUT_S="10")
    switch.set_fifo_queue("fifo_sales", "real")
    reloader = reloader_for(h, tmp_path / "config.ini", {})
    h.service.telemetry.watch("config", reloader.readings)
    # Calls in every state: in the main menu (no key yet), in the sales queue, talking
    # to extension 803 (4 s), and waiting for a CRM that answers after 3 s.
    in_menu = h.place("5551001", "")
    queued = h.place("5551003", "2")
    talking = h.place("5551040", "5|803")
    assert wait_until(lambda: MAIN_MENU in commands_of(h, in_menu), WAIT_S)
    assert switch.wait_fifo(queued, "push", timeout=WAIT_S)
    assert wait_until(lambda: ("bridge", "user/803") in commands_of(h, talking), WAIT_S)
    crm.script([Reply(delay_s=3.0)])
    waiting = h.place("5551002", "2")

    def state_of(uuid: str) -> str:
        ref = h.service.supervisor.proxy().call_ref(uuid).get(timeout=5)
        return ref.proxy().state().get(timeout=5) if ref is not None else "not taken yet"

    assert wait_until(lambda: state_of(waiting) == "call_sales", WAIT_S)
    live = [in_menu, queued, talking, waiting]
    before = {uuid: commands_of(h, uuid) for uuid in live}
    first_crm_asked = len(crm.requests)

    path = rewritten(h, tmp_path / "config.ini", {"ivr": {"sound_main_menu": "1011.wav",
                                                          "sound_invalid_choice": "9013.wav"},
                                                  "crm": {"base_url": second_crm.url}})
    reloader.path = path
    reloaded_at = time.monotonic()
    outcome = reloader.reload()
    reload_s = time.monotonic() - reloaded_at
    assert outcome.ok and outcome.generation == 2

    # Nothing went to a live call because of the reload: what each was sent is what
    # it had, until the caller or the switch moves it on.
    assert {uuid: commands_of(h, uuid) for uuid in live} == before
    after = h.place("5551002", "2")
    new_menu = h.place("5551050", "none")
    switch.press(in_menu, "9")  # an invalid key: the old goodbye, not the new one
    switch.agent_pickup("sales", talk_s=1.0)

    results = {uuid: h.finish(uuid) for uuid in [*live, after, new_menu]}
    assert results[in_menu].commands == [WELCOME, MAIN_MENU, GOODBYE]
    assert results[queued].commands == [WELCOME, MAIN_MENU, SALES]
    assert results[talking].commands == [WELCOME, MAIN_MENU, EXTN_MENU_LONG, *bridge_commands("803")]
    assert results[waiting].commands == [WELCOME, MAIN_MENU, TRANSFERRING, *bridge_commands("801")]
    assert results[waiting].row["crm_extension"] == "801", "the old CRM's late answer still counts"
    for uuid in live:
        assert [s for s in results[uuid].steps if s[0] == "failure"] == []
        assert results[uuid].failures == []
    # The calls after the reload: the new prompt, the new goodbye, the new CRM.
    assert results[after].commands == [WELCOME, NEW_MAIN_MENU, TRANSFERRING, *bridge_commands("801")]
    assert results[new_menu].commands == [WELCOME, NEW_MAIN_MENU, ("playback", "new_sales/9013.wav")]
    # Two calls placed after the reload ask at about the same time: in either order.
    assert sorted(r.query["caller_id"] for r in second_crm.requests) == [["5551002"], ["5551050"]]
    assert len(crm.requests) == first_crm_asked, "the old CRM was asked nothing after the reload"
    registry = h.service.telemetry.registry
    assert registry.get_sample_value("icall_config_generation") == 2
    assert registry.get_sample_value("icall_config_reloads_total", {"result": "applied"}) == 1
    print(f"\nreload under load: {len(live)} live calls (menu, CRM wait, queue, talking), 0 touched; "
          f"reload applied in {reload_s:.3f} s; after it: {NEW_MAIN_MENU[1].split()[5]}")



def test_a_live_call_whose_handler_dies_after_a_reload_is_resumed_with_the_settings_it_started_with(
        harness, monkeypatch, tmp_path):
    original = IcallFlow.main_menu_wait_dtmf
    died = []

    def dies_once(self, happened):
        if self.call.caller_id == "5551170" and not isinstance(happened, Enter) and not died:
            died.append(self.state)
            raise RuntimeError("injected failure in main_menu_wait_dtmf")
        return original(self, happened)

    monkeypatch.setattr(IcallFlow, "main_menu_wait_dtmf", dies_once)
    h = harness(ICALL_IVR_PROMPT_TIMEOUT_MS="60000")
    uuid = h.place("5551170", "")
    assert wait_until(lambda: MAIN_MENU in commands_of(h, uuid), WAIT_S)
    reloader = reloader_for(h, tmp_path / "config.ini", {"ivr": {"queue_hst": "fifo_night"}})
    assert reloader.reload().ok
    h.switch.press(uuid, "1")  # the menu's answer reaches a handler that dies on it
    r = h.finish(uuid)
    assert died == ["main_menu_wait_dtmf"] and len(r.failures) == 1
    assert r.commands == [WELCOME, MAIN_MENU, ("transfer", "fifo_hst XML new_sales")], \
        "the fresh handler resumes the call with the queue it started with"
