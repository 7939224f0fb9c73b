"""`icall cdr status`: how CDR delivery to `[cdr] url` is doing, read from the outbox.

Prints pending and delivered counts, the age of the oldest undelivered CDR and the
last delivery error, for the whole outbox: with several icalls sharing one database
(one per switch), every node's CDRs, and a line per node (its pending, claimed by a
poster right now, delivered). Exit status 0 when nothing is pending or the oldest pending CDR
is younger than `retry_max_s` (still within normal retrying), 1 when CDRs have waited
longer than that (a monitoring check can alert on it), 3 when the database cannot be
read. Runs in the CLI's main thread; opens and closes its own database connection.
"""

from __future__ import annotations

import argparse
import sys

from peewee import DatabaseError

from storage.db import StorageError, close_quietly, open_database, redact
from storage.outbox import outbox_status

EXIT_STALE = 1
EXIT_DATABASE = 3


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    cdr = subparsers.add_parser("cdr", help="CDR delivery to the remote endpoint")
    commands = cdr.add_subparsers(dest="cdr_command", required=True, metavar="COMMAND")
    status = commands.add_parser("status", help="pending and delivered CDRs, oldest pending age")
    # Reads [database] (the outbox), [cdr] (endpoint, retry ceiling) and [service] (the
    # node this is), nothing else.
    status.set_defaults(func=cdr_status, config_sections=("service", "database", "cdr"))


def cdr_status(args: argparse.Namespace) -> int:
    config = args.config_obj
    print(f"database:            {redact(config.database.url)}")
    try:
        db = open_database(config.database.url)
    except StorageError as exc:
        print(f"icall: {exc}", file=sys.stderr)
        return EXIT_DATABASE
    try:
        status = outbox_status(db)
    except DatabaseError as exc:
        print(f"icall: cannot read the CDR outbox in {redact(config.database.url)}: {exc}",
              file=sys.stderr)
        print("       (run `icall db upgrade` if the database is new)", file=sys.stderr)
        return EXIT_DATABASE
    finally:
        close_quietly(db)
    age = "-" if status.oldest_pending_age_s is None else f"{status.oldest_pending_age_s:.0f} s"
    print(f"endpoint:            {redact(config.cdr.url) if config.cdr.url else '(none: [cdr] url is empty)'}")
    print(f"pending:             {status.pending}")
    print(f"delivered:           {status.delivered}")
    print(f"oldest pending age:  {age}")
    if status.last_error:
        print(f"last error:          {status.last_error}")
    print(f"this node:           {config.service.node}")
    if status.by_node:
        print(f"{'node':<20} {'pending':>9} {'claimed':>9} {'delivered':>10}")
        for node, counts in sorted(status.by_node.items()):
            print(f"{node or '(none)':<20} {counts.pending:>9} {counts.claimed:>9} {counts.delivered:>10}")
    stale = (status.oldest_pending_age_s or 0) > config.cdr.retry_max_s
    return EXIT_STALE if stale and config.cdr.url else 0
