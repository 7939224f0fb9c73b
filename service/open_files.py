"""How many files an icall process may hold open, against what its configuration needs.

In outbound mode every live call holds one socket (the switch's per-call connection),
so a process needs about `[ivr] max_concurrent_calls` descriptors for its calls, plus
its connection pools (`[crm] max_concurrent`, `[cdr] max_concurrent`,
`[freeswitch] command_connections`) and a margin for the rest (database files and
connections, the event connection, listeners, the control socket, log). systemd starts
a service with a soft limit of 1,024 (about 1,000 outbound calls): the unit raises it
(LimitNOFILE=), and at start icall raises its soft limit to the hard one when the soft
one is short, and warns, naming the keys, when even the hard one is.

Runs once, in the process's main thread, before the service starts.
"""

from __future__ import annotations

import logging
import resource

from ivr.config import Config

logger = logging.getLogger(__name__)

MARGIN = 256  # descriptors besides the calls and the pools (see above)


def needed_open_files(config: Config) -> int:
    calls = config.ivr.max_concurrent_calls if config.outbound.listen else 0
    pools = config.crm.max_concurrent + config.cdr.max_concurrent + config.freeswitch.command_connections
    return calls + pools + MARGIN


def fit_open_files(config: Config) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit if the configuration needs more
    than the soft one; warn when it cannot fit. Returns the soft limit in force."""
    needed = needed_open_files(config)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as exc:
        logger.warning("open files: cannot raise the soft limit %d to the hard limit %d (%s)",
                       soft, hard, exc)
    else:
        logger.info("open files: soft limit raised from %d to %d (about %d needed)", soft, hard, needed)
        soft = hard
    if soft < needed:
        logger.warning(
            "open files: this process may hold %d, but about %d are needed: [ivr] "
            "max_concurrent_calls = %d (one socket per outbound call) + [crm] max_concurrent = %d "
            "+ [cdr] max_concurrent = %d + [freeswitch] command_connections = %d + %d for the rest; "
            "calls past the limit cannot be accepted: raise LimitNOFILE= (systemctl edit icall) "
            "or lower [ivr] max_concurrent_calls", soft, needed,
            config.ivr.max_concurrent_calls if config.outbound.listen else 0,
            config.crm.max_concurrent, config.cdr.max_concurrent,
            config.freeswitch.command_connections, MARGIN)
    return soft
