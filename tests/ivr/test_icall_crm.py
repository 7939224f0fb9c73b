"""The CRM's answer, whenever it arrives: before the sales decision, during the grace,
after it, or not an extension at all."""

from __future__ import annotations

from ivr.effects import CrmAnswer, Execute, StartTimer
from tests.ivr.calls import Driver, make_config


def sales_choice(driver: Driver) -> None:
    driver.complete("playback", "FILE PLAYED")
    driver.complete("play_and_get_digits", menu_number="2", read_result="success")


def test_a_crm_answer_after_the_sales_decision_is_logged_and_ignored():
    driver = Driver()
    driver.start()
    sales_choice(driver)
    assert driver.executes()[-1] == ("transfer", "fifo_sales XML new_sales")
    late = driver.info(CrmAnswer(driver.flow.uuid, "801"))
    assert late == []
    assert "bridge" not in [app for app, _ in driver.executes()]
    assert any("after the sales decision: ignored" in line for line in driver.flow.history)
    driver.send(driver.script.hangup_complete())
    assert driver.records("cdr")[0].fields["crm_extension"] is None


def test_a_crm_answer_that_is_not_a_valid_extension_is_never_dialled():
    for answer in ("801 XML default", "8011", "abc", "user/801", "1234", ""):
        driver = Driver()
        driver.start()
        driver.info(CrmAnswer(driver.flow.uuid, answer))
        sales_choice(driver)
        assert driver.executes()[-1] == ("transfer", "fifo_sales XML new_sales"), answer
        assert all(not arg.startswith("user/") for _, arg in driver.executes())
        assert driver.flow.checkpoint()["d"]["crm_extension"] is None


def test_a_crm_answer_for_another_call_is_ignored():
    driver = Driver()
    driver.start()
    driver.info(CrmAnswer("another-call", "801"))
    sales_choice(driver)
    assert driver.executes()[-1] == ("transfer", "fifo_sales XML new_sales")


def test_with_a_grace_the_sales_choice_waits_for_a_pending_answer_then_uses_it():
    driver = Driver(config=make_config(ivr_crm_grace_ms="800"))
    driver.start()
    sales_choice(driver)
    grace = driver.timers()[-1]
    assert (grace.name, grace.delay_s) == ("crm_grace", 0.8)
    assert driver.executes()[-1][0] == "play_and_get_digits"  # nothing decided yet
    driver.info(CrmAnswer(driver.flow.uuid, "802"))
    assert driver.executes()[-1] == ("playback", "new_sales/1002.wav")
    assert driver.fire(grace) == []  # the grace ran out after the answer: stale
    driver.complete("playback", "FILE PLAYED")
    assert driver.executes()[-1] == ("bridge", "user/802")


def test_with_a_grace_that_runs_out_the_call_goes_to_the_sales_queue():
    driver = Driver(config=make_config(ivr_crm_grace_ms="800"))
    driver.start()
    sales_choice(driver)
    grace = [t for t in driver.timers() if t.name == "crm_grace"][0]
    effects = driver.fire(grace)
    assert [(e.app, e.arg) for e in effects if isinstance(e, Execute)] == [
        ("transfer", "fifo_sales XML new_sales")]
    assert driver.steps()[-1] == ("SalesFifo", "")
    assert driver.info(CrmAnswer(driver.flow.uuid, "801")) == []


def test_with_a_grace_an_answer_without_extension_ends_the_wait_at_once():
    driver = Driver(config=make_config(ivr_crm_grace_ms="800"))
    driver.start()
    sales_choice(driver)
    effects = driver.info(CrmAnswer(driver.flow.uuid, None, "timeout"))
    assert [(e.app, e.arg) for e in effects if isinstance(e, Execute)] == [
        ("transfer", "fifo_sales XML new_sales")]


def test_a_grace_is_not_waited_when_the_crm_already_answered():
    driver = Driver(config=make_config(ivr_crm_grace_ms="800"))
    driver.start()
    driver.info(CrmAnswer(driver.flow.uuid, None, "not found"))
    sales_choice(driver)
    assert [t for t in driver.timers() if t.name == "crm_grace"] == []
    assert driver.executes()[-1] == ("transfer", "fifo_sales XML new_sales")


def test_a_stale_grace_timer_from_an_earlier_generation_is_dropped():
    driver = Driver(config=make_config(ivr_crm_grace_ms="800"))
    driver.start()
    sales_choice(driver)
    grace = [t for t in driver.timers() if t.name == "crm_grace"][0]
    old = StartTimer(grace.name, grace.delay_s, grace.generation - 1)
    assert driver.fire(old) == []
    assert driver.flow.state == "call_sales"
