"""A caller id is sent percent-encoded, so the CRM receives exactly the original value
(the seed concatenated it raw into the URL)."""

from __future__ import annotations

import pytest

AWKWARD_CALLER_IDS = [
    "555 1000",
    "a&caller_id=801",
    "#5551000",
    "+4930123456",
    "Zoë Ωmega 日本",
    "100%",
    "x?y=z/../admin",
    "\"quoted\" <sip:1@x>",
]


@pytest.mark.parametrize("caller_id", AWKWARD_CALLER_IDS)
def test_an_awkward_caller_id_reaches_the_crm_unchanged(crm, caller, start_fetcher, caller_id):
    crm.table[caller_id] = "801"
    fetcher = start_fetcher()
    answer = caller.lookup(fetcher, caller_id)
    assert answer.extension == "801"
    request = crm.requests[0]
    assert request.path == "/voip/cdrs"
    assert request.query == {"caller_id": [caller_id]}  # one parameter, the exact value
    assert "&" not in request.raw_query and "#" not in request.raw_query
    assert " " not in request.raw_query


def test_the_configured_parameter_name_and_path_are_used(crm, caller, start_fetcher):
    crm.caller_id_param = "ani"
    fetcher = start_fetcher(path="/api/who", caller_id_param="ani")
    assert caller.lookup(fetcher, "5551002").extension == "603"
    assert crm.requests[0].path == "/api/who"
    assert crm.requests[0].query == {"ani": ["5551002"]}
