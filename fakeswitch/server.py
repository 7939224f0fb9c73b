"""FakeSwitch: the in-process handle that tests and ``icall demo`` use.

The stand-in runs one asyncio event loop in its own thread; every public method here is
thread-safe and hands its work to that loop (``run_coroutine_threadsafe``/
``call_soon_threadsafe``) with a timeout.
"""

from __future__ import annotations

import asyncio
import copy
import threading

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
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, password: str = "ClueCon",
                 time_scale: float = 1.0, users: dict[str, str] | None = None,
                 allow: list[str] | None = None, outbound_target: tuple[str, int] | None = None,
                 durations: dict[str, float] | None = None, fifo_mode: str = "simple") -> None:
        self.host = host
        self.port = port
        self.password = password
        self.allow = allow
        self.faults = Faults()
        self._options = dict(time_scale=time_scale, users=users, durations=durations,
                             fifo_mode=fifo_mode)
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
        asyncio.set_event_loop(loop)
        self.switch = Switch(loop, **self._options)
        self.switch.outbound_target = self.outbound_target

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
            self._server.close()
            for listener in list(self._listeners):
                listener.close()
            for chan in list(self.switch.channels.values()):
                if chan.rt.task is not None:
                    chan.rt.task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)

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

    def allowed(self, peer_ip: str) -> bool:
        return self.allow is None or peer_ip in self.allow

    # -- thread-safe calls into the loop ------------------------------------------------
    def _call(self, fn, *args, timeout: float = CALL_TIMEOUT_S):
        async def run():
            return fn(*args)

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
            chan = self.switch.channels.get(uuid)
            if chan is None:
                return uuid in self.switch.records
            self.switch.on_teardown(chan, lambda _chan: done.set())
            return False

        if self._call(register):
            return True
        return done.wait(timeout)

    def wait_parked(self, uuid: str, timeout: float = CALL_TIMEOUT_S) -> bool:
        """Block until the channel has parked (True) or is gone/timed out (False)."""
        done = threading.Event()

        def register() -> bool:
            chan = self.switch.channels.get(uuid)
            if chan is None:
                return False
            if chan.parked:
                return True
            chan.on_park.append(lambda _chan: done.set())
            return False

        return self._call(register) or done.wait(timeout)

    def call_record(self, uuid: str) -> CallRecord:
        """A snapshot copy of what happened to a controlled channel."""
        record = self._call(lambda: copy.deepcopy(self.switch.records.get(uuid)))
        if record is None:
            raise FakeSwitchError(f"no such call {uuid}")
        return record

    def live_calls(self) -> list[str]:
        """UUIDs of the live controlled (B) legs."""
        return self._call(lambda: [u for u, c in self.switch.channels.items()
                                   if c.leg == "B" and c.alive])

    def hangup(self, uuid: str, cause: str = "NORMAL_CLEARING") -> None:
        """The caller hangs up."""
        def run() -> None:
            chan = self.switch.channels.get(uuid)
            if chan is not None:
                self.switch.hangup(chan, cause)

        self._call(run)

    def press(self, uuid: str, digits: str) -> None:
        """The caller presses digits (as uuid_recv_dtmf)."""
        def run() -> None:
            chan = self.switch.channels.get(uuid)
            if chan is not None and chan.alive:
                self.switch.queue_dtmf(chan, digits)

        self._call(run)

    def drop_clients(self) -> None:
        """Close every client socket; calls stay parked, as on FreeSWITCH."""
        def run() -> None:
            for listener in list(self._listeners):
                listener.close()

        self._call(run)

    def client_count(self) -> int:
        return self._call(lambda: sum(1 for x in self._listeners if not x.closed))
