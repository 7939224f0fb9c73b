"""`[outbound] allow`: who may connect to the outbound port, and the rule that keeps a
port open beyond this machine from admitting anyone."""

from __future__ import annotations

import pytest

from ivr.config import ConfigError, load_config, networks
from tests.test_config import clean_env, run_icall, write

BASE = {"ICALL_FREESWITCH_PASSWORD": "x"}
MUST_ALLOW = ("outbound/allow: must be set when outbound/listen (0.0.0.0:8084) is beyond loopback: "
              "name the switch's addresses, such as allow = 10.0.0.5")


def test_by_default_only_this_machine_is_allowed():
    allow = load_config(None, BASE).outbound.allow
    assert allow.admits("127.0.0.1") and allow.admits("127.8.0.1") and allow.admits("::1")
    assert allow.admits("::ffff:127.0.0.1"), "an IPv4 peer on a dual-stack listener"
    assert not allow.admits("10.0.0.5") and not allow.admits("::ffff:10.0.0.5")


def test_addresses_and_networks_of_either_family_are_allowed_as_listed():
    allow = networks("10.0.0.5, 192.168.1.0/24 fd00::/8")
    assert allow.admits("10.0.0.5") and allow.admits("192.168.1.77") and allow.admits("fd00::1%eth0")
    assert not allow.admits("10.0.0.6") and not allow.admits("127.0.0.1") and not allow.admits("junk")


def test_a_listen_address_beyond_loopback_without_an_allow_list_is_refused():
    with pytest.raises(ConfigError) as caught:
        load_config(None, {**BASE, "ICALL_OUTBOUND_LISTEN": "0.0.0.0:8084"})
    assert caught.value.errors == [MUST_ALLOW]
    for host in ("127.0.0.1", "[::1]", "localhost"):
        load_config(None, {**BASE, "ICALL_OUTBOUND_LISTEN": f"{host}:8084"})  # loopback: the default will do
    config = load_config(None, {**BASE, "ICALL_OUTBOUND_LISTEN": "0.0.0.0:8084",
                                "ICALL_OUTBOUND_ALLOW": "10.0.0.5"})
    assert str(config.outbound.allow) == "10.0.0.5/32"


def test_an_allow_list_naming_a_host_or_nothing_is_an_error():
    with pytest.raises(ConfigError) as caught:
        load_config(None, {**BASE, "ICALL_OUTBOUND_ALLOW": "pbx.example, 10.0.0.0/33"})
    assert caught.value.errors == ["outbound/allow: expected IP addresses or networks such as 10.0.0.5 or "
                                   "10.0.0.0/24; 'pbx.example' does not appear to be an IPv4 or IPv6 network"]
    with pytest.raises(ConfigError) as caught:
        load_config(None, {**BASE, "ICALL_OUTBOUND_ALLOW": " , "})
    assert caught.value.errors == ["outbound/allow: names no address: nobody could connect"]


def test_icall_config_and_run_exit_2_naming_the_missing_allow_list(tmp_path):
    path = write(tmp_path, "[freeswitch]\npassword = x\n[outbound]\nlisten = 0.0.0.0:8084\n")
    for command in ("config", "run"):
        result = run_icall("--config", str(path), command, env=clean_env(), cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert f"  {MUST_ALLOW}\n" in result.stderr
        assert "Traceback" not in result.stderr
