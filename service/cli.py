"""The `icall` command: run, config, demo, db, timecond, cdr, calls, call.

Configuration is loaded and validated before anything starts; any problem is printed
as `section/key: message` and the command exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ivr.config import Config, ConfigError, load_config

EXIT_CONFIG = 2


def default_config_path() -> str:
    """$ICALL_CONFIG, else /etc/icall/config.ini when it exists, else ./config.ini."""
    if os.environ.get("ICALL_CONFIG"):
        return os.environ["ICALL_CONFIG"]
    if Path("/etc/icall/config.ini").exists():
        return "/etc/icall/config.ini"
    return "config.ini"


def build_parser() -> argparse.ArgumentParser:
    from service import cli_calls, cli_cdr, cli_storage

    parser = argparse.ArgumentParser(prog="icall", description="IVR call control for FreeSWITCH")
    parser.add_argument("--config", help="path of the ini file (default: $ICALL_CONFIG, "
                        "/etc/icall/config.ini, ./config.ini)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the service")
    run.add_argument("--config", dest="config_sub", help=argparse.SUPPRESS)
    # Set by the main process of [service] workers for each worker it starts.
    run.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    run.add_argument("--control-fd", type=int, help=argparse.SUPPRESS)
    run.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    run.set_defaults(func=_cmd_run)

    show = sub.add_parser("config", help="print the effective configuration, secrets masked")
    show.add_argument("--config", dest="config_sub", help=argparse.SUPPRESS)
    show.set_defaults(func=_cmd_config)

    demo = sub.add_parser("demo", help="run a dozen calls against the FreeSWITCH stand-in")
    demo.add_argument("--config", dest="config_sub", help=argparse.SUPPRESS)
    demo.add_argument("--keep", action="store_true", help="keep the demo's database")
    demo.set_defaults(func=_cmd_demo, needs_config=False)

    cli_storage.add_commands(sub)
    cli_cdr.add_commands(sub)
    cli_calls.add_commands(sub)
    for name, action in sub.choices.items():
        if name not in ("run", "config", "demo") and "--config" not in action._option_string_actions:
            action.add_argument("--config", dest="config_sub", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = getattr(args, "config_sub", None) or args.config or default_config_path()
    if getattr(args, "needs_config", True):
        # Each command validates the sections it reads (None: all of them, as `run`
        # and `config` do), so `icall timecond` works without the event socket password.
        sections = getattr(args, "config_sections", None)
        try:
            args.config_obj = load_config(path, sections=sections)
        except ConfigError as exc:
            reads = "" if sections is None else " (this command reads " + ", ".join(
                f"[{name}]" for name in sections) + ")"
            print(f"icall: {len(exc.errors)} problem(s) in the configuration {path}{reads}:",
                  file=sys.stderr)
            for error in exc.errors:
                print(f"  {error}", file=sys.stderr)
            return EXIT_CONFIG
    args.config_path = path
    return int(args.func(args) or 0)


def _cmd_config(args: argparse.Namespace) -> int:
    config: Config = args.config_obj
    sys.stdout.write(config.render())
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from service.runner import run_service

    return run_service(args.config_obj, args.worker, args.control_fd, args.listen_fd)


def _cmd_demo(args: argparse.Namespace) -> int:
    from service.demo import run_demo

    return run_demo(keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
