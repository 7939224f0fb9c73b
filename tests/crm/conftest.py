"""Fixtures for the CRM fetcher tests: a fake CRM on loopback, a config pointing at
it, a real pykka actor that collects the answers, and the fetcher itself."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator

import pykka
import pytest

from actors.crm.fetcher import CrmFetcher
from actors.messages import CrmAnswer, CrmLookup
from fakeswitch.fake_crm import FakeCrm
from ivr.config import Config, load_config
from tests import waiting

ANSWER_TIMEOUT_S = 20  # generous: a loaded 2-core machine must not fail a test by timing

TABLE = {"5551000": "801", "5551001": "802", "5551002": "603"}


def make_config(**crm: object) -> Config:
    """The default configuration with `[crm]` keys overridden: make_config(deadline_s=1)."""
    environ = {"ICALL_FREESWITCH_PASSWORD": "ClueCon"}
    environ.update({f"ICALL_CRM_{key.upper()}": str(value) for key, value in crm.items()})
    return load_config(None, environ)


class AnswerCollector(pykka.ThreadingActor):
    """Stands in for a CallActor: every message it gets goes into `inbox` with the
    time it arrived."""

    def __init__(self, inbox: queue.Queue):
        super().__init__()
        self.inbox = inbox

    def on_receive(self, message: object) -> None:
        self.inbox.put((time.monotonic(), message))


class Caller:
    """Sends lookups to a fetcher as a call would, and waits for the answers."""

    def __init__(self) -> None:
        self.inbox: queue.Queue = queue.Queue()
        self.ref = AnswerCollector.start(self.inbox)

    def ask(self, fetcher: pykka.ActorRef, caller_id: str, call_uuid: str = "call-1",
            deadline_s: float | None = None) -> None:
        fetcher.tell(CrmLookup(call_uuid, caller_id, self.ref, deadline_s))

    def answer(self, timeout_s: float = ANSWER_TIMEOUT_S) -> tuple[float, CrmAnswer]:
        arrived_at, message = self.inbox.get(timeout=timeout_s)
        assert isinstance(message, CrmAnswer)
        return arrived_at, message

    def lookup(self, fetcher: pykka.ActorRef, caller_id: str, **kwargs) -> CrmAnswer:
        self.ask(fetcher, caller_id, **kwargs)
        return self.answer()[1]


def wait_until(predicate: Callable[[], bool], timeout_s: float = ANSWER_TIMEOUT_S) -> bool:
    return waiting.wait_until(predicate, timeout_s)


def stats(fetcher: pykka.ActorRef) -> dict:
    return fetcher.proxy().stats().get(timeout=ANSWER_TIMEOUT_S)


@pytest.fixture
def crm() -> Iterator[FakeCrm]:
    fake = FakeCrm(TABLE).start()
    yield fake
    fake.stop()


@pytest.fixture
def caller() -> Caller:
    return Caller()


@pytest.fixture
def start_fetcher(crm: FakeCrm) -> Iterator[Callable[..., pykka.ActorRef]]:
    """start_fetcher(**crm_keys): a CrmFetcher against the fake CRM (base_url preset)."""
    started: list[pykka.ActorRef] = []

    def start(**crm_keys: object) -> pykka.ActorRef:
        crm_keys.setdefault("base_url", crm.url)
        crm_keys.setdefault("backoff_initial_s", 0.01)
        crm_keys.setdefault("backoff_max_s", 0.05)
        ref = CrmFetcher.start(make_config(**crm_keys))
        started.append(ref)
        return ref

    yield start
    for ref in started:
        if ref.is_alive():
            ref.stop(block=True, timeout=ANSWER_TIMEOUT_S)
