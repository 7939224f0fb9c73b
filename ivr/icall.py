"""The seed's `icall` flow, state for state (see DESIGN.md's table).

A caller hears a welcome while the CRM is asked who their account manager is; then a
time-condition row from the database, or else the configured schedule, decides:
the main menu, the evening queue or the cellphone queue. From the main menu: 1 the
evening queue, 2-4 sales (the account manager if the CRM named one, else the sales
queue), 5 an extension typed by the caller. An extension that does not answer offers a
small menu: its cellphone, its voicemail, or the way out.

The seed's defects are fixed here: prompts are waited on by their completion, not by
sleeping; a CRM answer or typed digits reach a dial string only when they are wholly an
extension; an extension entry without valid digits takes the invalid-choice path.
Runs on the CallActor's thread, like every flow.
"""

from __future__ import annotations

from typing import Any

from ivr import commands, schedule, timecond
from ivr.effects import CrmAnswer, LookupCaller
from ivr.event import Event
from ivr.flow import Command, Completed, Enter, Flow, FlowContext, Happening, Info, Timeout

# Main menu digits, as the seed offered them.
MENU_EVENING, MENU_SALES, MENU_EXTENSION = "1", ("2", "3", "4"), "5"
CC_MENU_CELLPHONE, CC_MENU_VOICEMAIL = "1", "2"


class IcallFlow(Flow):
    name = "icall"
    states = ("welcome", "welcome_wait_playback", "time_condition", "main_menu",
              "main_menu_wait_dtmf", "call_hst", "call_cellphone", "call_sales", "call_extn",
              "call_cc", "final_loop")
    initial_state = "welcome"
    final_state = "final_loop"

    def __init__(self, uuid: str, ctx: FlowContext):
        super().__init__(uuid, ctx)
        self.ivr = ctx.config.ivr
        self.crm_pending = False  # a lookup was asked for and has not been answered
        self.crm_extension: str | None = None  # validated answer of the CRM
        self.sales_decided = False  # call_sales chose; later CRM answers are ignored
        self.extension: str | None = None  # the extension being dialled
        self.override: timecond.TimeCondition | None = None  # the time condition in force

    # --- the states

    def welcome(self, happened: Happening) -> None:
        match happened:
            case Enter():
                if self.entries == 1:  # a re-entry keeps the call's first row
                    self.record("call", caller_id=self.call.caller_id,
                                caller_name=self.call.caller_name,
                                destination=self.call.destination,
                                started_at=self.call.started_at, flow=self.name)
                self.look_up_caller()
                self.play(self.ivr.sound_welcome, await_as="welcome")
                self.goto("welcome_wait_playback")
            case _:
                self.unexpected(happened)

    def welcome_wait_playback(self, happened: Happening) -> None:
        match happened:
            case Completed("welcome"):
                self.route_by_time()
            case Enter():
                pass
            case _:
                self.unexpected(happened)

    def time_condition(self, happened: Happening) -> None:
        """A time-condition row decides; whatever it is, the IVR's part of the call
        ends (see timecond.ACTIONS): no caller is left parked after it."""
        assert self.override is not None
        action, args = self.override.action, self.override.args
        match happened:
            case Enter():
                problem = timecond.problem_with(action, args)
                if problem is not None:
                    self.rescue("TimeConditionInvalid", f"#{self.override.id}: {problem}")
                elif action == "transfer":
                    self.execute("transfer", timecond.transfer_target(args, self.ivr.context))
                    self.goto("final_loop")
                elif action == "hangup":
                    self.hang_up(args or "NORMAL_CLEARING")
                    self.goto("final_loop")
                elif action == "bridge":
                    self.bridge(args)
                else:  # playback, respond: then hang up
                    self.execute(action, args, await_as="announcement")
            case Completed("announcement"):
                self.hang_up()
                self.goto("final_loop")
            case Completed("bridge", event):
                disposition = event.variable("originate_disposition") or ""
                if disposition not in commands.BRIDGE_SUCCEEDED:
                    self.record_step("TimeConditionBridgeFailed", disposition or "unknown")
                    self.execute("transfer", self.ivr.safe_destination)
                self.goto("final_loop")
            case _:
                self.unexpected(happened)

    def main_menu(self, happened: Happening) -> None:
        match happened:
            case Enter():
                self.execute("play_and_get_digits", commands.main_menu(self.ivr).arg(),
                             await_as="main_menu")
                self.record_step("MainMenu")
                self.goto("main_menu_wait_dtmf")
            case _:
                self.unexpected(happened)

    def main_menu_wait_dtmf(self, happened: Happening) -> None:
        match happened:
            case Completed("main_menu", event):
                choice = digits(event, "menu_number", self.ivr.menu_pattern)
                self.record_step("MainMenu", choice or "")
                if choice == MENU_EVENING:
                    self.goto("call_hst")
                elif choice in MENU_SALES:
                    self.goto("call_sales")
                elif choice == MENU_EXTENSION:
                    self.goto("call_extn")
                else:
                    self.invalid_choice(event, "menu_number")
            case Completed("invalid_choice"):
                self.hang_up_after_invalid_choice()
            case Enter():
                pass
            case _:
                self.unexpected(happened)

    def call_hst(self, happened: Happening) -> None:
        match happened:
            case Enter():
                self.transfer(self.ivr.queue_hst)
                self.goto("final_loop")
            case _:
                self.unexpected(happened)

    def call_cellphone(self, happened: Happening) -> None:
        match happened:
            case Enter():
                self.transfer(self.ivr.queue_cellphone)
                self.goto("final_loop")
            case _:
                self.unexpected(happened)

    def call_sales(self, happened: Happening) -> None:
        match happened:
            case Enter() | Info():
                self.decide_sales(waited=False)
            case Timeout("crm_grace"):
                self.note("the CRM did not answer within the grace")
                self.decide_sales(waited=True)
            case Completed("transferring"):
                self.record_step("CallCC", self.extension or "")
                self.goto("call_cc")
            case _:
                self.unexpected(happened)

    def call_extn(self, happened: Happening) -> None:
        match happened:
            case Enter():
                self.execute("play_and_get_digits", commands.extension_entry(self.ivr).arg(),
                             await_as="extension")
            case Completed("extension", event):
                typed = digits(event, "extn_number", self.ivr.extension_pattern)
                if typed is None:
                    self.invalid_choice(event, "extn_number")
                    return
                self.extension = typed
                self.record_step("CallExtn", typed)
                self.goto("call_cc")
            case Completed("invalid_choice"):
                self.hang_up_after_invalid_choice()
            case _:
                self.unexpected(happened)

    def call_cc(self, happened: Happening) -> None:
        extension = self.extension or ""
        match happened:
            case Enter():
                self.bridge(commands.dial_user(extension))
            case Completed("bridge", event):
                disposition = event.variable("originate_disposition") or ""
                if disposition in commands.BRIDGE_SUCCEEDED:
                    self.note("bridge answered: the call ends with the callee")
                    self.goto("final_loop")
                    return
                self.record_step("CCFailure", disposition or "unknown")
                self.execute("play_and_get_digits", commands.cc_menu(self.ivr, extension).arg(),
                             await_as="cc_menu")
            case Completed("cc_menu", event):
                answer = digits(event, "cc_menu_number", self.ivr.cc_menu_pattern)
                self.record_step("CCMenu", answer or "")
                if answer == CC_MENU_CELLPHONE:
                    self.transfer(self.ivr.dest_playcell, extension)
                elif answer == CC_MENU_VOICEMAIL:
                    self.transfer(self.ivr.dest_voicemail, extension)
                else:
                    self.transfer(self.ivr.dest_quit, extension)
                self.goto("final_loop")
            case _:
                self.unexpected(happened)

    def final_loop(self, happened: Happening) -> None:
        """Absorbs everything until the hangup (handled in common)."""

    # --- what the states share

    def look_up_caller(self) -> None:
        if not self.ctx.config.crm.enabled:
            self.note("CRM disabled: no lookup")
        elif not self.call.caller_id:
            self.note("no caller id: no CRM lookup")
        else:
            self.emit(LookupCaller(self.call.caller_id))
            self.crm_pending = True
            self.note(f"CRM lookup {self.call.caller_id}")

    def route_by_time(self) -> None:
        """A time-condition row valid now wins (state `time_condition` carries it out);
        otherwise the configured schedule."""
        now = self.ctx.now()
        override = timecond.active(self.ctx.time_conditions(), self.ivr.time_condition, now)
        if override is not None:
            self.record_step("TimeCondition", f"{override.action} {override.args}".rstrip())
            self.override = override
            self.goto("time_condition")
            return
        route = schedule.decide(self.ctx.config.schedule, now)
        self.record_step(route.step, route.window or "Cellphone")
        self.goto(route.state)

    def decide_sales(self, waited: bool) -> None:
        if self.sales_decided:
            return
        grace_ms = self.ivr.crm_grace_ms
        if self.crm_extension:
            self.sales_decided = True
            self.extension = self.crm_extension
            self.play(self.ivr.sound_transferring, await_as="transferring")
        elif self.crm_pending and grace_ms > 0 and not waited:
            self.start_timer("crm_grace", grace_ms / 1000)
        else:
            self.sales_decided = True
            self.transfer(self.ivr.queue_sales)
            self.record_step("SalesFifo")
            self.goto("final_loop")

    def bridge(self, dial_string: str) -> None:
        """Ring `dial_string`, completion awaited as "bridge"."""
        # In order, each after the one before: without event-lock a queued app runs
        # nested inside the previous one (captures: inbound_plain_event_lock).
        for setting in commands.bridge_settings(self.ivr):
            self.execute("set", setting, lock=True)
        # Guarded while it rings (the switch itself gives up after ring_timeout_s,
        # through call_timeout, and then has the usual time to report it); once
        # answered, never: the completion comes when the conversation ends.
        self.execute("bridge", dial_string, lock=True, await_as="bridge",
                     guard_s=self.ivr.ring_timeout_s + self.ivr.command_timeout_s)

    def reissue(self, command: Command) -> None:
        if command.app == "bridge":  # its settings may have died with the process too
            for setting in commands.bridge_settings(self.ivr):
                self.execute("set", setting, lock=True)
        super().reissue(command)

    def invalid_choice(self, event: Event, variable: str) -> None:
        """Tell the caller, then hang up once the prompt has played."""
        result = event.variable("read_result") or "none"
        entered = event.variable(variable) or event.variable(variable + "_invalid") or ""
        self.record_step("InvalidChoice", f"{variable}={entered} read_result={result}")
        self.play(self.ivr.sound_invalid_choice, await_as="invalid_choice")

    def hang_up_after_invalid_choice(self) -> None:
        self.hang_up()
        self.goto("final_loop")

    def play(self, file: str, await_as: str) -> str:
        return self.execute("playback", commands.sound(self.ivr, file), await_as=await_as)

    def transfer(self, destination: str, extension: str = "") -> str:
        return self.execute("transfer", commands.transfer(self.ivr, destination, extension))

    # --- hooks of the behaviour

    def handle_info(self, message: object) -> None:
        if not isinstance(message, CrmAnswer) or message.call_uuid != self.uuid:
            super().handle_info(message)
            return
        self.crm_pending = False
        shown = message.extension if message.extension is not None else "none"
        if self.sales_decided:
            self.note(f"CRM answer {shown!r} after the sales decision: ignored")
            return
        if message.extension is None:
            self.note(f"CRM: no extension ({message.reason or 'no reason given'})")
        elif not commands.is_extension(self.ivr, message.extension):
            self.note(f"CRM answer {message.extension!r} is not a valid extension: ignored")
        else:
            self.crm_extension = message.extension
            self.note(f"CRM extension {message.extension}")
        if self.state == "call_sales" and not self.hung_up:
            self.dispatch(Info(message))

    def flow_data(self) -> dict[str, Any]:
        return {"crm_pending": self.crm_pending, "crm_extension": self.crm_extension,
                "sales_decided": self.sales_decided, "extension": self.extension}

    def restore_data(self, data: dict[str, Any]) -> None:
        self.crm_pending = bool(data.get("crm_pending"))
        self.crm_extension = data.get("crm_extension")
        self.sales_decided = bool(data.get("sales_decided"))
        self.extension = data.get("extension")

    def resume_data(self) -> None:
        # The lookup died with the previous handler; its answer will never come.
        if self.crm_pending and not self.sales_decided and self.call.caller_id:
            self.emit(LookupCaller(self.call.caller_id))
            self.note(f"CRM lookup {self.call.caller_id} asked again")

    def reenter_data(self) -> None:
        self.crm_pending = False
        self.crm_extension = None
        self.sales_decided = False
        self.extension = None

    def cdr_fields(self, event: Event) -> dict[str, Any]:
        return {**super().cdr_fields(event), "crm_extension": self.crm_extension}


def digits(event: Event, variable: str, pattern: str) -> str | None:
    """What play_and_get_digits collected into `variable`, or None when the prompt
    failed (`read_result=failure`), ended on a lone terminator (no variable) or left
    something that is not wholly a valid entry."""
    if event.variable("read_result") != "success":
        return None
    value = event.variable(variable)
    return value if commands.matches(pattern, value) else None
