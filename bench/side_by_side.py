"""icall beside a lean baseline controller of the same flow, under the same callers.

For each load (--calls most up at once / --cps offered per second, for --duration s)
and each controller, one at a time and each with fresh processes:

  stand-in    python -m fakeswitch, real time scale (prompts last their recorded
              lengths), 801 answers and talks --talk-s, 802 rings --ring-s unanswered,
              803 is not registered
  CRM         python -m fakeswitch.fake_crm with bench.scenarios.CRM_TABLE
  controller  icall: `icall run` (bench.capacity_bench's config: SQLite in a temp dir,
              schedule open all week, logging at warning; here also no [cdr] url, so
              CDRs stay in the database, and the CRM cache off, since the bench
              reuses three CRM callers where real ones would differ; --set adds more)
              baseline: bench.baseline_controller (one thread, a static CRM table)
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
        [--controllers icall,baseline] [--loads 200/20,1000/50] [--repeat 3] [--quick]
        [--json out.json]

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
from pathlib import Path

from bench._procs import CLOCK_TICKS, Child, Sampler, Series, free_port, read_usage
from bench.capacity_bench import wait_for_link, write_config
from bench.report import percentile, print_table
from bench.scenarios import CRM_TABLE

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
START_TIMEOUT_S = 30.0
CONTROLLERS = ("icall", "icall-out", "baseline")  # icall-out: icall in outbound mode


def child_env() -> None:
    """Children run `-m bench.*` and `-m fakeswitch` from the repository, wherever
    this process was started."""
    paths = os.environ.get("PYTHONPATH", "")
    if str(ROOT) not in paths.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), paths) if p)


def start_controller(name: str, switch_port: int, crm_url: str, args: argparse.Namespace,
                     workdir: Path) -> Child:
    """The controller under test, connected to the stand-in and idle."""
    crm = ",".join(f"{k}={v}" for k, v in CRM_TABLE.items())
    if name == "baseline":
        child = Child("baseline", [PYTHON, "-m", "bench.baseline_controller", "--port",
                                   str(switch_port), "--crm", crm], workdir)
        child.wait_line("READY", START_TIMEOUT_S)
        return child
    metrics_port = free_port()
    overrides = ["crm.cache_ttl_s=0", f"ivr.max_concurrent_calls={max(3000, 2 * args.calls)}",
                 *args.set]
    if name == "icall-out":
        overrides.append(f"outbound.listen=127.0.0.1:{args.outbound_port}")
    config = write_config(workdir, switch_port, crm_url, "", metrics_port, overrides)
    icall_bin = str(VENV_BIN / "icall")
    subprocess.run([icall_bin, "--config", str(config), "db", "upgrade"], check=True,
                   timeout=60, capture_output=True)
    child = Child("icall", [icall_bin, "--config", str(config), "run"], workdir)
    child.wait_listening(metrics_port, START_TIMEOUT_S)
    wait_for_link(child, metrics_port, START_TIMEOUT_S)
    return child


def run_one(controller: str, calls: int, cps: float, duration_s: float,
            args: argparse.Namespace) -> dict:
    """Fresh stand-in, CRM and controller; the callers' load; measurements."""
    child_env()
    workdir = Path(tempfile.mkdtemp(prefix=f"icall-sbs-{controller}-"))
    children: list[Child] = []
    sampler = None
    try:
        switch_port, crm_port = free_port(), free_port()
        args.outbound_port = free_port()
        users = f"801=answer:{args.talk_s:g},802=noanswer:{args.ring_s:g}"
        switch = Child("stand-in", [PYTHON, "-m", "fakeswitch", "--listen",
                                    f"127.0.0.1:{switch_port}", "--time-scale",
                                    f"{args.time_scale:g}", "--users", users,
                                    "--outbound-target", f"127.0.0.1:{args.outbound_port}"],
                       workdir)
        children.append(switch)
        crm_table = ",".join(f"{k}={v}" for k, v in CRM_TABLE.items())
        crm = Child("crm", [PYTHON, "-m", "fakeswitch.fake_crm", "--listen",
                            f"127.0.0.1:{crm_port}", "--table", crm_table], workdir)
        children.append(crm)
        switch.wait_listening(switch_port, START_TIMEOUT_S)
        crm.wait_listening(crm_port, START_TIMEOUT_S)
        control = start_controller(controller, switch_port, f"http://127.0.0.1:{crm_port}",
                                   args, workdir)
        children.append(control)
        idle = read_usage(control.pid)
        out = workdir / "callers.json"
        drain_s = args.drain_s if args.drain_s is not None else 60 * args.time_scale + 30
        callers = Child("callers", [
            PYTHON, "-m", "bench.callers", "--port", str(switch_port), "--cps", f"{cps:g}",
            "--calls", str(calls), "--duration", f"{duration_s:g}", "--drain-s",
            f"{drain_s:g}", "--time-scale", f"{args.time_scale:g}", "--out", str(out),
            "--dest", "icall_out" if controller == "icall-out" else "fsm"], workdir)
        children.append(callers)
        sampler = Sampler({"controller": control.pid, "stand-in": switch.pid,
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
    parser.add_argument("--controllers", default=",".join(CONTROLLERS))
    parser.add_argument("--talk-s", type=float, default=5.0, help="how long 801 talks")
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
    controllers = [c.strip() for c in args.controllers.split(",") if c.strip()]
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
