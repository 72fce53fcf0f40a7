"""Client and simulator against the providers' published specs, so they can no longer drift together.

Each flow runs our real provider client (through :class:`ProviderGateway`) against the simulator
over HTTP on 127.0.0.1, records every exchange, and checks each request the client sent and each
response the simulator gave against the spec facts in ``tests/contract_data`` (see
``tests/contract.py``). The simulator's refusals are checked the same way, with the spec's error
bodies. Time is a fake clock, so the flows take milliseconds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import pytest

from tests.conftest import FakeClock, make_settings
from tests.contract import DATA, ContractViolation, RecordingTransport, check_request, check_response, facts, operation_for
from worker.dev.simulator import ImpactBehaviour, SamsaraBehaviour, SimulatorConfig, SimulatorThread
from worker.engine.transitions import first_jobs
from worker.errors import ReplayNotAllowed, RetryLater
from worker.http_download import open_download
from worker.models import JobSnapshot, JobState
from worker.providers import impact, samsara
from worker.providers.base import wire_params
from worker.providers.gateway import ProviderGateway
from worker.settings import Credential
from worker.store import ExportStore

SID = "IRsimAccount"
DOCUMENTED = json.loads((DATA / "documented.json").read_text())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[SimulatorThread]:
    config = SimulatorConfig(
        samsara_default=SamsaraBehaviour(files=2, rows_per_file=30),
        impact_default=ImpactBehaviour(rows=25),
    )
    with SimulatorThread(config, clock=clock) as server:
        yield server


@pytest.fixture
def transport() -> RecordingTransport:
    return RecordingTransport()


def gateway(provider: str, sim: SimulatorThread, transport: RecordingTransport, tmp_path: Path) -> ProviderGateway:
    config = sim.app.state.sim.config
    settings = make_settings(
        tmp_path,
        base_urls={"samsara": sim.url, "impact": sim.url},
        credentials={
            "default": Credential(token=config.samsara_token),
            "impact": Credential(account_sid=config.impact_account_sid, auth_token=config.impact_auth_token),
        },
    )
    store = ExportStore(fakeredis.FakeRedis(), prefix="contract")
    return ProviderGateway(provider, "impact" if provider == "impact" else "default", settings, store, transport=transport)


def download(gw: ProviderGateway, snapshot: JobSnapshot) -> list[bytes]:
    bodies = []
    for remote in snapshot.files:
        with open_download(
            gw.download_client(remote.authenticated),
            remote.url,
            guard=gw.url_guard,
            max_bytes=1 << 30,
            provider=gw.provider.name,
            credential_name=gw.credential_name,
            signed_url=not remote.authenticated,
        ) as body:
            bodies.append(b"".join(body))
    return bodies


def check_all(transport: RecordingTransport) -> set[str]:
    """Every API exchange against its spec; the operations seen, for the caller to assert coverage."""
    seen = set()
    for request, response in transport.api_exchanges():
        check_request(request)
        seen.add(check_response(request, response).operation_id)
    return seen


def run_to_end(gw: ProviderGateway, clock: FakeClock, params: dict[str, Any]) -> JobSnapshot:
    snapshot = gw.create(params)
    for _ in range(20):
        if snapshot.state.terminal:
            return snapshot
        clock.now += 5
        snapshot = gw.get(snapshot.provider_job_id, params)
    raise AssertionError(f"job {snapshot.provider_job_id} never ended: {snapshot}")


# --- the facts themselves --------------------------------------------------------------------------


def test_contract_data_names_the_spec_and_version_of_every_fact() -> None:
    versions = {name: facts(name)["source"] for name in ("samsara", "impact-partner-jobs", "impact-brand-reports")}
    assert versions["samsara"]["version"] == "2024-11-18" and versions["samsara"]["file"] == "samsara-csv-api-openapi.yml"
    assert versions["impact-partner-jobs"]["version"] == "16" and versions["impact-brand-reports"]["version"] == "v14"
    assert all(len(source["sha256"]) == 64 for source in versions.values())
    for group in ("samsara", "impact"):
        assert all(fact["source"] for fact in DOCUMENTED[group].values())


def test_documented_facts_are_the_ones_the_provider_modules_use() -> None:
    s, i = DOCUMENTED["samsara"], DOCUMENTED["impact"]
    assert samsara.MAX_VEHICLES == s["max_vehicles"]["value"]
    assert samsara.MAX_VEHICLES_OVER_A_DAY == s["max_vehicles_over_a_day"]["value"]
    assert samsara.UNSETTLED == timedelta(hours=s["unsettled_hours"]["value"])
    rates = samsara.SamsaraIftaDetail.rate_limits
    assert [rates[op].requests for op in rates] == [s["create_rate"]["value"][0], s["poll_rate"]["value"][0]]
    assert samsara.TOO_MANY_VEHICLES in s["too_large_details"]["value"]
    assert [impact.ACCOUNT_RATE.requests, impact.ACCOUNT_RATE.per_seconds] == i["account_rate"]["value"]
    assert [impact.REPORT_EXPORT_QUOTA.requests, impact.REPORT_EXPORT_QUOTA.per_seconds] == i["report_export_quota"]["value"]
    assert impact.ACCEPT_JSON["Accept"] == i["accept"]["value"] and impact.STREAM["Mode"] == i["download_mode"]["value"]
    assert sorted(status.value for status in impact.REPLAYABLE_STATUSES) == i["replayable_statuses"]["value"]
    assert set(impact.RESULT_FORMATS) <= set(i["result_formats"]["value"])


def test_readme_lists_every_unverified_fact_of_each_provider_module() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    listed = readme.split("**Not verified**", 1)[1].split("\n\n", 2)[1]
    for module in (samsara, impact):
        missing = [fact for fact in module.UNVERIFIED if f"**{fact}**" not in listed]
        assert missing == [], f"{module.__name__}: README does not list {missing}"


def test_the_checker_fails_on_a_wrong_field_type_and_a_missing_parameter() -> None:
    base = "https://api.samsara.com"
    body = {"startHour": "2026-11-01T00:00:00Z", "endHour": "2026-11-02T00:00:00Z", "vehicleIds": [1, 2]}
    with pytest.raises(ContractViolation, match="vehicleIds"):
        check_request(httpx.Request("POST", f"{base}/ifta-detail/csv", json=body))
    with pytest.raises(ContractViolation, match="START_DATE"):
        check_request(httpx.Request("GET", f"https://api.impact.com/Mediapartners/{SID}/ReportExport/r1?END_DATE=2026-01-01"))
    with pytest.raises(ContractViolation, match="not in the spec"):
        check_request(httpx.Request("GET", f"https://api.impact.com/Mediapartners/{SID}/Jobs/j1?Verbose=1"))
    with pytest.raises(ContractViolation, match="not an operation"):
        check_request(httpx.Request("GET", f"{base}/ifta-summary/csv"))
    request = httpx.Request("GET", f"{base}/ifta-detail/csv/j1")
    args = {"startHour": "a", "endHour": "b", "vehicleIds": ["1"]}
    job = {"args": args, "jobId": "j1", "jobStatus": "Done", "requestedAtTime": "x"}
    with pytest.raises(ContractViolation, match="jobStatus|vehicleIds"):
        check_response(request, httpx.Response(200, json={"data": job}))
    with pytest.raises(ContractViolation, match="requestId"):
        check_response(request, httpx.Response(404, json={"message": "gone"}))
    dated = {"Id": "j1", "Status": "COMPLETED", "CreatedDate": "yesterday"}
    with pytest.raises(ContractViolation, match="CreatedDate"):
        check_response(httpx.Request("GET", f"https://api.impact.com/Advertisers/{SID}/Jobs/j1"), httpx.Response(200, json=dated))


# --- Samsara ---------------------------------------------------------------------------------------


def test_samsara_planned_jobs_polls_and_gzip_downloads_follow_the_spec(
    sim: SimulatorThread, transport: RecordingTransport, clock: FakeClock, tmp_path: Path
) -> None:
    gw = gateway("samsara", sim, transport, tmp_path)
    vehicles: list[int | str] = [*range(1, 1500), "samsara.vin:1HGBH41JXMN109186"]
    request = gw.params({"startHour": "2024-03-01T00:00:00Z", "endHour": "2024-03-03T00:00:00Z", "vehicleIds": vehicles})
    planned = [wire_params(part) for part in gw.provider.plan(request)]
    jobs = [job for job in first_jobs(wire_params(request), planned, clock.now).values() if job.parent]
    assert [len(job.params["vehicleIds"]) for job in jobs] == [750, 750]
    for job in jobs:
        snapshot = run_to_end(gw, clock, job.params)
        assert snapshot.state is JobState.SUCCEEDED
        assert [f.name for f in snapshot.files] == ["output-001.csv.gz", "output-002.csv.gz"]
        for body in download(gw, snapshot):
            header = body.split(b"\n", 1)[0].decode()
            assert header.startswith("device_id,jurisdiction,start_ms") and body.count(b"\n") == 31
    tags = {"startHour": "2024-03-01T00:00:00Z", "endHour": "2024-03-01T06:00:00Z", "vehicleTagIds": "7,8"}
    tagged = run_to_end(gw, clock, tags)
    assert tagged.state is JobState.SUCCEEDED
    assert check_all(transport) == {"createIftaDetailJob", "getIftaDetailJob"}
    storage = [request for request, _ in transport.exchanges if request.url.path.startswith("/_files/")]
    assert len(storage) == 4 and all("authorization" not in request.headers for request in storage)


def test_samsara_refusals_carry_the_spec_error_bodies(sim: SimulatorThread, transport: RecordingTransport) -> None:
    client = httpx.Client(base_url=sim.url, transport=transport, headers={"Authorization": "Bearer sim-samsara-token"})
    window = {"startHour": "2024-03-01T00:00:00Z", "endHour": "2024-03-02T00:00:00Z"}
    too_long = {"startHour": "2024-01-01T00:00:00Z", "endHour": "2024-03-01T00:00:00Z"}
    for body in ({**window, "vehicleIds": "1,not an id"}, too_long):
        assert client.post("/ifta-detail/csv", json=body).status_code == 400
    assert client.post("/ifta-detail/csv", json=window, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/ifta-detail/csv/unknown-job").status_code == 404
    assert client.request("DELETE", "/ifta-detail/csv/unknown-job").status_code == 405
    statuses = []
    for request, response in transport.api_exchanges():
        check_response(request, response)
        statuses.append(response.status_code)
    assert statuses == [400, 400, 401, 404, 405]


# --- impact.com ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api_root", "report_params"),
    [
        ("Mediapartners", {"START_DATE": "2024-03-01", "END_DATE": "2024-03-01", "SUBAID": "10306"}),
        ("Advertisers", {"StartDate": "2024-03-01T00:00:00Z", "EndDate": "2024-03-02T00:00:00Z", "SUBAID": "10306"}),
    ],
)
def test_impact_report_export_poll_download_and_replay_follow_the_specs(
    sim: SimulatorThread, transport: RecordingTransport, clock: FakeClock, tmp_path: Path, api_root: str, report_params: dict
) -> None:
    gw = gateway("impact", sim, transport, tmp_path)
    params = {"report_id": "att_adv_performance_by_day", "report_params": report_params, "api_root": api_root}
    created = gw.create(params)
    early = f"/{api_root}/{SID}/Jobs/{created.provider_job_id}/Download?Mode=Stream"
    with (
        pytest.raises(RetryLater, match="not ready"),
        open_download(
            gw.download_client(True),
            early,
            guard=gw.url_guard,
            max_bytes=1 << 20,
            provider="impact",
            credential_name="impact",
            signed_url=False,
        ),
    ):
        pass  # fmt: skip
    assert gw.create(params).provider_job_id == created.provider_job_id  # identical parameters: the cached job
    done = run_to_end(gw, clock, params)
    assert done.state is JobState.SUCCEEDED
    [body] = download(gw, done)
    assert body.count(b"\n") == 26
    replayed = gw.replay(done.provider_job_id, params)
    assert replayed.state is JobState.QUEUED
    seen = check_all(transport)
    assert len(seen) == 4  # ReportExport, Jobs/{id}, Download (202 and 200), Replay
    assert all(request.headers["accept"] == "application/json" for request, _ in transport.api_exchanges())


def test_impact_tracking_an_existing_job_and_refused_replay(
    sim: SimulatorThread, transport: RecordingTransport, clock: FakeClock, tmp_path: Path
) -> None:
    sim.app.state.sim.config.impact_default = ImpactBehaviour(rows=5, replayable=False)
    existing = httpx.post(f"{sim.url}/_sim/impact/jobs", json={"report_id": "r1"}).json()["Id"]
    gw = gateway("impact", sim, transport, tmp_path)
    done = run_to_end(gw, clock, {"job_id": existing})
    assert done.state is JobState.SUCCEEDED
    with pytest.raises(ReplayNotAllowed, match="not Replayable"):
        gw.replay(existing, {"job_id": existing})
    forced = httpx.put(f"{sim.url}/Mediapartners/{SID}/Jobs/{existing}/Replay", auth=(SID, "sim-impact-token"))
    check_response(forced.request, forced)
    assert forced.status_code == 403
    assert check_all(transport) == {"retrieveJobStatus"}


def test_impact_invalid_report_input_is_refused_at_enqueue_and_by_the_simulator(
    sim: SimulatorThread, transport: RecordingTransport, tmp_path: Path
) -> None:
    from worker.errors import InvalidRequest

    gw = gateway("impact", sim, transport, tmp_path)
    for report_params, fragment in (
        ({"START_DATE": "2024-03-01"}, "END_DATE is required"),
        ({"START_DATE": "2024-03-01", "END_DATE": "03/02/2024"}, "YYYY-MM-DD"),
        ({"START_DATE": "2024-03-01", "END_DATE": "2024-03-01", "ResultFormat": "JSON"}, "CSV only"),
    ):
        with pytest.raises(InvalidRequest, match=fragment):
            gw.params({"report_id": "r1", "report_params": report_params})
    refused = httpx.get(
        f"{sim.url}/Mediapartners/{SID}/ReportExport/r1", auth=(SID, "sim-impact-token"), headers={"Accept": "application/json"}
    )
    check_response(refused.request, refused)
    assert refused.json()["Status"] == "ERROR"
    assert operation_for("GET", f"/Mediapartners/{SID}/ReportExport/r1").operation_id == "exportReports"


def test_impact_quota_429s_are_honoured_from_both_headers(
    sim: SimulatorThread, transport: RecordingTransport, clock: FakeClock, tmp_path: Path
) -> None:
    sim.app.state.sim.config.impact_report_export_daily_limit = 1
    clock.now = time.time()  # brand 429s carry a Unix time, read against the real clock
    gw = gateway("impact", sim, transport, tmp_path)
    day = {"START_DATE": "2024-03-01", "END_DATE": "2024-03-01"}
    gw.create({"report_id": "r1", "report_params": day})
    provider_wait = 86400 - clock.now % 86400  # the simulator's daily window ends at midnight UTC
    for api_root, header in (("Mediapartners", "retry-after"), ("Advertisers", "x-ratelimit-reset")):
        gw = gateway("impact", sim, transport, tmp_path)  # a fresh store: no hold from the other flavour
        with pytest.raises(RetryLater, match="waiting until") as refused:
            gw.create({"report_id": "r2", "report_params": day, "api_root": api_root} | brand_dates(api_root))
        assert header in transport.exchanges[-1][1].headers
        until = datetime.fromisoformat(str(refused.value).rsplit("waiting until ", 1)[1])
        expected = datetime.now(UTC) + timedelta(seconds=provider_wait)
        assert abs((until - expected).total_seconds()) < 120  # the provider's reset, not a few seconds
        # re-checked after the slow-poll delay (no busy loop), or at the reset when that comes first (near midnight)
        left = 86400 - time.time() % 86400
        assert refused.value.retry_after == pytest.approx(min(left, gw.longest_countdown), abs=2)
        with pytest.raises(RetryLater, match="429"):
            gw.get("any-job", {"job_id": "any-job"})  # every worker honours the hold, without calling the API
    assert len(transport.exchanges) == 3


def brand_dates(api_root: str) -> dict[str, Any]:
    if api_root == "Mediapartners":
        return {}
    return {"report_params": {"StartDate": "2024-03-01T00:00:00Z", "EndDate": "2024-03-02T00:00:00Z"}}


@pytest.mark.parametrize(
    ("api_root", "report_id", "operations"),
    [
        ("Mediapartners", "mp_action_listing_fast", {"listReports", "retrieveMetadata"}),
        ("Advertisers", "adv_action_listing_pm", {"listAllReports", "getReportMetadata"}),
    ],
)
def test_impact_reports_and_their_metadata_follow_the_specs(
    sim: SimulatorThread, transport: RecordingTransport, tmp_path: Path, api_root: str, report_id: str, operations: set[str]
) -> None:
    gw = gateway("impact", sim, transport, tmp_path)
    listed = {item.id: item for item in gw.reports(api_root)}
    catalogue = [report for report in sim.app.state.sim.config.impact_reports if report.api_root == api_root]
    assert set(listed) == {report.id for report in catalogue}
    assert [item.id for item in listed.values() if not item.exportable] == [r.id for r in catalogue if not r.api_accessible]
    detail = gw.report(report_id, api_root)
    assert detail.id == report_id and detail.columns == ["ActionId", "CampaignId", "EventDate", "Payout", "Status"]
    assert {"SUBAID"} < {parameter.name for parameter in detail.parameters}
    assert detail.required == (["START_DATE", "END_DATE"] if api_root == "Mediapartners" else ["StartDate", "EndDate"])
    assert check_all(transport) == operations
    assert all(request.headers["accept"] == "application/json" for request, _ in transport.api_exchanges())


def test_impact_report_refusals_and_the_xml_default(sim: SimulatorThread, transport: RecordingTransport, tmp_path: Path) -> None:
    from worker.errors import AuthError, InvalidRequest

    gw = gateway("impact", sim, transport, tmp_path)
    with pytest.raises(InvalidRequest, match="no report 'mp_payment_history'"):
        gw.report("mp_payment_history", "Mediapartners")  # listed, but for the web app only: 404
    client = httpx.Client(base_url=sim.url, transport=transport, auth=(SID, "sim-impact-token"))
    ui_only = client.get(
        f"/Mediapartners/{SID}/ReportExport/mp_payment_history", params={"START_DATE": "2024-03-01", "END_DATE": "2024-03-01"}
    )
    assert ui_only.status_code == 404
    assert [check_response(q, r).operation_id for q, r in transport.api_exchanges()] == ["retrieveMetadata", "exportReports"]
    xml = client.get(f"/Mediapartners/{SID}/Reports")
    assert xml.headers["content-type"].startswith("application/xml")
    assert "<Reports><Report><Name>Performance by Day</Name><Id>att_adv_performance_by_day</Id>" in xml.text
    with pytest.raises(AuthError):
        ProviderGateway(
            "impact",
            "impact",
            gw.settings.model_copy(update={"credentials": {"impact": Credential(account_sid=SID, auth_token="wrong")}}),
            gw.store,
            transport,
        ).reports(None)
    assert transport.exchanges[-1][1].status_code == 401
