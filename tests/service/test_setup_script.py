"""scripts/setup.sh names the Debian package that is missing before python-ESL's build
fails half way (issue 13.13: Python.h comes with python3-dev, not python3-venv)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "scripts" / "check_build_deps.sh"


def run_check(include_dir: Path | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ICALL_SETUP_PYTHON_INCLUDE"}
    if include_dir is not None:
        env["ICALL_SETUP_PYTHON_INCLUDE"] = str(include_dir)
    return subprocess.run(["bash", str(CHECK), sys.executable], env=env, capture_output=True,
                          text=True, timeout=60)


def test_without_python_h_the_check_fails_and_names_python3_dev(tmp_path):
    result = run_check(tmp_path)
    assert result.returncode == 1
    assert f"python-ESL compiles against Python.h, which is not in {tmp_path}" in result.stderr
    assert "apt-get install python3-dev" in result.stderr


def test_with_python_h_present_the_check_passes_quietly(tmp_path):
    (tmp_path / "Python.h").write_text("/* stand-in */\n", encoding="utf-8")
    result = run_check(tmp_path)
    assert (result.returncode, result.stderr) == (0, "")


def test_this_pythons_own_headers_pass_the_check():
    # The venv was built here, so its headers exist: the check must find them itself.
    assert run_check(None).returncode == 0


def test_setup_checks_before_it_builds_python_esl():
    script = (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")
    check_at = script.index("scripts/check_build_deps.sh")
    assert check_at < script.index('pip install --no-build-isolation "python-ESL')
