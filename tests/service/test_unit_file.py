"""What systemd/icall.service promises, read from the file itself."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ivr.config import load_config
from tests.service.unit_file import UNIT, service_settings


def test_the_unit_is_a_notify_service_with_a_watchdog_and_restart_on_failure():
    settings = service_settings()
    expected = {"Type": ["notify"], "NotifyAccess": ["main"], "WatchdogSec": ["30"],
                "Restart": ["on-failure"], "KillMode": ["mixed"], "StateDirectory": ["icall"],
                "User": ["icall"], "Group": ["icall"],
                "EnvironmentFile": ["-/etc/icall/icall.env"]}
    assert {key: settings.get(key) for key in expected} == expected
    # A configuration error (exit 2) needs an operator, not a restart loop.
    assert settings["RestartPreventExitStatus"] == ["2"]


def test_the_unit_is_hardened():
    settings = service_settings()
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
                "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "LockPersonality",
                "MemoryDenyWriteExecute", "RestrictNamespaces", "RestrictSUIDSGID"):
        assert settings.get(key) == ["yes"], key
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["CapabilityBoundingSet"] == [""]
    assert settings["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert settings["SystemCallFilter"][0] == "@system-service"


def test_the_unit_migrates_the_database_before_it_runs_the_service():
    settings = service_settings()
    # Failure tolerated ('-'): a database down at boot must not keep calls unanswered.
    assert settings["ExecStartPre"] == ["-/opt/icall/.venv/bin/icall --config /etc/icall/config.ini db upgrade"]
    assert settings["ExecStart"] == ["/opt/icall/.venv/bin/icall run --config /etc/icall/config.ini"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_finds_nothing_wrong_but_the_missing_install(tmp_path):
    result = subprocess.run(["systemd-analyze", "verify", str(UNIT)], capture_output=True, text=True,
                            timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if line.strip() and "/opt/icall/.venv/bin/icall is not executable" not in line]
    assert complaints == []


def test_the_example_environment_file_names_only_real_keys(tmp_path):
    example = UNIT.parent / "icall.env.example"
    env = {}
    for line in example.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    assert "ICALL_FREESWITCH_PASSWORD" in env
    config = load_config(UNIT.parent.parent / "config.ini", environ=env)
    assert config.freeswitch.password == env["ICALL_FREESWITCH_PASSWORD"]
