"""What a controller makes the real switch do: one controller, one mode, N calls.

Starts a fake CRM, the controller (icall, or the lean one of the same flow: inbound
bench.baseline_controller, outbound bench.cost_lean_outbound) and a counting proxy
(bench.cost_proxy) between it and the lab FreeSWITCH, places --calls calls at --cps
with bench.callers' driver (every branch, round robin; outbound through an inline
dialplan equal to the `icall_out` extension but aimed at the proxy's port, so that no
other user of port 8084 takes or splits the calls), then prints per call: bytes and
frames each side wrote, events by name, the switch's CPU (utime+stime of its pid file
over the run) and the controller's.

    .venv/bin/python -m bench.cost_run --mode out --controller icall --calls 100 --cps 10
        [--icall-root /tmp/icall-before] [--json results.jsonl]

The switch's CPU counts whatever else it did meanwhile: `others` is how many sessions
it started beyond ours (`status`), to be read as a warning. A few numbers, not a test.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import callers
from bench._procs import CLOCK_TICKS, Child, free_port
from bench.capacity_bench import wait_for_link, write_config
from bench.scenarios import CRM_TABLE

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
ICALL = str(ROOT / ".venv" / "bin" / "icall")
FS_PID_FILE = "/opt/fslab/run/freeswitch.pid"
FS_CLI = "/opt/fslab/bin/fs_cli"


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def sessions_since_start() -> int:
    text = subprocess.run([FS_CLI, "-x", "status"], capture_output=True, text=True, timeout=10).stdout
    for line in text.splitlines():
        if "session(s) since startup" in line:
            return int(line.split()[0])
    return -1


# Inbound calls carry this variable (not the lab's ivr_app) and names of their own: on a
# switch others use too, neither controller takes their parked calls nor the driver
# their events.
FLOW_VARIABLE = "cost_app"
NAME_PREFIX = "cost-"


def dialer(mode: str, port: int):
    """bench.callers' Driver, its calls sent through the apps of the lab's extension
    inline: outbound `icall_out`'s, to `port`; inbound `fsm`'s, with FLOW_VARIABLE."""
    if mode == "out":
        apps = ("set:acc_out=1", "answer", "set:socket_resume=true",
                f"socket:127.0.0.1:{port} async full", f"socket:127.0.0.1:{port} async full",
                "transfer:fifo_sales XML new_sales")
    else:  # socket_resume only for the driver's filter (bench.callers)
        apps = (f"set:{FLOW_VARIABLE}=icall", "set:socket_resume=true", "answer", "park")
    url = "'loopback/" + "\\,".join(apps) + "/default/inline'"

    class Inline:
        """The driver's command connection, its originates aimed at `url`."""

        def __init__(self, commands):
            self.commands = commands

        def sendRecv(self, text: str):  # noqa: N802 (python-ESL's name)
            text = text.replace("loopback/icall_out/default", url)
            return self.commands.sendRecv(text.replace("_name=bench-", "_name=" + NAME_PREFIX))

    class Named:
        """An event as the driver reads it: our names as it knows them, others' hidden."""

        def __init__(self, event):
            self.event = event

        def getHeader(self, name: str):  # noqa: N802
            value = self.event.getHeader(name)
            if name == "Caller-Caller-ID-Name" and value:
                return "bench-" + value[len(NAME_PREFIX):] if value.startswith(NAME_PREFIX) else "other"
            return value

        def getBody(self):  # noqa: N802
            return self.event.getBody()

    class Dialer(callers.Driver):
        def __init__(self, commands, args):
            super().__init__(Inline(commands), args)

        def on_event(self, event) -> None:
            super().on_event(Named(event))
    return Dialer


def start_controller(args: argparse.Namespace, workdir: Path, switch_port: int,
                     listen_port: int, crm_url: str) -> Child:
    crm = ",".join(f"{k}={v}" for k, v in CRM_TABLE.items())
    if args.controller == "lean" and args.mode == "in":
        code = ("import sys; import bench.baseline_controller as lean; "
                f"lean.FILTERS = ('filter variable_{FLOW_VARIABLE} icall', *lean.FILTERS[1:]); "
                "sys.exit(lean.main(sys.argv[1:]))")
        child = Child("lean", [PYTHON, "-c", code, "--port", str(switch_port), "--crm", crm], workdir)
        child.wait_line("READY", 30)
        return child
    if args.controller == "lean":
        child = Child("lean", [PYTHON, "-m", "bench.cost_lean_outbound", "--listen",
                               f"127.0.0.1:{listen_port}", "--crm", crm], workdir)
        child.wait_line("READY", 30)
        return child
    metrics_port = free_port()
    overrides = ["crm.cache_ttl_s=0", f"ivr.flow_variable={FLOW_VARIABLE}", *args.set]
    if args.mode == "out":
        overrides.append(f"outbound.listen=127.0.0.1:{listen_port}")
    config = write_config(workdir, switch_port, crm_url, "", metrics_port, overrides)
    icall = [ICALL]
    if args.icall_root:  # another checkout's code (an earlier commit), this venv
        # Not `-m`: that puts the current folder (this checkout) first on the path.
        icall = [PYTHON, "-c", f"import sys; sys.path.insert(0, {args.icall_root!r}); "
                 "from service.cli import main; sys.exit(main())"]
    subprocess.run([*icall, "--config", str(config), "db", "upgrade"], check=True, timeout=60,
                   capture_output=True)
    child = Child("icall", [*icall, "--config", str(config), "run"], workdir)
    child.wait_listening(metrics_port, 30)
    wait_for_link(child, metrics_port, 30)
    return child


def run(args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"icall-cost-{args.mode}-{args.controller}-"))
    children: list[Child] = []
    counts = workdir / "counts.json"
    try:
        crm_port, proxy_port, ctl_port = free_port(), free_port(), free_port()
        table = ",".join(f"{k}={v}" for k, v in CRM_TABLE.items())
        crm = Child("crm", [PYTHON, "-m", "fakeswitch.fake_crm", "--listen", f"127.0.0.1:{crm_port}",
                            "--table", table], workdir)
        children.append(crm)
        crm.wait_listening(crm_port, 30)
        if args.mode == "out":  # the switch -> proxy -> controller
            proxy_argv = ["--listen", f"127.0.0.1:{proxy_port}", "--target", f"127.0.0.1:{ctl_port}",
                          "--switch-side", "accept"]
            switch_port = 8021
        else:  # the controller -> proxy -> the switch
            proxy_argv = ["--listen", f"127.0.0.1:{proxy_port}", "--target", "127.0.0.1:8021",
                          "--switch-side", "connect"]
            switch_port = proxy_port
        proxy = Child("proxy", [PYTHON, "-m", "bench.cost_proxy", *proxy_argv, "--out", str(counts)],
                      workdir)
        children.append(proxy)
        proxy.wait_line("READY", 30)
        control = start_controller(args, workdir, switch_port, ctl_port, f"http://127.0.0.1:{crm_port}")
        children.append(control)
        fs_pid = int(Path(FS_PID_FILE).read_text().strip())
        time.sleep(1.0)  # let start-up traffic settle before the window opens
        sessions0, fs0, ctl0, t0 = sessions_since_start(), cpu_s(fs_pid), cpu_s(control.pid), time.monotonic()
        driver_args = argparse.Namespace(port=8021, password="ClueCon", cps=args.cps, calls=args.concurrent,
                                         duration=args.calls / args.cps - 0.5 / args.cps,
                                         drain_s=120.0, time_scale=1.0,
                                         dest="icall_out")
        callers.Driver = dialer(args.mode, proxy_port)  # type: ignore[misc]
        result = callers.run(driver_args, threading.Event())
        time.sleep(1.0)  # the last hangups' events and lingers
        fs1, ctl1, t1 = cpu_s(fs_pid), cpu_s(control.pid), time.monotonic()
        sessions1 = sessions_since_start()
    finally:
        for child in reversed(children):
            if child.alive():
                child.proc.send_signal(signal.SIGTERM)
                try:
                    child.proc.wait(20)
                except subprocess.TimeoutExpired:
                    child.proc.kill()
    wire = json.loads(counts.read_text())
    placed = result["placed"]
    reactions = sorted(result["reaction_ms"])

    def pct(p: float) -> float:
        return reactions[min(len(reactions) - 1, int(p * len(reactions)))] if reactions else 0.0
    return {
        "mode": args.mode, "controller": args.controller, "placed": placed, "right": result["right"],
        "wrong": result["wrong"], "unfinished": result["unfinished"], "not_right": result["not_right"][:3],
        "window_s": round(t1 - t0, 1), "sessions": sessions1 - sessions0,
        "switch_cpu_ms_per_call": round((fs1 - fs0) * 1000 / placed, 2),
        "switch_cpu_pct": round((fs1 - fs0) * 100 / (t1 - t0), 1),
        "controller_cpu_ms_per_call": round((ctl1 - ctl0) * 1000 / placed, 2),
        "reaction_p50_p99_ms": [round(pct(0.5), 1), round(pct(0.99), 1)],
        "switch_kb_per_call": round(wire["switch_bytes"] / 1024 / placed, 1),
        "controller_kb_per_call": round(wire["controller_bytes"] / 1024 / placed, 1),
        "frames_per_call": {k: round(v / placed, 2) for k, v in sorted(wire["frames"].items())},
        "events_per_call": {k: round(v / placed, 2) for k, v in sorted(wire["events"].items())},
        "event_kb_per_call": {k: round(v / 1024 / placed, 1) for k, v in sorted(wire["event_bytes"].items())},
        "commands_per_call": {k: round(v / placed, 2) for k, v in sorted(wire["commands"].items())},
        "ckpt_bytes_per_event": round(wire["ckpt_bytes"] / wire["ckpt_events"]) if wire["ckpt_events"] else 0,
        "workdir": str(workdir),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("in", "out"), required=True)
    parser.add_argument("--controller", choices=("icall", "lean"), required=True)
    parser.add_argument("--calls", type=int, default=18)
    parser.add_argument("--cps", type=float, default=3.0)
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument("--set", action="append", default=[], help="icall config section.key=value")
    parser.add_argument("--icall-root", default="",
                        help="run icall from this source tree (e.g. `git archive` of an earlier commit)")
    parser.add_argument("--json", help="append the result to this file (one JSON a line)")
    args = parser.parse_args(argv)

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt  # through run's `finally`: its children are stopped
    signal.signal(signal.SIGTERM, interrupted)
    result = run(args)
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "a") as out:
            out.write(json.dumps(result) + "\n")
    return 0 if result["right"] == result["placed"] else 1


if __name__ == "__main__":
    sys.exit(main())
