"""Where the recorded FreeSWITCH traffic lives: `shared/captures` beside this checkout
(as CI lays it out), or $ICALL_CAPTURES."""

from __future__ import annotations

import os
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
CAPTURES = Path(os.environ.get("ICALL_CAPTURES") or _REPO.parent / "shared" / "captures")
