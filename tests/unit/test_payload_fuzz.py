"""Property tests: whatever a provider sends, we get a snapshot or a PayloadError naming a field."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import fixture_json
from worker.errors import PayloadError
from worker.providers.base import ProviderContext
from worker.providers.impact import ImpactJobs, ImpactParams
from worker.providers.samsara import SamsaraIftaDetail
from worker.settings import Credential

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def mutate(document: dict, data: st.DataObject) -> dict:
    """Drop, retype or add one field somewhere in a valid payload."""
    target = document
    path = []
    while isinstance(target, dict) and target and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(target)))
        if not isinstance(target[key], dict):
            break
        path.append(key)
        target = target[key]
    if not isinstance(target, dict) or not target:
        return document
    key = data.draw(st.sampled_from(sorted(target)))
    action = data.draw(st.sampled_from(["drop", "retype", "add"]))
    if action == "drop":
        del target[key]
    elif action == "retype":
        target[key] = data.draw(json_values)
    else:
        target[data.draw(st.text(min_size=1, max_size=12))] = data.draw(json_values)
    return document


def fetch(provider, body: bytes, params):
    ctx = ProviderContext(
        client=httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, content=body)), base_url="https://x"),
        credential=Credential(token="t", account_sid="IR1", auth_token="a"),
        credential_name="default",
    )
    return provider.get(ctx, "job", params)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_samsara_payload_mutations_never_crash(data: st.DataObject) -> None:
    document = mutate(fixture_json("samsara_ifta_job_completed.json"), data)
    try:
        snapshot = fetch(SamsaraIftaDetail(), json.dumps(document).encode(), None)
    except PayloadError as exc:
        assert "field '" in str(exc)
    else:
        assert snapshot.provider_job_id


def test_a_result_uri_that_is_no_url_is_a_payload_error_naming_the_field() -> None:
    document = {**fixture_json("impact_job_completed.json"), "ResultUri": "/Mediapartners/IR1/Jobs/x/Download\x00"}
    with pytest.raises(PayloadError, match="field 'ResultUri'"):
        fetch(ImpactJobs(), json.dumps(document).encode(), ImpactParams(job_id="job"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_impact_payload_mutations_never_crash(data: st.DataObject) -> None:
    document = mutate(fixture_json("impact_job_completed.json"), data)
    try:
        snapshot = fetch(ImpactJobs(), json.dumps(document).encode(), ImpactParams(job_id="job"))
    except PayloadError as exc:
        assert "field '" in str(exc)
    else:
        assert snapshot.provider_job_id


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_are_a_payload_error(body: bytes) -> None:
    with pytest.raises(PayloadError, match="does not validate"):
        fetch(SamsaraIftaDetail(), body, None)
