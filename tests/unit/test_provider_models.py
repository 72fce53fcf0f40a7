"""Provider wire models accept the documented payloads verbatim and map statuses exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import fixture_bytes
from worker.engine.transitions import new_export
from worker.errors import AuthError, InvalidRequest, JobNotFound, PayloadError, ReplayNotAllowed, RetryLater, TransientError
from worker.models import JobState, JobStatus, NewExport
from worker.providers import get_provider, samsara
from worker.providers.base import ProviderContext, wire_params
from worker.providers.impact import ImpactJob, ImpactJobs, ImpactJobStatus, ImpactJobType, ImpactParams
from worker.providers.samsara import IftaDetailParams, IftaJobEnvelope, IftaJobStatus, SamsaraIftaDetail
from worker.settings import Credential


def context(handler, base_url: str = "https://api.samsara.com", provider=None, **credential) -> ProviderContext:
    """A provider context over a MockTransport; with ``provider`` the client carries its real auth."""
    cred = Credential(**credential)
    auth = provider.auth(cred, "default") if provider else None
    client = httpx.Client(transport=httpx.MockTransport(handler), base_url=base_url, auth=auth)
    return ProviderContext(client=client, credential=cred, credential_name="default")


def test_samsara_completed_job_payload_validates_verbatim() -> None:
    job = IftaJobEnvelope.model_validate_json(fixture_bytes("samsara_ifta_job_completed.json")).data
    assert job.job_status is IftaJobStatus.COMPLETED
    assert job.args.vehicle_ids == [281474977075130, 281474977075131]
    assert job.files is not None and [f.record_count for f in job.files] == [1532, 87]
    assert job.files[0].download_url_expiration_time == datetime(2026, 11, 24, 3, 10, 44, tzinfo=UTC)


def test_samsara_requested_job_has_no_files_and_maps_to_queued() -> None:
    body = fixture_bytes("samsara_ifta_job_requested.json")
    snapshot = SamsaraIftaDetail().get(context(lambda r: httpx.Response(200, content=body), token="t"), "7f7e7d7c", None)
    assert snapshot.state is JobState.QUEUED and snapshot.files == []


def test_samsara_extra_fields_are_kept_not_fatal() -> None:
    payload = fixture_bytes("samsara_ifta_job_requested.json").replace(b'"jobId"', b'"newField": 7, "jobId"')
    job = IftaJobEnvelope.model_validate_json(payload).data
    assert job.model_extra == {"newField": 7}


def test_samsara_unknown_status_names_the_field() -> None:
    payload = fixture_bytes("samsara_ifta_job_requested.json").replace(b'"Requested"', b'"Exploded"')
    ctx = context(lambda r: httpx.Response(200, content=payload), token="t")
    with pytest.raises(PayloadError, match="data.jobStatus"):
        SamsaraIftaDetail().get(ctx, "7f7e7d7c", None)


def test_samsara_create_sends_bearer_and_camel_case_body() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, content=fixture_bytes("samsara_ifta_job_requested.json"))

    params = IftaDetailParams.model_validate(
        {"startHour": "2026-11-23T00:00:00Z", "endHour": "2026-11-24T00:00:00Z", "vehicleIds": [1, 2]}
    )
    snapshot = SamsaraIftaDetail().create(context(handler, provider=SamsaraIftaDetail(), token="secret-token"), params)
    assert snapshot.provider_job_id == "7f7e7d7c"
    request = seen[0]
    assert request.url.path == "/ifta-detail/csv" and request.method == "POST"
    assert request.headers["Authorization"] == "Bearer secret-token"
    assert request.read() == b'{"startHour":"2026-11-23T00:00:00Z","endHour":"2026-11-24T00:00:00Z","vehicleIds":"1,2"}'


@pytest.mark.parametrize(
    ("status", "headers", "error"),
    [
        (429, {"Retry-After": "7"}, RetryLater),
        (503, {}, TransientError),
        (401, {}, AuthError),
        (404, {}, JobNotFound),
    ],
)
def test_samsara_status_codes_map_to_error_classes(status: int, headers: dict[str, str], error: type[Exception]) -> None:
    ctx = context(lambda r: httpx.Response(status, headers=headers, json={"message": "x"}), token="t")
    with pytest.raises(error) as info:
        SamsaraIftaDetail().get(ctx, "job-1", None)
    if status == 429:
        assert info.value.retry_after == 7
    if status == 401:
        assert "'default'" in str(info.value)
    if status == 404:
        assert "job-1" in str(info.value)


def test_samsara_split_bisects_resolved_vehicles() -> None:
    body = fixture_bytes("samsara_ifta_job_failed.json")
    provider = SamsaraIftaDetail()
    snapshot = provider.get(context(lambda r: httpx.Response(200, content=body), token="t"), "8a8b8c8d", None)
    assert snapshot.state is JobState.FAILED
    params = IftaDetailParams.model_validate({"startHour": "2026-11-23T00:00:00Z", "endHour": "2026-11-24T00:00:00Z"})
    children = provider.split(params, snapshot, min_batch=1)
    assert [child.vehicle_ids for child in children] == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert provider.split(params, snapshot.model_copy(update={"message": "Internal error"}), 1) is None


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"startHour": "2026-11-24T00:00:00Z", "endHour": "2026-11-23T00:00:00Z"}, "must be before endHour"),
        ({"startHour": "2026-11-23T00:00:00Z", "endHour": "2026-11-24T00:00:00Z", "vehicleIds": []}, "vehicleIds"),
        ({"startHour": "2026-11-23T00:00:00Z", "endHour": "2026-11-24T00:00:00Z", "vehicleIds": [0]}, "positive"),
        ({"startHour": "2026-11-23T00:30:00Z", "endHour": "2026-11-24T00:00:00Z"}, "whole hour"),
        ({"startHour": "yesterday", "endHour": "2026-11-24T00:00:00Z"}, "startHour"),
        ({"startHour": "2026-11-23T00:00:00Z"}, "endHour"),
    ],
)
def test_invalid_samsara_params_are_rejected_with_the_field(params: dict, fragment: str) -> None:
    with pytest.raises(InvalidRequest, match=fragment):
        SamsaraIftaDetail().validate(params)


def test_unknown_provider_lists_known_ones() -> None:
    with pytest.raises(InvalidRequest, match="known providers: impact, samsara"):
        get_provider("salesforce")


def test_impact_job_payload_validates_verbatim() -> None:
    job = ImpactJob.model_validate_json(fixture_bytes("impact_job_completed.json"))
    assert job.Type is ImpactJobType.DOWNLOAD_REPORT and job.Status is ImpactJobStatus.COMPLETED
    assert job.AbandonedDate is None and job.RecordsProcessed == 2500 and job.PercentageComplete == 100
    assert job.CreatedDate is not None and job.CreatedDate.utcoffset().total_seconds() == -5 * 3600
    assert job.model_extra == {"Uri": "/Mediapartners/IRsimAccount/Jobs/A1b2C3d4E5f6G7h8"}


def test_impact_error_is_not_terminal_and_completed_has_one_authenticated_file() -> None:
    provider = ImpactJobs()
    error = fixture_bytes("impact_job_error.json")
    ctx = context(
        lambda r: httpx.Response(200, content=error), "https://api.impact.com", account_sid="IRsimAccount", auth_token="x"
    )
    snapshot = provider.get(ctx, "Z9y8X7w6", ImpactParams(job_id="Z9y8X7w6"))
    assert snapshot.state is JobState.RETRYING and not snapshot.state.terminal
    assert "attempt 1 of 5" in (snapshot.message or "")

    done = fixture_bytes("impact_job_completed.json")
    ctx = context(
        lambda r: httpx.Response(200, content=done), "https://api.impact.com", account_sid="IRsimAccount", auth_token="x"
    )
    snapshot = provider.get(ctx, "A1b2C3d4E5f6G7h8", ImpactParams(job_id="A1b2C3d4E5f6G7h8"))
    assert snapshot.state is JobState.SUCCEEDED and snapshot.percent_complete == 100
    assert [(f.url, f.authenticated) for f in snapshot.files] == [
        ("/Mediapartners/IRsimAccount/Jobs/A1b2C3d4E5f6G7h8/Download?Mode=Stream", True)
    ]


DAY = {"START_DATE": "2026-11-01", "END_DATE": "2026-11-01"}


def test_impact_report_export_returns_job_from_queued_uri_with_basic_auth() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={
                "Status": "QUEUED",
                "QueuedUri": "/Mediapartners/IRsimAccount/Jobs/J123",
                "ResultUri": "/Mediapartners/IRsimAccount/Jobs/J123/Download",
            },
        )

    ctx = context(handler, "https://api.impact.com", ImpactJobs(), account_sid="IRsimAccount", auth_token="tok")
    snapshot = ImpactJobs().create(ctx, ImpactParams(report_id="att_adv_performance", report_params=DAY))
    assert snapshot.provider_job_id == "J123" and snapshot.state is JobState.QUEUED
    assert seen[0].url.path == "/Mediapartners/IRsimAccount/ReportExport/att_adv_performance"
    assert seen[0].url.params["START_DATE"] == "2026-11-01"
    assert seen[0].headers["Authorization"].startswith("Basic ")
    assert seen[0].headers["Accept"] == "application/json"


def test_impact_replay_refused_when_not_replayable() -> None:
    done = fixture_bytes("impact_job_completed.json")
    ctx = context(
        lambda r: httpx.Response(200, content=done), "https://api.impact.com", account_sid="IRsimAccount", auth_token="x"
    )
    with pytest.raises(ReplayNotAllowed, match="not Replayable"):
        ImpactJobs().replay(ctx, "A1b2C3d4E5f6G7h8", ImpactParams(job_id="A1b2C3d4E5f6G7h8"))


@pytest.mark.parametrize("params", [{}, {"job_id": "a", "report_id": "b"}, {"job_id": "../etc"}])
def test_impact_params_need_exactly_one_valid_id(params: dict) -> None:
    with pytest.raises(InvalidRequest):
        ImpactJobs().validate(params)


# --- Samsara request shape and planning (spec limits: 1 month, 5000 vehicles, 1000 over 24 h) --------


START = datetime(2024, 1, 1, tzinfo=UTC)


def samsara_params(hours: int, vehicles: list | str | None = None, start: datetime = START, **extra) -> IftaDetailParams:
    body = {"startHour": start.isoformat(), "endHour": (start + timedelta(hours=hours)).isoformat(), **extra}
    if vehicles is not None:
        body["vehicleIds"] = vehicles
    return SamsaraIftaDetail().validate(body)


def test_samsara_filters_accept_lists_or_strings_and_go_out_as_comma_separated_strings() -> None:
    params = samsara_params(24, "1234, 5678,samsara.vin:1HGBH41JXMN109186,1234", vehicleTagIds=[7, "8"])
    assert params.vehicle_ids == [1234, 5678, "samsara.vin:1HGBH41JXMN109186"]
    assert params.wire() == {
        "startHour": "2024-01-01T00:00:00Z",
        "endHour": "2024-01-02T00:00:00Z",
        "vehicleIds": "1234,5678,samsara.vin:1HGBH41JXMN109186",
        "vehicleTagIds": "7,8",
    }
    assert samsara_params(24, [1, "2"]).wire()["vehicleIds"] == "1,2"
    assert samsara_params(24, 1234).wire()["vehicleIds"] == "1234"


@pytest.mark.parametrize("bad", [["samsara.vin:"], ["not an id"], [True], "1,,2", [-3]])
def test_samsara_rejects_ids_that_are_neither_vehicle_nor_external_ids(bad) -> None:
    with pytest.raises(InvalidRequest, match="vehicleIds"):
        samsara_params(24, bad)


@pytest.mark.parametrize(
    ("hours", "vehicles", "jobs"),
    [
        (24, 5000, [5000]),  # one day: up to 5000 vehicles in one job
        (24, 5001, [2501, 2500]),
        (25, 1000, [1000]),  # more than 24 hours: up to 1000
        (48, 1500, [750, 750]),
        (24, None, [None]),  # vehicles behind filters: the reactive split is the fallback
    ],
)
def test_samsara_plan_splits_vehicles_within_the_documented_limits(hours: int, vehicles: int | None, jobs: list) -> None:
    params = samsara_params(hours, list(range(1, vehicles + 1)) if vehicles else None)
    planned = SamsaraIftaDetail().plan(params)
    assert [len(p.vehicle_ids) if p.vehicle_ids else None for p in planned] == jobs


def test_samsara_plan_cuts_62_days_into_month_long_jobs() -> None:
    planned = SamsaraIftaDetail().plan(samsara_params(62 * 24, [1, 2]))
    assert [(p.start_hour.date().isoformat(), p.end_hour.date().isoformat()) for p in planned] == [
        ("2024-01-01", "2024-02-01"),
        ("2024-02-01", "2024-03-01"),
        ("2024-03-01", "2024-03-03"),
    ]


@settings(deadline=None, max_examples=60)
@given(
    start_day=st.integers(0, 400),
    hours=st.integers(1, 24 * 120),
    vehicles=st.integers(1, 12_000),
)
def test_samsara_plan_tiles_time_and_partitions_vehicles_exactly_once(start_day: int, hours: int, vehicles: int) -> None:
    params = samsara_params(hours, list(range(1, vehicles + 1)), start=START + timedelta(days=start_day, hours=start_day % 24))
    planned = SamsaraIftaDetail().plan(params)
    tiles = sorted({(p.start_hour, p.end_hour) for p in planned})
    assert tiles[0][0] == params.start_hour and tiles[-1][1] == params.end_hour
    assert all(a[1] == b[0] for a, b in zip(tiles, tiles[1:], strict=False))  # no gap, no overlap
    for start, end in tiles:
        assert end <= samsara.add_month(start)
        batches = [p.vehicle_ids for p in planned if (p.start_hour, p.end_hour) == (start, end)]
        limit = samsara.MAX_VEHICLES_OVER_A_DAY if end - start > samsara.ONE_DAY else samsara.MAX_VEHICLES
        assert all(len(batch) <= limit for batch in batches)
        assert sorted(v for batch in batches for v in batch) == list(range(1, vehicles + 1))  # each exactly once


def first_jobs(provider: SamsaraIftaDetail, params: IftaDetailParams, now: float) -> dict:
    request = NewExport(
        id="e1",
        provider="samsara",
        params=wire_params(params),
        credential="default",
        deadline_seconds=60,
        planned=[wire_params(part) for part in provider.plan(params)],
    )
    return new_export(request, now).jobs


def test_first_jobs_are_children_of_a_split_root_only_when_the_plan_has_several() -> None:
    provider = SamsaraIftaDetail()
    single = first_jobs(provider, samsara_params(24, [1]), 100.0)
    assert list(single) == ["0"] and single["0"].status is JobStatus.PENDING and single["0"].next_action_at == 100.0
    planned = first_jobs(provider, samsara_params(48, list(range(1, 1501))), 100.0)
    assert list(planned) == ["0", "0.0", "0.1"]
    assert planned["0"].status is JobStatus.SPLIT and len(planned["0"].params["vehicleIds"]) == 1500
    assert all(planned[key].parent == "0" and planned[key].status is JobStatus.PENDING for key in ("0.0", "0.1"))


def test_samsara_warns_when_the_range_reaches_into_the_last_72_hours() -> None:
    provider = SamsaraIftaDetail()
    now = START + timedelta(days=10)
    assert provider.warnings(samsara_params(24, [1], start=now - timedelta(hours=97)), now) == []
    [warning] = provider.warnings(samsara_params(24, [1], start=now - timedelta(hours=95)), now)
    assert "data may still change" in warning


def test_samsara_declares_both_column_spellings_and_requires_none() -> None:
    schema = SamsaraIftaDetail.row_schema
    assert schema.required == frozenset()
    assert {"device_id", "vehicleId", "distance_meters", "distanceMeters"} <= set(schema.types)


def test_column_types_from_settings_override_the_provider_declaration(tmp_path) -> None:
    import fakeredis

    from tests.conftest import make_settings
    from worker.parsing.schema import ColumnType
    from worker.providers.gateway import ProviderGateway
    from worker.store import ExportStore

    settings = make_settings(tmp_path, column_types={"samsara": {"device_id": "str", "fuel_litres": "float"}})
    gateway = ProviderGateway("samsara", "default", settings, ExportStore(fakeredis.FakeRedis()))
    assert gateway.row_schema.types["device_id"] is ColumnType.STR
    assert gateway.row_schema.types["fuel_litres"] is ColumnType.FLOAT
    assert gateway.row_schema.types["distance_meters"] is ColumnType.FLOAT


# --- impact.com -----------------------------------------------------------------------------------


def test_impact_completed_job_downloads_with_mode_stream_and_replay_403_is_not_replayable() -> None:
    completed = fixture_bytes("impact_job_completed.json").replace(b'"Replayable": false', b'"Replayable": true')

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403) if request.method == "PUT" else httpx.Response(200, content=completed)

    ctx = context(handler, "https://api.impact.com", account_sid="IRsimAccount", auth_token="x")
    with pytest.raises(ReplayNotAllowed, match="HTTP 403: not replayable"):
        ImpactJobs().replay(ctx, "A1b2C3d4E5f6G7h8", ImpactParams(job_id="A1b2C3d4E5f6G7h8"))


def test_impact_report_export_with_status_error_fails_with_the_reason() -> None:
    from worker.errors import PermanentError

    ctx = context(
        lambda r: httpx.Response(200, json={"Status": "ERROR", "Message": "Invalid START_DATE"}),
        "https://api.impact.com",
        account_sid="IRsimAccount",
        auth_token="x",
    )
    with pytest.raises(PermanentError, match="Status ERROR.*Invalid START_DATE"):
        ImpactJobs().create(ctx, ImpactParams(report_id="r1", report_params=DAY))


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"report_id": "r", "report_params": {"START_DATE": "2026-11-01"}}, "END_DATE is required"),
        ({"report_id": "r", "report_params": {**DAY, "ResultFormat": "XML"}}, "CSV only"),
        ({"report_id": "r", "report_params": {"START_DATE": "2026-11-02", "END_DATE": "2026-11-01"}}, "not be after"),
        ({"report_id": "r", "api_root": "Advertisers", "report_params": {"StartDate": "2026-11-01"}}, "date-time"),
        ({"job_id": "j", "report_params": DAY}, "belong to a report export"),
    ],
)
def test_impact_report_params_are_checked_at_enqueue(params: dict, fragment: str) -> None:
    with pytest.raises(InvalidRequest, match=fragment):
        ImpactJobs().validate(params)


def test_every_gateway_of_a_process_shares_one_tls_context(tmp_path: Path) -> None:
    """Each client loading the CA bundle again cost ~0.8 MiB: two clients per credential in every pool process."""
    import fakeredis

    from tests.conftest import make_settings
    from worker.providers.gateway import ProviderGateway
    from worker.store import ExportStore

    credentials = {name: Credential(token=f"t-{name}") for name in ("a", "b", "c")}
    settings = make_settings(tmp_path, credentials=credentials)
    store = ExportStore(fakeredis.FakeRedis())
    clients = []
    for name in credentials:
        gateway = ProviderGateway("samsara", name, settings, store)
        clients += [gateway.context.client, gateway.signed_download_client]
    contexts = {id(client._transport._pool._ssl_context) for client in clients}  # type: ignore[attr-defined]
    assert len(clients) == 6 and len(contexts) == 1
