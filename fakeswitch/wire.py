"""ESL wire format: URL-encoding, outgoing frames, incoming command parsing.

Pure functions and one incremental parser; no sockets, no threads. Everything here is
held to the recordings in ``tests/captures`` (header order, byte-counted
Content-Length, FreeSWITCH's URL-encoding rules).
"""

from __future__ import annotations

import json

# FreeSWITCH's SWITCH_URL_UNSAFE set; control bytes and non-ASCII are encoded too.
_UNSAFE = set("\r\n #%&+:;<=>?@[\\]^`{|}\"")
_HEX = "0123456789ABCDEF"
DISCONNECT_TEXT = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"


def url_encode(value: str) -> str:
    """Encode ``value`` as FreeSWITCH does in plain events: an existing ``%XX`` (upper-case
    hex) is kept as is, every other unsafe byte becomes ``%XX``."""
    if value.isalnum():
        return value
    raw = value.encode("utf-8")
    out = []
    i = 0
    n = len(raw)
    while i < n:
        byte = raw[i]
        char = chr(byte)
        if char == "%" and i + 2 < n and chr(raw[i + 1]) in _HEX and chr(raw[i + 2]) in _HEX:
            out.append(raw[i : i + 3].decode("ascii"))
            i += 3
            continue
        if byte < 32 or byte > 126 or char in _UNSAFE:
            out.append("%" + _HEX[byte >> 4] + _HEX[byte & 15])
        else:
            out.append(char)
        i += 1
    return "".join(out)


def command_reply(reply_text: str, extra: list[tuple[str, str]] | None = None) -> bytes:
    """A ``command/reply`` frame (no Content-Length, as recorded)."""
    lines = ["Content-Type: command/reply", f"Reply-Text: {reply_text}"]
    lines += [f"{k}: {v}" for k, v in extra or ()]
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def api_response(body: str) -> bytes:
    """An ``api/response`` frame: Content-Type first, then the byte length."""
    data = body.encode("utf-8")
    return b"Content-Type: api/response\nContent-Length: %d\n\n" % len(data) + data


def auth_request() -> bytes:
    return b"Content-Type: auth/request\n\n"


def rude_rejection() -> bytes:
    body = b"Access Denied, go away.\n"
    return b"Content-Type: text/rude-rejection\nContent-Length: %d\n\n" % len(body) + body


def disconnect_notice(extra: list[tuple[str, str]] | None = None) -> bytes:
    """The goodbye notice; ``extra`` headers (outbound: Controlled-Session-UUID,
    Content-Disposition, ...) go between Content-Type and Content-Length."""
    body = DISCONNECT_TEXT.encode()
    lines = ["Content-Type: text/disconnect-notice"] + [f"{k}: {v}" for k, v in extra or ()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\n".join(lines) + "\n\n").encode() + body


def linger_notice(extra: list[tuple[str, str]]) -> bytes:
    """The outbound linger notice: a disconnect notice with no body."""
    lines = ["Content-Type: text/disconnect-notice"] + [f"{k}: {v}" for k, v in extra]
    return ("\n".join(lines) + "\n\n").encode()


def connect_reply(headers: list[tuple[str, str]]) -> bytes:
    """The outbound ``connect`` reply: a URL-encoded CHANNEL_DATA dump whose last headers
    are Content-Type, Reply-Text, Socket-Mode and Control, with no outer framing."""
    return ("".join(f"{k}: {url_encode(v)}\n" for k, v in headers) + "\n").encode("utf-8")


def event_plain(headers: list[tuple[str, str]], body: str | None) -> bytes:
    """A ``text/event-plain`` frame: Content-Length before Content-Type, values encoded."""
    parts = [f"{k}: {url_encode(v)}\n" for k, v in headers]
    if body is not None:
        parts.append(f"Content-Length: {len(body.encode('utf-8'))}\n\n{body}")
    else:
        parts.append("\n")
    inner = "".join(parts).encode("utf-8")
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(inner) + inner


def event_json(headers: list[tuple[str, str]], body: str | None) -> bytes:
    """A ``text/event-json`` frame; duplicate headers stay duplicate keys, as recorded."""
    items = [f"{json.dumps(k)}:{json.dumps(v, ensure_ascii=False)}" for k, v in headers]
    if body is not None:
        items.append(f'"Content-Length":"{len(body.encode("utf-8"))}"')
        items.append(f'"_body":{json.dumps(body, ensure_ascii=False)}')
    inner = ("{" + ",".join(items) + "}").encode("utf-8")
    return b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(inner) + inner


class Command:
    """One client command: its first line and any following headers and body."""

    __slots__ = ("line", "headers", "body")

    def __init__(self, line: str, headers: dict[str, str], body: str) -> None:
        self.line = line
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"Command({self.line!r}, {self.headers!r})"


class CommandParser:
    """Incremental parser of what an ESL client sends: a block of lines ended by a blank
    line, optionally followed by Content-Length bytes of body (sendmsg can carry one)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Command]:
        self._buf += data
        commands: list[Command] = []
        while True:
            command = self._next()
            if command is None:
                return commands
            commands.append(command)

    def _next(self) -> Command | None:
        buf = self._buf
        # Blank lines before a command are skipped, as the switch does (read_packet):
        # a client may end a body with one.
        while buf[:1] in (b"\n", b"\r"):
            del buf[:1]
        # Tolerate \r\n from telnet-style clients.
        end = buf.find(b"\n\n")
        end_crlf = buf.find(b"\r\n\r\n")
        if end_crlf != -1 and (end == -1 or end_crlf < end):
            head, skip = bytes(buf[:end_crlf]).replace(b"\r\n", b"\n"), end_crlf + 4
        elif end != -1:
            head, skip = bytes(buf[:end]), end + 2
        else:
            return None
        lines = head.decode("utf-8", "replace").split("\n")
        while lines and not lines[0].strip():
            lines.pop(0)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip()] = value.strip()
        # The switch matches the name in any case (mod_event_socket.c, read_packet).
        length = int(next((v for k, v in headers.items() if k.lower() == "content-length"), "0") or 0)
        if len(buf) - skip < length:
            return None
        body = bytes(buf[skip : skip + length]).decode("utf-8", "replace")
        del buf[: skip + length]
        return Command(lines[0].strip() if lines else "", headers, body)
