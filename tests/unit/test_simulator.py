"""The provider simulator, exercised over real HTTP on 127.0.0.1.

One server serves the whole module with a fake clock, so lifecycles are stepped through exactly
instead of slept through; each test resets the simulator and installs its own config.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.conftest import FakeClock
from worker.dev.simulator import ImpactBehaviour, SamsaraBehaviour, SimulatorConfig, SimulatorThread
from worker.dev.simulator.csvgen import CsvFile, gzipped
from worker.dev.simulator.samsara import COLUMNS as SAMSARA_COLUMNS
from worker.dev.simulator.samsara import TOO_MANY_VEHICLES

IMPACT_COLUMNS = ["ActionId", "CampaignId", "EventDate", "Payout", "Status"]
SID = "IRsimAccount"
WINDOW = {"startHour": "2024-03-01T00:00:00Z", "endHour": "2024-03-02T00:00:00Z"}
IMPACT_JOB_FIELDS = {
    "Id", "Type", "ProgramId", "CreatedBy", "CreatedDate", "StartedDate", "CompletedDate", "AbandonedDate",
    "CancelledDate", "FailedDate", "LastProgressUpdateDate", "Status", "StatusMessage", "RecordsProcessed",
    "PercentageComplete", "Replayable", "ResultUri",
}  # fmt: skip


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def server(clock: FakeClock) -> Iterator[SimulatorThread]:
    with SimulatorThread(clock=clock) as sim:
        yield sim


@pytest.fixture
def control(server: SimulatorThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.post("/_sim/reset").status_code == 200
        yield client


@pytest.fixture
def samsara(server: SimulatorThread) -> Iterator[httpx.Client]:
    headers = {"Authorization": "Bearer sim-samsara-token"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
        yield client


@pytest.fixture
def impact(server: SimulatorThread) -> Iterator[httpx.Client]:
    headers = {"Accept": "application/json"}
    with httpx.Client(base_url=f"{server.url}/Mediapartners/{SID}", auth=(SID, "sim-impact-token"), headers=headers) as client:
        yield client


def configure(control: httpx.Client, **fields: Any) -> SimulatorConfig:
    config = SimulatorConfig(**fields)
    response = control.post("/_sim/config", json=config.model_dump(mode="json"))
    assert response.status_code == 200, response.text
    return config


def create_samsara(samsara: httpx.Client, **body: Any) -> dict[str, Any]:
    response = samsara.post("/ifta-detail/csv", json={**WINDOW, **body})
    assert response.status_code == 201, response.text
    return response.json()["data"]


def poll_samsara(samsara: httpx.Client, job_id: str) -> dict[str, Any]:
    response = samsara.get(f"/ifta-detail/csv/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def parse_csv(body: bytes) -> tuple[list[str], list[list[str]]]:
    header, *rows = csv.reader(io.StringIO(body.decode()))
    return header, rows


# --- Samsara ---------------------------------------------------------------------------------------


def test_samsara_lifecycle_follows_the_scaled_clock(control: httpx.Client, samsara: httpx.Client, clock: FakeClock) -> None:
    configure(control, time_scale=10, samsara_default=SamsaraBehaviour(requested_seconds=1, processing_seconds=2))
    job = create_samsara(samsara)
    assert job["jobStatus"] == "Requested"
    assert job["args"] == {**WINDOW, "vehicleIds": [1, 2, 3, 4, 5]}
    assert job["requestedAtTime"].endswith("Z") and "startedAtTime" not in job and "files" not in job

    clock.advance(0.15)  # 1.5 simulated seconds
    job = poll_samsara(samsara, job["jobId"])
    assert job["jobStatus"] == "Processing" and "startedAtTime" in job and "files" not in job

    clock.advance(0.2)
    job = poll_samsara(samsara, job["jobId"])
    assert job["jobStatus"] == "Completed"
    started, completed = (datetime.fromisoformat(job[k]) for k in ("startedAtTime", "completedAtTime"))
    assert (completed - started).total_seconds() == pytest.approx(0.2)
    assert [f["name"] for f in job["files"]] == ["output-001.csv.gz", "output-002.csv.gz"]
    assert all(f["recordCount"] == 100 for f in job["files"])

    stats = control.get("/_sim/stats").json()
    assert stats["creates"] == {"samsara": 1, "impact": 0}
    assert stats["polls"]["samsara"] == 2
    assert stats["jobs"][job["jobId"]]["status"] == "Completed"


def test_samsara_job_runs_on_real_time_divided_by_time_scale() -> None:
    config = SimulatorConfig(time_scale=1000, samsara_default=SamsaraBehaviour(requested_seconds=5, processing_seconds=5))
    with SimulatorThread(config) as sim, httpx.Client(base_url=sim.url) as client:
        client.headers["Authorization"] = "Bearer sim-samsara-token"
        job = create_samsara(client)
        deadline = time.monotonic() + 2
        while job["jobStatus"] != "Completed" and time.monotonic() < deadline:
            time.sleep(0.002)
            job = poll_samsara(client, job["jobId"])
        assert job["jobStatus"] == "Completed"
        assert job["files"][0]["downloadUrl"].startswith(f"{sim.url}/_files/samsara/")


def test_samsara_rejects_bad_auth_and_bad_requests(server: SimulatorThread, samsara: httpx.Client) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sim-samsara-token"}):
        response = httpx.post(f"{server.url}/ifta-detail/csv", json=WINDOW, headers=headers)
        assert response.status_code == 401
        assert set(response.json()) == {"message", "requestId"}
    assert httpx.get(f"{server.url}/ifta-detail/csv/any").status_code == 401
    assert samsara.get("/ifta-detail/csv/no-such-job").status_code == 404
    refused = [
        {"startHour": WINDOW["startHour"]},
        {**WINDOW, "endHour": WINDOW["startHour"]},
        {**WINDOW, "startHour": "2024-03-01"},
        {**WINDOW, "vehicleIds": [1, 2]},  # the spec's filters are comma-separated strings
        {**WINDOW, "vehicleTagIds": [7]},
        {**WINDOW, "vehicleIds": "1,x"},
        {"startHour": "2024-01-01T00:00:00Z", "endHour": "2024-02-01T01:00:00Z"},  # over one month
        {**WINDOW, "vehicleIds": ",".join(map(str, range(1, 5002)))},
        {**WINDOW, "endHour": "2024-03-02T01:00:00Z", "vehicleIds": ",".join(map(str, range(1, 1002)))},
    ]
    for body in refused:
        response = samsara.post("/ifta-detail/csv", json=body)
        assert response.status_code == 400, body
        assert set(response.json()) == {"message", "requestId"}
    assert samsara.delete("/ifta-detail/csv").json()["message"] == "DELETE not allowed on /ifta-detail/csv."


def test_samsara_accepts_external_ids_and_reports_numeric_ids(control: httpx.Client, samsara: httpx.Client) -> None:
    from worker.dev.simulator.samsara import external_vehicle_id

    job = create_samsara(samsara, vehicleIds="1234, samsara.vin:1HGBH41JXMN109186", vehicleTagIds="7,8")
    assert job["args"]["vehicleIds"] == [1234, external_vehicle_id("samsara.vin:1HGBH41JXMN109186")]
    month = create_samsara(samsara, startHour="2024-01-31T00:00:00Z", endHour="2024-02-29T00:00:00Z")
    assert month["args"]["endHour"] == "2024-02-29T00:00:00Z"


def test_samsara_files_match_record_count_and_are_deterministic(
    control: httpx.Client, samsara: httpx.Client, clock: FakeClock
) -> None:
    configure(control, samsara_default=SamsaraBehaviour(files=3, rows_per_file=50, bad_rows_every=7))
    job = create_samsara(samsara, vehicleIds="11,12,13")
    assert job["args"]["vehicleIds"] == [11, 12, 13]
    clock.advance(3)
    job = poll_samsara(samsara, job["jobId"])
    window = [datetime.fromisoformat(WINDOW[k]) for k in ("startHour", "endHour")]

    bodies = []
    for file in job["files"]:
        response = httpx.get(file["downloadUrl"])  # signed URL: no bearer token
        assert response.status_code == 200
        assert "content-encoding" not in response.headers and response.content[:2] == b"\x1f\x8b"
        assert int(response.headers["content-length"]) == len(response.content)
        header, rows = parse_csv(gzip.decompress(response.content))
        assert header == list(SAMSARA_COLUMNS)
        assert len(rows) == file["recordCount"] == 50
        distance = header.index("distance_meters")
        bad = [n for n, row in enumerate(rows, 1) if len(row) != len(header) or not _is_float(row[distance])]
        assert bad == [7, 14, 21, 28, 35, 42, 49]
        assert [len(rows[n - 1]) for n in bad[:2]] == [len(header) - 1, len(header)]  # short row, bad distance
        for row in (r for n, r in enumerate(rows, 1) if n not in bad):
            assert int(row[0]) in (11, 12, 13)
            start, end = int(row[2]) / 1000, int(row[3]) / 1000
            assert window[0].timestamp() <= start <= end <= window[1].timestamp()
            assert float(row[5]) <= float(row[6])
        bodies.append(response.content)
    assert len(set(bodies)) == 3
    assert httpx.get(job["files"][0]["downloadUrl"]).content == bodies[0]

    stats = control.get("/_sim/stats").json()["jobs"][job["jobId"]]
    assert stats["files"] == [{"name": f["name"], "recordCount": 50} for f in job["files"]]
    assert stats["downloads"] == 4 and stats["vehicleIds"] == [11, 12, 13]


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def test_samsara_download_url_expires_and_repoll_refreshes_it(
    control: httpx.Client, samsara: httpx.Client, clock: FakeClock
) -> None:
    configure(control, time_scale=2, samsara_default=SamsaraBehaviour(url_ttl_seconds=60, rows_per_file=3))
    job_id = create_samsara(samsara)["jobId"]
    clock.advance(2)
    file = poll_samsara(samsara, job_id)["files"][0]
    expires = datetime.fromisoformat(file["downloadUrlExpirationTime"]).timestamp()
    assert expires == pytest.approx(clock.now + 30)

    clock.advance(31)
    expired = httpx.get(file["downloadUrl"])
    assert expired.status_code == 403
    assert "<Code>AccessDenied</Code><Message>Request has expired</Message>" in expired.text

    fresh = poll_samsara(samsara, job_id)["files"][0]
    assert fresh["downloadUrl"] != file["downloadUrl"]
    assert httpx.get(fresh["downloadUrl"]).status_code == 200
    tampered = fresh["downloadUrl"].replace("/0?", "/1?")
    assert httpx.get(tampered).status_code == 403
    assert httpx.get(fresh["downloadUrl"].split("?")[0]).status_code == 403


def test_samsara_behaviour_is_chosen_by_start_hour(control: httpx.Client, samsara: httpx.Client, clock: FakeClock) -> None:
    configure(
        control,
        samsara_behaviours={
            "2024-04-01T00:00:00Z": SamsaraBehaviour(max_vehicles=3),
            "2024-05-01T00:00:00Z": SamsaraBehaviour(outcome="Failed", failure_details="Boom"),
            "2024-06-01T00:00:00Z": SamsaraBehaviour(files=0),
        },
    )
    too_many = create_samsara(samsara, startHour="2024-04-01T00:00:00Z", endHour="2024-04-02T00:00:00Z")
    small = create_samsara(samsara, startHour="2024-04-01T00:00:00Z", endHour="2024-04-02T00:00:00Z", vehicleIds="1,2")
    failing = create_samsara(samsara, startHour="2024-05-01T00:00:00Z", endHour="2024-05-02T00:00:00Z")
    empty = create_samsara(samsara, startHour="2024-06-01T00:00:00Z", endHour="2024-06-02T00:00:00Z")
    clock.advance(3)

    job = poll_samsara(samsara, too_many["jobId"])
    assert job["jobStatus"] == "Failed" and "failedAtTime" in job and "files" not in job
    assert job["details"] == TOO_MANY_VEHICLES.format(requested=5, limit=3)
    assert "limiting the number of vehicles" in job["details"]
    assert poll_samsara(samsara, small["jobId"])["jobStatus"] == "Completed"
    assert poll_samsara(samsara, failing["jobId"])["details"] == "Boom"
    job = poll_samsara(samsara, empty["jobId"])
    assert job["jobStatus"] == "Completed" and "files" not in job


# --- faults ----------------------------------------------------------------------------------------


def test_scripted_statuses_then_normal_behaviour(control: httpx.Client, samsara: httpx.Client) -> None:
    fault = {"path_contains": "/ifta-detail/csv", "method": "GET", "statuses": [429, 429, 503], "retry_after": "1"}
    assert control.post("/_sim/faults", json=fault).status_code == 201
    job_id = create_samsara(samsara)["jobId"]  # POST does not match the GET-only fault

    responses = [samsara.get(f"/ifta-detail/csv/{job_id}") for _ in range(4)]
    assert [r.status_code for r in responses] == [429, 429, 503, 200]
    assert [r.headers.get("retry-after") for r in responses] == ["1", "1", None, None]
    assert control.get("/_sim/faults").json() == {"pending": []}

    stats = control.get("/_sim/stats").json()
    assert stats["responses_by_status"] == {"201": 1, "429": 2, "503": 1, "200": 1}
    assert stats["polls"]["samsara"] == 1


def test_truncated_download_closes_the_connection_mid_body(
    control: httpx.Client, samsara: httpx.Client, clock: FakeClock
) -> None:
    configure(control, samsara_default=SamsaraBehaviour(files=1, rows_per_file=5000))
    job_id = create_samsara(samsara)["jobId"]
    clock.advance(3)
    url = poll_samsara(samsara, job_id)["files"][0]["downloadUrl"]
    control.post("/_sim/faults", json={"path_contains": "/_files/", "truncate": 1})

    received = 0
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream("GET", url) as response:
        length = int(response.headers["content-length"])
        for chunk in response.iter_raw():
            received += len(chunk)
    assert 0 < received < length
    assert len(httpx.get(url).content) == length


def test_latency_delays_provider_calls_only(control: httpx.Client, samsara: httpx.Client) -> None:
    # A wide latency, so a control call on a loaded machine cannot be mistaken for a delayed one.
    configure(control, latency_seconds=1.0)
    started = time.monotonic()
    create_samsara(samsara)
    assert time.monotonic() - started >= 1.0
    started = time.monotonic()
    control.get("/_sim/stats")
    assert time.monotonic() - started < 1.0


# --- large files -----------------------------------------------------------------------------------


def test_content_length_is_exact_for_a_large_file(control: httpx.Client, samsara: httpx.Client, clock: FakeClock) -> None:
    configure(control, samsara_default=SamsaraBehaviour(files=1, rows_per_file=200_000, bad_rows_every=997))
    job_id = create_samsara(samsara)["jobId"]
    clock.advance(3)
    url = poll_samsara(samsara, job_id)["files"][0]["downloadUrl"]
    size = lines = 0
    inflate = zlib.decompressobj(wbits=31)
    with httpx.stream("GET", url) as response:
        for chunk in response.iter_raw():
            size += len(chunk)
            lines += inflate.decompress(chunk).count(b"\n")
        assert size == int(response.headers["content-length"])
    assert lines == 200_001 and inflate.eof


@pytest.mark.parametrize("every", [1, 2, 7, 997, None])
@pytest.mark.parametrize("rows", [0, 1, 999, 10_007])
def test_bad_rows_land_every_nth_row_across_pool_cycles(rows: int, every: int | None) -> None:
    def make_row(rng: random.Random) -> tuple[str, str, str]:
        return str(rng.randint(1, 9)), "x" * rng.randint(1, 30), f"{rng.uniform(0, 1e5):.3f}"

    file = CsvFile(["a", "b", "c"], rows, "seed", make_row, numeric_column=2, bad_rows_every=every)
    body = b"".join(file.chunks())
    assert len(body) == file.content_length
    header, data = parse_csv(body)
    assert header == ["a", "b", "c"] and len(data) == rows
    bad = [n for n, row in enumerate(data, 1) if len(row) != 3 or not _is_float(row[2])]
    assert bad == (list(range(every, rows + 1, every)) if every else [])


def test_csv_generation_runs_in_constant_memory() -> None:
    file = CsvFile(
        SAMSARA_COLUMNS[:7],
        2_000_000,
        "seed",
        lambda rng: ("1", "TX", "1704067200000", "1704070800000", f"{rng.random():.3f}", "1", "2"),
        numeric_column=4,
        bad_rows_every=1000,
    )
    tracemalloc.start()
    try:
        total = sum(len(chunk) for chunk in file.chunks())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == file.content_length > 80_000_000
    assert peak < 1_000_000


# --- impact.com ------------------------------------------------------------------------------------


def poll_impact(impact: httpx.Client, job_id: str) -> dict[str, Any]:
    response = impact.get(f"/Jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


DAY = {"START_DATE": "2024-01-01", "END_DATE": "2024-01-01"}


def test_impact_report_export_lifecycle_and_download(control: httpx.Client, impact: httpx.Client, clock: FakeClock) -> None:
    configure(control, time_scale=10, impact_default=ImpactBehaviour(queued_seconds=1, running_seconds=10, rows=40))
    response = impact.get("/ReportExport/adv_actions.json", params=DAY)
    assert response.status_code == 200
    reference = response.json()
    assert reference["Status"] == "QUEUED"
    job_id = reference["QueuedUri"].rsplit("/", 1)[1]
    assert reference == {
        "Status": "QUEUED",
        "QueuedUri": f"/Mediapartners/{SID}/Jobs/{job_id}",
        "ResultUri": f"/Mediapartners/{SID}/Jobs/{job_id}/Download",
        "ReplayUri": f"/Mediapartners/{SID}/Jobs/{job_id}/Replay",
    }
    assert impact.get("/ReportExport/adv_actions.json", params=DAY).json() == reference  # cached: same job

    job = poll_impact(impact, job_id)
    assert IMPACT_JOB_FIELDS <= set(job)
    assert (job["Status"], job["Type"], job["StartedDate"], job["PercentageComplete"]) == ("QUEUED", "DownloadReport", "", 0)
    assert job["CreatedDate"].endswith("-05:00") and len(job["CreatedDate"]) == len("2022-06-07T04:33:50-05:00")
    not_ready = impact.get(f"/Jobs/{job_id}/Download", params={"Mode": "Stream"})
    assert not_ready.status_code == 202 and not_ready.json()["Status"] == "QUEUED"

    clock.advance(0.1 + 0.5)  # queued, then half of the run
    job = poll_impact(impact, job_id)
    assert (job["Status"], job["PercentageComplete"], job["RecordsProcessed"]) == ("RUNNING", 50, 20)
    assert job["StartedDate"] and job["CompletedDate"] == ""

    clock.advance(0.5)
    job = poll_impact(impact, job_id)
    assert (job["Status"], job["PercentageComplete"], job["RecordsProcessed"]) == ("COMPLETED", 100, 40)
    assert job["CompletedDate"] and job["FailedDate"] == "" and job["Replayable"] is True

    result = job["ResultUri"].removeprefix(f"/Mediapartners/{SID}")
    redirect = impact.get(result)
    assert redirect.status_code == 302 and "/_files/impact/" in redirect.headers["location"]
    signed = httpx.get(redirect.headers["location"])  # signed storage URL: no credentials
    download = impact.get(result, params={"Mode": "Stream"})
    assert download.status_code == 200 and download.content == signed.content
    assert int(download.headers["content-length"]) == len(download.content)
    header, rows = parse_csv(download.content)
    assert header == IMPACT_COLUMNS and len(rows) == 40 and all(len(row) == 5 for row in rows)

    stats = control.get("/_sim/stats").json()
    assert stats["creates"]["impact"] == 1 and stats["downloads"]["impact"] == 2
    assert stats["jobs"][job_id]["params"] == DAY
    assert stats["jobs"][job_id]["files"] == [{"name": f"adv_actions-{job_id}.csv", "recordCount": 40}]


def test_impact_auth_and_account_checks(server: SimulatorThread, impact: httpx.Client) -> None:
    job_id = impact.get("/ReportExport/r1", params=DAY).json()["QueuedUri"].rsplit("/", 1)[1]
    url = f"{server.url}/Mediapartners/{SID}/Jobs/{job_id}"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, auth=(SID, "wrong")).status_code == 401
    assert httpx.get(url.replace(SID, "IRother"), auth=(SID, "sim-impact-token")).status_code == 403
    assert impact.get("/Jobs/unknown").status_code == 404
    assert impact.get(f"/Jobs/{job_id}.json").status_code == 200
    assert httpx.get(url.replace("Mediapartners", "Advertisers"), auth=(SID, "sim-impact-token")).status_code == 200
    xml = httpx.get(url, auth=(SID, "sim-impact-token"))  # "the default format is XML"
    assert xml.headers["content-type"].startswith("application/xml") and f"<Id>{job_id}</Id>" in xml.text


def test_impact_refuses_what_the_specs_refuse(impact: httpx.Client) -> None:
    for params in ({}, {"START_DATE": "2024-01-01"}, {**DAY, "END_DATE": "01/02/2024"}, {**DAY, "ResultFormat": "PDF"}):
        answer = impact.get("/ReportExport/r1", params=params)
        assert answer.status_code == 200 and answer.json()["Status"] == "ERROR", params


def test_impact_quotas_answer_429_with_each_api_flavours_headers(control: httpx.Client, impact: httpx.Client) -> None:
    configure(control, impact_report_export_daily_limit=1, impact_hourly_limit=2)
    assert impact.get("/ReportExport/r1", params=DAY).status_code == 200
    partner = impact.get("/ReportExport/r2", params=DAY)
    assert partner.status_code == 429 and int(partner.headers["retry-after"]) > 0
    brand = httpx.Client(base_url=impact.base_url.copy_with(path=f"/Advertisers/{SID}"), auth=(SID, "sim-impact-token"))
    assert brand.get("/Jobs/x").status_code == 404  # the second request of the hour: the refused one did not count
    limited = brand.get("/Jobs/x")
    assert limited.status_code == 429 and "retry-after" not in limited.headers
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert int(limited.headers["x-ratelimit-reset"]) > 1_700_000_000  # a Unix time


def test_impact_further_accounts_have_their_own_quotas_and_jobs(server: SimulatorThread, control: httpx.Client) -> None:
    configure(control, impact_report_export_daily_limit=1, impact_more_accounts={"IRsecond": "second-token"})

    def account(sid: str, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=f"{server.url}/Mediapartners/{sid}", auth=(sid, token), headers={"Accept": "application/json"}
        )

    first, second = account(SID, "sim-impact-token"), account("IRsecond", "second-token")
    first_job = first.get("/ReportExport/r1", params=DAY).json()["QueuedUri"].rsplit("/", 1)[1]
    assert first.get("/ReportExport/r2", params=DAY).status_code == 429
    second_job = second.get("/ReportExport/r1", params=DAY).json()["QueuedUri"].rsplit("/", 1)[1]
    assert second_job != first_job  # the same request from another account is another job
    assert second.get("/ReportExport/r2", params=DAY).status_code == 429
    assert second.get(f"/Jobs/{second_job}").status_code == 200
    assert second.get(f"/Jobs/{first_job}").status_code == 404  # another account's job
    assert account("IRsecond", "sim-impact-token").get(f"/Jobs/{second_job}").status_code == 401
    assert account("IRunknown", "second-token").get(f"/Jobs/{second_job}").status_code == 401


def test_impact_error_phases_are_retried_until_completed(control: httpx.Client, impact: httpx.Client, clock: FakeClock) -> None:
    configure(control, impact_default=ImpactBehaviour(error_phases=2))
    job_id = impact.get("/ReportExport/r1", params=DAY).json()["QueuedUri"].rsplit("/", 1)[1]
    seen = []
    for step in (0.5, 1, 1.5, 900, 2, 900, 2):
        clock.advance(step)
        job = poll_impact(impact, job_id)
        seen.append(job["Status"])
        if job["Status"] == "ERROR":
            assert "failed" in job["StatusMessage"] and job["FailedDate"] == ""
    assert seen == ["QUEUED", "RUNNING", "ERROR", "RUNNING", "ERROR", "RUNNING", "COMPLETED"]


def test_impact_five_errors_fail_and_replay_recovers(control: httpx.Client, impact: httpx.Client, clock: FakeClock) -> None:
    configure(control, impact_default=ImpactBehaviour(error_phases=5, error_retry_seconds=60))
    job_id = impact.get("/ReportExport/r1", params=DAY).json()["QueuedUri"].rsplit("/", 1)[1]
    clock.advance(1 + 5 * (2 + 60) + 1)
    job = poll_impact(impact, job_id)
    assert job["Status"] == "RUNNING" and "Retry 5 of 5" in job["StatusMessage"]
    clock.advance(1)
    job = poll_impact(impact, job_id)
    assert job["Status"] == "FAILED" and job["FailedDate"] and job["Replayable"] is True

    replayed = impact.put(f"/Jobs/{job_id}/Replay")
    assert replayed.status_code == 200 and replayed.json()["Status"] == "QUEUED"
    clock.advance(3)
    assert poll_impact(impact, job_id)["Status"] == "COMPLETED"
    assert control.get("/_sim/stats").json()["jobs"][job_id]["replays"] == 1


def test_impact_cancelled_job_that_is_not_replayable(control: httpx.Client, impact: httpx.Client, clock: FakeClock) -> None:
    configure(control, impact_default=ImpactBehaviour(cancel=True, replayable=False))
    job_id = impact.get("/ReportExport/r1", params=DAY).json()["QueuedUri"].rsplit("/", 1)[1]
    clock.advance(3)
    job = poll_impact(impact, job_id)
    assert (job["Status"], job["Replayable"]) == ("CANCELLED", False) and job["CancelledDate"]
    assert impact.put(f"/Jobs/{job_id}/Replay").status_code == 403


def test_control_created_impact_job_is_trackable_but_not_counted(control: httpx.Client, impact: httpx.Client) -> None:
    created = control.post("/_sim/impact/jobs", json={"report_id": "r1"}).json()
    assert created["QueuedUri"] == f"/Mediapartners/{SID}/Jobs/{created['Id']}"
    assert poll_impact(impact, created["Id"])["Id"] == created["Id"]
    assert control.get("/_sim/stats").json()["creates"]["impact"] == 0


# --- control ---------------------------------------------------------------------------------------


def test_config_round_trip_validation_and_reset(control: httpx.Client, samsara: httpx.Client) -> None:
    config = configure(control, time_scale=7, samsara_fleet=[9])
    assert control.get("/_sim/config").json() == config.model_dump(mode="json")
    assert control.post("/_sim/config", json={"time_scale": 0}).status_code == 422
    assert control.post("/_sim/config", json={"unknown": 1}).status_code == 422
    assert control.post("/_sim/faults", json={"path_contains": "/x"}).status_code == 422

    job_id = create_samsara(samsara)["jobId"]
    control.post("/_sim/faults", json={"path_contains": "/x", "statuses": [500]})
    control.post("/_sim/reset")
    stats = control.get("/_sim/stats").json()
    assert stats["jobs"] == {} and stats["creates"] == {"samsara": 0, "impact": 0}
    assert control.get("/_sim/faults").json() == {"pending": []}
    assert samsara.get(f"/ifta-detail/csv/{job_id}").status_code == 404


@pytest.mark.parametrize(("rows", "bad_every"), [(0, None), (1, None), (3_000, None), (40_000, None), (40_000, 7)])
def test_a_gzipped_file_inflates_to_the_plain_one_with_its_checksum_and_size(rows: int, bad_every: int | None) -> None:
    """Repeated chunks reuse one compressed block; the member still ends with the CRC and size of the whole file."""
    file = CsvFile(
        ["a", "b"], rows, "seed", lambda rng: [str(rng.randint(0, 9_999)), "x"], numeric_column=0, bad_rows_every=bad_every
    )
    plain = b"".join(file.chunks())
    packed = b"".join(gzipped(file))
    assert gzip.decompress(packed) == plain  # checks the trailer's CRC-32 and size too
    assert packed == b"".join(gzipped(file)), "deterministic"
    if rows > 10_000 and bad_every is None:
        assert len(packed) < len(plain) / 2
