"""The flows icall knows, by the name a channel's flow variable gives (`[ivr] flow`).

The one place that imports every flow, so that the behaviour (`ivr.flow`) and the
flows built on it do not import each other.
"""

from __future__ import annotations

from ivr.flow import Flow, FlowContext, FlowError
from ivr.icall import IcallFlow

FLOWS: dict[str, type[Flow]] = {flow.name: flow for flow in (IcallFlow,)}


def make_flow(name: str, uuid: str, ctx: FlowContext) -> Flow:
    """A new flow of class `FLOWS[name]` for the call `uuid`."""
    if name not in FLOWS:
        raise FlowError(f"unknown flow {name!r}; known: {', '.join(sorted(FLOWS))}")
    return FLOWS[name](uuid, ctx)
