"""A call's notes (`Flow.history`) are kept only when someone reads them."""

from __future__ import annotations

from actors.timeconditions import TimeConditionSource
from ivr.config import load_config
from service.app import Service

BASE = {"ICALL_FREESWITCH_PASSWORD": "x"}


def flow_of(service: Service):
    # The flow factory only reads the time-condition snapshot: no thread, no database.
    service.time_conditions = TimeConditionSource(service.config)
    return service._flow_maker(service.config)("0d9e4b8e-57a4-4b6e-9f8e-3c1a2b5d7e01")


def test_without_an_observer_the_service_keeps_no_notes_per_call():
    config = load_config(None, BASE)
    assert flow_of(Service(config)).ctx.keep_history is False
    assert flow_of(Service(config, observer=lambda uuid, history: None)).ctx.keep_history is True
