"""RLIMIT_NOFILE against `[ivr] max_concurrent_calls`: a short soft limit is raised to
the hard one, and a hard one too short is warned about, naming the keys. Each case runs
in a child process (a lowered hard limit cannot be raised again)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from ivr.config import load_config
from service.open_files import MARGIN, needed_open_files

LIMITED = """
    import logging, resource
    from ivr.config import load_config
    from service.open_files import fit_open_files
    logging.basicConfig(level=logging.INFO)
    resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))
    config = load_config(None, {{"ICALL_FREESWITCH_PASSWORD": "x", "ICALL_OUTBOUND_LISTEN": "127.0.0.1:8040",
                                 "ICALL_IVR_MAX_CONCURRENT_CALLS": "{calls}"}})
    print(fit_open_files(config), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def _run(soft: int, hard: int, calls: int) -> tuple[str, str]:
    code = textwrap.dedent(LIMITED.format(soft=soft, hard=hard, calls=calls))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True, cwd=os.getcwd())
    return result.stdout.strip(), result.stderr


def test_outbound_calls_count_one_descriptor_each_beside_the_pools_and_a_margin():
    base = {"ICALL_FREESWITCH_PASSWORD": "x", "ICALL_IVR_MAX_CONCURRENT_CALLS": "1000"}
    outbound = load_config(None, {**base, "ICALL_OUTBOUND_LISTEN": "127.0.0.1:8040"})
    inbound = load_config(None, base)
    pools = 64 + 8 + 4  # the defaults of [crm] max_concurrent, [cdr] max_concurrent, command_connections
    assert needed_open_files(outbound) == 1000 + pools + MARGIN
    assert needed_open_files(inbound) == pools + MARGIN  # parked calls hold no socket here


def test_a_short_soft_limit_is_raised_to_the_hard_one():
    out, log = _run(soft=256, hard=4096, calls=1000)
    assert out == "4096 4096"
    assert "soft limit raised from 256 to 4096" in log
    assert "WARNING" not in log


def test_a_hard_limit_too_short_for_max_concurrent_calls_is_warned_about_naming_the_keys():
    out, log = _run(soft=256, hard=800, calls=1000)
    assert out == "800 800"
    assert "this process may hold 800, but about 1332 are needed" in log
    assert "[ivr] max_concurrent_calls = 1000" in log and "LimitNOFILE=" in log


def test_a_soft_limit_that_fits_is_left_alone():
    out, log = _run(soft=2048, hard=4096, calls=1000)
    assert out == "2048 2048"
    assert "open files" not in log
