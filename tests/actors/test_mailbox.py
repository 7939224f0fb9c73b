"""icall's actor base: pykka's stop flag replaced by a one-lock StopFlag, which every
pykka path that reads or sets it must still see."""

from __future__ import annotations

import threading

import pykka
import pytest

from actors import mailbox

WAIT_S = 10


class Echo(mailbox.Actor):
    def on_receive(self, message):
        if message == "boom":
            raise RuntimeError("boom")
        return message


def test_a_stopped_actor_reads_dead_through_its_ref_and_waiters_pass():
    ref = Echo.start()
    assert ref.is_alive() and not ref.actor_stopped.wait(0.01)
    assert ref.ask("hi", timeout=WAIT_S) == "hi"
    ref.stop(timeout=WAIT_S)
    assert not ref.is_alive()
    assert ref.actor_stopped.wait(WAIT_S) and ref.actor_stopped.wait(0)
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("late")


def test_an_actor_that_fails_on_a_tell_is_stopped_and_marked():
    ref = Echo.start()
    ref.tell("boom")  # pykka stops an actor whose tell raised
    assert ref.actor_stopped.wait(WAIT_S)
    assert not ref.is_alive()


def test_every_waiter_passes_once_the_flag_is_set_and_setting_again_is_harmless():
    flag = mailbox.StopFlag()
    passed: list[bool] = []
    waiters = [threading.Thread(target=lambda: passed.append(flag.wait(WAIT_S))) for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    flag.set()
    flag.set()
    for waiter in waiters:
        waiter.join(WAIT_S)
    assert passed == [True, True, True] and flag.is_set()
