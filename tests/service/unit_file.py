"""Reading systemd/icall.service the way the tests need it: the [Service] settings and
its command lines turned into argv lists that run from this checkout."""

from __future__ import annotations

import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "icall.service"
INSTALLED_BIN = "/opt/icall/.venv/bin/icall"
INSTALLED_CONFIG = "/etc/icall/config.ini"


def service_settings(unit: Path = UNIT) -> dict[str, list[str]]:
    """Each [Service] key with every value it is given, in order (keys may repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    pending = ""
    for raw in unit.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section == "Service":
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def local_command(line: str, config: Path) -> list[str]:
    """A unit command line as argv for this checkout: the installed binary and config
    path replaced by ours. Fails if the line names neither (the unit changed)."""
    # systemd's prefixes ('-' ignore failure, '@', ':', '+', '!') are not part of argv.
    argv = shlex.split(line.lstrip("-@:+!"))
    assert argv[0] == INSTALLED_BIN, f"unexpected binary in {line!r}"
    assert INSTALLED_CONFIG in argv, f"unexpected config path in {line!r}"
    argv[0] = str(ROOT / ".venv" / "bin" / "icall")
    return [str(config) if arg == INSTALLED_CONFIG else arg for arg in argv]


def unit_environment(settings: dict[str, list[str]]) -> dict[str, str]:
    """The Environment= assignments of the unit."""
    env: dict[str, str] = {}
    for value in settings.get("Environment", []):
        for assignment in shlex.split(value):
            name, _, text = assignment.partition("=")
            env[name] = text
    return env
