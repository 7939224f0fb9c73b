"""Dialplan-command arguments, built in one place from the `[ivr]` configuration.

Flows never type an argument string themselves: prompts, menus, transfers and dial
strings come from here, so the seed's values live in `config.ini` and nowhere else.
Thread-free, pure functions of the config section they are given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from types import SimpleNamespace

# `originate_disposition` after a bridge: FreeSWITCH sets SUCCESS when a leg answered
# (ANSWER is accepted too, for dialplans that set the variable themselves); anything
# else is a failure cause such as USER_NOT_REGISTERED (see captures/), USER_BUSY or
# NO_ANSWER, and an empty value means the bridge never got as far as dialling.
BRIDGE_SUCCEEDED = frozenset({"SUCCESS", "ANSWER"})


@dataclass(frozen=True)
class DigitsPrompt:
    """The arguments of play_and_get_digits, in the order the app takes them."""

    min_digits: int
    max_digits: int
    tries: int
    timeout_ms: int
    terminators: str
    prompt: str
    invalid_prompt: str
    variable: str
    pattern: str

    def arg(self) -> str:
        return " ".join(str(part) for part in (
            self.min_digits, self.max_digits, self.tries, self.timeout_ms, self.terminators,
            self.prompt, self.invalid_prompt, self.variable, self.pattern,
        ))


def sound(ivr: SimpleNamespace, file: str, extension: str = "") -> str:
    """A prompt path: <sound_prefix><file>, with {extension} filled in."""
    return ivr.sound_prefix + file.format(extension=extension)


def main_menu(ivr: SimpleNamespace) -> DigitsPrompt:
    return DigitsPrompt(1, 1, ivr.menu_tries, ivr.prompt_timeout_ms, "#",
                        sound(ivr, ivr.sound_main_menu), sound(ivr, ivr.sound_invalid_entry),
                        "menu_number", ivr.menu_pattern)


def extension_entry(ivr: SimpleNamespace) -> DigitsPrompt:
    # The seed asked for exactly three digits; the length follows the seed, the
    # pattern (which decides what is valid) follows the configuration.
    return DigitsPrompt(3, 3, ivr.extension_tries, ivr.prompt_timeout_ms, "#",
                        sound(ivr, ivr.sound_extension_prompt), sound(ivr, ivr.sound_invalid_entry),
                        "extn_number", ivr.extension_pattern)


def cc_menu(ivr: SimpleNamespace, extension: str) -> DigitsPrompt:
    return DigitsPrompt(1, 1, ivr.cc_menu_tries, ivr.prompt_timeout_ms, "#",
                        sound(ivr, ivr.sound_cc_menu, extension), sound(ivr, ivr.sound_invalid_entry),
                        "cc_menu_number", ivr.cc_menu_pattern)


def transfer(ivr: SimpleNamespace, destination: str, extension: str = "") -> str:
    """`<destination> XML <context>`: always with dialplan and context, because a bare
    destination is looked up in the channel's current context (see DESIGN.md)."""
    return f"{destination.format(extension=extension)} XML {ivr.context}"


def bridge_settings(ivr: SimpleNamespace) -> list[str]:
    """The `set` arguments that precede a bridge to an extension, in order."""
    return [f"ringback={ivr.ringback}", f"call_timeout={ivr.ring_timeout_s}",
            "continue_on_fail=true", "hangup_after_bridge=true"]


def dial_user(extension: str) -> str:
    return f"user/{extension}"


def is_extension(ivr: SimpleNamespace, text: str | None) -> bool:
    """True when `text` is wholly an extension (the CRM's answer and the caller's digits
    go into a dial string: nothing else may)."""
    return matches(ivr.extension_pattern, text)


def matches(pattern: str, text: str | None) -> bool:
    """True when `text` is wholly matched by `pattern`, in ASCII only.

    What matches goes into dial strings (`user/<extension>`), file paths
    (`8{extension}.wav`) and commands, so Unicode digits (`8٠١`, which a plain `\\d`
    accepts) must not: the pattern is compiled with re.ASCII, and text that is not
    ASCII never matches, whatever characters the pattern itself names."""
    if not text or not text.isascii():
        return False
    return ascii_pattern(pattern).fullmatch(text) is not None


@lru_cache(maxsize=64)
def ascii_pattern(pattern: str) -> re.Pattern[str]:
    """`pattern` compiled once with re.ASCII (`\\d` is [0-9], `\\w` [a-zA-Z0-9_])."""
    return re.compile(pattern, re.ASCII)
