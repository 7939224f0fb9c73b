"""The callers of the side-by-side bench: what each presses and the path it must get.

A scenario is what one caller does (the digits typed at each `play_and_get_digits`, in
order; None lets the prompt time out) and the commands a correct controller of the
icall flow runs on the parked leg, in order, as the switch's CHANNEL_EXECUTE events
show them (app, argument). The path ends with the controller's last command: a
transfer, a bridge that was answered (the call ends with the callee), or the invalid
choice prompt (followed by a hangup, which is not an app). Thread-free, pure data.
"""

from __future__ import annotations

from dataclasses import dataclass

# The extensions by what they do when bridged. The stand-in's (bench.side_by_side
# starts it so): 801 answers and talks, 802 rings without answer, 803 is not registered.
# The lab's real FreeSWITCH (README, "On a real FreeSWITCH"): 803 is a callee that
# answers (and talks 60 s: the callers hang up first), 801 and 802 are never registered.
STAND_IN_EXTENSIONS = {"answers": "801", "fails": "802", "unregistered": "803"}
REAL_SWITCH_EXTENSIONS = {"answers": "803", "fails": "802", "unregistered": "801"}


def crm_table(extensions: dict[str, str]) -> dict[str, str]:
    """The fake CRM's table: these callers have an account manager."""
    return {"5550801": extensions["answers"], "5550802": extensions["fails"],
            "5550803": extensions["unregistered"]}


CRM_TABLE = crm_table(STAND_IN_EXTENSIONS)

WELCOME = ("playback", "new_sales/1000.wav")
MAIN_MENU = ("play_and_get_digits",
             "1 1 3 5000 # new_sales/1001.wav new_sales/9004.wav menu_number [1-5]")
EXTENSION_ENTRY = ("play_and_get_digits",
                   r"3 3 3 5000 # new_sales/2002.wav new_sales/9004.wav extn_number [68]\d\d")
TRANSFERRING = ("playback", "new_sales/1002.wav")
INVALID_CHOICE = ("playback", "new_sales/9003.wav")
BRIDGE_SETTINGS = (("set", "ringback=${us-ring}"), ("set", "call_timeout=30"), ("set", "continue_on_fail=true"),
                   ("set", "hangup_after_bridge=true"))

Step = tuple[str, str]


def transfer(destination: str) -> Step:
    return ("transfer", f"{destination} XML new_sales")


def bridge(extension: str) -> tuple[Step, ...]:
    return (*BRIDGE_SETTINGS, ("bridge", f"user/{extension}"))


def cc_menu(extension: str) -> Step:
    return ("play_and_get_digits",
            f"1 1 2 5000 # new_sales/8{extension}.wav new_sales/9004.wav cc_menu_number [12]")


@dataclass(frozen=True)
class Scenario:
    name: str
    crm_caller: str | None  # a caller id the CRM knows, or None for an unknown caller
    presses: tuple[str | None, ...]  # per play_and_get_digits, in order
    path: tuple[Step, ...]


def lab_scenarios(extensions: dict[str, str]) -> tuple[Scenario, ...]:
    """Every branch of the flow, with the extensions of one lab (see above)."""
    answers, fails, unregistered = (extensions[k] for k in ("answers", "fails", "unregistered"))
    return (
        Scenario("menu_1_evening", None, ("1",), (WELCOME, MAIN_MENU, transfer("fifo_hst"))),
        Scenario("sales_crm_answers", "5550801", ("2",),
                 (WELCOME, MAIN_MENU, TRANSFERRING, *bridge(answers))),
        Scenario("sales_unknown_caller", None, ("3",),
                 (WELCOME, MAIN_MENU, transfer("fifo_sales"))),
        Scenario("cc_menu_cellphone", "5550802", ("4", "1"),
                 (WELCOME, MAIN_MENU, TRANSFERRING, *bridge(fails), cc_menu(fails),
                  transfer(f"Playcell_{fails}"))),
        Scenario("cc_menu_voicemail", "5550802", ("2", "2"),
                 (WELCOME, MAIN_MENU, TRANSFERRING, *bridge(fails), cc_menu(fails),
                  transfer(f"VM_{fails}"))),
        Scenario("cc_menu_no_answer", "5550803", ("2", None),
                 (WELCOME, MAIN_MENU, TRANSFERRING, *bridge(unregistered), cc_menu(unregistered),
                  transfer("Quit"))),
        Scenario(f"extension_{answers}", None, ("5", answers),
                 (WELCOME, MAIN_MENU, EXTENSION_ENTRY, *bridge(answers))),
        Scenario("invalid_key", None, ("9",), (WELCOME, MAIN_MENU, INVALID_CHOICE)),
        Scenario("no_input", None, (None,), (WELCOME, MAIN_MENU, INVALID_CHOICE)),
    )


SCENARIOS = lab_scenarios(STAND_IN_EXTENSIONS)


def scenario_for(call_index: int, scenarios: tuple[Scenario, ...] = SCENARIOS) -> Scenario:
    """Round robin, so every load of 9 calls or more covers every branch."""
    return scenarios[call_index % len(scenarios)]


def ends_talking(scenario: Scenario) -> bool:
    """The path ends with an answered bridge: the call lasts as long as the talk."""
    return scenario.path[-1][0] == "bridge"


def caller_id(scenario: Scenario, call_index: int) -> str:
    """The CRM's known number, or a number nobody else has (the CRM answers 404)."""
    return scenario.crm_caller or f"559{call_index:07d}"


def same_step(seen: Step, expected: Step) -> bool:
    """`set` is compared by variable name only: a real switch shows `${us-ring}`
    expanded in Application-Data."""
    if seen[0] == expected[0] == "set":
        return seen[1].partition("=")[0] == expected[1].partition("=")[0]
    return seen == expected


def judge(scenario: Scenario, seen: list[Step]) -> bool:
    return len(seen) == len(scenario.path) and all(map(same_step, seen, scenario.path))
