"""FakeSwitch: the in-process handle that tests and ``icall demo`` use.

The stand-in runs one asyncio event loop in its own thread; every public method here is
thread-safe and hands its work to that loop (``run_coroutine_threadsafe``/
``call_soon_threadsafe``) with a timeout.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from typing import Any

from fakeswitch import dialplan
from fakeswitch.channel import CallRecord
from fakeswitch.faults import Faults
from fakeswitch.listener import Listener
from fakeswitch.switch import Switch

CALL_TIMEOUT_S = 10.0


class FakeSwitchError(Exception):
    """A FakeSwitch operation failed (start timeout, originate error, ...)."""


class FakeSwitch:
    """A FreeSWITCH stand-in speaking ESL on a real TCP socket.

    ``users`` maps a directory user to its behaviour for ``bridge user/N``:
    ``"answer:S"`` (answers, talks S scaled seconds, hangs up) or ``"noanswer[:S]"``
    (rings S seconds, NO_ANSWER); unlisted users are USER_NOT_REGISTERED.
    ``allow`` is a list of peer IPs (None = everyone); others get text/rude-rejection.
    ``outbound_target`` is ``(host, port)`` for ``fsm_out`` calls.
    ``fifo_mode="real"`` makes every ``fifo_*`` destination of context new_sales a real
    mod_fifo queue (see fakeswitch.fifo); ``fifo_queues={"fifo_sales": "real"}`` does it
    per queue; a call's ``fake_fifo=real|simple`` variable overrides both. Otherwise the
    destination answers, plays a prompt and hangs up, as recorded.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, password: str = "ClueCon",
                 time_scale: float = 1.0, users: dict[str, str] | None = None,
                 allow: list[str] | None = None, outbound_target: tuple[str, int] | None = None,
                 durations: dict[str, float] | None = None, fifo_mode: str = "simple",
                 fifo_queues: dict[str, str] | None = None) -> None:
        self.host = host
        self.port = port
        self.password = password
        self.allow = allow
        self.faults = Faults()
        self._options: dict[str, Any] = dict(time_scale=time_scale, users=users, durations=durations,
                             fifo_mode=fifo_mode, fifo_queues=fifo_queues)
        self.outbound_target = outbound_target
        self.loop: asyncio.AbstractEventLoop | None = None
        self.switch: Switch | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._listeners: set[Listener] = set()

    # -- life cycle ------------------------------------------------------------------
    def start(self, timeout: float = CALL_TIMEOUT_S) -> FakeSwitch:
        """Start the loop thread; return once the socket listens (``self.port`` set)."""
        ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="fakeswitch",
                                        daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or self._server is None:
            raise FakeSwitchError("fakeswitch did not start listening")
        return self

    def _run(self, ready: threading.Event) -> None:
        loop = self.loop
        assert loop is not None, "start() makes the loop before the thread"
        asyncio.set_event_loop(loop)
        self.switch = Switch(loop, **self._options)
        self.switch.outbound_target = self.outbound_target
        self.switch.server = self

        async def listen() -> None:
            self._server = await asyncio.start_server(self._accept, self.host, self.port)
            self.port = self._server.sockets[0].getsockname()[1]

        try:
            loop.run_until_complete(listen())
        finally:
            ready.set()
        loop.run_forever()
        loop.close()

    def stop(self, timeout: float = CALL_TIMEOUT_S) -> None:
        if self.loop is None or not self._thread or not self._thread.is_alive():
            return

        async def shutdown() -> None:
            assert self._server is not None, "a running loop thread has its server"
            self._server.close()
            for listener in list(self._listeners):
                listener.close()
            for chan in list(self._sw.channels.values()):
                if chan.rt.task is not None:
                    chan.rt.task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)

    @property
    def _sw(self) -> Switch:
        """The switch, made by the loop thread during start(); the loop thread uses it."""
        assert self.switch is not None, "FakeSwitch is not started"
        return self.switch

    def __enter__(self) -> FakeSwitch:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        listener = Listener(self, reader, writer)
        self._listeners.add(listener)
        try:
            await listener.run()
        finally:
            self._listeners.discard(listener)

    def track(self, listener: Listener) -> None:
        """Count an outbound session among the sockets drop_clients/stop close."""
        self._listeners.add(listener)

    def untrack(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    def allowed(self, peer_ip: str) -> bool:
        return self.allow is None or peer_ip in self.allow

    # -- thread-safe calls into the loop ------------------------------------------------
    def _call(self, fn, *args, timeout: float = CALL_TIMEOUT_S):
        async def run():
            return fn(*args)

        assert self.loop is not None, "FakeSwitch is not started"
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def place_call(self, caller_id: str = "5551000", dest: str = "fsm", context: str = "default",
                   variables: dict[str, str] | None = None, caller_name: str | None = None,
                   timeout: float = CALL_TIMEOUT_S) -> str:
        """Originate a loopback call; return the controlled (B) leg's UUID at once."""
        pairs = {"origination_caller_id_number": caller_id}
        if caller_name:
            pairs["origination_caller_id_name"] = caller_name
        pairs.update(variables or {})
        arg = "{" + ",".join(f"{k}={v}" for k, v in pairs.items()) + "}"
        arg += f"loopback/{dest}/{context} &park"
        try:
            chan = self._call(dialplan.originate, self.switch, arg, timeout=timeout)
        except dialplan.OriginateError as exc:
            raise FakeSwitchError(str(exc)) from exc
        return chan.uuid

    def wait_hangup(self, uuid: str, timeout: float = CALL_TIMEOUT_S) -> bool:
        """Block until the channel is destroyed; False on timeout or unknown uuid."""
        done = threading.Event()

        def register() -> bool:
            chan = self._sw.channels.get(uuid)
            if chan is None:
                return uuid in self._sw.records
            self._sw.on_teardown(chan, lambda _chan: done.set())
            return False

        if self._call(register):
            return True
        return done.wait(timeout)

    def wait_parked(self, uuid: str, timeout: float = CALL_TIMEOUT_S) -> bool:
        """Block until the channel has parked (True) or is gone/timed out (False)."""
        done = threading.Event()

        def register() -> bool:
            chan = self._sw.channels.get(uuid)
            if chan is None:
                return False
            if chan.parked:
                return True
            chan.on_park.append(lambda _chan: done.set())
            return False

        return self._call(register) or done.wait(timeout)

    def call_record(self, uuid: str) -> CallRecord:
        """A snapshot copy of what happened to a controlled channel."""
        record = self._call(lambda: copy.deepcopy(self._sw.records.get(uuid)))
        if record is None:
            raise FakeSwitchError(f"no such call {uuid}")
        return record

    def live_calls(self) -> list[str]:
        """UUIDs of the live controlled (B) legs."""
        return self._call(lambda: [u for u, c in self._sw.channels.items()
                                   if c.leg == "B" and c.alive])

    def close_outbound(self, uuid: str) -> bool:
        """Fault knob: the switch closes the outbound (``socket`` app) connection of call
        ``uuid`` without a word, as a killed listener does; False if it has none open."""
        def run() -> bool:
            sessions = [listener for listener in self._sw.listeners
                        if getattr(listener, "session_uuid", None) == uuid and not listener.closed]
            for session in sessions:
                session.close()
            return bool(sessions)

        return self._call(run)

    def hangup(self, uuid: str, cause: str = "NORMAL_CLEARING") -> None:
        """The caller hangs up."""
        def run() -> None:
            chan = self._sw.channels.get(uuid)
            if chan is not None:
                self._sw.hangup(chan, cause)

        self._call(run)

    def press(self, uuid: str, digits: str) -> None:
        """The caller presses digits (as uuid_recv_dtmf)."""
        def run() -> None:
            chan = self._sw.channels.get(uuid)
            if chan is not None and chan.alive:
                self._sw.queue_dtmf(chan, digits)

        self._call(run)

    def drop_clients(self) -> None:
        """Close every client socket; calls stay parked, as on FreeSWITCH."""
        def run() -> None:
            for listener in list(self._listeners):
                listener.close()

        self._call(run)

    # -- mod_fifo ----------------------------------------------------------------------
    def set_fifo_queue(self, queue: str, mode: str = "real") -> None:
        """Make ``queue`` (``fifo_sales`` or ``sales``) a real mod_fifo queue or not."""
        def run() -> None:
            self._sw.fifo_queues[queue] = mode

        self._call(run)

    def fifo_waiting(self, queue: str = "sales") -> list[str]:
        """UUIDs of the callers waiting in ``queue`` (``sales``, ``fifo_sales``, ...)."""
        from fakeswitch.fifo import queue_name

        return self._call(lambda: [w.chan.uuid for w in self._sw.fifos.get(queue_name(queue), ())
                                   if w.chan.alive])

    def wait_fifo(self, uuid: str, action: str = "push", timeout: float = CALL_TIMEOUT_S) -> bool:
        """Block until the channel's fifo::info ``action`` has fired (True) or timeout."""
        done = threading.Event()

        def register() -> bool:
            chan = self._sw.channels.get(uuid)
            record = chan.record if chan is not None else self._sw.records.get(uuid)
            if record is not None and action in record.fifo_actions:
                return True  # it fired before we asked
            if chan is not None:
                chan.on_fifo.append(lambda _chan, seen: _set_if(done, seen == action))
            return False

        return self._call(register) or done.wait(timeout)

    def agent_pickup(self, queue: str = "sales", agent_caller_id: str = "2001",
                     agent_name: str = "fifo-agent", talk_s: float | None = 2.0,
                     timeout: float = CALL_TIMEOUT_S) -> str:
        """An agent takes the oldest caller waiting in ``queue``: originates
        ``loopback/fifo_agent_<queue>/new_sales`` (answer, ``fifo <queue>@127.0.0.1 out
        nowait``), which bridges to the caller; the agent hangs up ``talk_s`` scaled seconds
        after the bridge (None = until killed). Returns the agent (consumer) leg's UUID."""
        from fakeswitch.fifo import queue_name

        short = queue_name(queue).split("@")[0]
        variables = {"origination_caller_id_name": agent_name}
        if talk_s is not None:
            variables["fake_talk_s"] = str(talk_s)
        return self.place_call(caller_id=agent_caller_id, dest=f"fifo_agent_{short}",
                               context="new_sales", variables=variables, timeout=timeout)

    def stats(self) -> dict[str, float]:
        """Counters for benchmarks: ``events_fired`` (every event the switch produced,
        delivered or not), ``live_calls`` (controlled legs up), ``sessions`` (legs created
        since start) and ``loop_cpu_s`` (CPU time of the event-loop thread so far)."""
        def run() -> dict[str, float]:
            sw = self._sw
            live = sum(1 for c in sw.channels.values() if c.leg == "B" and c.alive)
            return {"events_fired": sw.events_fired, "live_calls": live,
                    "sessions": sw.session_count, "loop_cpu_s": time.thread_time()}

        return self._call(run)

    def client_count(self) -> int:
        return self._call(lambda: sum(1 for x in self._listeners if not x.closed))


def _set_if(event: threading.Event, condition: bool) -> None:
    if condition:
        event.set()
