"""Recorded FreeSWITCH traffic (see README.md in this folder): the parsers, the
stand-in's fidelity tests and the flow tests are held to it. The recordings live
here, in the repository, so a clone anywhere can run the tests; $ICALL_CAPTURES
points them at another folder of recordings of the same names."""

from __future__ import annotations

import os
from pathlib import Path

CAPTURES = Path(os.environ.get("ICALL_CAPTURES") or Path(__file__).resolve().parent)
