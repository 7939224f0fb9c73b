"""Resync after a (re)connect with many live channels: how long until every channel
that may be ours has been looked at, and whether new calls wait meanwhile.

The stand-in runs in this process (real time scale). --channels calls are placed while
no icall runs, so they sit parked in the IVR's park extension, never touched; a tenth
of them (every tenth) are first put in the sales queue with a handed-off checkpoint,
as a caller queued by an earlier icall would be. Then `icall run` starts (SQLite in a
temp dir, logging at info) and this process measures, from the moment icall's event
link is up:

  listed      the `show channels` listing processed (icall's "resync:" log line)
  looked p50/p99/all   each parked channel's first command from icall (its take-over)
  probe       a call placed the moment the link is up: CHANNEL_PARK -> its first command
              (event routing is not held up by the resync)
  touched     commands sent to the queued (handed-off) channels: must be 0

    .venv/bin/python -m bench.resync_bench [--channels 3000]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench._procs import Child, free_port
from bench.capacity_bench import write_config
from bench.report import percentile
from fakeswitch import FakeSwitch

ROOT = Path(__file__).resolve().parent.parent
ICALL = str(ROOT / ".venv" / "bin" / "icall")
HANDED_OFF = json.dumps({"v": 1, "s": "final_loop", "g": 5, "p": ["call_sales", "final_loop"],
                         "n": 4, "w": [], "d": {}, "h": 1, "x": ["transfer", "fifo_sales XML new_sales"]},
                        separators=(",", ":"))


def first_command_at(switch: FakeSwitch, uuids: list[str], timeout_s: float) -> dict[str, float]:
    """When (time.monotonic) each channel got its first command from icall, as the
    stand-in noted it; polled every 0.1 s until all have one."""
    def noted() -> dict[str, float]:
        records = switch.switch.records
        return {u: records[u].first_received_at for u in uuids
                if u in records and records[u].first_received_at}

    deadline = time.monotonic() + timeout_s
    seen = switch._call(noted)
    while len(seen) < len(uuids) and time.monotonic() < deadline:
        time.sleep(0.1)  # polling the stand-in's state: there is no event to await
        seen = switch._call(noted)
    return seen


def log_line(child: Child, pattern: str, timeout_s: float) -> str:
    """The first line of the child's log (stderr) matching `pattern`, polled."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = re.search(pattern, child.err_path.read_text(errors="replace"))
        if found:
            return found.group(0)
        if not child.alive():
            break
        time.sleep(0.05)  # polling a log file: there is no event to await
    raise RuntimeError(f"icall logged no {pattern!r}: {child.tail()}")


def decision_delays(child: Child) -> list[float]:
    """Seconds from icall's "subscribed" log line to each "taking over:" line (both
    on icall's own clock, as logged)."""
    stamps = re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*?(subscribed|taking over: )",
                        child.err_path.read_text(errors="replace"), re.M)

    def seconds(stamp: str) -> float:
        return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()

    ups = [seconds(t) for t, what in stamps if what == "subscribed"]
    if not ups:
        return []
    return sorted(seconds(t) - ups[0] for t, what in stamps if what != "subscribed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=3000)
    parser.add_argument("--keep", action="store_true", help="keep icall's logs")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="icall-resync-"))
    switch = FakeSwitch(port=0, password="ClueCon", time_scale=1.0).start()
    icall = None
    try:
        parked, queued = [], []
        for n in range(args.channels):
            variables = {"fake_dtmf": "1"}
            if n % 10 == 9:
                variables["fake_fifo"] = "real"
            uuid = switch.place_call(caller_id=f"5557{n:05d}", variables=variables)
            (queued if n % 10 == 9 else parked).append(uuid)
        for uuid in parked + queued:
            if not switch.wait_parked(uuid, timeout=120):
                raise RuntimeError(f"channel {uuid} never parked")
        for uuid in queued:  # an earlier icall queued these callers and marked them
            switch._call(lambda u=uuid: switch.switch.channels[u].set_var("icall_ckpt", HANDED_OFF))
        def forget_received() -> None:
            for record in switch.switch.records.values():
                record.received.clear()
                record.first_received_at = 0.0

        switch._call(forget_received)
        config = write_config(workdir, switch.port, "http://127.0.0.1:9", "", free_port(),
                              ["logging.level=info", "crm.enabled=false",
                               f"ivr.max_concurrent_calls={args.channels + 100}"])
        subprocess.run([ICALL, "--config", str(config), "db", "upgrade"], check=True,
                       timeout=60, capture_output=True)
        icall = Child("icall", [ICALL, "--config", str(config), "run"], workdir)
        log_line(icall, r"subscribed|event connection .* up", 60)
        up_at = time.monotonic()
        probe = switch.place_call(caller_id="5559999", variables={"fake_dtmf": "1"})
        looked = first_command_at(switch, [probe, *parked], 300)
        probe_at = looked.pop(probe, float("nan")) - up_at
        listed = log_line(icall, r"resync: \d+ live channels listed.*", 300)
        delays = sorted(t - up_at for t in looked.values())
        touched = sum(len(switch.call_record(u).received) for u in queued)
        decided = decision_delays(icall)
        print(f"channels {args.channels} (parked {len(parked)}, queued {len(queued)})")
        print(f"  {listed.strip()}")
        print(f"  looked at {len(looked)}/{len(parked)}: first {delays[0] if delays else float('nan'):.2f} s, "
              f"p10 {percentile(delays, 0.10):.2f} s, p50 {percentile(delays, 0.50):.2f} s, "
              f"p99 {percentile(delays, 0.99):.2f} s, all {delays[-1] if delays else float('nan'):.2f} s "
              f"after the link came up")
        if decided:
            print(f"  icall's take-over decisions (its log): {len(decided)}, p50 "
                  f"{percentile(decided, 0.50):.2f} s, p99 {percentile(decided, 0.99):.2f} s, "
                  f"all {decided[-1]:.2f} s after its link came up")
        print(f"  probe call placed at link-up: first command after {probe_at:.3f} s")
        print(f"  commands to queued (handed-off) channels: {touched}")
        return 0 if len(looked) == len(parked) and touched == 0 else 1
    finally:
        if icall is not None:
            icall.end()
        switch.stop()
        if args.keep:
            print(f"(logs in {workdir})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
