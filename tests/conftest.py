"""Shared fixtures: every test ends with no actor running (as pykka's own tests do),
and runs with its own state directory (where the default database and the DbWriter's
spool go), never the working directory's ./state."""

from __future__ import annotations

import pykka
import pytest


@pytest.fixture(autouse=True)
def _stop_all_actors():
    yield
    pykka.ActorRegistry.stop_all(block=True, timeout=10)


@pytest.fixture(autouse=True)
def _own_state_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
