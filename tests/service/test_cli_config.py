"""Each `icall` command validates the configuration it reads, and the storage commands
open (and name) the database the service uses.

The installed layout (README): /etc/icall/config.ini holds no event socket password,
which lives in the root-only /etc/icall/icall.env that only systemd reads. So the
operator's `sudo -u icall icall timecond list` sees a config without a password."""

from __future__ import annotations

import configparser
import logging
import os
import re
from pathlib import Path

import pytest

from ivr.config import INSTALLED_STATE_DIR, load_config
from service import runner
from service.cli import main
from tests.service.unit_file import service_settings

ROOT = Path(__file__).resolve().parents[2]

# Every command that reads the database, with what it needs to succeed on a fresh schema.
STORAGE_COMMANDS = [
    ["db", "upgrade"],
    ["db", "status"],
    ["timecond", "list"],
    ["timecond", "add", "--action", "hangup", "--note", "closed"],
    ["timecond", "remove", "1"],
    ["timecond", "test", "--at", "2025-12-25 10:00"],
    ["cdr", "status"],
]


def installed_config(tmp_path: Path, db_url: str, changes: dict[str, dict[str, str]] | None = None) -> Path:
    """The shipped config.ini as an operator installs it: the password removed (it is
    in icall.env), the database set, then `changes` ({section: {key: value}}) applied."""
    parser = configparser.ConfigParser(interpolation=None, default_section="__none__")
    parser.read(ROOT / "config.ini", encoding="utf-8")
    assert parser.remove_option("freeswitch", "password"), "config.ini no longer sets the password"
    parser["database"]["url"] = db_url
    for section, keys in (changes or {}).items():
        if not parser.has_section(section):
            parser.add_section(section)
        parser[section].update(keys)
    path = tmp_path / "config.ini"
    with path.open("w", encoding="utf-8") as handle:
        parser.write(handle)
    return path


@pytest.fixture
def icall(tmp_path, monkeypatch, capsys):
    """icall(*argv, changes=None) -> (status, stdout, stderr), password-less installed config."""
    for name in [n for n in os.environ if n.startswith("ICALL_")]:
        monkeypatch.delenv(name)
    db_url = f"sqlite:///{tmp_path / 'icall.sqlite3'}"

    def run(*argv: str, changes: dict[str, dict[str, str]] | None = None) -> tuple[int, str, str]:
        config = installed_config(tmp_path, db_url, changes)
        status = main(["--config", str(config), *argv])
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    run.db_url = db_url  # type: ignore[attr-defined]
    return run


@pytest.mark.parametrize("argv", STORAGE_COMMANDS, ids=" ".join)
def test_every_storage_command_works_with_a_config_that_has_no_password(icall, argv):
    assert icall("db", "upgrade")[0] == 0
    if argv[:2] == ["timecond", "remove"]:
        assert icall("timecond", "add", "--action", "hangup")[0] == 0
    status, out, err = icall(*argv)
    assert status == 0, err
    assert "password" not in err


@pytest.mark.parametrize("argv", STORAGE_COMMANDS, ids=" ".join)
def test_every_storage_command_prints_the_database_it_uses_first(icall, argv):
    icall("db", "upgrade")
    if argv[:2] == ["timecond", "remove"]:
        icall("timecond", "add", "--action", "hangup")
    _, out, _ = icall(*argv)
    assert re.match(rf"database: +{re.escape(icall.db_url)}\n", out), out


def test_icall_run_still_refuses_a_config_without_the_password(icall):
    status, out, err = icall("run")
    assert status == 2
    assert "  freeswitch/password: required, but not set\n" in err
    assert "this command reads" not in err, "run reads the whole configuration"


def test_icall_config_still_reports_every_problem_including_the_missing_password(icall):
    status, _, err = icall("config", changes={"crm": {"attempts": "many"}})
    assert status == 2
    assert "icall: 2 problem(s)" in err
    assert "  freeswitch/password: required, but not set\n" in err
    assert "  crm/attempts: expected a whole number, got 'many'\n" in err


def test_a_storage_command_refuses_a_bad_value_in_a_section_it_reads_and_says_which(icall):
    icall("db", "upgrade")
    status, _, err = icall("timecond", "test", changes={"schedule": {"timezone": "Mars/Olympus"}})
    assert status == 2
    assert "(this command reads [database], [ivr], [schedule])" in err
    assert "  schedule/timezone: unknown time zone 'Mars/Olympus'" in err
    assert "password" not in err


def test_a_storage_command_ignores_problems_in_sections_it_does_not_read(icall):
    icall("db", "upgrade")
    broken_elsewhere = {"crm": {"attempts": "many"}, "metrik": {"listen": "1"}}
    status, out, err = icall("timecond", "list", changes=broken_elsewhere)
    assert (status, err) == (0, "")
    assert "no time conditions" in out
    # The same file still stops the service, with every problem listed.
    status, _, err = icall("run", changes=broken_elsewhere)
    assert status == 2 and "crm/attempts" in err and "metrik: unknown section" in err


def test_cdr_status_refuses_a_bad_cdr_section_but_not_a_bad_schedule(icall):
    icall("db", "upgrade")
    assert icall("cdr", "status", changes={"schedule": {"timezone": "Mars/Olympus"}})[0] == 0
    status, _, err = icall("cdr", "status", changes={"cdr": {"timeout_s": "soon"}})
    assert status == 2 and "  cdr/timeout_s: expected a number, got 'soon'" in err


def test_a_config_loaded_for_some_sections_holds_only_those(tmp_path):
    config = load_config(installed_config(tmp_path, "sqlite:////x.sqlite3"), environ={},
                         sections=("database",))
    assert config.database.url == "sqlite:////x.sqlite3"
    with pytest.raises(AttributeError):
        config.freeswitch  # noqa: B018 - a command may not read what it did not declare


# --- one database path


def test_with_an_empty_url_the_cli_from_any_folder_and_the_unit_open_the_same_file(
        tmp_path, monkeypatch):
    path = tmp_path / "config.ini"
    path.write_text("[database]\nurl =\n", encoding="utf-8")
    state_directory = "/var/lib/" + service_settings()["StateDirectory"][0]
    under_systemd = load_config(path, environ={"STATE_DIRECTORY": state_directory},
                                sections=("database",))
    seen = set()
    for folder in (tmp_path, tmp_path / "elsewhere"):
        folder.mkdir(exist_ok=True)
        monkeypatch.chdir(folder)
        seen.add(load_config(path, environ={}, sections=("database",)).database.url)
    assert seen == {under_systemd.database.url}
    assert under_systemd.database.url == f"sqlite:///{INSTALLED_STATE_DIR}/icall.sqlite3"


def test_a_database_folder_that_cannot_be_made_is_a_clear_error_not_a_traceback(icall, tmp_path):
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    bad_url = f"sqlite:///{tmp_path / 'a-file' / 'icall.sqlite3'}"
    status, out, err = icall("timecond", "list", changes={"database": {"url": bad_url}})
    assert status == 1
    assert f"database: {bad_url}" in out
    assert "cannot create the folder of the SQLite file" in err and "Traceback" not in err


def test_icall_config_masks_the_password_of_a_database_url(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ICALL_FREESWITCH_PASSWORD", "x")
    monkeypatch.setenv("ICALL_DATABASE_URL", "postgresql://icall:Db-Secret-9@db.example.net/icall")
    path = tmp_path / "config.ini"
    path.write_text("[database]\n", encoding="utf-8")
    assert main(["--config", str(path), "config"]) == 0
    out = capsys.readouterr().out
    assert "Db-Secret-9" not in out
    assert "url = postgresql://icall:********@db.example.net/icall" in out


def test_the_service_warns_when_its_state_directory_is_not_where_the_cli_looks(
        tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    config = load_config(None, environ={"STATE_DIRECTORY": str(tmp_path)}, sections=("database",))
    with caplog.at_level(logging.WARNING, logger="icall"):
        runner._warn_if_the_cli_would_miss_the_database(config)
    assert "run without that STATE_DIRECTORY will not find it; set [database] url" in caplog.text

    caplog.clear()
    monkeypatch.setenv("STATE_DIRECTORY", str(INSTALLED_STATE_DIR))
    config = load_config(None, environ={"STATE_DIRECTORY": str(INSTALLED_STATE_DIR)},
                         sections=("database",))
    with caplog.at_level(logging.WARNING, logger="icall"):
        runner._warn_if_the_cli_would_miss_the_database(config)
    assert caplog.text == ""
