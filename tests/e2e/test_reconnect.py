"""A FreeSWITCH restart, end to end: with the shipped reconnect settings, icall takes
calls again within `reconnect_max_s` (plus a little work) of the switch being back."""

from __future__ import annotations

import logging
import re
import time

from fakeswitch import FakeSwitch
from ivr.config import SCHEMA
from tests.e2e.conftest import USERS, WAIT_S
from tests.waiting import wait_until

MIN_S = float(SCHEMA["freeswitch"]["reconnect_min_s"].default)
CAP_S = float(SCHEMA["freeswitch"]["reconnect_max_s"].default)
# Connect, subscribe, list the live calls, adopt the parked one and send its first
# command: milliseconds on a quiet machine; this leaves room for a loaded one.
MARGIN_S = 1.0
WELCOME = ("playback", "new_sales/1000.wav")
# Both ESL links log each failed attempt with the delay before the next one.
READER_RETRY = re.compile(r"ESL connect to .* failed: .*; retrying in (\d+\.\d) s")
COMMANDER_RETRY = re.compile(r"ESL connect to .* failed: .*; next attempt in (\d+\.\d) s")


def _at_the_cap(caplog, pattern: re.Pattern) -> bool:
    """A retry delay at the cap has been announced: the jitter keeps a capped delay
    within [0.8, 1] x cap, and an uncapped one (half the cap or less) below 0.6 x cap."""
    delays = [float(m.group(1)) for r in caplog.records if (m := pattern.search(r.getMessage()))]
    return any(delay >= 0.8 * CAP_S - 0.05 for delay in delays)


def test_the_shipped_reconnect_cap_is_at_most_five_seconds():
    assert CAP_S <= 5


def test_after_a_switch_restart_a_parked_call_gets_its_prompt_within_the_cap(
        harness, switch, caplog):
    h = harness(ICALL_FREESWITCH_RECONNECT_MIN_S=str(MIN_S), ICALL_FREESWITCH_RECONNECT_MAX_S=str(CAP_S))
    caplog.set_level(logging.WARNING, logger="actors")
    switch.stop()
    assert wait_until(lambda: not h.service.link_up.is_set(), WAIT_S), "the loss was never noticed"

    # While the switch is away, calls' commands keep meeting the command link (as call
    # actors' would): its backoff grows to the cap as well as the event link's.
    commander = h.service.services.commander_proxy()

    def both_links_back_off_at_the_cap() -> bool:
        try:
            commander.api("status").get(timeout=WAIT_S)
        except Exception:  # noqa: BLE001 - failing is the point: the switch is down
            pass
        return _at_the_cap(caplog, READER_RETRY) and _at_the_cap(caplog, COMMANDER_RETRY)

    assert wait_until(both_links_back_off_at_the_cap, WAIT_S + 4 * CAP_S), caplog.text

    restarted = FakeSwitch(port=switch.port, password="ClueCon", time_scale=0.05, users=USERS)
    restarted.start()
    back_at = time.monotonic()
    try:
        h.switch = restarted
        uuid = h.place("5551170", "1")  # parks at once, before icall is there to see it
        prompted = wait_until(lambda: WELCOME in restarted.call_record(uuid).commands,
                              CAP_S + WAIT_S)
        elapsed_s = time.monotonic() - back_at
        print(f"\nswitch back -> first prompt of a call parked meanwhile: {elapsed_s:.2f} s "
              f"(reconnect_max_s {CAP_S:g})")
        assert prompted, "the call parked while icall was away never got its prompt"
        assert elapsed_s <= CAP_S + MARGIN_S
        r = h.finish(uuid)
        assert r.commands[-1] == ("transfer", "fifo_hst XML new_sales")
    finally:
        restarted.stop()
