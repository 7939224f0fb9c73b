"""Caller ids are personal data: the CRM lookup logs them at DEBUG only."""

from __future__ import annotations

import logging

from fakeswitch.fake_crm import Reply

KNOWN, ECHOED = "5551000", "5559876"  # in the fake CRM's table / echoed by its refusal


def test_lookups_log_no_caller_id_at_info_or_above_not_even_one_the_crm_echoes(
        crm, caller, start_fetcher, caplog):
    # The first request is answered from the table, the second with an echo.
    crm.script([Reply(), Reply(body=f"no such caller {ECHOED}".encode())])
    fetcher = start_fetcher(deadline_s=10)
    with caplog.at_level(logging.DEBUG):
        found = caller.lookup(fetcher, KNOWN, call_uuid="call-found")
        cached = caller.lookup(fetcher, KNOWN, call_uuid="call-cached")
        refused = caller.lookup(fetcher, ECHOED, call_uuid="call-refused")

    assert found.extension == cached.extension == "801"
    assert refused.extension is None
    # The reason travels to the call's log and record: the echo is masked there too.
    assert refused.reason == "not an extension: 'no such caller <caller id>'"
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert any("call call-found: CRM says 801" in line for line in loud), loud
    assert any("CRM answer refused" in line for line in loud), loud
    assert [line for line in loud if KNOWN in line or ECHOED in line] == []
    quiet = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    assert KNOWN in quiet and ECHOED in quiet, "DEBUG still names the caller for troubleshooting"


def test_the_crm_url_is_logged_with_its_credentials_and_tokens_masked(crm, start_fetcher, caplog):
    host = crm.url.split("://", 1)[1]
    with caplog.at_level(logging.INFO, logger="actors.crm.fetcher"):
        fetcher = start_fetcher(base_url=f"http://icall:hunter2@{host}", path="/lookup?token=t0ken")
        fetcher.proxy().stats().get(timeout=10)  # on_start has run
    started = [r.getMessage() for r in caplog.records if "CRM fetcher" in r.getMessage()]
    assert started == [f"CRM fetcher ready: http://icall:********@{host}/lookup?token=********, "
                       "up to 64 lookups at once"], started
    assert "hunter2" not in caplog.text and "t0ken" not in caplog.text
