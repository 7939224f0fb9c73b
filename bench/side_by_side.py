"""icall beside a lean baseline controller of the same flow, under the same callers.

For each load (--calls most up at once / --cps offered per second, for --duration s)
and each controller, one at a time and each with fresh processes:

  switch      the stand-in: python -m fakeswitch, real time scale (prompts last their
              recorded lengths), 801 answers and talks --talk-s, 802 rings --ring-s
              unanswered, 803 is not registered;
              or, with --switch HOST:PORT[:PASSWORD], a real FreeSWITCH configured as
              the README's "On a real FreeSWITCH" says (803 answers, 801 and 802 are not
              registered; the callers hang up --talk-s into an answered bridge), its
              CPU read from /proc/<pid> of --switch-pid-file
  CRM         python -m fakeswitch.fake_crm with bench.scenarios.crm_table
  controller  icall: `icall run` (bench.capacity_bench's config: SQLite in a temp dir,
              schedule open all week, logging at warning; here also no [cdr] url, so
              CDRs stay in the database, and the CRM cache off, since the bench
              reuses three CRM callers where real ones would differ; --set adds more)
              icall-out: the same in outbound mode (`[outbound] listen`; its inbound
              link looks for a flow variable no call has, so it takes only the calls
              the dialplan's `socket` hands it)
              baseline: bench.baseline_controller (inbound: one thread, a static CRM table)
              baseline-out: bench.baseline_outbound (outbound: one thread, one selector
              over every call's socket)
  callers     bench.callers: places the calls, presses keys, judges every path

CPU is utime+stime from /proc/<pid>/stat (of the process and every process under it:
icall's [service] workers, with any worker that died and was reaped) over the window from the first call placed
to the last one ended, as % of one core; CPU ms per call is the controller's CPU over
that window divided by the calls placed. RSS per call is (RSS at peak concurrency -
RSS idle before the load) / peak live calls. Latencies come from the switch's event
timestamps (see bench.callers). "others%" is what the rest of the machine used
meanwhile: on a shared box, a high value makes the tail latencies worthless. The
exit status is 1 when a call's path was wrong or unfinished. A few numbers, not a test.

    .venv/bin/python -m bench.side_by_side --calls 200 --cps 20 --duration 60
        [--mode inbound|outbound | --controllers icall,baseline] [--loads 200/20,1000/50]
        [--repeat 3] [--quick] [--json out.json]
        [--switch 127.0.0.1:8021 --switch-pid-file /opt/fslab/run/freeswitch.pid]

--mode picks the pair: inbound icall,baseline; outbound icall-out,baseline-out (the
default runs all four on the stand-in, the pair of the mode on a real switch).

--repeat N runs the controllers in turn N times per load and prints each round's
ratio with their spread: on a shared machine one run's ratio can be off by a fifth.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench._procs import CLOCK_TICKS, Child, Sampler, Series, free_port, read_usage
from bench.capacity_bench import wait_for_link, write_config
from bench.report import percentile, print_table
from bench.scenarios import REAL_SWITCH_EXTENSIONS, STAND_IN_EXTENSIONS, crm_table

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
START_TIMEOUT_S = 30.0
CONTROLLERS = ("icall", "icall-out", "baseline", "baseline-out")  # -out: outbound mode
MODES = {"inbound": ("icall", "baseline"), "outbound": ("icall-out", "baseline-out")}
# icall-out's inbound link waits for calls carrying this variable, which none carries.
NO_INBOUND_CALLS = "ivr.flow_variable=icall_bench_outbound_only"
REAL_SWITCH_OUTBOUND = "127.0.0.1:8084"  # the lab dialplan's `socket` target


def child_env() -> None:
    """Children run `-m bench.*` and `-m fakeswitch` from the repository, wherever
    this process was started."""
    paths = os.environ.get("PYTHONPATH", "")
    if str(ROOT) not in paths.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), paths) if p)


@dataclass(frozen=True)
class SwitchAddress:
    host: str
    port: int
    password: str = "ClueCon"


def parse_switch(text: str) -> SwitchAddress:
    """'127.0.0.1:8021[:password]'."""
    host, _, rest = text.partition(":")
    port, _, password = rest.partition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--switch {text!r}: expected HOST:PORT[:PASSWORD]")
    return SwitchAddress(host, int(port), password or "ClueCon")


def start_controller(name: str, switch: SwitchAddress, crm_url: str, args: argparse.Namespace,
                     workdir: Path) -> Child:
    """The controller under test, connected to the switch (or listening for it) and idle."""
    crm = ",".join(f"{k}={v}" for k, v in crm_table(args.extensions).items())
    if name.startswith("baseline"):
        argv = ([PYTHON, "-m", "bench.baseline_outbound", "--listen", args.outbound_listen]
                if name == "baseline-out" else
                [PYTHON, "-m", "bench.baseline_controller", "--host", switch.host, "--port",
                 str(switch.port), "--password", switch.password])
        child = Child(name, [*argv, "--crm", crm], workdir)
        child.wait_line("READY", START_TIMEOUT_S)
        return child
    metrics_port = free_port()
    overrides = ["crm.cache_ttl_s=0", f"ivr.max_concurrent_calls={max(3000, 2 * args.calls)}",
                 f"freeswitch.host={switch.host}", f"freeswitch.password={switch.password}"]
    if name == "icall-out":
        overrides += [f"outbound.listen={args.outbound_listen}", NO_INBOUND_CALLS]
    config = write_config(workdir, switch.port, crm_url, "", metrics_port, [*overrides, *args.set])
    icall_bin = str(VENV_BIN / "icall")
    subprocess.run([icall_bin, "--config", str(config), "db", "upgrade"], check=True,
                   timeout=60, capture_output=True)
    child = Child("icall", [icall_bin, "--config", str(config), "run"], workdir)
    child.wait_listening(metrics_port, START_TIMEOUT_S)
    wait_for_link(child, metrics_port, START_TIMEOUT_S)
    return child


def run_one(controller: str, calls: int, cps: float, duration_s: float,
            args: argparse.Namespace) -> dict:
    """Fresh CRM and controller (and stand-in, unless --switch names a real one); the
    callers' load; measurements."""
    child_env()
    real = getattr(args, "switch", None)
    args.extensions = REAL_SWITCH_EXTENSIONS if real else STAND_IN_EXTENSIONS
    workdir = Path(tempfile.mkdtemp(prefix=f"icall-sbs-{controller}-"))
    children: list[Child] = []
    sampler = None
    try:
        crm_port = free_port()
        if real:
            switch = real
            switch_pid = read_pid(args.switch_pid_file)
            args.outbound_listen = args.outbound_listen or REAL_SWITCH_OUTBOUND
            wait_for_quiet_switch(switch, args.outbound_listen, getattr(args, "wait_quiet_s", 0.0))
            check_switch_is_ours(switch, args.outbound_listen)
        else:
            switch = SwitchAddress("127.0.0.1", free_port())
            args.outbound_listen = f"127.0.0.1:{free_port()}"
            users = f"801=answer:{args.talk_s:g},802=noanswer:{args.ring_s:g}"
            stand_in = Child("stand-in", [PYTHON, "-m", "fakeswitch", "--listen",
                                          f"127.0.0.1:{switch.port}", "--time-scale",
                                          f"{args.time_scale:g}", "--users", users,
                                          "--outbound-target", args.outbound_listen], workdir)
            children.append(stand_in)
            stand_in.wait_listening(switch.port, START_TIMEOUT_S)
            switch_pid = stand_in.pid
        crm_text = ",".join(f"{k}={v}" for k, v in crm_table(args.extensions).items())
        crm = Child("crm", [PYTHON, "-m", "fakeswitch.fake_crm", "--listen",
                            f"127.0.0.1:{crm_port}", "--table", crm_text], workdir)
        children.append(crm)
        crm.wait_listening(crm_port, START_TIMEOUT_S)
        control = start_controller(controller, switch, f"http://127.0.0.1:{crm_port}",
                                   args, workdir)
        children.append(control)
        idle = read_usage(control.pid)
        out = workdir / "callers.json"
        drain_s = args.drain_s if args.drain_s is not None else 60 * args.time_scale + 30
        callers = Child("callers", [
            PYTHON, "-m", "bench.callers", "--host", switch.host, "--port", str(switch.port),
            "--password", switch.password, "--cps", f"{cps:g}",
            "--calls", str(calls), "--duration", f"{duration_s:g}", "--drain-s",
            f"{drain_s:g}", "--time-scale", f"{args.time_scale:g}", "--out", str(out),
            "--dest", "icall_out" if controller.endswith("-out") else "fsm",
            "--lab", "real" if real else "stand-in",
            "--hangup-talking-s", f"{args.talk_s:g}" if real else "0"], workdir)
        children.append(callers)
        sampler = Sampler({"controller": control.pid, "switch": switch_pid,
                           "callers": callers.pid, "crm": crm.pid}, interval_s=0.25).start()
        machine_before = machine_busy_s()
        try:
            callers.proc.wait(duration_s + drain_s + 60)
        except subprocess.TimeoutExpired:
            callers.end()
        machine_after = machine_busy_s()
        sampler.stop()
        if not out.exists():
            raise RuntimeError(f"the callers wrote no result: {callers.tail()}")
        load = json.loads(out.read_text())
        result = measure(controller, calls, cps, duration_s, load, sampler.series, idle)
        result["switch"] = f"{switch.host}:{switch.port}" if real else "stand-in"
        busy_s, wall_s = (after - before for before, after in zip(machine_before, machine_after, strict=True))
        ours = sum(cpu["percent"] for cpu in result["cpu"].values())
        result["machine_percent"] = 100 * busy_s / wall_s
        result["others_percent"] = result["machine_percent"] - ours
        result["controller_alive"] = control.alive()
        result["controller_stderr_lines"] = len(control.err_path.read_text(
            errors="replace").splitlines())
        return result
    finally:
        if sampler is not None:
            sampler.stop()
        for child in reversed(children):
            child.end()
        if args.keep:
            print(f"  ({controller}: logs kept in {workdir})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def read_pid(pid_file: str) -> int:
    """The switch's pid, from its pid file; SystemExit naming the file if there is none."""
    try:
        pid = int(Path(pid_file).read_text().split()[0])
    except (OSError, ValueError, IndexError) as error:
        raise SystemExit(f"--switch-pid-file {pid_file}: no pid ({error})") from None
    if not Path(f"/proc/{pid}/stat").exists():
        raise SystemExit(f"--switch-pid-file {pid_file}: pid {pid} is not running")
    return pid


def check_switch_is_ours(switch: SwitchAddress, outbound_listen: str) -> None:
    """A real switch is shared: refuse to measure while another controller listens on
    the dialplan's outbound port (it would take half the calls, SO_REUSEPORT) and say
    how many channels others have up (their load is in the switch's CPU)."""
    if listening(outbound_listen):
        raise SystemExit(f"something already listens on {outbound_listen} (another "
                         "controller?): the switch's outbound calls would be split")
    channels = switch_api(switch, "show channels count").strip()
    if not channels.startswith("0 total"):
        print(f"  warning: the switch has {channels} before this run (someone else's load)",
              flush=True)
    clients = esl_clients(switch.port)
    if clients:
        print(f"  warning: {clients} other event-socket connection(s) to the switch: an inbound "
              "controller among them takes these calls too", flush=True)


def esl_clients(port: int) -> int:
    """Established TCP connections to the switch's event socket port on this host, seen
    from the client's end (/proc/net/tcp: state 01, remote port)."""
    count = 0
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        if fields[3] == "01" and int(fields[2].split(":")[1], 16) == port:
            count += 1
    return count


def wait_for_quiet_switch(switch: SwitchAddress, outbound_listen: str, at_most_s: float) -> None:
    """A shared lab switch: wait (at most `at_most_s`) for a moment when it has no
    channel and nothing listens on the outbound port for 3 s in a row, so that this
    run starts on a switch nobody else loads."""
    deadline = time.monotonic() + at_most_s
    quiet_since = None
    while time.monotonic() < deadline:
        idle = (switch_api(switch, "show channels count").strip().startswith("0 total")
                and not listening(outbound_listen))
        now = time.monotonic()
        quiet_since = (quiet_since or now) if idle else None
        if quiet_since is not None and now - quiet_since >= 3.0:
            return
        time.sleep(0.5)  # polling another's load: nothing to await
    if at_most_s:
        print(f"  warning: the switch was not quiet for 3 s within {at_most_s:g} s", flush=True)


def listening(address: str) -> bool:
    """Someone listens on `address` (host:port), by /proc/net/tcp (a probe connection
    would be a call to turn away for whoever listens)."""
    port = int(address.rpartition(":")[2])
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
            return True
    return False


def switch_api(switch: SwitchAddress, command: str) -> str:
    """One `api` command's answer over a short-lived python-ESL connection."""
    import ESL

    connection = ESL.ESLconnection(switch.host, str(switch.port), switch.password)
    if not connection.connected():
        raise SystemExit(f"cannot log in to the switch at {switch.host}:{switch.port}")
    try:
        reply = connection.api(command)
        return reply.getBody() if reply is not None else ""
    finally:
        connection.disconnect()


def machine_busy_s() -> tuple[float, float]:
    """(CPU seconds busy on all cores, monotonic now) from /proc/stat: to tell how much
    of the machine something other than the bench used (the box may be shared)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(f) for f in fields]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / CLOCK_TICKS, time.monotonic()


def cpu_seconds(series: Series, start: float, end: float) -> tuple[float, float]:
    """(CPU seconds, wall seconds) between the first and last sample in [start, end]."""
    inside = [s for s in series.samples if start <= s.at <= end]
    if len(inside) < 2:
        return float("nan"), float("nan")
    return inside[-1].cpu_s - inside[0].cpu_s, inside[-1].at - inside[0].at


def rss_near(series: Series, at: float) -> float:
    """RSS (MiB) of the sample closest to `at`."""
    if not series.samples:
        return float("nan")
    return min(series.samples, key=lambda s: abs(s.at - at)).rss_mb


def measure(controller: str, calls: int, cps: float, duration_s: float, load: dict,
            series: dict[str, Series], idle) -> dict:
    start, end = load["started_at"], load["ended_at"]
    cpu = {}
    for name, one in series.items():
        used_s, wall_s = cpu_seconds(one, start, end)
        cpu[name] = {"cpu_s": used_s, "percent": 100 * used_s / wall_s if wall_s else float("nan")}
    placed = max(load["placed"] - load["refused"], 1)
    idle_rss = idle.rss_mb if idle is not None else float("nan")
    peak_rss = rss_near(series["controller"], load["peak_at"])
    return {
        "controller": controller, "calls": calls, "cps": cps, "duration_s": duration_s,
        "window_s": end - start, **{k: load[k] for k in (
            "placed", "skipped", "refused", "dtmf_refused", "right", "wrong", "unfinished", "peak_live",
            "by_scenario", "not_right", "reaction_ms", "takeover_ms")},
        **{f"{kind}_p{q}_ms": percentile(load[f"{kind}_ms"], q / 100)
           for kind in ("reaction", "takeover") for q in (50, 90, 99)},
        "cpu": cpu,
        "cpu_ms_per_call": 1000 * cpu["controller"]["cpu_s"] / placed,
        "rss_idle_mb": idle_rss, "rss_peak_mb": series["controller"].peak("rss_mb"),
        "rss_at_peak_calls_mb": peak_rss,
        "rss_kib_per_call": 1024 * (peak_rss - idle_rss) / max(load["peak_live"], 1),
    }


def parse_loads(text: str) -> list[tuple[int, float]]:
    """'200/20,1000/50' -> [(200, 20.0), (1000, 50.0)]: most calls up at once / calls per s."""
    loads = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        calls, _, cps = item.partition("/")
        loads.append((int(calls), float(cps)))
    return loads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="most calls up at once")
    parser.add_argument("--cps", type=float, default=20.0, help="calls offered per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of offering")
    parser.add_argument("--loads", default="", help="CALLS/CPS,... (instead of --calls/--cps)")
    parser.add_argument("--controllers", default="",
                        help=f"a comma list of {', '.join(CONTROLLERS)} (instead of --mode)")
    parser.add_argument("--mode", choices=sorted(MODES),
                        help="the pair of controllers of one mode: icall and its lean yardstick")
    parser.add_argument("--switch", type=parse_switch, default=None, metavar="HOST:PORT[:PASSWORD]",
                        help="a real FreeSWITCH configured as the README's lab switch, "
                             "instead of a stand-in started for each run")
    parser.add_argument("--switch-pid-file", default="/opt/fslab/run/freeswitch.pid",
                        help="the real switch's pid file (its CPU is read from /proc)")
    parser.add_argument("--wait-quiet-s", type=float, default=0.0,
                        help="a shared real switch: before each run, wait at most this long "
                             "for 3 s without a channel or an outbound listener")
    parser.add_argument("--outbound-listen", default="",
                        help=f"where outbound controllers listen (real switch: {REAL_SWITCH_OUTBOUND})")
    parser.add_argument("--talk-s", type=float, default=5.0,
                        help="how long an answered bridge talks (the stand-in's 801; on a real "
                             "switch the caller hangs up then)")
    parser.add_argument("--ring-s", type=float, default=3.0, help="how long 802 rings")
    parser.add_argument("--time-scale", type=float, default=1.0, help="the stand-in's clock")
    parser.add_argument("--drain-s", type=float, default=None,
                        help="after offering, wait at most this long for calls to end")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 40/10 for 3 s at time scale 0.1")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="an icall config override")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of every controller in turn, for a spread of the ratio")
    parser.add_argument("--json", help="also write every result to this file")
    parser.add_argument("--keep", action="store_true", help="keep each run's logs")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.cps, args.duration, args.time_scale = 40, 10.0, 3.0, 0.1
        args.loads = ""
    loads = parse_loads(args.loads) if args.loads else [(args.calls, args.cps)]
    if args.controllers:
        controllers = [c.strip() for c in args.controllers.split(",") if c.strip()]
    elif args.mode:
        controllers = list(MODES[args.mode])
    else:
        controllers = list(CONTROLLERS if args.switch is None else MODES["inbound"])
    unknown = set(controllers) - set(CONTROLLERS)
    if unknown:
        parser.error(f"unknown controllers: {', '.join(sorted(unknown))}")
    results = []
    for calls, cps in loads:
        # Rounds alternate the controllers, so a machine that slows down for a while
        # (a shared host) weighs on both: each round's ratio compares neighbours.
        for round_number in range(max(args.repeat, 1)):
            for controller in controllers:
                print(f"running {controller} at {calls}/{cps:g} for {args.duration:g} s ...",
                      flush=True)
                started = time.monotonic()
                result = run_one(controller, calls, cps, args.duration, args)
                result["round"] = round_number
                results.append(result)
                print(f"  done in {time.monotonic() - started:.0f} s", flush=True)
    print_table(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0 if all(r["wrong"] == 0 and r["unfinished"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
