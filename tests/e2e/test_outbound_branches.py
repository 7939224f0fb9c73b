"""Every branch of the icall flow again, in outbound mode: the same tests as
test_branches.py (imported below, so pytest collects them here too), with the
`harness` fixture replaced by one whose calls reach icall through the dialplan's
`socket` app. The flow class is the same; only the way to the switch differs."""

from __future__ import annotations

from tests.e2e.outbound_harness import harness  # noqa: F401  (every call through `socket`)
from tests.e2e.test_branches import (  # noqa: F401  (collected here in outbound mode)
    test_a_bridged_conversation_outlives_every_guard_and_ends_as_a_normal_call,
    test_a_failed_bridge_offers_the_cc_menu_and_follows_its_answer,
    test_a_holiday_in_the_database_overrides_the_schedule,
    test_a_hostile_crm_answer_is_never_dialled,
    test_after_hours_in_the_evening_the_call_goes_to_the_evening_team,
    test_an_extension_that_rings_past_ring_timeout_gives_the_caller_the_cc_menu,
    test_an_invalid_or_missing_choice_says_goodbye_and_hangs_up,
    test_at_night_the_call_goes_to_the_cellphone_queue,
    test_every_finished_call_has_its_cdr_delivered_once,
    test_menu_1_sends_the_caller_to_the_evening_team_queue,
    test_menu_2_with_a_crm_extension_bridges_to_the_account_manager,
    test_menu_2_without_a_crm_extension_goes_to_the_sales_queue,
    test_menu_5_dials_the_extension_the_caller_enters,
    test_menu_5_without_an_extension_says_goodbye_and_hangs_up,
)

