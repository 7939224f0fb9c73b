"""The configuration schema, its loader and the `icall` commands that report on it."""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ivr.config import REQUIRED, SCHEMA, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
ICALL = [sys.executable, "-m", "service.cli"]

# One file holding one mistake of every kind the loader knows.
BAD_INI = """\
[freeswitch]
host = 127.0.0.1
port = eighty
pasword = x

[crm]
read_timeout_s = 999
attempts = 2.5

[ivr]
extension_pattern = [68\\d\\d

[schedule]
weekday_open = 09:00-08:00
timezone = Mars/Olympus
evening = 25:00-26:00

[metrik]
listen = 1
"""

BAD_INI_ERRORS = [
    "freeswitch/pasword: unknown key (did you mean 'password'?)",
    "metrik: unknown section (did you mean 'metrics'?)",
    "freeswitch/port: expected a whole number, got 'eighty'",
    "freeswitch/password: required, but not set",
    "crm/read_timeout_s: must be <= 120, got 999.0",
    "crm/attempts: expected a whole number, got '2.5'",
    "ivr/extension_pattern: not a valid regular expression: unterminated character set at position 0",
    "schedule/timezone: unknown time zone 'Mars/Olympus' (use an IANA name such as Europe/Berlin, or local)",
    "schedule/weekday_open: range ends before it starts: '09:00-08:00' (a range cannot cross midnight)",
    "schedule/evening: not a time of day: '25:00-26:00'",
]


def write(tmp_path: Path, text: str, name: str = "icall.ini") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICALL_")}
    env.update(extra)
    return env


def run_icall(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([*ICALL, *args], env=env or clean_env(), cwd=cwd, capture_output=True,
                          text=True, timeout=60)


# --- the loader


def test_every_problem_is_reported_at_once_with_its_exact_message(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, BAD_INI), environ={})
    assert caught.value.errors == BAD_INI_ERRORS


def test_an_icall_variable_naming_no_key_of_a_section_is_an_error(tmp_path):
    path = write(tmp_path, "[freeswitch]\npassword = x\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"ICALL_FREESWITCH_PASWORD": "x", "ICALL_CRM_NOSUCH": "1"})
    assert caught.value.errors == [
        "ICALL_FREESWITCH_PASWORD: environment variable names no key of [freeswitch]"
        " (did you mean 'password'?)",
        "ICALL_CRM_NOSUCH: environment variable names no key of [crm]",
    ]


def test_icall_variables_that_name_no_section_are_not_configuration(tmp_path):
    path = write(tmp_path, "[freeswitch]\npassword = x\n")
    config = load_config(path, environ={"ICALL_CONFIG": "/etc/icall/config.ini",
                                        "ICALL_TEST_BACKENDS": "1"})
    assert config.freeswitch.password == "x"


def test_the_environment_overrides_the_file(tmp_path):
    path = write(tmp_path, "[freeswitch]\npassword = from-file\nport = 8021\n")
    config = load_config(path, environ={"ICALL_FREESWITCH_PASSWORD": "from-env", "ICALL_FREESWITCH_PORT": "9021"})
    assert config.freeswitch.password == "from-env"
    assert config.freeswitch.port == 9021


def test_a_password_given_only_in_the_environment_satisfies_the_requirement(tmp_path):
    path = write(tmp_path, "[freeswitch]\nhost = 10.0.0.5\n")
    config = load_config(path, environ={"ICALL_FREESWITCH_PASSWORD": "s3cret"})
    assert config.freeswitch.password == "s3cret"


def test_a_bad_value_from_the_environment_is_reported_like_one_from_the_file(tmp_path):
    path = write(tmp_path, "[freeswitch]\npassword = x\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"ICALL_METRICS_LISTEN": "nowhere"})
    assert caught.value.errors == ["metrics/listen: expected host:port, got 'nowhere'"]


def test_a_backoff_whose_maximum_is_below_its_minimum_is_refused(tmp_path):
    path = write(tmp_path, "[freeswitch]\npassword = x\nreconnect_min_s = 5\nreconnect_max_s = 1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.errors == ["freeswitch/reconnect_max_s: must be >= reconnect_min_s"]


def test_an_unreadable_file_and_a_non_ini_file_each_get_one_clear_error(tmp_path):
    with pytest.raises(ConfigError) as missing:
        load_config(tmp_path / "absent.ini", environ={})
    assert missing.value.errors == [f"{tmp_path / 'absent.ini'}: cannot read: No such file or directory"]
    garbage = write(tmp_path, "password = x\n", "garbage.ini")
    with pytest.raises(ConfigError) as not_ini:
        load_config(garbage, environ={})
    assert len(not_ini.value.errors) == 1
    assert not_ini.value.errors[0].startswith(f"{garbage}: not an ini file: File contains no section headers.")


def test_an_empty_database_url_means_a_sqlite_file_in_the_state_directory(tmp_path):
    path = write(tmp_path, "[freeswitch]\npassword = x\n")
    config = load_config(path, environ={"STATE_DIRECTORY": "/var/lib/icall"})
    assert config.database.url == "sqlite:////var/lib/icall/icall.sqlite3"


def test_the_masked_rendering_never_shows_the_password(tmp_path):
    path = write(tmp_path, "[freeswitch]\npassword = Very-Secret-42\n")
    text = load_config(path, environ={}).render()
    assert "Very-Secret-42" not in text
    assert "password = ********" in text


# --- config.ini, the documented file, against the schema


def _ini_keys() -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(interpolation=None, default_section="__none__")
    parser.read(ROOT / "config.ini", encoding="utf-8")
    return {section: dict(parser.items(section)) for section in parser.sections()}


def test_config_ini_and_the_schema_name_exactly_the_same_keys():
    in_file = {(section, key) for section, keys in _ini_keys().items() for key in keys}
    in_schema = {(section, key) for section, keys in SCHEMA.items() for key in keys}
    assert sorted(in_file - in_schema) == [], "keys in config.ini that the schema does not know"
    assert sorted(in_schema - in_file) == [], "schema keys config.ini does not document"


def test_config_ini_shows_the_schema_defaults():
    file_values = _ini_keys()
    differing = [f"{section}/{name}: file {file_values[section][name]!r}, schema {key.default!r}"
                 for section, keys in SCHEMA.items() for name, key in keys.items()
                 if key.default is not REQUIRED
                 and key.parse(file_values[section][name]) != key.parse(key.default)]
    assert differing == []


def test_every_key_in_config_ini_has_an_operator_comment_above_it_or_its_group():
    lines = (ROOT / "config.ini").read_text(encoding="utf-8").splitlines()
    uncommented = []
    for number, line in enumerate(lines):
        if not re.match(r"^\w+\s*=", line):
            continue
        above = number - 1
        while above >= 0 and re.match(r"^\w+\s*=", lines[above]):
            above -= 1  # a group of keys shares the comment above the group
        if above < 0 or not lines[above].startswith("#"):
            uncommented.append(line.split("=")[0].strip())
    assert uncommented == []


def test_the_shipped_config_ini_loads_without_errors():
    config = load_config(ROOT / "config.ini", environ={})
    assert config.freeswitch.port == 8021


def test_every_schema_key_is_used_by_the_code():
    """A key that nothing reads is a key that does nothing (issue 2: no such keys)."""
    sources = {path: path.read_text(encoding="utf-8")
               for folder in ("actors", "ivr", "storage", "service") for path in (ROOT / folder).rglob("*.py")
               if path != ROOT / "ivr" / "config.py"}
    unused = []
    for section, keys in SCHEMA.items():
        for key in keys:
            uses_key = re.compile(rf"\.{key}\b")
            # Names such as url, path or enabled recur across sections and libraries:
            # a use only counts in a file that also names the section.
            names_section = re.compile(rf"\b{section}\b")
            if not any(uses_key.search(text) and names_section.search(text) for text in sources.values()):
                unused.append(f"{section}/{key}")
    assert unused == []


# --- the command line


def test_icall_run_with_a_bad_config_exits_2_printing_every_error_and_starting_nothing(tmp_path):
    path = write(tmp_path, BAD_INI)
    result = run_icall("--config", str(path), "run", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"icall: {len(BAD_INI_ERRORS)} problem(s) in the configuration {path}:" in result.stderr
    for error in BAD_INI_ERRORS:
        assert f"  {error}\n" in result.stderr
    assert "starting" not in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "state").exists(), "nothing may be created before the config is valid"


def test_icall_config_prints_the_effective_configuration_with_the_password_masked(tmp_path):
    path = write(tmp_path, "[freeswitch]\npassword = from-file\n[logging]\nlevel = DEBUG\n")
    result = run_icall("config", "--config", str(path),
                       env=clean_env(ICALL_FREESWITCH_PASSWORD="Env-Secret-7", STATE_DIRECTORY="/srv/icall"))
    assert result.returncode == 0, result.stderr
    assert "Env-Secret-7" not in result.stdout and "from-file" not in result.stdout
    assert "password = ********" in result.stdout
    assert "level = debug" in result.stdout
    assert "url = sqlite:////srv/icall/icall.sqlite3" in result.stdout
    # Every section and key of the schema is shown, so the output is a complete config.
    for section, keys in SCHEMA.items():
        assert f"[{section}]" in result.stdout
        for key in keys:
            assert re.search(rf"^{key} = ", result.stdout, re.M), key
