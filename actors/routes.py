"""CallRoutes: the reader hands a call's events straight to the call's actor.

Through the supervisor, each event cost a second hop (a message and a thread woken);
a call has a dozen events. The supervisor still decides who owns a call: it opens a
route when it starts or adopts a call and closes it when it forgets the call, and
every event of a call without an open route still goes through it.

What makes this subtle is order: a call's events must reach its actor in the order
the switch sent them, and an event on its way through the supervisor must not be
overtaken by a later one sent straight. So:

- the reader marks a route for a CHANNEL_PARK of our flow before it hands the park
  to the supervisor; every later event of that call is then counted while it
  travels through the supervisor, until the supervisor has forwarded it;
- the supervisor attaches the call to the route and opens it from its own mailbox
  (`RouteReady`, queued behind everything already there), so events it received
  before the route existed are forwarded first; a route marked at the park with no
  event counted in flight has nothing queued there, and opens at once;
- the reader sends straight only to an open route with nothing counted in flight.

Threads: `deliver` runs in the reader thread; `attach`, `opened`, `forwarded` and
`remove` in the supervisor's. A route's fields change under its own lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pykka

from actors.messages import EslEvent
from ivr.event import Event


@dataclass(frozen=True)
class RouteReady:
    """Supervisor to itself: the route of `call_uuid` may open (every event queued
    before it has been forwarded)."""

    call_uuid: str


class _Route:
    __slots__ = ("call", "open", "in_flight", "lock")

    def __init__(self) -> None:
        self.call: Any = None  # the supervisor's record of the call; `.ref` is its actor
        self.open = False
        self.in_flight = 0  # events of this call sent through the supervisor, not yet forwarded
        self.lock = threading.Lock()


class CallRoutes:
    """uuid -> route; see the module doc."""

    def __init__(self, flow_variable: str, flow: str):
        self._routes: dict[str, _Route] = {}
        self._flow_header = "variable_" + flow_variable
        self._flow = flow
        self.sent_straight = 0  # counted in the reader thread only

    # --- the reader thread

    def deliver(self, event: Event, read_at: float, supervisor: pykka.ActorRef) -> None:
        """Hand `event` to its call's actor if the route is open, else to the
        supervisor. Raises ActorDeadError if the supervisor is gone."""
        uuid = event.uuid
        route = self._routes.get(uuid)
        if route is None:
            if event.name == "CHANNEL_PARK" and event.get(self._flow_header) == self._flow:
                self._routes[uuid] = _Route()  # counted from the next event on
            supervisor.tell(EslEvent(event, read_at))
            return
        with route.lock:
            straight = route.open and route.in_flight == 0
            if not straight:
                route.in_flight += 1
        if straight:
            try:
                route.call.ref.tell(EslEvent(event, read_at))
                self.sent_straight += 1
                return
            except pykka.ActorDeadError:
                # Its actor just died: the supervisor knows what comes next.
                with route.lock:
                    route.in_flight += 1
        supervisor.tell(EslEvent(event, read_at, counted=True))

    # --- the supervisor's thread

    def attach(self, uuid: str, call: Any, supervisor: pykka.ActorRef) -> None:
        """`call` (with its `.ref`) now owns `uuid`; the route opens at once when it
        was marked at the park and no event of the call is in flight, else once the
        supervisor reads the RouteReady this queues."""
        route = self._routes.get(uuid)
        marked_at_park = route is not None
        if route is None:
            route = self._routes[uuid] = _Route()
        with route.lock:
            route.call = call
            if marked_at_park and route.in_flight == 0:
                # Every event since the park is counted and none is in the supervisor's
                # mailbox: open now. (The first completion of a call used to reach the
                # supervisor before its RouteReady did: a hop and a wake-up a call.) A
                # route made here (an adoption) waits: events read before it existed
                # were not counted and may still be queued there.
                route.open = True
                return
        supervisor.tell(RouteReady(uuid))

    def opened(self, uuid: str) -> None:
        route = self._routes.get(uuid)
        if route is not None and route.call is not None:
            with route.lock:
                route.open = True

    def forwarded(self, uuid: str) -> None:
        """A counted event of `uuid` has been handed on (or dropped) by the supervisor."""
        route = self._routes.get(uuid)
        if route is not None:
            with route.lock:
                route.in_flight -= 1

    def remove(self, uuid: str) -> None:
        self._routes.pop(uuid, None)

    def __len__(self) -> int:
        return len(self._routes)
