"""A command whose reply was lost may be running on the switch: the flow never starts
another app into it and never sends it twice; it waits for its completion, guarded
(issue 13, item 5), and reads the channel after a grace: a command the switch never
took is sent again then, instead of at its guard."""

from __future__ import annotations

import json

from ivr.effects import Execute, Hangup, ReadChannel, StartTimer
from ivr.event import Event
from ivr.flow import GUARD_PREFIX, QUEUED_GRACE_S, QUEUED_PREFIX
from tests.ivr.calls import Driver

LOST = "-ERR link lost: no reply within 2 s"


def sent(effects) -> list[tuple[str, str]]:
    return [(e.app, e.arg) for e in effects if isinstance(e, Execute)]


def timers(effects, prefix: str) -> list[StartTimer]:
    return [e for e in effects if isinstance(e, StartTimer) and e.name.startswith(prefix)]


def channel(driver: Driver, **variables: str) -> Event:
    """The call's `uuid_dump` with these variables and its last checkpoint."""
    headers = {**driver.script.park().headers, "Event-Name": "CHANNEL_DATA",
               "variable_icall_ckpt": json.dumps(driver.checkpoints()[-1])}
    headers.update({f"variable_{k}": v for k, v in variables.items()})
    return Event(headers)


def test_an_awaited_prompt_whose_reply_was_lost_is_awaited_not_rescued_and_the_call_goes_on():
    driver = Driver()
    driver.to_main_menu()
    prompt = driver.last("play_and_get_digits")
    effects = driver.flow.on_command_failed(prompt.event_uuid, LOST, uncertain=True)
    assert sent(effects) == []  # no transfer into a prompt that may be playing
    assert driver.flow.state == "main_menu_wait_dtmf"
    driver.complete("play_and_get_digits", menu_number="1", read_result="success")
    assert driver.executes()[-1] == ("transfer", "fifo_hst XML new_sales")


def test_an_awaited_prompt_whose_reply_was_lost_and_that_never_completes_goes_to_safety_at_its_guard():
    driver = Driver()
    driver.to_main_menu()
    guard = driver.timers()[-1]
    driver.flow.on_command_failed(driver.last("play_and_get_digits").event_uuid, LOST, uncertain=True)
    assert sent(driver.fire(guard)) == [("transfer", "fifo_sales XML new_sales")]


def test_a_transfer_whose_reply_was_lost_gets_a_guard_and_its_completion_settles_it():
    driver = Driver()
    driver.choose("1")
    transfer = driver.last("transfer")
    effects = driver.flow.on_command_failed(transfer.event_uuid, LOST, uncertain=True)
    guards = timers(effects, GUARD_PREFIX)
    assert sent(effects) == [] and len(guards) == 1
    driver.send(driver.script.complete(transfer))  # it did run
    assert driver.fire(guards[0]) == []  # so its guard is stale


def test_a_transfer_whose_reply_was_lost_and_never_completes_sends_the_caller_to_safety():
    driver = Driver()
    driver.choose("1")
    effects = driver.flow.on_command_failed(driver.last("transfer").event_uuid, LOST, uncertain=True)
    guard = timers(effects, GUARD_PREFIX)[0]
    assert sent(driver.fire(guard)) == [("transfer", "fifo_sales XML new_sales")]


def test_a_rescue_whose_reply_was_lost_and_never_completes_hangs_up_instead_of_looping():
    driver = Driver()
    driver.to_main_menu()
    rescue = driver.flow.on_command_failed(driver.last("play_and_get_digits").event_uuid, "-ERR")
    transfer = [e for e in rescue if isinstance(e, Execute)][0]
    effects = driver.flow.on_command_failed(transfer.event_uuid, LOST, uncertain=True)
    guard = timers(effects, GUARD_PREFIX)[0]
    assert driver.fire(guard) == [Hangup("NORMAL_TEMPORARY_FAILURE")]


def test_a_prompt_whose_reply_was_lost_is_looked_for_after_a_grace_and_sent_again_if_never_taken():
    # The link dropped as the prompt was written: the switch never ran it. Waiting for
    # its guard would leave the caller in silence for that long.
    driver = Driver()
    driver.to_main_menu()
    prompt = driver.last("play_and_get_digits")
    effects = driver.flow.on_command_failed(prompt.event_uuid, LOST, uncertain=True)
    look = timers(effects, QUEUED_PREFIX)
    assert [t.delay_s for t in look] == [QUEUED_GRACE_S]
    assert driver.fire(look[0]) == [ReadChannel()]
    effects = driver._take(driver.flow.on_channel(channel(driver, current_application="playback")))
    again = [e for e in effects if isinstance(e, Execute)]
    assert [(e.app, e.arg) for e in again] == [(prompt.app, prompt.arg)] and again[0].lock
    driver.complete("play_and_get_digits", menu_number="1", read_result="success")
    assert driver.executes()[-1] == ("transfer", "fifo_hst XML new_sales")


def test_a_prompt_whose_reply_was_lost_but_that_runs_is_never_sent_twice():
    driver = Driver()
    driver.to_main_menu()
    prompt = driver.last("play_and_get_digits")
    effects = driver.flow.on_command_failed(prompt.event_uuid, LOST, uncertain=True)
    driver.fire(timers(effects, QUEUED_PREFIX)[0])
    effects = driver._take(driver.flow.on_channel(channel(
        driver, current_application=prompt.app, current_application_data=prompt.arg,
        current_loop="1")))  # running: the switch clears its loop counter when it returns
    assert sent(effects) == []
    driver.complete("play_and_get_digits", menu_number="1", read_result="success")
    assert driver.executes()[-1] == ("transfer", "fifo_hst XML new_sales")
