"""The configuration schema and its loader.

One ini file, declared here key by key: type, default, range, whether it is a
secret. `load_config` reads the file, applies `ICALL_<SECTION>_<KEY>` environment
overrides and validates everything at once; every problem is reported together as
`section/key: message` in one `ConfigError`, so an operator fixes the file in one go.

Thread-free: the result is an immutable `Config` the actors share.
"""

from __future__ import annotations

import configparser
import difflib
import ipaddress
import os
import re
import socket
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

REQUIRED = object()


class ConfigError(Exception):
    """Every problem found in a configuration, one `section/key: message` each."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


# --- value types: each takes the raw string and returns the value or raises ValueError



def string(raw: str) -> str:
    return raw


def integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"expected a whole number, got {raw!r}") from None
        _check_range(value, low, high)
        return value

    return parse


def number(low: float | None = None, high: float | None = None) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
        _check_range(value, low, high)
        return value

    return parse


def _check_range(value: float, low: float | None, high: float | None) -> None:
    if low is not None and value < low:
        raise ValueError(f"must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"must be <= {high}, got {value}")


_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off"}


def boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def choice(*values: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        lowered = raw.strip().lower()
        if lowered not in values:
            raise ValueError(f"must be one of {', '.join(values)}; got {raw!r}")
        return lowered

    return parse


def regex(raw: str) -> str:
    # Compiled as the flows use it (ivr.commands.matches): ASCII only.
    try:
        re.compile(raw, re.ASCII)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return raw


def url(*schemes: str, optional: bool = False) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        raw = raw.strip()
        if not raw and optional:
            return ""
        parts = urlsplit(raw)
        if parts.scheme not in schemes:
            raise ValueError(f"must be a URL starting with {' or '.join(s + '://' for s in schemes)}; got {raw!r}")
        if parts.scheme != "sqlite" and not parts.hostname:
            raise ValueError(f"URL has no host: {raw!r}")
        return raw

    return parse


def host_port(optional: bool = False) -> Callable[[str], tuple[str, int] | None]:
    def parse(raw: str) -> tuple[str, int] | None:
        raw = raw.strip()
        if not raw and optional:
            return None
        host, sep, port = raw.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port, got {raw!r}")
        return host.strip("[]"), int(port)

    return parse


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Networks:
    """`[outbound] allow`: the addresses and networks a peer may connect from."""

    networks: tuple[IPNetwork, ...]

    def admits(self, address: str) -> bool:
        """Whether `address` (a peer as the socket names it: `::ffff:10.0.0.5` on a
        dual-stack listener, `fe80::1%eth0` with a scope) is in one of the networks."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)  # False across IP versions

    def __str__(self) -> str:
        return ", ".join(str(network) for network in self.networks)


def networks(raw: str) -> Networks:
    """Addresses and CIDR networks separated by commas: `10.0.0.5, 192.168.1.0/24, ::1`."""
    found = []
    for word in filter(None, (w.strip() for w in raw.replace(",", " ").split())):
        try:
            found.append(ipaddress.ip_network(word))
        except ValueError as exc:
            raise ValueError(f"expected IP addresses or networks such as 10.0.0.5 or 10.0.0.0/24; "
                             f"{exc}") from None
    if not found:
        raise ValueError("names no address: nobody could connect")
    return Networks(tuple(found))


def is_loopback_host(host: str) -> bool:
    """Whether a listen address reaches this machine only (a name other than
    localhost may resolve anywhere: not loopback)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def clock_range(raw: str) -> tuple[int, int] | None:
    """'HH:MM-HH:MM' as minutes since midnight, end exclusive; 'closed' for none."""
    raw = raw.strip()
    if raw.lower() in ("", "closed", "none"):
        return None
    match = re.fullmatch(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})", raw)
    if not match:
        raise ValueError(f"expected HH:MM-HH:MM or 'closed', got {raw!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if h1 > 23 or m1 > 59 or m2 > 59 or not (h2 < 24 or (h2 == 24 and m2 == 0)):
        raise ValueError(f"not a time of day: {raw!r}")
    if end <= start:
        raise ValueError(f"range ends before it starts: {raw!r} (a range cannot cross midnight)")
    return start, end


def cpu_choice(raw: str) -> str:
    """`[service] cpu`: `one`, `all`, or CPU numbers separated by commas (service.affinity)."""
    text = raw.strip().lower()
    if text in ("one", "all"):
        return text
    numbers = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() for part in numbers):
        raise ValueError(f"expected one, all or CPU numbers like 2,3; got {raw!r}")
    return ",".join(str(int(part)) for part in numbers)


def node_name(raw: str) -> str:
    """This icall's name among the nodes sharing a database; empty: the host name."""
    raw = raw.strip()
    if raw and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", raw):
        raise ValueError(f"expected up to 64 letters, digits, '.', '_' or '-', got {raw!r}")
    return raw


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def weekdays(raw: str) -> frozenset[int]:
    """'sat,sun' as ISO weekday numbers (Monday is 1)."""
    days = set()
    for word in filter(None, (w.strip().lower()[:3] for w in raw.split(","))):
        if word not in _DAYS:
            raise ValueError(f"unknown day {word!r}; use mon,tue,wed,thu,fri,sat,sun")
        days.add(_DAYS.index(word) + 1)
    return frozenset(days)


def timezone(raw: str) -> str:
    raw = raw.strip()
    if raw.lower() == "local":
        return "local"
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {raw!r} (use an IANA name such as Europe/Berlin, or local)") from None
    return raw


def transfer_target(raw: str) -> str:
    """'<extension> XML <context>' as the transfer app takes it."""
    words = raw.split()
    if len(words) != 3 or words[1] != "XML":
        raise ValueError(f"expected '<extension> XML <context>', got {raw!r}")
    return raw.strip()


@dataclass(frozen=True)
class Key:
    name: str
    parse: Callable[[str], Any]
    default: Any = REQUIRED
    secret: bool = False


def _keys(*keys: Key) -> dict[str, Key]:
    return {key.name: key for key in keys}


# `[outbound] allow` unless the file says otherwise: this machine only.
LOOPBACK = "127.0.0.0/8, ::1"

# The schema. config.ini documents each key for operators; tests/test_config.py checks
# that the file and this table name the same keys.
SCHEMA: dict[str, dict[str, Key]] = {
    "service": _keys(
        Key("node", node_name, ""),
        Key("workers", integer(1, 64), "1"),
        Key("cpu", cpu_choice, "one"),
    ),
    "freeswitch": _keys(
        Key("host", string, "127.0.0.1"),
        Key("port", integer(1, 65535), "8021"),
        Key("password", string, REQUIRED, secret=True),
        Key("connect_timeout_s", number(0.1, 60), "5"),
        Key("command_timeout_s", number(0.1, 300), "10"),
        Key("sendmsg_timeout_s", number(0.1, 300), "2"),
        Key("command_connections", integer(1, 32), "4"),
        Key("reconnect_min_s", number(0.05, 60), "0.5"),
        Key("reconnect_max_s", number(0.1, 600), "2"),
    ),
    "database": _keys(
        Key("url", url("sqlite", "mysql", "postgresql", "postgres", optional=True), ""),
        Key("batch_size", integer(1, 10000), "200"),
        Key("commit_interval_ms", integer(0, 5000), "200"),
        Key("backlog_max", integer(100, 10_000_000), "20000"),
        Key("spool_path", string, ""),
        Key("retry_max_s", number(0.1, 600), "30"),
        Key("timecond_refresh_s", number(0.1, 86400), "30"),
    ),
    "crm": _keys(
        Key("enabled", boolean, "true"),
        Key("base_url", url("http", "https"), "http://127.0.0.1:8090"),
        Key("path", string, "/voip/cdrs"),
        Key("caller_id_param", string, "caller_id"),
        Key("response_format", choice("text", "json"), "text"),
        Key("json_field", string, "extension"),
        Key("max_body_bytes", integer(16, 1_048_576), "4096"),
        Key("connect_timeout_s", number(0.05, 60), "1"),
        Key("read_timeout_s", number(0.05, 120), "3"),
        Key("attempts", integer(1, 20), "3"),
        Key("deadline_s", number(0.1, 600), "8"),
        Key("backoff_initial_s", number(0.0, 60), "0.2"),
        Key("backoff_max_s", number(0.0, 600), "2"),
        Key("max_concurrent", integer(1, 1000), "64"),
        Key("breaker_failures", integer(1, 1000), "5"),
        Key("breaker_cooldown_s", number(0.1, 3600), "30"),
        Key("cache_ttl_s", number(0, 86400), "60"),
    ),
    "cdr": _keys(
        Key("url", url("http", "https", optional=True), ""),
        Key("timeout_s", number(0.1, 300), "5"),
        Key("retry_min_s", number(0.05, 3600), "1"),
        Key("retry_max_s", number(0.1, 86400), "300"),
        Key("batch_size", integer(1, 1000), "50"),
        Key("max_concurrent", integer(1, 64), "8"),
        Key("poll_interval_s", number(0.05, 3600), "5"),
        Key("lease_s", number(1, 86400), "60"),
    ),
    "ivr": _keys(
        Key("flow", choice("icall"), "icall"),
        Key("flow_variable", string, "ivr_app"),
        Key("sound_prefix", string, "new_sales/"),
        Key("context", string, "new_sales"),
        Key("sound_welcome", string, "1000.wav"),
        Key("sound_main_menu", string, "1001.wav"),
        Key("sound_transferring", string, "1002.wav"),
        Key("sound_extension_prompt", string, "2002.wav"),
        Key("sound_invalid_choice", string, "9003.wav"),
        Key("sound_invalid_entry", string, "9004.wav"),
        Key("sound_cc_menu", string, "8{extension}.wav"),
        Key("queue_sales", string, "fifo_sales"),
        Key("queue_hst", string, "fifo_hst"),
        Key("queue_cellphone", string, "fifo_cellphone"),
        Key("dest_playcell", string, "Playcell_{extension}"),
        Key("dest_voicemail", string, "VM_{extension}"),
        Key("dest_quit", string, "Quit"),
        Key("menu_pattern", regex, "[1-5]"),
        Key("extension_pattern", regex, r"[68]\d\d"),
        Key("cc_menu_pattern", regex, "[12]"),
        Key("menu_tries", integer(1, 10), "3"),
        Key("extension_tries", integer(1, 10), "3"),
        Key("cc_menu_tries", integer(1, 10), "2"),
        Key("prompt_timeout_ms", integer(500, 60000), "5000"),
        Key("ringback", string, "${us-ring}"),
        Key("ring_timeout_s", integer(1, 600), "30"),
        Key("crm_grace_ms", integer(0, 60000), "0"),
        Key("command_timeout_s", number(1, 3600), "120"),
        Key("time_condition", string, "sales_icall"),
        Key("max_concurrent_calls", integer(1, 100000), "3000"),
        Key("overflow_destination", transfer_target, "fifo_sales XML new_sales"),
        Key("safe_destination", transfer_target, "fifo_sales XML new_sales"),
        Key("hangup_linger_s", number(0, 600), "5"),
        Key("hung_actor_s", number(0, 3600), "5"),
    ),
    "schedule": _keys(
        Key("timezone", timezone, "local"),
        Key("weekend_days", weekdays, "sat,sun"),
        Key("weekday_open", clock_range, "09:00-20:30"),
        Key("weekend_open", clock_range, "10:00-20:30"),
        Key("evening", clock_range, "20:30-23:00"),
    ),
    "logging": _keys(
        Key("level", choice("debug", "info", "warning", "error"), "info"),
    ),
    "outbound": _keys(
        Key("listen", host_port(optional=True), ""),
        Key("allow", networks, LOOPBACK),
        Key("connect_timeout_s", number(0.1, 600), "5"),
        Key("socket_grace_s", number(0.1, 600), "3"),
        Key("linger_s", integer(1, 3600), "10"),
    ),
    "metrics": _keys(
        Key("listen", host_port(optional=True), ""),
        Key("health_link_down_s", number(0, 86400), "10"),
    ),
}


class Config:
    """The validated configuration: `config.crm.read_timeout_s` and so on."""

    # One namespace per SCHEMA section, set in __init__. Declared here so the type
    # checker knows the sections (a misspelt section is an error); the keys inside are
    # typed Any, as their types live in SCHEMA.
    service: SimpleNamespace
    freeswitch: SimpleNamespace
    database: SimpleNamespace
    crm: SimpleNamespace
    cdr: SimpleNamespace
    ivr: SimpleNamespace
    schedule: SimpleNamespace
    logging: SimpleNamespace
    outbound: SimpleNamespace
    metrics: SimpleNamespace

    def __init__(self, values: dict[str, dict[str, Any]], source: str):
        self.source = source
        self._values = values
        for section, keys in values.items():
            setattr(self, section, SimpleNamespace(**keys))

    def items(self) -> list[tuple[str, str, Any]]:
        return [(s, k, v) for s, keys in self._values.items() for k, v in keys.items()]

    def render(self) -> str:
        """The effective configuration as ini text, secrets masked."""
        lines = [f"# effective configuration (from {self.source})"]
        for section, keys in self._values.items():
            lines.append(f"\n[{section}]")
            for name, value in keys.items():
                shown = "********" if SCHEMA[section][name].secret and value else _show(value)
                shown = mask_url_password(shown)
                lines.append(f"{name} = {shown}")
        return "\n".join(lines) + "\n"


def mask_url_password(text: str) -> str:
    """`scheme://user:secret@host/...` with the secret masked; anything else unchanged."""
    if "://" not in text:
        return text
    parts = urlsplit(text)
    if not parts.password:
        return text
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":********@", 1)).geturl()


def _show(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, frozenset):
        return ",".join(_DAYS[d - 1] for d in sorted(value))
    if isinstance(value, tuple) and len(value) == 2:
        a, b = value
        if isinstance(a, str):
            return f"{a}:{b}"
        return f"{a // 60:02d}:{a % 60:02d}-{b // 60:02d}:{b % 60:02d}"
    return str(value)


# The shipped unit's StateDirectory=icall. With `[database] url` empty, the service and
# an operator's `icall timecond ...` from any shell must open the same file: so the
# fallback is this absolute path, never one relative to the current folder.
INSTALLED_STATE_DIR = Path("/var/lib/icall")


def default_state_dir(environ: Mapping[str, str]) -> Path:
    """Where the embedded database lives: $STATE_DIRECTORY (systemd sets it to
    /var/lib/icall for the shipped unit), else /var/lib/icall all the same."""
    state = environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state) if state else INSTALLED_STATE_DIR


def load_config(path: str | os.PathLike | None, environ: Mapping[str, str] | None = None,
                sections: Collection[str] | None = None) -> Config:
    """Read, override from the environment and validate; raise ConfigError listing all problems.

    `sections`: the sections the caller reads (None: all). Problems in the others are
    not its concern and the Config holds only these: `icall timecond` works where the
    event socket password is kept from the icall user, `icall run` needs everything."""
    environ = os.environ if environ is None else environ
    # (section, message); section None for the file as a whole, which always counts.
    errors: list[tuple[str | None, str]] = []
    raw: dict[str, dict[str, str]] = {}
    source = str(path) if path else "defaults"
    if path is not None:
        parser = configparser.ConfigParser(interpolation=None, default_section="__none__")
        try:
            with open(path, encoding="utf-8") as handle:
                parser.read_file(handle)
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
        except configparser.Error as exc:
            raise ConfigError([f"{path}: not an ini file: {_first_line(exc)}"]) from None
        for section in parser.sections():
            if section not in SCHEMA:
                errors.append((section, f"{section}: unknown section{_did_you_mean(section, SCHEMA)}"))
                continue
            for key, value in parser.items(section):
                if key not in SCHEMA[section]:
                    errors.append((section, f"{section}/{key}: unknown key"
                                            f"{_did_you_mean(key, SCHEMA[section])}"))
                    continue
                raw.setdefault(section, {})[key] = value
    for name, value in environ.items():
        if not name.startswith("ICALL_"):
            continue
        target_section, target_key = _env_target(name)
        if target_section is None:
            # ICALL_<SECTION>_<typo> is an error; ICALL_CONFIG, ICALL_TEST_* and the like
            # name no section and are not configuration.
            for known in SCHEMA:
                prefix = f"icall_{known}_"
                if name.lower().startswith(prefix):
                    hint = _did_you_mean(name.lower()[len(prefix):], SCHEMA[known])
                    errors.append((known, f"{name}: environment variable names no key of [{known}]{hint}"))
            continue
        raw.setdefault(target_section, {})[target_key] = value

    values: dict[str, dict[str, Any]] = {}
    for section, keys in SCHEMA.items():
        values[section] = {}
        for name, spec in keys.items():
            text = raw.get(section, {}).get(name)
            if text is None:
                if spec.default is REQUIRED:
                    errors.append((section, f"{section}/{name}: required, but not set"))
                    continue
                text = spec.default
            try:
                values[section][name] = spec.parse(text)
            except ValueError as exc:
                errors.append((section, f"{section}/{name}: {exc}"))
    errors += _cross_check(values, broken={section for section, _ in errors}, given=raw)
    wanted = SCHEMA.keys() if sections is None else sections
    problems = [text for section, text in errors
                if sections is None or section is None or section in wanted]
    if problems:
        raise ConfigError(problems)
    values = {section: keys for section, keys in values.items() if section in wanted}
    if "database" in values and not values["database"]["url"]:
        values["database"]["url"] = f"sqlite:///{default_state_dir(environ) / 'icall.sqlite3'}"
    if "database" in values and not values["database"]["spool_path"]:
        values["database"]["spool_path"] = str(default_state_dir(environ) / "icall-spool.sqlite3")
    if "service" in values and not values["service"]["node"]:
        values["service"]["node"] = socket.gethostname().split(".")[0][:64] or "icall"
    return Config(values, source)


# Pairs of (section, upper bound, lower bound) that must not cross.
_BOUNDS = (("freeswitch", "reconnect_max_s", "reconnect_min_s"),
           ("crm", "backoff_max_s", "backoff_initial_s"),
           ("cdr", "retry_max_s", "retry_min_s"))


def _cross_check(values: dict[str, dict[str, Any]], broken: set[str | None],
                 given: Mapping[str, Mapping[str, str]]) -> list[tuple[str | None, str]]:
    """Rules between keys, checked in the sections whose every key parsed. `given`:
    the keys the file or the environment set (the others have their default)."""
    errors: list[tuple[str | None, str]] = []
    listen = values["outbound"].get("listen")
    if ("outbound" not in broken and listen and not is_loopback_host(listen[0])
            and "allow" not in given.get("outbound", {})):
        # Whoever reaches the port drives calls, writes rows and posts CDRs: beyond
        # this machine the operator must say who the switch is.
        errors.append(("outbound", f"outbound/allow: must be set when outbound/listen "
                                   f"({listen[0]}:{listen[1]}) is beyond loopback: name the switch's "
                                   f"addresses, such as allow = 10.0.0.5"))
    for section, high, low in _BOUNDS:
        if section not in broken and values[section][high] < values[section][low]:
            errors.append((section, f"{section}/{high}: must be >= {low}"))
    if "cdr" not in broken and values["cdr"]["lease_s"] < 3 * values["cdr"]["timeout_s"]:
        # A poster sends a wave only while a whole POST (connect and read, each up to
        # timeout_s) fits in what is left of its claim; a claim must leave room for one.
        errors.append(("cdr", "cdr/lease_s: must be at least 3 times timeout_s"))
    if "crm" not in broken and not values["crm"]["path"].startswith("/"):
        errors.append(("crm", f"crm/path: must start with '/', got {values['crm']['path']!r}"))
    return errors


def _env_target(name: str) -> tuple[str | None, str]:
    rest = name[len("ICALL_"):].lower()
    for section in SCHEMA:
        if rest.startswith(section + "_") and rest[len(section) + 1:] in SCHEMA[section]:
            return section, rest[len(section) + 1:]
    return None, ""


def _did_you_mean(word: str, options: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0]
