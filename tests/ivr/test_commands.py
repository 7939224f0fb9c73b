"""Command arguments built from the configuration, and what counts as an extension."""

from __future__ import annotations

import pytest

from ivr import commands
from tests.ivr.calls import make_config


def test_prompts_menus_and_transfers_follow_the_configuration():
    ivr = make_config(ivr_sound_prefix="office/", ivr_context="office", ivr_prompt_timeout_ms="7000",
                      ivr_cc_menu_tries="4").ivr
    assert commands.sound(ivr, ivr.sound_cc_menu, "801") == "office/8801.wav"
    assert commands.cc_menu(ivr, "801").arg() == (
        "1 1 4 7000 # office/8801.wav office/9004.wav cc_menu_number [12]")
    assert commands.transfer(ivr, ivr.dest_playcell, "801") == "Playcell_801 XML office"
    assert commands.bridge_settings(ivr)[0] == "ringback=${us-ring}"
    assert commands.dial_user("801") == "user/801"


@pytest.mark.parametrize("text", ["801", "699"])
def test_an_extension_matching_the_pattern_wholly_is_an_extension(text):
    assert commands.is_extension(make_config().ivr, text)


@pytest.mark.parametrize("text", [None, "", "8011", "x801", "801,user/9", "801 XML x", "701"])
def test_anything_else_is_not_an_extension(text):
    assert not commands.is_extension(make_config().ivr, text)


# Unicode digits: `\d` matches them unless the pattern is ASCII-only, and they would
# reach `user/8٠١` and the `8{extension}.wav` path.
UNICODE_DIGITS = ["8\u0660\u0661", "\uff18\uff10\uff11", "8\u0966\u0967", "80\u00b9"]


@pytest.mark.parametrize("text", UNICODE_DIGITS)
def test_unicode_digits_are_never_an_extension_even_where_the_pattern_says_backslash_d(text):
    assert commands.is_extension(make_config().ivr, text) is False
    assert commands.is_extension(make_config(ivr_extension_pattern=r"\d+").ivr, text) is False
    assert commands.matches(r"\d\d\d", text) is False


def test_a_pattern_that_names_non_ascii_characters_still_matches_only_ascii_text():
    assert commands.matches("[\u0660-\u0669]+", "\u0660\u0661") is False
    assert commands.matches(r"\w+", "caf\u00e9") is False
    assert commands.matches(r"\w+", "cafe") is True
