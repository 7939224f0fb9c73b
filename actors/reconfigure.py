"""The message a reload sends an actor (service.reload, Service.apply_config)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ivr.config import Config


@dataclass(frozen=True)
class Reconfigure:
    """Use `config` from the next piece of work on; what is under way finishes as it
    began. For the supervisor, `make_flow` builds the flows of the calls it starts
    from now on (each call keeps the maker it started with)."""

    config: Config
    make_flow: Callable[[str], Any] | None = None
