"""Whatever the CRM answers, only an extension matching [ivr] extension_pattern comes
back; everything else is None with a reason, and the fetcher carries on."""

from __future__ import annotations

import time

import pytest

from fakeswitch.fake_crm import Reply

TEN_MB = 10 * 1024 * 1024

TEXT_CASES = {
    "a dial string smuggled after the extension": (
        Reply(body=b"801,sofia/gateway/x/900"), "not an extension"),
    "10 MB announced by Content-Length": (Reply(body=b"8" * TEN_MB), "too large"),
    "10 MB streamed without a length": (Reply(stream_bytes=TEN_MB), "too large"),
    "an HTML page": (
        Reply(body=b"<html><body>801</body></html>", content_type="text/html"), "content type"),
    "HTML sent as text/plain": (Reply(body=b"<html>801</html>"), "not an extension"),
    "an empty body": (Reply(body=b""), "empty answer"),
    "whitespace only": (Reply(body=b" \r\n"), "empty answer"),
    "an extension outside the pattern": (Reply(body=b"999"), "not an extension"),
    "two extensions on two lines": (Reply(body=b"801\n802"), "not an extension"),
    "bytes that are not UTF-8": (Reply(body=b"\xff\xfe801"), "not UTF-8"),
    "Arabic-Indic digits that \\d would match": (
        Reply(body="8\u0660\u0661".encode()), "not an extension"),
    "fullwidth digits": (Reply(body="\uff18\uff10\uff11".encode()), "not an extension"),
    "a redirect": (Reply(status=302, body=b""), "http 302"),
}

JSON_CASES = {
    "JSON without the field": (Reply(body=b'{"name": "Bob"}'), "has no 'extension'"),
    "JSON with a list in the field": (Reply(body=b'{"extension": ["801"]}'), "not a string"),
    "JSON with true in the field": (Reply(body=b'{"extension": true}'), "not a string"),
    "JSON that is a bare string": (Reply(body=b'"801"'), "not an object"),
    "JSON that does not parse": (Reply(body=b'{"extension": 801'), "not JSON"),
    "JSON with a dial string": (
        Reply(body=b'{"extension": "801,sofia/gateway/x/900"}'), "not an extension"),
    "JSON with Devanagari digits": (
        Reply(body='{"extension": "8\u0966\u0967"}'.encode()), "not an extension"),
    "JSON sent as text/plain": (
        Reply(body=b'{"extension": "801"}', content_type="text/plain"), "content type"),
}


@pytest.mark.parametrize("reply, reason", TEXT_CASES.values(), ids=TEXT_CASES.keys())
def test_a_hostile_text_answer_gives_none_with_a_reason(crm, caller, start_fetcher, reply, reason):
    crm.default = reply
    fetcher = start_fetcher(deadline_s=10)
    sent_at = time.monotonic()
    answer = caller.lookup(fetcher, "5551000")
    assert answer.extension is None
    assert reason in answer.reason
    assert time.monotonic() - sent_at < 10
    assert crm.request_count == 1  # the CRM answered: nothing to retry


@pytest.mark.parametrize("reply, reason", JSON_CASES.values(), ids=JSON_CASES.keys())
def test_a_hostile_json_answer_gives_none_with_a_reason(crm, caller, start_fetcher, reply, reason):
    if reply.content_type is None:
        reply = Reply(body=reply.body, content_type="application/json")
    crm.default = reply
    fetcher = start_fetcher(response_format="json")
    answer = caller.lookup(fetcher, "5551000")
    assert answer.extension is None
    assert reason in answer.reason


def test_the_fetcher_still_answers_after_a_hostile_answer(crm, caller, start_fetcher):
    crm.script([Reply(stream_bytes=TEN_MB)])
    fetcher = start_fetcher(cache_ttl_s=0)
    assert caller.lookup(fetcher, "5551000").extension is None
    assert caller.lookup(fetcher, "5551000").extension == "801"


def test_a_hostile_answer_is_not_cached(crm, caller, start_fetcher):
    crm.script([Reply(body=b"801,sofia/gateway/x/900")])
    fetcher = start_fetcher(cache_ttl_s=60)
    assert caller.lookup(fetcher, "5551000").extension is None
    assert caller.lookup(fetcher, "5551000").extension == "801"


def test_a_hostile_answer_does_not_count_against_the_breaker(crm, caller, start_fetcher):
    crm.default = Reply(body=b"<html>", content_type="text/html")
    fetcher = start_fetcher(breaker_failures=2, cache_ttl_s=0)
    for _ in range(4):
        assert "content type" in caller.lookup(fetcher, "5551000").reason
    assert crm.request_count == 4


def test_the_extension_pattern_is_the_one_from_the_ivr_section(crm, caller, start_fetcher):
    crm.table["5551000"] = "6123"
    fetcher = start_fetcher()
    answer = caller.lookup(fetcher, "5551000")
    assert answer.extension is None  # [68]\d\d must match the whole answer
    assert "not an extension" in answer.reason
