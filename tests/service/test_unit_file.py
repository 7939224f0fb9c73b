"""What systemd/icall.service promises, read from the file itself."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from ivr.config import load_config
from service.open_files import needed_open_files
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


# What each group holds when systemd-analyze is not there to say (systemd 252); groups
# nest (@system-service lists @resources).
_KNOWN_GROUPS = {"@system-service": {"@resources", "sched_getaffinity", "prlimit64"},
                 "@resources": {"sched_setaffinity", "setrlimit", "setpriority"},
                 "@privileged": {"chroot", "setuid"}}


def _members(group: str) -> set[str]:
    """The system calls of a SystemCallFilter group, nested groups expanded."""
    if shutil.which("systemd-analyze") is None:
        names = _KNOWN_GROUPS[group]
    else:
        out = subprocess.run(["systemd-analyze", "syscall-filter", group], capture_output=True,
                             text=True, timeout=60, check=True).stdout
        names = {line.strip() for line in out.splitlines()[1:]
                 if line.strip() and not line.strip().startswith("#")}
    return set().union(*(_members(n) if n.startswith("@") else {n} for n in names))


def _allowed_by_the_filter(syscall: str, filters: list[str]) -> bool:
    """systemd.exec(5): the first SystemCallFilter= (an allow list here) decides the
    default; each later one adds the calls it names, or takes them away with `~`."""
    assert not filters[0].startswith("~"), "the unit's filter is an allow list"
    allowed = False
    for line in filters:
        names = line.lstrip("~").split()
        if syscall in set().union(*(_members(n) if n.startswith("@") else {n} for n in names)):
            allowed = not line.startswith("~")
    return allowed


def test_the_syscall_filter_lets_service_cpu_pin_the_process():
    filters = service_settings()["SystemCallFilter"]
    assert _allowed_by_the_filter("sched_setaffinity", filters)
    assert not _allowed_by_the_filter("setpriority", filters)  # the rest of @resources stays out
    assert not _allowed_by_the_filter("chroot", filters)


def test_the_units_open_file_limit_fits_the_default_calls_of_an_outbound_worker():
    soft, _, hard = service_settings()["LimitNOFILE"][0].partition(":")
    config = load_config(None, {"ICALL_FREESWITCH_PASSWORD": "x", "ICALL_OUTBOUND_LISTEN": "127.0.0.1:8040"})
    assert int(soft) >= needed_open_files(config)
    assert int(hard) >= int(soft)


def test_the_unit_migrates_the_database_before_it_runs_the_service():
    settings = service_settings()
    # Failure tolerated ('-'): a database down at boot must not keep calls unanswered.
    assert settings["ExecStartPre"] == ["-/opt/icall/.venv/bin/icall --config /etc/icall/config.ini db upgrade"]
    assert settings["ExecStart"] == ["/opt/icall/.venv/bin/icall run --config /etc/icall/config.ini"]


def test_the_unit_reloads_with_a_sighup_to_the_main_process():
    # icall reads its configuration again on SIGHUP (service.reload); without
    # ExecReload= `systemctl reload icall` is refused.
    assert service_settings()["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


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


# --- the README's install steps, against this unit

README = UNIT.parent.parent / "README.md"


def install_block() -> list[str]:
    """The shell lines of the README's install step, comments and blanks left out."""
    text = README.read_text(encoding="utf-8")
    after = text[text.index("2. Install, as root, in this order"):]
    block = after[after.index("```sh") + len("```sh"):]
    block = block[:block.index("```")]
    return [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def _first(lines: list[str], pattern: str) -> int:
    found = [n for n, line in enumerate(lines) if re.search(pattern, line)]
    assert found, f"the README's install steps have no line matching {pattern!r}"
    return found[0]


def test_the_readme_install_steps_make_everything_the_unit_needs_before_enabling_it():
    settings = service_settings()
    user, state_dir = settings["User"][0], "/var/lib/" + settings["StateDirectory"][0]
    env_file = settings["EnvironmentFile"][0].lstrip("-")
    lines = install_block()
    steps = [
        # python-ESL compiles against Python.h: python3-dev, not only python3-venv.
        _first(lines, r"^apt-get install .*\bpython3-dev\b"),
        _first(lines, r"\bmake setup\b"),
        # The user exists before anything is made for it (217/USER otherwise).
        _first(lines, r"\bsystemd-sysusers\b|\buseradd --system\b"),
        _first(lines, rf"^install -d .*-o {user} .*{re.escape(state_dir)}$"),
        _first(lines, r"/etc/icall/config\.ini$"),
        _first(lines, rf"^install -m 0600 .* {re.escape(env_file)}$"),
        _first(lines, rf"^runuser -u {user} -- .* db upgrade$"),
        _first(lines, r"^cp systemd/icall\.service /etc/systemd/system/"),
        _first(lines, r"systemctl daemon-reload"),
        _first(lines, r"^systemctl enable --now icall$"),
    ]
    assert steps == sorted(steps), [lines[n] for n in steps]
    apt = lines[steps[0]].split()
    assert {"git", "make", "g++", "python3-venv", "python3-dev"} <= set(apt)
    # A fresh Debian 12 has no sudo: the steps use runuser (util-linux, always there).
    assert not [line for line in lines if re.search(r"\bsudo\b", line)]


def test_the_sysusers_file_creates_the_units_user_with_the_state_directory_as_home():
    settings = service_settings()
    entries = [line.split() for line in (UNIT.parent / "icall.sysusers").read_text(encoding="utf-8")
               .splitlines() if line.strip() and not line.startswith("#")]
    assert len(entries) == 1
    kind, name, *_rest, home = entries[0]
    assert (kind, name, home) == ("u", settings["User"][0], "/var/lib/" + settings["StateDirectory"][0])


def test_the_readme_keeps_the_password_out_of_the_installed_config():
    lines = install_block()
    strip = _first(lines, r"^sed -i '/\^password = /d' /etc/icall/config\.ini$")
    assert strip > _first(lines, r"/etc/icall/config\.ini$")
    # The sed line matches the shipped file's password line, and only that one.
    shipped = (UNIT.parent.parent / "config.ini").read_text(encoding="utf-8")
    assert len(re.findall(r"^password = ", shipped, flags=re.M)) == 1


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_the_readme_install_block_is_valid_shell():
    result = subprocess.run(["bash", "-n"], input="\n".join(install_block()), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
