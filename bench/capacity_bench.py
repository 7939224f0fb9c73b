"""Capacity benchmark: how many calls per second can icall take, in its own process?

For each rate in --rates it starts three fresh processes and drives them from this one:

  stand-in   python -m fakeswitch (time scale 1, user 801 answers and talks --talk-s)
  fakes      bench/_procs.py fakes: a CRM naming 801 for every caller at once, a CDR sink
  icall      .venv/bin/icall run, SQLite in a temp dir, logging at warning, /metrics on

This process places calls through its own ESL connection (`bgapi originate
{origination_caller_id_number=<unique>,fake_dtmf=2}loopback/fsm/default &park`: welcome,
main menu, 2 = sales, the CRM's 801 is bridged and talks --talk-s) at a steady rate for
--duration-s, then waits (at most --drain-s) for the calls to end. A second ESL
connection subscribed to CHANNEL_EXECUTE, CHANNEL_EXECUTE_COMPLETE and
CHANNEL_HANGUP_COMPLETE only, filtered to icall's calls (`variable_ivr_app icall`),
gives the switch's own timestamps (Event-Date-Timestamp) of:

  welcome->menu  welcome playback EXECUTE_COMPLETE -> main menu EXECUTE (same Unique-ID):
                 icall's reaction (event to icall, decision, sendmsg back)
  menu->next     main menu EXECUTE_COMPLETE -> the next EXECUTE (the bridge settings)
  no menu        placed calls whose main menu never started
  peak calls     most icall-controlled channels up at once (from those events)

/proc/<pid>/stat gives the CPU (utime+stime over wall time, in cores: 1.00 = one core
busy) of icall, the stand-in and this driver, sampled every 0.5 s; RSS and thread count
are icall's peaks. CPU columns are averages over the placing window / the busiest 3 s.
The details add icall's CPU by thread kind over the placing window (per-thread
/proc/<pid>/task/<tid>/schedstat, named through one `py-spy dump`).

    .venv/bin/python bench/capacity_bench.py [--rates 20,50,100] [--duration-s 30]
        [--talk-s 20] [--set ivr.hangup_linger_s=5]
        [--profile-rate 100 --profile-out /tmp/prof.txt [--profile-gil]]
    .venv/bin/python bench/capacity_bench.py --analyze /tmp/prof.txt

With --profile-rate, py-spy records icall for --profile-s seconds starting
--profile-after-s into that rate's placing window (py-spy's sampling costs CPU on its
own, and with ~3,000 threads it falls behind: use --profile-gil and a low --profile-hz).
--analyze prints a recorded profile's hot spots.

Not a test: it asserts nothing and prints numbers. Ctrl-C ends every child process.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._procs import Child, Sampler, free_port, task_cpu, thread_names  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
START_TIMEOUT_S = 30.0
WATCHED = "CHANNEL_EXECUTE CHANNEL_EXECUTE_COMPLETE CHANNEL_HANGUP_COMPLETE"
WELCOME, MAIN_MENU = "1000.wav", "1001.wav"


@dataclass
class CallTrack:
    """One icall-controlled channel, in the switch's clock (seconds)."""

    caller: str
    welcome_done: float | None = None
    menu_started: float | None = None
    menu_done: float | None = None
    after_menu: float | None = None
    bridged: bool = False
    ended: bool = False


class CallWatch:
    """A filtered ESL subscription folding events into CallTracks by Unique-ID.

    Its connection is made, read and closed by its own thread only (python-ESL is not
    safe across threads); the other threads read under `changed`."""

    def __init__(self, port: int):
        self.port = port
        self.calls: dict[str, CallTrack] = {}
        self.by_caller: dict[str, str] = {}
        self.live = 0
        self.peak_live = 0
        self.events = 0
        self.changed = threading.Condition()
        self._stopping = threading.Event()
        self._subscribed = threading.Event()
        self._failed = ""
        self._thread = threading.Thread(target=self._read, name="call-watch", daemon=True)

    def start(self) -> CallWatch:
        self._thread.start()
        if not self._subscribed.wait(START_TIMEOUT_S):
            raise RuntimeError(f"the watching ESL client could not subscribe {self._failed}")
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(10)

    def wait_all_ended(self, callers: list[str], timeout_s: float) -> float:
        """Until every caller's channel has hung up, at most `timeout_s`; the time taken."""
        started = time.monotonic()

        def all_ended() -> bool:
            return all((uuid := self.by_caller.get(c)) is not None and self.calls[uuid].ended
                       for c in callers)

        with self.changed:
            self.changed.wait_for(all_ended, timeout_s)
        return time.monotonic() - started

    def _read(self) -> None:
        """Runs in the call-watch thread."""
        import ESL

        connection = ESL.ESLconnection("127.0.0.1", str(self.port), "ClueCon")
        if not connection.connected():
            self._failed = "(no connection)"
            return
        try:
            for line in (f"event plain {WATCHED}", "filter variable_ivr_app icall"):
                reply = connection.sendRecv(line)
                if reply is None or not (reply.getHeader("Reply-Text") or "").startswith("+OK"):
                    self._failed = f"({line!r} refused)"
                    return
            self._subscribed.set()
            while not self._stopping.is_set():
                event = connection.recvEventTimed(100)
                if event is not None:
                    self._fold(event)
        finally:
            connection.disconnect()

    def _fold(self, event) -> None:
        get = event.getHeader
        uuid, stamp, name = get("Unique-ID"), get("Event-Date-Timestamp"), get("Event-Name")
        if not uuid or not stamp:
            return
        at_s = int(stamp) / 1e6
        with self.changed:
            self.events += 1
            call = self.calls.get(uuid)
            if call is None:
                if name == "CHANNEL_HANGUP_COMPLETE":
                    return
                call = self.calls[uuid] = CallTrack(get("Caller-Caller-ID-Number") or "")
                self.by_caller[call.caller] = uuid
                self.live += 1
                self.peak_live = max(self.peak_live, self.live)
            if name == "CHANNEL_HANGUP_COMPLETE":
                if not call.ended:
                    call.ended = True
                    self.live -= 1
                    self.changed.notify_all()
                return
            app, data = get("Application") or "", get("Application-Data") or ""
            if name == "CHANNEL_EXECUTE_COMPLETE":
                if app == "playback" and data.endswith(WELCOME) and call.welcome_done is None:
                    call.welcome_done = at_s
                elif app == "play_and_get_digits" and MAIN_MENU in data and call.menu_done is None:
                    call.menu_done = at_s
            elif name == "CHANNEL_EXECUTE":
                if app == "play_and_get_digits" and MAIN_MENU in data and call.menu_started is None:
                    call.menu_started = at_s
                elif call.menu_done is not None and call.after_menu is None:
                    call.after_menu = at_s
                if app == "bridge" and data == "user/801":
                    call.bridged = True


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@dataclass
class RateResult:
    """Everything measured at one rate; `fold` turns raw readings into the row."""

    rate: float
    workdir: str = ""
    icall_pid: int = 0
    callers: list[str] = field(default_factory=list)
    refused: int = 0
    placing_started: float = 0.0
    placing_ended: float = 0.0
    max_late_s: float = 0.0
    live_at_end: int = 0
    peak_sessions: int = 0
    drain_s: float = float("nan")
    metrics: dict[str, float] = field(default_factory=dict)
    icall_exit: int | None = None
    reaction: list[float] = field(default_factory=list)
    reaction_late_p99: float = float("nan")
    menu_next: list[float] = field(default_factory=list)
    no_menu: int = 0
    bridged: int = 0
    ended: int = 0
    peak_live: int = 0
    placed_rate: float = float("nan")
    icall_cpu: float = float("nan")
    icall_cpu_peak: float = float("nan")
    icall_rss: float = float("nan")
    icall_threads: int = 0
    switch_cpu: float = float("nan")
    switch_cpu_peak: float = float("nan")
    driver_cpu: float = float("nan")
    fakes_counts: str = ""
    stderr_lines: int = 0
    stderr_top: list[tuple[str, int]] = field(default_factory=list)
    thread_cpu: list[tuple[str, float]] = field(default_factory=list)

    def note_thread_cpu(self, before: dict[int, float], after: dict[int, float], series,
                        names: dict[int, str]) -> None:
        """icall's CPU over the placing window by thread kind (call-* for all call
        actors); threads that ended within the window are only in the process total."""
        window = self.placing_ended - self.placing_started
        if window <= 0 or not names:
            return
        spent: Counter[str] = Counter()
        for tid, cpu_s in after.items():
            kind = re.sub(r"\d+", "#", re.sub(r"^call-[0-9a-f]{8}$", "call-*", names.get(tid, "?")))
            spent[kind] += cpu_s - before.get(tid, 0.0)
        total = series.cpu_share(self.placing_started, self.placing_ended) * window
        spent["(threads ended in the window, and the gap to /proc/<pid>/stat)"] = total - sum(spent.values())
        self.thread_cpu = [(kind, cpu_s / window) for kind, cpu_s in spent.most_common()]

    def note_sessions(self, status: str) -> None:
        match = re.search(r"^(\d+) session\(s\) - peak", status, re.MULTILINE)
        if match:
            self.peak_sessions = max(self.peak_sessions, int(match.group(1)))

    def fold(self, watch: CallWatch | None, sampler: Sampler | None, children: list[Child]) -> None:
        if self.placing_ended > self.placing_started and len(self.callers) > 1:
            self.placed_rate = (len(self.callers) - 1) / (self.placing_ended - self.placing_started)
        if watch is not None:
            self._fold_calls(watch)
        if sampler is not None and self.placing_ended:
            window = (self.placing_started, self.placing_ended)
            icall, switch = sampler.series["icall"], sampler.series["stand-in"]
            self.icall_cpu, self.icall_cpu_peak = icall.cpu_share(*window), icall.peak_cpu_share(*window)
            self.switch_cpu, self.switch_cpu_peak = switch.cpu_share(*window), switch.peak_cpu_share(*window)
            self.driver_cpu = sampler.series["driver"].cpu_share(*window)
            self.icall_rss, self.icall_threads = icall.peak("rss_mb"), int(icall.peak("threads"))
        for child in children:
            if child.name == "fakes":
                self.fakes_counts = next((line for line in child.out_path.read_text().splitlines()
                                          if line.startswith("COUNTS")), "")
            elif child.name == "icall":
                lines = child.err_path.read_text(errors="replace").splitlines()
                self.stderr_lines = len(lines)
                shapes = Counter(re.sub(r"[0-9a-f-]{36}|\d+", "#", line)[:110] for line in lines)
                self.stderr_top = shapes.most_common(6)

    def _fold_calls(self, watch: CallWatch) -> None:
        with watch.changed:
            tracks = [watch.calls.get(watch.by_caller.get(c, "")) for c in self.callers]
            self.peak_live = watch.peak_live
        timed = []
        for call in tracks:
            self.ended += call is not None and call.ended
            if call is None or call.menu_started is None:
                self.no_menu += 1
                continue
            self.bridged += call.bridged
            if call.welcome_done is not None:
                timed.append((call.welcome_done, call.menu_started - call.welcome_done))
            if call.menu_done is not None and call.after_menu is not None:
                self.menu_next.append(call.after_menu - call.menu_done)
        self.reaction = [delay for _, delay in timed]
        if timed:
            timed.sort()
            self.reaction_late_p99 = percentile([d for _, d in timed[len(timed) * 2 // 3:]], 0.99)


def write_config(workdir: Path, switch_port: int, crm_url: str, cdr_url: str,
                 metrics_port: int, overrides: list[str]) -> Path:
    """icall's defaults except what points at the fakes, a schedule open all day (the
    main menu whatever the hour), logging at warning, and --set overrides."""
    sections: dict[str, dict[str, str]] = {
        "freeswitch": {"host": "127.0.0.1", "port": str(switch_port), "password": "ClueCon"},
        "database": {"url": f"sqlite:///{workdir / 'icall.sqlite3'}"},
        "crm": {"base_url": crm_url},
        "cdr": {"url": cdr_url},
        "schedule": {"timezone": "UTC", "weekday_open": "00:00-24:00",
                     "weekend_open": "00:00-24:00", "evening": "closed"},
        "logging": {"level": "warning"},
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
    }
    for item in overrides:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        sections.setdefault(section, {})[name] = value
    text = "".join(f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()) + "\n"
                   for section, keys in sections.items())
    path = workdir / "config.ini"
    path.write_text(text)
    return path


def read_metrics(port: int) -> dict[str, float]:
    """icall's GET /metrics as {name: value}; {} if it does not answer within 5 s."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name and not name.startswith("#"):
            values[name.removeprefix("icall_")] = float(value)
    return values


def wait_for_link(icall: Child, metrics_port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if read_metrics(metrics_port).get("esl_connected") == 1:
            return
        if not icall.alive():
            break
        threading.Event().wait(0.2)  # polling an HTTP gauge: nothing to await
    raise RuntimeError(f"icall never connected to the stand-in: {icall.tail()}")


def run_rate(rate: float, args: argparse.Namespace) -> RateResult:
    """Fresh stand-in, fakes and icall; place calls at `rate`; measure; end them all."""
    result = RateResult(rate)
    workdir = Path(tempfile.mkdtemp(prefix=f"icall-capacity-{rate:g}-"))
    result.workdir = str(workdir)
    children: list[Child] = []
    sampler = watch = None
    try:
        switch_port, metrics_port = free_port(), free_port()
        switch = Child("stand-in", [PYTHON, "-m", "fakeswitch", "--listen", f"127.0.0.1:{switch_port}",
                                    "--password", "ClueCon", "--time-scale", "1",
                                    "--users", f"801=answer:{args.talk_s:g}"], workdir)
        children.append(switch)
        fakes = Child("fakes", [PYTHON, str(ROOT / "bench" / "_procs.py"), "fakes"], workdir)
        children.append(fakes)
        switch.wait_listening(switch_port, START_TIMEOUT_S)
        crm_url = fakes.wait_line("CRM ", START_TIMEOUT_S).split()[1]
        cdr_url = fakes.wait_line("CDR ", START_TIMEOUT_S).split()[1]
        config = write_config(workdir, switch_port, crm_url, cdr_url, metrics_port, args.set)
        icall_bin = str(VENV_BIN / "icall")
        subprocess.run([icall_bin, "--config", str(config), "db", "upgrade"], check=True,
                       timeout=60, capture_output=True)
        icall = Child("icall", [icall_bin, "--config", str(config), "run"], workdir)
        children.append(icall)
        icall.wait_listening(metrics_port, START_TIMEOUT_S)
        wait_for_link(icall, metrics_port, START_TIMEOUT_S)
        result.icall_pid = icall.pid
        sampler = Sampler({"icall": icall.pid, "stand-in": switch.pid, "driver": os.getpid()}).start()
        watch = CallWatch(switch_port).start()
        cpu_before = task_cpu(icall.pid)
        place_calls(rate, args, switch_port, result, watch, icall, children, workdir)
        result.note_thread_cpu(cpu_before, task_cpu(icall.pid), sampler.series["icall"],
                               thread_names(str(VENV_BIN / "py-spy"), icall.pid))
        result.drain_s = watch.wait_all_ended(result.callers, args.drain_s)
        result.metrics = read_metrics(metrics_port)
    finally:
        for child in reversed(children):
            if child.name == "py-spy":  # let it finish and write its file; SIGINT makes it write
                try:
                    child.proc.wait(max(1.0, args.profile_s + args.profile_after_s + 30
                                        - (time.monotonic() - result.placing_started)))
                except subprocess.TimeoutExpired:
                    pass
                child.end(30, signal.SIGINT)
                continue
            status = child.end()
            if child.name == "icall":
                result.icall_exit = status
        if sampler is not None:
            sampler.stop()
        if watch is not None:
            watch.stop()
    result.fold(watch, sampler, children)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
        result.workdir = "(removed; --keep keeps it)"
    return result


def place_calls(rate: float, args: argparse.Namespace, switch_port: int, result: RateResult,
                watch: CallWatch, icall: Child, children: list[Child], workdir: Path) -> None:
    """Paced originates on our own command connection (this thread only), with an
    `api status` every 2 s for the switch's own session count."""
    import ESL

    commands = ESL.ESLconnection("127.0.0.1", str(switch_port), "ClueCon")
    if not commands.connected():
        raise RuntimeError("the driver could not connect to the stand-in")
    pace = threading.Event()  # never set: a wait that paces, nothing to await
    total = int(rate * args.duration_s)
    profile_at = args.profile_after_s if args.profile_rate == rate else None
    next_status = 0.0
    result.placing_started = time.monotonic()
    try:
        for n in range(total):
            due = result.placing_started + n / rate
            pace.wait(max(0.0, due - time.monotonic()))
            now = time.monotonic()
            result.max_late_s = max(result.max_late_s, now - due)
            if profile_at is not None and now - result.placing_started >= profile_at:
                children.append(start_profiler(icall.pid, args, workdir))
                profile_at = None
            if now >= next_status:
                next_status = now + 2.0
                result.note_sessions(commands.api("status").getBody() or "")
            caller = f"5{int(rate):03d}{n:06d}"
            reply = commands.bgapi("originate", f"{{origination_caller_id_number={caller},"
                                   "fake_dtmf=2}loopback/fsm/default &park")
            text = reply.getHeader("Reply-Text") if reply is not None else None
            if text and text.startswith("+OK"):
                result.callers.append(caller)
            else:
                result.refused += 1
        result.placing_ended = time.monotonic()
        result.live_at_end = watch.live
    finally:
        commands.disconnect()


def start_profiler(pid: int, args: argparse.Namespace, workdir: Path) -> Child:
    argv = [str(VENV_BIN / "py-spy"), "record", "--pid", str(pid), "--duration",
            str(args.profile_s), "--format", "raw", "--threads", "--nonblocking",
            "--rate", str(args.profile_hz), "-o", args.profile_out]
    if args.profile_gil:
        argv.append("--gil")
    return Child("py-spy", argv, workdir)


FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _frame_key(frame: str, root: str) -> tuple[str, bool]:
    """("file:function", is icall's own code) for one py-spy frame `func (file:line)`."""
    match = FRAME.match(frame)
    if match is None:
        return frame, False
    path = match.group("file")
    ours = path.startswith(root + "/") or path.startswith(("actors/", "ivr/", "storage/", "service/"))
    short = path.removeprefix(root + "/") if ours else path.rsplit("/", 1)[-1]
    ours = ours and short.startswith(("actors/", "ivr/", "storage/", "service/"))
    return f"{short}:{match.group('func')}", ours


def print_profile(path: Path, root: str, top: int = 15) -> None:
    """Hot spots of a py-spy `--format raw` file: by thread kind, own frame, inclusive
    function, and charged to the deepest frame of icall's own code."""
    threads: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    charged: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = "?"
        if frames[0].startswith(("thread (", "process ")):
            thread = re.sub(r"call-[0-9a-f]{8}", "call-*", frames.pop(0).partition(": ")[2] or "?")
            thread = re.sub(r"\d+", "#", thread)
        keys = [_frame_key(f, root) for f in frames]
        total += count
        threads[thread] += count
        if keys:
            own[keys[-1][0]] += count
        for key in {k for k, _ in keys}:
            inclusive[key] += count
        ours = [k for k, is_ours in keys if is_ours]
        fallback = f"(no icall frame: {keys[-1][0] if keys else '?'} in {thread})"
        charged[ours[-1] if ours else fallback] += count
    print(f"profile {path}: {total} samples")
    for title, counts in (("by thread", threads), ("own frame", own), ("inclusive", inclusive),
                          ("charged to the deepest icall frame", charged)):
        print(f"  {title}:")
        for key, count in counts.most_common(top):
            print(f"    {count / max(total, 1):6.1%}  {key}")


def ms(value: float) -> str:
    return "-" if value != value else f"{value * 1000:.0f}"


def trio(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{ms(percentile(values, 0.5))}/{ms(percentile(values, 0.99))}/{ms(max(values))}"


HEADER = (f"{'rate':>5} {'placed/s':>8} {'peak calls':>10} {'welcome->menu ms':>17} "
          f"{'menu->next ms':>14} {'no menu':>7} {'bridged':>8} {'ended':>6} "
          f"{'icall CPU':>10} {'RSS MB':>6} {'thr':>5} {'stand-in':>9} {'driver':>6}")


def print_row(r: RateResult) -> None:
    placed = f"{r.placed_rate:.1f}"
    print(f"{r.rate:>5g} {placed:>8} {r.peak_live:>10} {trio(r.reaction):>17} "
          f"{trio(r.menu_next):>14} {r.no_menu:>7} {r.bridged:>8} {r.ended:>6} "
          f"{r.icall_cpu:>5.2f}/{r.icall_cpu_peak:<4.2f} {r.icall_rss:>6.0f} {r.icall_threads:>5} "
          f"{r.switch_cpu:>4.2f}/{r.switch_cpu_peak:<4.2f} {r.driver_cpu:>6.2f}", flush=True)


def print_details(r: RateResult) -> None:
    m = r.metrics
    keys = ("calls_started", "calls_overflowed", "calls_failed", "events_routed", "events_unowned",
            "calls_live", "calls_tracked")
    shown = ", ".join(f"{k} {m[k]:.0f}" for k in keys if k in m) or "no answer"
    print(f"  rate {r.rate:g}: {len(r.callers)} placed ({r.refused} refused), pacing late by at most "
          f"{r.max_late_s * 1000:.0f} ms; switch sessions peak {r.peak_sessions} (all legs); "
          f"welcome->menu p99 in the last third {ms(r.reaction_late_p99)} ms")
    print(f"    icall /metrics at the end: {shown}")
    print(f"    fakes: {r.fakes_counts or '?'}; drain {r.drain_s:.1f} s; icall exit {r.icall_exit}; "
          f"icall stderr lines {r.stderr_lines}; workdir {r.workdir}")
    if r.thread_cpu:
        print("    icall CPU by thread over the placing window (cores): " + ", ".join(
            f"{kind} {share:.3f}" for kind, share in r.thread_cpu if abs(share) >= 0.001))
    for line, count in r.stderr_top:
        print(f"      {count:>5} x {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="20,50,100", help="calls per second, comma-separated")
    parser.add_argument("--duration-s", type=float, default=30.0, help="placing window per rate")
    parser.add_argument("--talk-s", type=float, default=20.0, help="how long user 801 talks")
    parser.add_argument("--drain-s", type=float, default=90.0,
                        help="after placing, wait at most this long for the calls to end")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--profile-rate", type=float, default=None)
    parser.add_argument("--profile-after-s", type=float, default=10.0)
    parser.add_argument("--profile-s", type=int, default=20)
    parser.add_argument("--profile-hz", type=int, default=20, help="py-spy samples per second")
    parser.add_argument("--profile-out", default="/tmp/icall-profile.txt")
    parser.add_argument("--profile-gil", action="store_true", help="sample only the GIL holder")
    parser.add_argument("--keep", action="store_true", help="keep each rate's temp dir (logs, db)")
    parser.add_argument("--analyze", metavar="RAW", help="print the hot spots of a py-spy raw file")
    args = parser.parse_args(argv)
    if args.analyze:
        print_profile(Path(args.analyze), str(ROOT))
        return 0
    rates = [float(r) for r in re.split(r"[,\s]+", args.rates.strip()) if r]
    print(f"{args.duration_s:g} s of calls per rate; each call: welcome 1.5 s, main menu, 2, CRM "
          f"answers 801 at once, 801 answers and talks {args.talk_s:g} s; stand-in time scale 1; "
          f"overrides: {', '.join(args.set) or 'none'}")
    print("ms: p50/p99/max on the switch's clock; CPU in cores, avg/peak-3s over the placing window\n")
    print(HEADER, flush=True)
    results = []
    try:
        for rate in rates:
            results.append(run_rate(rate, args))
            print_row(results[-1])
    except KeyboardInterrupt:
        print("interrupted: every child process was ended", file=sys.stderr)
    print("\ndetails")
    for r in results:
        print_details(r)
    if args.profile_rate is not None and Path(args.profile_out).exists():
        print()
        print_profile(Path(args.profile_out), str(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
