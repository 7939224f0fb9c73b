"""Reading the configuration again (service.reload): what applies, what waits for a
restart, and a broken file that changes nothing."""

from __future__ import annotations

import logging
from pathlib import Path

from ivr.config import Config, load_config
from service.reload import Reloader, settle

ENV = {"ICALL_FREESWITCH_PASSWORD": "x"}


def write(path: Path, **sections: dict[str, str]) -> Path:
    path.write_text("".join(f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
                            for name, keys in sections.items()), encoding="utf-8")
    return path


class Applied:
    """Stands in for Service.apply_config: keeps what it was handed."""

    def __init__(self) -> None:
        self.configs: list[Config] = []

    def __call__(self, config: Config) -> None:
        self.configs.append(config)


def test_settle_applies_the_live_keys_and_keeps_every_restart_only_one_as_it_was(tmp_path):
    old = load_config(write(tmp_path / "a.ini", freeswitch={"port": "8021"}, ivr={"sound_main_menu": "1001.wav"},
                            cdr={"url": ""}), ENV)
    new = load_config(write(tmp_path / "b.ini", freeswitch={"port": "9021"}, ivr={"sound_main_menu": "1011.wav"},
                            cdr={"url": "http://127.0.0.1:9/cdr"}, service={"workers": "3"},
                            database={"url": "sqlite:////tmp/other.sqlite3"},
                            metrics={"listen": "127.0.0.1:9100"}, outbound={"listen": "127.0.0.1:8040"},
                            crm={"base_url": "http://127.0.0.1:9/"}), ENV)
    config, changed, held = settle(old, new)
    assert changed == ["crm/base_url", "ivr/sound_main_menu"]
    assert held == ["service/workers", "freeswitch/port", "database/url", "cdr/url", "outbound/listen",
                    "metrics/listen"]
    assert config.ivr.sound_main_menu == "1011.wav" and config.crm.base_url == "http://127.0.0.1:9/"
    assert (config.freeswitch.port, config.service.workers, config.database.url) == \
        (8021, 1, old.database.url)
    assert config.cdr.url == "" and config.outbound.listen is None and config.metrics.listen is None


def test_one_cdr_endpoint_for_another_is_a_live_change(tmp_path):
    old = load_config(write(tmp_path / "a.ini", cdr={"url": "http://127.0.0.1:9/a"}), ENV)
    new = load_config(write(tmp_path / "b.ini", cdr={"url": "http://127.0.0.1:9/b"}), ENV)
    assert settle(old, new)[1:] == (["cdr/url"], [])


def test_a_broken_file_changes_nothing_and_logs_every_error_as_section_key_message(tmp_path, caplog):
    path = write(tmp_path / "config.ini", ivr={"sound_main_menu": "1001.wav"})
    applied = Applied()
    reloader = Reloader(load_config(path, ENV), applied, environ=ENV)
    write(path, ivr={"sound_main_menu": "1011.wav", "menu_pattern": "[1-", "menu_trys": "2"},
          crm={"attempts": "zero"})
    with caplog.at_level(logging.INFO, logger="icall.reload"):
        outcome = reloader.reload()
    assert not outcome.ok and outcome.generation == 1
    assert applied.configs == [], "nothing was handed to the service"
    assert reloader.config.ivr.sound_main_menu == "1001.wav"
    logged = [r.getMessage().strip() for r in caplog.records if r.levelno == logging.ERROR]
    for error in ("ivr/menu_trys: unknown key (did you mean 'menu_tries'?)",
                  "crm/attempts: expected a whole number, got 'zero'"):
        assert error in outcome.errors and error in logged, logged
    assert any(line.startswith("ivr/menu_pattern: not a valid regular expression") for line in logged)
    assert "nothing changed" in logged[0]
    assert reloader.readings() == {"generation": 1, "reloads_applied": 0, "reloads_failed": 1}
    assert outcome.answer().startswith("failed ") and "crm/attempts" in outcome.answer()


def test_a_restart_only_key_changed_is_named_in_one_warning_and_the_other_changes_apply(tmp_path, caplog):
    path = write(tmp_path / "config.ini", freeswitch={"port": "8021"}, metrics={"listen": ""})
    applied = Applied()
    reloader = Reloader(load_config(path, ENV), applied, environ=ENV)
    write(path, freeswitch={"port": "9021"}, metrics={"listen": "127.0.0.1:9100"},
          ivr={"sound_main_menu": "1011.wav"}, schedule={"evening": "closed"})
    with caplog.at_level(logging.INFO, logger="icall.reload"):
        outcome = reloader.reload()
    assert outcome.ok and outcome.generation == 2 and outcome.answer() == "reloaded 2"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "freeswitch/port, metrics/listen" in warnings[0] and "restart" in warnings[0]
    [config] = applied.configs
    assert (config.ivr.sound_main_menu, config.schedule.evening) == ("1011.wav", None)
    assert (config.freeswitch.port, config.metrics.listen) == (8021, None)
    assert reloader.readings() == {"generation": 2, "reloads_applied": 1, "reloads_failed": 0}


def test_a_changed_log_level_is_set_once_it_applies(tmp_path):
    path = write(tmp_path / "config.ini", logging={"level": "info"})
    levels: list[str] = []
    reloader = Reloader(load_config(path, ENV), Applied(), environ=ENV, on_level=levels.append)
    reloader.reload()
    write(path, logging={"level": "debug"})
    reloader.reload()
    assert levels == ["debug"]
