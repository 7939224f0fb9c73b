"""The reader's straight route to a call's actor keeps the switch's order: events that
went through the supervisor are never overtaken by later ones sent straight."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pykka
import pytest

from actors.messages import EslEvent
from actors.routes import CallRoutes, RouteReady
from ivr.event import Event
from tests.waiting import wait_until

WAIT_S = 10
CALL = "9aaaa7f6-5f2f-4a3a-b5f9-0b2adcb4e71d"


def event(name: str, n: int, uuid: str = CALL, flow: str = "icall") -> Event:
    return Event({"Event-Name": name, "Unique-ID": uuid, "variable_ivr_app": flow, "n": str(n)})


class Recorder(pykka.ThreadingActor):
    """Stands for the call's actor: keeps the events in the order they arrive."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def on_receive(self, message):
        if isinstance(message, EslEvent):
            self.seen.append(message.event.get("n"))

    def order(self) -> list[str]:
        return list(self.seen)


class SlowSupervisor(pykka.ThreadingActor):
    """Does what the supervisor does with routes, and can be held while the reader
    goes on reading (the race the routes must survive)."""

    def __init__(self, routes: CallRoutes, call_actor, gate: threading.Event) -> None:
        super().__init__()
        self.routes, self.call_actor, self.gate = routes, call_actor, gate

    def on_receive(self, message):
        if isinstance(message, RouteReady):
            self.routes.opened(message.call_uuid)
        elif isinstance(message, EslEvent):
            self.gate.wait(WAIT_S)
            if message.event.name == "CHANNEL_PARK":
                if message.event.variable("ivr_app") == "icall":
                    self.routes.attach(CALL, SimpleNamespace(ref=self.call_actor), self.actor_ref)
                else:
                    self.routes.remove(message.event.uuid)
            else:
                self.call_actor.tell(message)
            if message.counted:
                self.routes.forwarded(message.event.uuid)


@pytest.fixture(autouse=True)
def stop_actors():
    yield
    pykka.ActorRegistry.stop_all()


def test_events_read_while_the_supervisor_is_busy_arrive_in_order_and_later_ones_go_straight():
    routes = CallRoutes("ivr_app", "icall")
    recorder = Recorder.start()
    gate = threading.Event()
    supervisor = SlowSupervisor.start(routes, recorder, gate)
    routes.deliver(event("CHANNEL_PARK", 0), 0.0, supervisor)
    for n in range(1, 6):  # the supervisor has not even started the call yet
        routes.deliver(event("CHANNEL_EXECUTE_COMPLETE", n), 0.0, supervisor)
    gate.set()
    for n in range(6, 100):  # racing the supervisor: some through it, some perhaps straight
        routes.deliver(event("CHANNEL_EXECUTE_COMPLETE", n), 0.0, supervisor)
    assert wait_until(lambda: len(recorder.proxy().order().get(timeout=WAIT_S)) == 99, WAIT_S)
    for n in range(100, 200):  # the route is open and nothing is in flight: straight
        routes.deliver(event("CHANNEL_EXECUTE_COMPLETE", n), 0.0, supervisor)
    expected = [str(n) for n in range(1, 200)]
    assert wait_until(lambda: len(recorder.proxy().order().get(timeout=WAIT_S)) == 199, WAIT_S)
    assert recorder.proxy().order().get(timeout=WAIT_S) == expected
    assert routes.sent_straight >= 100, "once open and drained, the route must be taken"


def test_a_park_the_supervisor_does_not_take_leaves_no_route_behind():
    routes = CallRoutes("ivr_app", "icall")
    gate = threading.Event()
    gate.set()
    supervisor = SlowSupervisor.start(routes, Recorder.start(), gate)
    routes.deliver(event("CHANNEL_PARK", 0, flow="other"), 0.0, supervisor)
    assert len(routes) == 0  # not our flow: never marked
    routes.deliver(event("CHANNEL_PARK", 0), 0.0, supervisor)
    assert wait_until(lambda: len(routes) == 1, WAIT_S)
    routes.remove(CALL)
    assert len(routes) == 0


def test_an_event_for_a_dead_actor_goes_to_the_supervisor_counted():
    routes = CallRoutes("ivr_app", "icall")
    gate = threading.Event()
    gate.set()
    dead = Recorder.start()
    supervisor = SlowSupervisor.start(routes, Recorder.start(), gate)
    routes.attach(CALL, SimpleNamespace(ref=dead), supervisor)
    assert wait_until(lambda: routes.sent_straight == 0 and _open(routes), WAIT_S)
    dead.stop()
    routes.deliver(event("CHANNEL_EXECUTE_COMPLETE", 1), 0.0, supervisor)
    assert routes.sent_straight == 0


def _open(routes: CallRoutes) -> bool:
    route = routes._routes.get(CALL)
    return route is not None and route.open


class Mailbox(pykka.ThreadingActor):
    """Stands for a supervisor that keeps what it is told."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: list[object] = []

    def on_receive(self, message):
        self.kept.append(message)

    def messages(self) -> list[object]:
        return list(self.kept)


def test_a_route_with_nothing_in_flight_opens_at_once_and_the_next_event_goes_straight():
    routes = CallRoutes("ivr_app", "icall")
    recorder = Recorder.start()
    supervisor = Mailbox.start()
    routes.deliver(event("CHANNEL_PARK", 0), 0.0, supervisor)
    routes.attach(CALL, SimpleNamespace(ref=recorder), supervisor)
    routes.deliver(event("CHANNEL_EXECUTE_COMPLETE", 1), 0.0, supervisor)
    assert routes.sent_straight == 1
    assert wait_until(lambda: recorder.proxy().order().get(timeout=WAIT_S) == ["1"], WAIT_S)
    kept = supervisor.proxy().messages().get(timeout=WAIT_S)
    assert [type(m).__name__ for m in kept] == ["EslEvent"], "only the park, no RouteReady"


def test_a_route_with_an_event_in_flight_waits_for_the_supervisor_to_open_it():
    routes = CallRoutes("ivr_app", "icall")
    recorder = Recorder.start()
    supervisor = Mailbox.start()
    routes.deliver(event("CHANNEL_PARK", 0), 0.0, supervisor)
    routes.deliver(event("CHANNEL_EXECUTE_COMPLETE", 1), 0.0, supervisor)  # counted
    routes.attach(CALL, SimpleNamespace(ref=recorder), supervisor)
    routes.deliver(event("CHANNEL_EXECUTE_COMPLETE", 2), 0.0, supervisor)
    assert routes.sent_straight == 0, "event 1 is still in the supervisor's mailbox"
    kept = supervisor.proxy().messages().get(timeout=WAIT_S)
    assert [type(m).__name__ for m in kept] == ["EslEvent", "EslEvent", "RouteReady", "EslEvent"]


def test_an_adopted_call_waits_for_its_events_read_before_the_route_existed():
    routes = CallRoutes("ivr_app", "icall")
    recorder = Recorder.start()
    supervisor = Mailbox.start()
    routes.deliver(event("CHANNEL_EXECUTE_COMPLETE", 1), 0.0, supervisor)  # no route: not counted
    routes.attach(CALL, SimpleNamespace(ref=recorder), supervisor)  # a resync adopts the call
    routes.deliver(event("CHANNEL_EXECUTE_COMPLETE", 2), 0.0, supervisor)
    assert routes.sent_straight == 0, "event 1 may still be queued in the supervisor"
    kept = supervisor.proxy().messages().get(timeout=WAIT_S)
    assert [type(m).__name__ for m in kept] == ["EslEvent", "RouteReady", "EslEvent"]
