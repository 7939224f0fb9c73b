"""`[service] cpu`: which CPU an icall process runs on.

Why one CPU by default: an icall process runs one Python thread at a time (the GIL),
and its threads hand work to each other all the time (the event reader to a call's
actor, the actor to the Commander and the DbWriter). A thread woken on another core
costs about ten times the CPU of one woken on the same core: measured with
bench/handoff_bench.py on a 2-core machine, a message and its answer between two
threads cost 45 µs of CPU across cores and 4.5 µs on one. With side_by_side at
200 calls / 20 per second, pinning cut icall's CPU per call by a fifth. Nothing
runs in parallel that could use a second core: the switch's own threads use the
others (and this one, whenever icall waits).

    one       this process runs on one of the CPUs it may use (default): the highest
              numbered, or with `[service] workers`, worker k the k-th from the top
    all       wherever the kernel puts each thread (the behaviour before this setting)
    2,3       these CPUs: the process (worker k) runs on the k-th of them, round robin

The choice is made before any thread starts and holds for every thread made later.
A CPU the process may not use (systemd's CPUAffinity=, a container's cpuset), or a
pinning the kernel refuses (a seccomp filter without sched_setaffinity answers EPERM),
is logged and the process then runs where the kernel puts it: a tuning knob never
stops calls from being answered. What is logged is what the kernel says it got.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


def chosen_cpus(setting: str, allowed: set[int], worker: int | None) -> set[int] | None:
    """The CPUs for this process (None: leave it to the kernel). `setting` as
    ivr.config.cpu_choice gives it; `allowed`: the CPUs
    the process may use now; `worker`: its number with `[service] workers`, else None."""
    index = worker or 0
    if setting == "all" or not allowed:
        return None
    if setting == "one":
        ordered = sorted(allowed, reverse=True)
        return {ordered[index % len(ordered)]}
    listed = [int(part) for part in setting.split(",")]
    return {listed[index % len(listed)]}


def pin_process(setting: str, worker: int | None = None) -> set[int] | None:
    """Apply `[service] cpu` to every thread of this process; the CPUs chosen, or None
    when the process is left where the kernel puts it."""
    allowed = os.sched_getaffinity(0)
    cpus = chosen_cpus(setting, allowed, worker)
    if cpus is None:
        return None
    if not cpus <= allowed:
        logger.error("[service] cpu = %s: CPU %s is not one this process may use (%s); "
                     "running on all of those", setting, ",".join(map(str, sorted(cpus - allowed))),
                     ",".join(map(str, sorted(allowed))))
        return None
    refused: list[OSError] = []
    for task in _threads():
        try:
            os.sched_setaffinity(task, cpus)
        except ProcessLookupError:
            continue  # a thread that just ended
        except OSError as exc:  # EPERM: a seccomp filter, or a thread not ours to move
            refused.append(exc)
    if os.sched_getaffinity(0) != cpus:
        why = refused[0].strerror if refused else "the kernel kept the old set"
        hint = (" (under systemd, the unit's SystemCallFilter= must allow sched_setaffinity)"
                if any(exc.errno == errno.EPERM for exc in refused) else "")
        logger.warning("[service] cpu = %s: cannot pin this process to CPU %s: sched_setaffinity: "
                       "%s%s; it runs unpinned, on CPU %s", setting, ",".join(map(str, sorted(cpus))),
                       why, hint, ",".join(map(str, sorted(os.sched_getaffinity(0)))))
        return None
    if refused:
        logger.warning("[service] cpu = %s: %d thread(s) could not be moved to CPU %s (%s)", setting,
                       len(refused), ",".join(map(str, sorted(cpus))), refused[0].strerror)
    logger.info("running on CPU %s ([service] cpu = %s)", ",".join(map(str, sorted(cpus))), setting)
    return cpus


def _threads() -> list[int]:
    """The ids of this process's threads (sched_setaffinity takes a thread id)."""
    try:
        return [int(name) for name in os.listdir(Path("/proc/self/task"))]
    except OSError:
        return [0]
