"""The mod_fifo stand-in driven through its in-process API and over a real socket."""

from __future__ import annotations

import uuid

import pytest

from fakeswitch import FakeSwitch

from .conftest import RawClient

BRIDGE_ACTIONS = ["consumer_start", "caller_pop", "consumer_pop", "channel-consumer-start",
                  "bridge-consumer-start", "bridge-caller-start", "channel-consumer-stop",
                  "bridge-consumer-stop", "bridge-caller-stop", "consumer_stop"]


def transfer(client: RawClient, chan: str, dest: str) -> None:
    reply = client.command(f"sendmsg {chan}\ncall-command: execute\nexecute-app-name: transfer\n"
                           f"execute-app-arg: {dest} XML new_sales\nEvent-UUID: {uuid.uuid4()}")
    assert reply.outer["Reply-Text"] == "+OK"


def fifo_actions(frames) -> list[str]:
    return [f.get("FIFO-Action") for f in frames if f.get("Event-Subclass") == "fifo::info"]


@pytest.fixture
def fifo_switch():
    sw = FakeSwitch(time_scale=0.02, fifo_queues={"fifo_sales": "real"}).start()
    try:
        yield sw
    finally:
        sw.stop()


@pytest.fixture
def watcher(fifo_switch):
    raw = RawClient(fifo_switch.port)
    raw.login()
    raw.command("event plain CHANNEL_PARK CHANNEL_HANGUP_COMPLETE CHANNEL_BRIDGE "
                "CHANNEL_EXECUTE_COMPLETE CUSTOM fifo::info")
    try:
        yield raw
    finally:
        raw.close()


def queued_call(sw: FakeSwitch, client: RawClient, dest: str = "fifo_sales", **kwargs) -> str:
    chan = sw.place_call(caller_id="5551010", caller_name="fifo-caller", **kwargs)
    assert sw.wait_parked(chan)
    transfer(client, chan, dest)
    assert sw.wait_fifo(chan, "push")
    return chan


def test_a_configured_queue_holds_the_caller_until_an_agent_picks_up(fifo_switch, watcher):
    chan = queued_call(fifo_switch, watcher)
    assert fifo_switch.fifo_waiting("fifo_sales") == [chan]
    agent = fifo_switch.agent_pickup("sales", agent_caller_id="2001", talk_s=1)
    assert fifo_switch.wait_hangup(chan) and fifo_switch.wait_hangup(agent)
    frames = watcher.event_until(lambda f: f.get("FIFO-Action") == "consumer_stop")
    assert fifo_actions(frames) == ["push"] + BRIDGE_ACTIONS
    start = next(f for f in frames if f.get("FIFO-Action") == "bridge-caller-start")
    assert start.get("Unique-ID") == chan and start.get("Channel-State") == "CS_HIBERNATE"
    assert start.get("Other-Leg-Unique-ID") == agent
    assert start.get("variable_fifo_serviced_uuid") == agent
    assert start.get("Caller-Caller-ID-Number") == "2001"  # mod_fifo swaps the caller id in
    assert start.get("FIFO-Name") == "sales@127.0.0.1"
    bridges = [f for f in frames if f.get("Event-Name") == "CHANNEL_BRIDGE"]
    assert [f.get("Unique-ID") for f in bridges] == [agent]
    record = fifo_switch.call_record(chan)
    assert record.fifo_actions == ["push", "caller_pop", "bridge-caller-start", "bridge-caller-stop"]
    assert record.bridged_to == "2001"
    assert fifo_switch.fifo_waiting("sales") == []


def test_the_caller_hangup_complete_comes_before_bridge_caller_stop(fifo_switch, watcher):
    chan = queued_call(fifo_switch, watcher)
    fifo_switch.agent_pickup("fifo_sales", talk_s=0.5)
    frames = watcher.event_until(lambda f: f.get("FIFO-Action") == "bridge-caller-stop")
    mine = [(f.get("Event-Name"), f.get("FIFO-Action") or f.get("Application"))
            for f in frames if f.get("Unique-ID") == chan]
    fifo_in_done = mine.index(("CHANNEL_EXECUTE_COMPLETE", "fifo"))
    assert mine.index(("CUSTOM", "caller_pop")) < fifo_in_done < mine.index(("CUSTOM", "bridge-caller-start"))
    assert mine[-2:] == [("CHANNEL_HANGUP_COMPLETE", None), ("CUSTOM", "bridge-caller-stop")]
    complete = next(f for f in frames if f.get("Event-Name") == "CHANNEL_HANGUP_COMPLETE"
                    and f.get("Unique-ID") == chan)
    assert complete.get("variable_fifo_bridge_role") == "caller"
    assert complete.get("variable_last_bridge_hangup_cause") == "NORMAL_CLEARING"


def test_a_caller_who_gives_up_while_queued_aborts(fifo_switch, watcher):
    chan = queued_call(fifo_switch, watcher, variables={"fake_hangup_after_s": "3"})
    frames = watcher.event_until(lambda f: f.get("Event-Name") == "CHANNEL_HANGUP_COMPLETE"
                                 and f.get("Unique-ID") == chan)
    assert fifo_actions(frames) == ["push", "abort"]
    abort = next(f for f in frames if f.get("FIFO-Action") == "abort")
    assert abort.get("variable_fifo_status") == "ABORTED"
    assert abort.get("Answer-State") == "hangup"
    done = [f for f in frames if f.get("Event-Name") == "CHANNEL_EXECUTE_COMPLETE"
            and f.get("Application") == "fifo"]
    assert done[-1].get("Application-Response") == "_none_"
    assert fifo_switch.fifo_waiting("sales") == []


def test_when_the_caller_hangs_up_during_the_bridge_the_agent_is_released(fifo_switch, watcher):
    chan = queued_call(fifo_switch, watcher)
    agent = fifo_switch.agent_pickup("sales", talk_s=None)
    assert fifo_switch.wait_fifo(chan, "bridge-caller-start")
    fifo_switch.hangup(chan)
    assert fifo_switch.wait_hangup(agent) and fifo_switch.wait_hangup(chan)
    assert fifo_switch.call_record(agent).fifo_actions[-1] == "consumer_stop"
    assert fifo_switch.call_record(chan).fifo_actions[-1] == "bridge-caller-stop"


def test_an_agent_with_nobody_waiting_starts_and_stops_at_once(fifo_switch):
    agent = fifo_switch.agent_pickup("sales")
    assert fifo_switch.wait_hangup(agent)
    assert fifo_switch.call_record(agent).fifo_actions == ["consumer_start", "consumer_stop"]


def test_the_originate_api_path_picks_up_a_caller_too(fifo_switch, watcher):
    chan = queued_call(fifo_switch, watcher)
    body = watcher.command("api originate {origination_caller_id_number=2001}"
                           "loopback/fifo_agent_sales/new_sales &park").body
    assert body.startswith(b"+OK ")
    assert fifo_switch.wait_fifo(chan, "bridge-caller-start")
    agent = watcher.event_until(lambda f: f.get("Event-Name") == "CHANNEL_BRIDGE")[-1].get("Unique-ID")
    watcher.command(f"api uuid_kill {agent}")
    assert fifo_switch.wait_hangup(chan)


def test_unconfigured_queues_play_a_prompt_unless_the_call_asks_for_a_real_fifo(fifo_switch, watcher):
    plain = fifo_switch.place_call(caller_id="5551011")
    assert fifo_switch.wait_parked(plain)
    transfer(watcher, plain, "fifo_hst")
    assert fifo_switch.wait_hangup(plain)
    assert fifo_switch.call_record(plain).fifo_actions == []
    asked = queued_call(fifo_switch, watcher, dest="fifo_hst", variables={"fake_fifo": "real"})
    assert fifo_switch.fifo_waiting("hst") == [asked]
    fifo_switch.set_fifo_queue("fifo_cellphone", "real")
    later = queued_call(fifo_switch, watcher, dest="fifo_cellphone")
    assert fifo_switch.fifo_waiting("fifo_cellphone") == [later]
