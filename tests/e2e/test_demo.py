"""`icall demo` (the README's first command) runs every branch and reads the summary
back from the database."""

from __future__ import annotations

import io

from service.demo import CALLS, run_demo


def test_the_demo_shows_every_branch_and_a_complete_summary():
    out = io.StringIO()
    assert run_demo(out=out) == 0
    text = out.getvalue()
    for number, call in enumerate(CALLS, 1):
        assert f"=== call {number}: {call.title}" in text
    summary = text.split("=== summary (read back from the database)")[1]
    for call in CALLS:
        assert f" {call.caller} " in summary, f"{call.title}: no row in the database"
    assert "MISSING" not in text and "NOT FINISHED" not in text
    assert f"CDRs delivered to the fake CDR endpoint: {len(CALLS)} of {len(CALLS)}" in text
    for expected in ("transfer fifo_hst XML new_sales", "bridge user/801", "transfer Playcell_802 XML new_sales",
                     "transfer VM_802 XML new_sales", "transfer Quit XML new_sales", "step TimeCondition",
                     "transfer fifo_cellphone XML new_sales", "execute playback new_sales/9003.wav"):
        assert expected in text
