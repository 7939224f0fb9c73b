"""Child processes for the capacity benchmark: start, wait for, sample and end them.

Everything here runs in the bench driver's main thread, except `Sampler`, which owns
one daemon thread reading /proc. `python bench/_procs.py fakes` is itself a child: a
fake CRM that names extension 801 for every caller at once, and a fake CDR endpoint,
in their own process so their HTTP threads load neither icall nor the driver.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Child:
    """One process we started, its output in files under `workdir`."""

    def __init__(self, name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None):
        self.name = name
        self.out_path = workdir / f"{name}.out"
        self.err_path = workdir / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_listening(self, port: int, timeout_s: float) -> None:
        """Until 127.0.0.1:`port` accepts a connection; RuntimeError if the process
        died or `timeout_s` passed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): {self.tail()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                try:
                    self.proc.wait(0.1)  # paces the poll; returns early if it dies
                except subprocess.TimeoutExpired:
                    pass
        raise RuntimeError(f"{self.name} did not listen on {port} within {timeout_s:g} s")

    def wait_line(self, prefix: str, timeout_s: float) -> str:
        """The first stdout line starting with `prefix` (polled from the file)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.out_path.read_text().splitlines():
                if line.startswith(prefix):
                    return line
            try:
                self.proc.wait(0.1)  # paces the poll; returns early if it dies
                break
            except subprocess.TimeoutExpired:
                pass
        raise RuntimeError(f"{self.name} printed no {prefix!r} line: {self.tail()}")

    def end(self, timeout_s: float = 10.0, first_signal: int = signal.SIGTERM) -> int | None:
        """`first_signal`, then SIGKILL after `timeout_s`; returns the exit status."""
        if self.alive():
            self.proc.send_signal(first_signal)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def tail(self, lines: int = 5) -> str:
        text = self.err_path.read_text(errors="replace") if self.err_path.exists() else ""
        return " | ".join(text.strip().splitlines()[-lines:])


@dataclass
class Usage:
    """One /proc reading of a process."""

    at: float
    cpu_s: float
    rss_mb: float
    threads: int


def read_usage(pid: int) -> Usage | None:
    """`pid` and every live process under it (icall's [service] workers): CPU includes
    the children already reaped (cutime, cstime), so a worker that died and was
    replaced still counts; RSS is summed (pages shared between workers count twice)."""
    own = _read_one(pid, with_reaped=True)
    if own is None:
        return None
    for child in _descendants(pid):
        usage = _read_one(child, with_reaped=False)
        if usage is not None:
            own = Usage(own.at, own.cpu_s + usage.cpu_s, own.rss_mb + usage.rss_mb,
                        own.threads + usage.threads)
    return own


def _read_one(pid: int, with_reaped: bool) -> Usage | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    utime, stime, cutime, cstime, threads, rss_pages = (int(fields[i]) for i in (11, 12, 13, 14, 17, 21))
    ticks = utime + stime + (cutime + cstime if with_reaped else 0)
    return Usage(time.monotonic(), ticks / CLOCK_TICKS, rss_pages * PAGE_BYTES / 2**20, threads)


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found


@dataclass
class Series:
    """Readings of one process, one per sampling interval."""

    samples: list[Usage] = field(default_factory=list)

    def cpu_share(self, start: float, end: float) -> float:
        """Cores used on average between `start` and `end` (monotonic seconds)."""
        inside = [s for s in self.samples if start <= s.at <= end]
        if len(inside) < 2:
            return float("nan")
        return (inside[-1].cpu_s - inside[0].cpu_s) / (inside[-1].at - inside[0].at)

    def peak_cpu_share(self, start: float, end: float, window_s: float = 3.0) -> float:
        """The busiest `window_s` stretch between start and end, in cores."""
        inside = [s for s in self.samples if start <= s.at <= end]
        best = float("nan")
        j = 0
        for i, later in enumerate(inside):
            while inside[j].at < later.at - window_s and j < i:
                j += 1
            if later.at - inside[j].at >= window_s * 0.7:
                share = (later.cpu_s - inside[j].cpu_s) / (later.at - inside[j].at)
                best = share if best != best else max(best, share)
        return best

    def peak(self, attribute: str) -> float:
        return max((getattr(s, attribute) for s in self.samples), default=float("nan"))


def task_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each live thread of `pid`, by OS thread id: the nanoseconds on
    CPU from /proc/<pid>/task/<tid>/schedstat (task stat's utime+stime are whole clock
    ticks per thread, which rounds a call actor's few milliseconds down to nothing)."""
    cpu = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return cpu
    for tid in tids:
        try:
            on_cpu_ns = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0]
        except (OSError, IndexError):
            continue  # ended meanwhile
        cpu[int(tid)] = int(on_cpu_ns) / 1e9
    return cpu


def thread_names(py_spy: str, pid: int, timeout_s: float = 60.0) -> dict[int, str]:
    """Python thread names by OS thread id, from one `py-spy dump` (not pausing the
    process); {} if py-spy fails or takes longer than `timeout_s`."""
    try:
        dump = subprocess.run([py_spy, "dump", "--nonblocking", "--pid", str(pid)],
                              capture_output=True, text=True, timeout=timeout_s).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {int(m.group(1)): m.group(2)
            for m in re.finditer(r'^Thread (\d+) \([^)]*\): "(.*)"$', dump, re.MULTILINE)}


class Sampler:
    """Reads /proc for several pids every `interval_s`, in its own daemon thread."""

    def __init__(self, pids: dict[str, int], interval_s: float = 0.5):
        self.pids = pids
        self.series = {name: Series() for name in pids}
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proc-sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        """Sampler thread."""
        while True:
            for name, pid in self.pids.items():
                usage = read_usage(pid)
                if usage is not None:
                    self.series[name].samples.append(usage)
            if self._stop.wait(self._interval_s):
                return


def run_fakes() -> int:
    """Child entry point: FakeCrm (801 for everyone, at once) and FakeCdrSink until SIGTERM."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from fakeswitch.fake_cdr import FakeCdrSink
    from fakeswitch.fake_crm import FakeCrm, Reply

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with FakeCrm() as crm, FakeCdrSink() as cdr:
        crm.default = Reply(body=b"801", content_type="text/plain; charset=utf-8")
        print(f"CRM {crm.url}", flush=True)
        print(f"CDR {cdr.url}", flush=True)
        stop.wait(3600)
        print(f"COUNTS crm={crm.request_count} cdr={len(cdr.unique_keys())}", flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["fakes"]:
        raise SystemExit("usage: python bench/_procs.py fakes")
    raise SystemExit(run_fakes())
