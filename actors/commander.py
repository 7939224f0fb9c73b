"""The command connection: one actor sends every api and sendmsg.

The actor's thread is the only one that touches its `EslSession` (one connection, one
thread, see DESIGN). Call actors tell it `ChannelCommand`s, or a flow batch's commands
as one `ChannelCommands`, written to the switch together; failures go to each
command's `reply_to` as `CommandFailed`. Callers may also use the proxy without
waiting for `execute` and `hangup`, which do the same. `api` and `channels` are asked
with a timeout and raise an `EslError`. A pykka ask hands the exception back to the
asker, and the actor lives on.

The connection is made lazily and remade when a command finds it gone. While
FreeSWITCH is away, at most one attempt is made per backoff window. It costs at
most `connect_timeout_s`. Every other command in that window fails at once with
"not connected", so no caller waits for the switch.

A command whose reply is lost may still have reached the switch, so it is sent again
only when repeating it is harmless: the api reads in `IDEMPOTENT_APIS`. A `sendmsg`
(a playback, a transfer, a hangup) never is; its caller hears `CommandFailed` with
`uncertain=True` and waits for the command's completion instead (ivr/flow.py). A
connection the switch closed while idle is noticed before sending (`peer_closed`),
so the common case, a switch restart between two calls, loses no command.

Commands go out in order on one connection (FreeSWITCH answers them in order), so
one missing reply holds every later command until its deadline: `sendmsg_timeout_s`
(short: the switch acknowledges a sendmsg at once) or `command_timeout_s` for api.
"""

from __future__ import annotations

import json
import logging
import time

import pykka

from actors import mailbox
from actors.esl import (
    Backoff,
    Disconnected,
    EslError,
    EslSession,
    execute_message,
    hangup_message,
    sendmsg_text,
)
from actors.esl_wire import Frame
from actors.messages import (
    HANGUP_COMMAND,
    SETVAR_COMMAND,
    ChannelCommand,
    ChannelCommands,
    ChannelsListed,
    CommandFailed,
    ListChannels,
)
from actors.reporting import NO_TELEMETRY, Cause, Telemetry

logger = logging.getLogger(__name__)

# api commands that only read, so a repeat after a lost reply changes nothing.
IDEMPOTENT_APIS = frozenset({"uuid_exists", "uuid_getvar", "uuid_dump", "show", "status",
                             "global_getvar", "version"})


class Commander(mailbox.Actor):
    """Owns the command connection; every api and sendmsg goes through it."""

    def __init__(self, config, telemetry: Telemetry = NO_TELEMETRY):
        super().__init__()
        self._telemetry = telemetry
        fs = config.freeswitch
        self._host, self._port, self._password = fs.host, fs.port, fs.password
        self._connect_timeout_s = fs.connect_timeout_s
        self._command_timeout_s = fs.command_timeout_s
        self._sendmsg_timeout_s = fs.sendmsg_timeout_s
        self._backoff = Backoff(fs.reconnect_min_s, fs.reconnect_max_s)
        self._session: EslSession | None = None
        self._next_attempt_at = 0.0
        self._last_failure = "never connected"

    # --- fire and forget (report failures to reply_to)

    def execute(self, call_uuid: str, app: str, arg: str, event_uuid: str,
                lock: bool = False, reply_to=None, since: Cause | None = None) -> None:
        """`sendmsg <call_uuid>` execute `app arg`, tagged with `event_uuid` (echoed as
        Application-UUID). An argument too long for a header line, or holding a
        newline, goes as a text/plain body. With `since` (what caused the command, and
        when), the time from it to the write goes to telemetry once the switch took it."""
        self._send_commands((ChannelCommand(call_uuid, app, arg, event_uuid, lock, reply_to, since),))

    def hangup(self, call_uuid: str, cause: str = "NORMAL_CLEARING", reply_to=None,
               since: Cause | None = None) -> None:
        """`sendmsg <call_uuid>` hangup with `cause` (`since`: as for execute)."""
        self._send_commands((ChannelCommand(call_uuid, HANGUP_COMMAND, cause, reply_to=reply_to,
                                            since=since),))

    # --- asked with a timeout (raise EslError)

    def api(self, command: str) -> str:
        """`api <command>`; the response body as FreeSWITCH wrote it. Sent again on a
        fresh connection after a lost reply only if it is a read (IDEMPOTENT_APIS)."""
        idempotent = command.split(" ", 1)[0] in IDEMPOTENT_APIS
        return self._call(lambda session: session.api(command), idempotent)

    def channels(self) -> list[tuple[str, str]]:
        """(uuid, application) of every live channel, from one `show channels as json`
        (`application` is the last application the channel started)."""
        listing = self.api("show channels as json")
        try:
            rows = json.loads(listing).get("rows", [])
        except (ValueError, AttributeError):
            raise EslError(f"unexpected answer to show channels: {listing[:80]!r}") from None
        return [(row.get("uuid", ""), row.get("application", "")) for row in rows if row.get("uuid")]

    def _list_channels(self, ask: ListChannels) -> None:
        try:
            answer = ChannelsListed(ask.resync, ask.attempt, ask.asked_at, tuple(self.channels()))
        except Exception as exc:  # not connected, a lost reply, a garbled listing
            answer = ChannelsListed(ask.resync, ask.attempt, ask.asked_at, error=str(exc) or repr(exc))
        try:
            ask.reply_to.tell(answer)
        except pykka.ActorDeadError:
            pass  # the supervisor is stopping

    def is_connected(self) -> bool:
        return self._session is not None

    def switch_is_back(self) -> None:
        """The event link is up again, so the switch is: the next command connects at
        once instead of waiting out a backoff window opened while it was away (which
        would fail the resync that adopts the calls parked meanwhile)."""
        self._next_attempt_at = 0.0
        self._backoff.reset()

    def ensure_connected(self) -> bool:
        """Connect now if not connected and the backoff allows; True if connected."""
        try:
            self._connected_session()
        except EslError:
            return False
        return True

    # --- pykka hooks (actor thread)

    def on_receive(self, message) -> None:
        if isinstance(message, ChannelCommands):
            self._send_commands(message.commands)
        elif isinstance(message, ChannelCommand):
            self._send_commands((message,))
        elif isinstance(message, ListChannels):
            self._list_channels(message)
        else:
            logger.warning("Commander ignores unexpected message %r", message)

    def on_stop(self) -> None:
        self._drop_session()

    def on_failure(self, exception_type, exception_value, traceback) -> None:
        self._drop_session()

    # --- inside the actor thread

    def _send_commands(self, commands: tuple[ChannelCommand, ...]) -> None:
        """Write the commands in one go and read their replies; tell each failure to
        its `reply_to`. A reply that never came makes its command and every later one
        uncertain: sent, perhaps run, never sent again."""
        texts: list[str] = []
        sending: list[ChannelCommand] = []
        for command in commands:
            if command.app == SETVAR_COMMAND:  # an api among the sendmsgs, in order
                texts.append(f"api uuid_setvar {command.call_uuid} {command.arg}")
                sending.append(command)
                continue
            try:
                texts.append(sendmsg_text(command.call_uuid, *_wire(command)))
            except ValueError as exc:  # a header value that would break the frame
                self._failed(command, f"-ERR invalid command: {exc}", False)
                continue
            sending.append(command)
        if not sending:
            return
        written_at = 0.0

        def send(session: EslSession) -> list[str]:
            nonlocal written_at
            written_at = time.monotonic()  # after any reconnect: that delay is icall's too
            replies = session.exchange(texts, reply_timeout_s=self._sendmsg_timeout_s)
            return [_answer(reply) for reply in replies]

        answers: list[str] = []
        failure, uncertain = "", False
        try:
            answers = self._call(send, idempotent=False)
        except ReplyLost as exc:  # written; the replies after exc.replies never came
            answers = [_answer(reply) for reply in exc.replies]
            failure, uncertain = f"-ERR {exc}", True
        except EslError as exc:  # not connected: nothing was written
            failure = f"-ERR {exc}"
        except Exception as exc:  # the actor's edge: never let a tell-like call die
            logger.exception("sendmsg of %d commands failed unexpectedly", len(sending))
            failure = f"-ERR internal error: {exc}"
        for n, command in enumerate(sending):
            if n < len(answers):
                answer, lost = answers[n], False
            else:
                answer, lost = failure, uncertain
            if answer.startswith("+OK"):
                if command.since is not None:
                    self._telemetry.command_written(command.since, written_at)
                continue
            self._failed(command, answer, lost)

    def _failed(self, command: ChannelCommand, answer: str, uncertain: bool) -> None:
        logger.warning("sendmsg %s to %s failed: %s", command.app, command.call_uuid, answer)
        if command.reply_to is not None:
            try:
                command.reply_to.tell(CommandFailed(command.call_uuid, command.event_uuid, answer, uncertain))
            except pykka.ActorDeadError:
                pass  # the call's actor is gone; nobody left to tell

    def _call(self, send, idempotent: bool):
        try:
            return self._send_once(send)
        except ReplyLost:
            if not idempotent:
                raise  # it may have run: never twice
        # A read whose reply was lost: a fresh connection most often answers at once.
        self._next_attempt_at = 0.0
        return self._send_once(send)

    def _send_once(self, send):
        session = self._connected_session()
        if session.peer_closed():
            # Closed while idle (a restart, an idle drop): nothing was sent yet, so
            # the command goes on a fresh connection, once.
            logger.warning("ESL command connection to %s was closed by the switch", session.address)
            self._drop_session()
            self._next_attempt_at = 0.0
            session = self._connected_session()
        try:
            return send(session)
        except Disconnected as exc:
            logger.warning("ESL command connection to %s lost: %s", session.address, exc)
            self._drop_session()
            self._last_failure = str(exc)
            raise ReplyLost(f"link lost: {exc}", getattr(exc, "replies", [])) from None

    def _connected_session(self) -> EslSession:
        if self._session is not None:
            return self._session
        now = time.monotonic()
        if now < self._next_attempt_at:
            raise Disconnected(f"not connected ({self._last_failure})")
        try:
            self._session = EslSession.connect(self._host, self._port, self._password,
                                               self._connect_timeout_s,
                                               reply_timeout_s=self._command_timeout_s)
        except EslError as exc:
            delay = self._backoff.next_delay()
            self._next_attempt_at = now + delay
            self._last_failure = str(exc)
            logger.warning("ESL connect to %s:%s failed: %s; next attempt in %.1f s",
                           self._host, self._port, exc, delay)
            raise Disconnected(f"not connected ({exc})") from None
        self._backoff.reset()
        logger.info("ESL command connection to %s up", self._session.address)
        return self._session

    def _drop_session(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


class ReplyLost(Disconnected):
    """A command was sent and its reply never came: it may have run on the switch.
    `replies`: of several commands written together, the replies that did come."""

    def __init__(self, reason: str, replies=()):
        super().__init__(reason)
        self.replies = list(replies)


def _answer(reply: Frame) -> str:
    """A sendmsg's Reply-Text, or an api's response body (`+OK`, `-ERR No such channel!`)."""
    if reply.content_type == "api/response":
        return reply.body.decode("utf-8", "replace").strip()
    return reply.headers.get("Reply-Text", "")


def _wire(command: ChannelCommand) -> tuple[list[tuple[str, str]], str | None]:
    """The sendmsg headers (and text/plain body) that carry `command`."""
    if command.app == HANGUP_COMMAND and not command.event_uuid:
        return hangup_message(command.arg), None
    return execute_message(command.app, command.arg, command.event_uuid, command.lock)
