"""mod_commands APIs the service uses, with the recorded response texts. Runs on the
switch's event-loop thread: ``await run(sw, name, arg) -> body``."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING

from fakeswitch import dialplan, wire
from fakeswitch.channel import now_us

if TYPE_CHECKING:
    from fakeswitch.channel import Channel
    from fakeswitch.switch import Switch

STARTED = time.time()


async def run(sw: Switch, name: str, arg: str) -> str:
    handler = API.get(name)
    if handler is None:
        return f"-ERR {name} Command not found!\n"
    return await handler(sw, arg)


def _channel(sw: Switch, arg: str) -> Channel | None:
    uuid = arg.split(" ", 1)[0] if arg else ""
    chan = sw.channels.get(uuid)
    return chan if chan is not None and chan.alive else None


async def api_status(sw: Switch, arg: str) -> str:
    up = int(time.time() - STARTED)
    live = len(sw.channels)
    return (
        f"UP 0 years, 0 days, {up // 3600} hours, {up // 60 % 60} minutes, {up % 60} seconds, "
        "0 milliseconds, 0 microseconds\n"
        "FreeSWITCH (Version 1.11.3-dev fakeswitch 64bit) is ready\n"
        f"{sw.session_count} session(s) since startup\n"
        f"{live} session(s) - peak {live}, last 5min {live} \n"
        "0 session(s) per Sec out of max 30, peak 0, last 5min 0 \n"
        "1000 session(s) max\nmin idle cpu 0.00/100.00\nCurrent Stack Size/Max 240K/8192K\n"
    )


def _row(chan: Channel) -> dict[str, str]:
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(chan.created_us / 1e6))
    b_leg = chan.leg == "B"
    return {
        "uuid": chan.uuid, "direction": "inbound" if b_leg else "outbound", "created": created,
        "created_epoch": str(chan.created_us // 1_000_000), "name": chan.name,
        "state": chan.state, "cid_name": (chan.caller_name or "") if b_leg else "Outbound Call",
        "cid_num": chan.caller_number if b_leg else "default", "ip_addr": "",
        "dest": chan.destination, "application": chan.variables.get("current_application", ""),
        "application_data": chan.variables.get("current_application_data", ""),
        "dialplan": chan.dialplan, "context": chan.context, "read_codec": "L16",
        "read_rate": "8000", "read_bit_rate": "128000", "write_codec": "L16",
        "write_rate": "8000", "write_bit_rate": "128000", "secure": "", "hostname": "fakeswitch",
        "presence_id": "", "presence_data": "", "accountcode": "", "callstate": chan.call_state,
        "callee_name": "Outbound Call" if b_leg else "", "callee_num": "default" if b_leg else
        chan.caller_number, "callee_direction": "" if b_leg else "RECV",
        "call_uuid": "" if b_leg else chan.uuid, "sent_callee_name": "", "sent_callee_num": "",
        "initial_cid_name": "", "initial_cid_num": chan.orig_number, "initial_ip_addr": "",
        "initial_dest": chan.destination, "initial_dialplan": "xml", "initial_context": "default",
    }  # fmt: skip


async def api_show(sw: Switch, arg: str) -> str:
    words = arg.split()
    if not words or words[0] not in ("channels", "calls"):
        return "-USAGE: show channels|calls [as json]\n"
    lag_us = sw.server.faults.listing_lag_s * 1_000_000 if sw.server is not None else 0
    rows = [_row(c) for c in sw.channels.values() if c.alive and now_us() - c.created_us >= lag_us]
    if words[-2:] == ["as", "json"]:
        if not rows:
            return json.dumps({"row_count": 0}, separators=(",", ":")) + "\n"
        return json.dumps({"row_count": len(rows), "rows": rows}, separators=(",", ":"))
    keys = list(_row(next(iter(sw.channels.values()))).keys()) if rows else ["uuid"]
    lines = [",".join(keys)] + [",".join(r[k] for k in keys) for r in rows]
    return "\n".join(lines) + f"\n\n{len(rows)} total.\n"


async def api_uuid_dump(sw: Switch, arg: str) -> str:
    chan = _channel(sw, arg)
    if chan is None:
        return "-ERR No such channel!\n"
    headers = sw.clock.core_headers("CHANNEL_DATA", ("mod_commands.c", "uuid_dump_function", 6495))
    headers += chan.full_headers()
    if arg.split()[-1] == "json":
        return "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in headers) + "}"
    return "".join(f"{k}: {wire.url_encode(v)}\n" for k, v in headers) + "\n"


async def api_uuid_exists(sw: Switch, arg: str) -> str:
    return "true" if _channel(sw, arg) else "false"


async def api_uuid_kill(sw: Switch, arg: str) -> str:
    chan = _channel(sw, arg)
    if chan is None:
        return "-ERR No such channel!\n"
    words = arg.split()
    sw.loop.call_soon(sw.hangup, chan, words[1] if len(words) > 1 else "NORMAL_CLEARING")
    return "+OK\n"


async def api_uuid_break(sw: Switch, arg: str) -> str:
    chan = _channel(sw, arg)
    if chan is None:
        return "-ERR No such channel!\n"
    chan.rt.broken = True
    chan.rt.wake("break")
    return "+OK\n"


async def api_uuid_transfer(sw: Switch, arg: str) -> str:
    """`uuid_transfer <uuid> <dest-exten> [<dialplan>] [<context>]` (mod_commands'
    transfer_function; -bleg/-both are not modelled): the channel leaves whatever app
    it runs (a queue included) and runs the extension, in its own context if none."""
    words = arg.split()
    chan = _channel(sw, arg)
    if chan is None:
        return "-ERR No such channel!\n"
    if len(words) < 2 or words[1].startswith("-"):
        return "-USAGE: <uuid> [-bleg|-both] <dest-exten> [<dialplan>] [<context>]\n"
    context = words[3] if len(words) > 3 else chan.context
    sw.loop.call_soon(sw.transfer, chan, words[1], context)
    return "+OK\n"


async def api_uuid_setvar(sw: Switch, arg: str) -> str:
    chan = _channel(sw, arg)
    words = arg.split(" ", 2)
    if chan is None:
        return "-ERR No such channel!\n"
    if len(words) < 2:
        return "-USAGE: <uuid> <var> [value]\n"
    if len(words) == 3:
        chan.set_var(words[1], unescaped(words[2]))
    else:
        chan.variables.pop(words[1], None)
    return "+OK\n"


_UNESCAPED = {"n": "\n", "r": "\r", "t": "\t", "s": " "}


def unescaped(value: str) -> str:
    """An api argument as FreeSWITCH's argument splitter leaves it (switch_utils.c,
    cleanup_separated_string): a backslash escapes a quote, a backslash or one of
    n r t s; a single quote with another after it opens or closes a quoted run and
    is dropped; trailing blanks go."""
    out: list[str] = []
    i, quoted = 0, False
    while i < len(value):
        char = value[i]
        nxt = value[i + 1] if i + 1 < len(value) else ""
        if char == "\\" and nxt and (nxt in "'\"\\" or nxt in _UNESCAPED):
            out.append(_UNESCAPED.get(nxt, nxt))
            i += 2
            continue
        if char == "'" and (quoted or "'" in value[i + 1:]):
            quoted = not quoted
        else:
            out.append(char)
        i += 1
    return "".join(out).rstrip(" ")


async def api_uuid_getvar(sw: Switch, arg: str) -> str:
    chan = _channel(sw, arg)
    words = arg.split()
    if chan is None:
        return "-ERR No such channel!\n"
    if len(words) < 2:
        return "-USAGE: <uuid> <var>\n"
    return chan.variables.get(words[1], "_undef_")


async def api_uuid_recv_dtmf(sw: Switch, arg: str) -> str:
    chan = _channel(sw, arg)
    words = arg.split()
    if chan is None or len(words) < 2:
        return "-ERR No such channel!\n"
    sw.loop.call_soon(sw.queue_dtmf, chan, words[1].split("@")[0])
    return f"+OK {chan.uuid} received DTMF {words[1]}.\n"


async def api_uuid_send_dtmf(sw: Switch, arg: str) -> str:
    chan = _channel(sw, arg)
    words = arg.split()
    if chan is None or len(words) < 2:
        return "-ERR No such channel!\n"
    # Loopback: what one leg sends, its partner receives.
    target = chan.other if chan.other is not None and chan.other.alive else chan
    sw.loop.call_soon(sw.queue_dtmf, target, words[1].split("@")[0])
    return "+OK\n"


async def api_originate(sw: Switch, arg: str) -> str:
    settled: asyncio.Future = sw.loop.create_future()

    def on_settled(chan: Channel) -> None:
        if not settled.done():
            settled.set_result(chan)

    try:
        b_leg = dialplan.originate(sw, arg, on_answer=on_settled)
    except dialplan.OriginateError as exc:
        return f"-ERR {exc}\n"
    # originate returns once the call is answered (or gone), as the real one does.
    sw.on_teardown(b_leg, on_settled)
    await settled
    a_uuid = b_leg.other.uuid if b_leg.other is not None else b_leg.uuid
    if not b_leg.answered_us:
        return f"-ERR {b_leg.hangup_cause or 'NORMAL_CLEARING'}\n"
    return f"+OK {a_uuid}\n"


async def api_hupall(sw: Switch, arg: str) -> str:
    cause = arg.split()[0] if arg else "MANAGER_REQUEST"
    for chan in list(sw.channels.values()):
        sw.loop.call_soon(sw.hangup, chan, cause)
    return "+OK hangup all channels with cause " + cause + "\n"


async def api_version(sw: Switch, arg: str) -> str:
    return "FreeSWITCH Version 1.11.3-dev+fakeswitch (fakeswitch 64bit)\n"


API = {
    "status": api_status, "show": api_show, "uuid_dump": api_uuid_dump,
    "uuid_exists": api_uuid_exists, "uuid_kill": api_uuid_kill, "uuid_break": api_uuid_break,
    "uuid_setvar": api_uuid_setvar, "uuid_transfer": api_uuid_transfer, "uuid_getvar": api_uuid_getvar,
    "uuid_recv_dtmf": api_uuid_recv_dtmf, "uuid_send_dtmf": api_uuid_send_dtmf,
    "originate": api_originate, "hupall": api_hupall, "version": api_version,
}  # fmt: skip
