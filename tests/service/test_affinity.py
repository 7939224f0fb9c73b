"""[service] cpu: the CPU chosen for a process (and each worker), applied to every
thread of the process, and a CPU it may not use reported, never fatal."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from ivr.config import ConfigError, load_config
from service.affinity import chosen_cpus

BASE = {"ICALL_FREESWITCH_PASSWORD": "x"}


def test_one_is_the_default_and_takes_the_highest_cpu_and_workers_count_down_from_it():
    assert load_config(None, BASE).service.cpu == "one"
    assert chosen_cpus("one", {0, 1, 2, 3}, None) == {3}
    assert [chosen_cpus("one", {0, 1, 2, 3}, k) for k in range(5)] == [{3}, {2}, {1}, {0}, {3}]


def test_all_leaves_the_process_to_the_kernel_and_a_list_is_taken_round_robin():
    assert chosen_cpus("all", {0, 1}, None) is None
    assert [chosen_cpus("5,7", {0, 5, 7}, k) for k in (None, 1, 2)] == [{5}, {7}, {5}]


@pytest.mark.parametrize("raw", ["two", "1;2", "-1", "1,,2", ""])
def test_a_cpu_setting_that_is_not_one_all_or_numbers_is_refused_naming_the_key(raw):
    with pytest.raises(ConfigError, match="service/cpu"):
        load_config(None, {**BASE, "ICALL_SERVICE_CPU": raw})


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, timeout=60, check=True, cwd=os.getcwd())
    return result.stdout.strip() + "\n" + result.stderr


def test_pinning_moves_every_thread_of_the_process_also_those_started_before_and_after():
    cpu = max(os.sched_getaffinity(0))
    out = _run("""
        import os, threading, logging
        from service.affinity import pin_process
        logging.basicConfig(level=logging.INFO)
        gate = threading.Event()
        early = threading.Thread(target=gate.wait); early.start()
        print(sorted(pin_process("one")))
        late = threading.Thread(target=gate.wait); late.start()
        print(sorted({frozenset(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")}))
        gate.set()
    """)
    chosen, every_thread = out.splitlines()[:2]
    assert chosen == f"[{cpu}]"
    assert every_thread == f"[frozenset({{{cpu}}})]"
    assert f"running on CPU {cpu}" in out


def test_a_cpu_the_process_may_not_use_is_logged_and_the_process_runs_unpinned():
    out = _run("""
        import os, logging
        from service.affinity import pin_process
        logging.basicConfig(level=logging.INFO)
        before = os.sched_getaffinity(0)
        print(pin_process("4095"), os.sched_getaffinity(0) == before)
    """)
    assert out.splitlines()[0] == "None True"
    assert "CPU 4095 is not one this process may use" in out


def test_a_refused_pinning_is_logged_as_unpinned_with_the_reason_never_as_running_on_a_cpu():
    # As under a seccomp filter without sched_setaffinity (the unit's ~@resources did that).
    out = _run("""
        import errno, os, logging
        from service.affinity import pin_process
        logging.basicConfig(level=logging.INFO)
        def refused(pid, cpus):
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))
        os.sched_setaffinity = refused
        print(pin_process("one"))
    """)
    assert out.splitlines()[0] == "None"
    assert "cannot pin this process to CPU" in out
    assert "sched_setaffinity: Operation not permitted" in out
    assert "SystemCallFilter= must allow sched_setaffinity" in out
    assert "it runs unpinned" in out
    assert "running on CPU" not in out
