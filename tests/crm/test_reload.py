"""A reload's new `[crm]`: lookups admitted after it go to the new CRM, one under way
finishes on the old one (its client closed once it is done), the cache starts afresh."""

from __future__ import annotations

from actors.reconfigure import Reconfigure
from fakeswitch.fake_crm import FakeCrm, Reply
from tests.crm.conftest import TABLE, Caller, make_config, stats, wait_until


def test_lookups_after_a_reload_go_to_the_new_crm_and_one_under_way_ends_on_the_old(crm, start_fetcher):
    fetcher = start_fetcher(cache_ttl_s=600)
    cached = Caller()
    assert cached.lookup(fetcher, "5551001").extension == "802"  # now in the old CRM's cache
    crm.script([Reply(delay_s=1.0)])
    slow, fresh, again = Caller(), Caller(), Caller()
    slow.ask(fetcher, "5551000", call_uuid="under-way")
    assert wait_until(lambda: crm.request_count == 2)
    with FakeCrm({**TABLE, "5551001": "612"}) as second:
        fetcher.tell(Reconfigure(make_config(base_url=second.url, cache_ttl_s=600)))
        assert fresh.lookup(fetcher, "5551000", call_uuid="after").extension == "801"
        assert again.lookup(fetcher, "5551001", call_uuid="cached").extension == "612", \
            "the old CRM's cached answer is not used"
        _, answer = slow.answer()
        assert (answer.call_uuid, answer.extension, answer.reason) == ("under-way", "801", "found")
        assert [r.query["caller_id"] for r in second.requests] == [["5551000"], ["5551001"]]
        assert crm.request_count == 2, "nothing more went to the old CRM"
        # The old client is closed once its last lookup is done.
        assert wait_until(lambda: stats(fetcher)["clients_retiring"] == 0)
