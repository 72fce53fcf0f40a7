"""What a newcomer and a script meet first, through the real `export-worker` command and a real worker.

Exit codes a cron job can trust, what can be exported from impact.com and a wrong report parameter
refused before anything is stored, a sink refused before the provider job is created, and a cancel
that stops every download not yet started.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

import pytest

from tests.integration.conftest import Sim, day_after, unique_hour, wait_status
from worker.api import ExportClient
from worker.dev.localstack import SIM_IMPACT_CREDENTIAL, LocalStack
from worker.dev.simulator import SamsaraBehaviour
from worker.models import ExportStatus, FileStatus, JobStatus

pytestmark = pytest.mark.integration

DAY = {"START_DATE": "2026-11-01", "END_DATE": "2026-11-01"}


def cli(stack: LocalStack, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The installed `export-worker`, in a shell whose environment points at the test stack."""
    env = {**stack.env(), "COLUMNS": "200"}
    return subprocess.run(["export-worker", *args], env=env, capture_output=True, text=True, timeout=timeout)


def samsara_params(offset: int) -> str:
    hour = unique_hour(offset)
    return json.dumps({"startHour": hour, "endHour": day_after(hour), "vehicleIds": [1]})


def creates(sim: Sim, provider: str) -> int:
    return sim.stats()["creates"][provider]


def test_submit_wait_exits_0_when_completed_and_1_when_failed(stack: LocalStack, client: ExportClient) -> None:
    done = cli(stack, "submit", "samsara", "--params-json", samsara_params(301), "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    export_id = done.stdout.split()[0]
    assert client.get(export_id).record.status is ExportStatus.COMPLETED
    assert "│ status" in done.stdout and "COMPLETED" in done.stdout and done.stdout.endswith("\n")

    failed = cli(stack, "submit", "samsara", "--params-json", samsara_params(302), "--credential", "nosuch", "--wait")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    failed_id = failed.stdout.split()[0]
    assert "FAILED" in failed.stdout and "credential 'nosuch' is not configured" in failed.stdout
    assert cli(stack, "watch", failed_id).returncode == 1
    assert cli(stack, "status", failed_id).returncode == 0

    unknown = cli(stack, "status", "0000000000000000")
    assert unknown.returncode == 2 and unknown.stdout == "" and len(unknown.stderr.strip().splitlines()) == 1
    assert "no export '0000000000000000' in Redis at " in unknown.stderr and "EXPORT_WORKER_RETENTION_SECONDS" in unknown.stderr


def test_reports_impact_lists_what_can_be_exported_and_a_report_s_parameters(stack: LocalStack) -> None:
    listed = cli(stack, "reports", "impact", "--credential", SIM_IMPACT_CREDENTIAL)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines() if line.strip()}
    assert "yes" in rows["att_adv_performance_by_day"] and "UI only" in rows["mp_payment_history"]
    brand = cli(stack, "reports", "impact", "--credential", SIM_IMPACT_CREDENTIAL, "--api-root", "Advertisers")
    assert "adv_action_listing_pm" in brand.stdout and "att_adv_performance_by_day" not in brand.stdout

    shown = cli(stack, "reports", "impact", "mp_action_listing_fast", "--credential", SIM_IMPACT_CREDENTIAL)
    assert shown.returncode == 0, shown.stderr
    assert "MIN_PAYOUT" in shown.stdout and "Decimal" in shown.stdout
    assert "columns: ActionId, CampaignId, EventDate, Payout, Status" in shown.stdout
    assert '"report_params": {"START_DATE": "<yyyy-MM-dd>", "END_DATE": "<yyyy-MM-dd>"}' in shown.stdout

    missing = cli(stack, "reports", "impact", "mp_payment_history", "--credential", SIM_IMPACT_CREDENTIAL)
    assert missing.returncode == 2 and "no report 'mp_payment_history'" in missing.stderr
    no_credential = cli(stack, "reports", "impact", "--credential", "nosuch")
    assert no_credential.returncode == 2 and "credential 'nosuch' is not configured in this process" in no_credential.stderr


def test_a_wrong_report_parameter_is_refused_at_enqueue(stack: LocalStack, client: ExportClient, sim: Sim) -> None:
    before_exports, before_creates = len(client.recent(1000)), creates(sim, "impact")
    params = {"report_id": "att_adv_performance_by_day", "report_params": {**DAY, "CAMPAIGN_ID": "7"}}
    refused = cli(stack, "submit", "impact", "--credential", SIM_IMPACT_CREDENTIAL, "--params-json", json.dumps(params))
    assert refused.returncode == 2 and refused.stdout == ""
    assert "CAMPAIGN_ID: not a parameter of this report" in refused.stderr
    assert "export-worker reports impact att_adv_performance_by_day" in refused.stderr
    assert len(client.recent(1000)) == before_exports and creates(sim, "impact") == before_creates

    params["report_params"] = {**DAY, "SUBAID": "10306"}
    accepted = cli(
        stack, "submit", "impact", "--credential", SIM_IMPACT_CREDENTIAL, "--params-json", json.dumps(params), "--wait"
    )
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr


def test_a_postgres_export_to_a_database_the_worker_lacks_fails_before_the_provider_job(
    client: ExportClient, sim: Sim, stack: LocalStack
) -> None:
    before = creates(sim, "samsara")
    export_id = client.submit("samsara", json.loads(samsara_params(303)), sink="postgres", sink_options={"database": "nosuch"})
    wait_status(client, export_id, {"FAILED"})
    record = client.get(export_id).record
    assert "database 'nosuch' is not configured on this worker" in (record.error or "")
    assert record.jobs["0"].status is JobStatus.FAILED and record.jobs["0"].provider_job_id is None
    assert creates(sim, "samsara") == before


def test_a_cancel_stops_every_download_not_yet_started(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    """Twelve files, one second each at the provider, four worker processes: a cancel as soon as the files
    are known leaves at most the four in flight to finish; the eight others are never fetched."""
    hour = unique_hour(304)
    files, concurrency = 12, 4
    sim.update(
        samsara_behaviours={
            hour: SamsaraBehaviour(requested_seconds=0, processing_seconds=0, files=files, rows_per_file=20).model_dump()
        }
    )
    sim.update(latency_seconds=1.0)
    try:
        export_id = client.submit("samsara", {"startHour": hour, "endHour": day_after(hour), "vehicleIds": [1]})
        wait_status(client, export_id, {"DOWNLOADING"}, timeout=60)
        client.cancel(export_id)
        job_id = client.get(export_id).record.jobs["0"].provider_job_id
        assert job_id is not None
        downloads = settled_downloads(sim, job_id)
    finally:
        sim.update(latency_seconds=0.0)
    view = client.get(export_id)
    assert view.record.status is ExportStatus.CANCELLED and len(view.files) == files
    assert downloads <= concurrency, f"{downloads} of {files} files were fetched from the provider of a cancelled export"
    assert sum(file.status is FileStatus.PENDING for file in view.files) >= files - concurrency


def settled_downloads(sim: Sim, job_id: str, quiet: float = 3.0, timeout: float = 30.0) -> int:
    """The job's download count once it has not moved for ``quiet`` seconds (a download takes 1 s here)."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = sim.stats()["jobs"][job_id]["downloads"]
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return count
        time.sleep(0.2)
    raise TimeoutError(f"downloads of job {job_id} still moving after {timeout}s (last {last})")


def test_demo_keep_names_the_redis_it_tried_and_prints_no_secret(tmp_path: Any) -> None:
    from worker.dev.embedded import free_port

    tried = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there: the demo falls back to its embedded Redis
    password = "demo-db-pw-4711"
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("EXPORT_WORKER_")},
        "EXPORT_WORKER_REDIS_URL": tried,
        "EXPORT_WORKER_DATABASES__WAREHOUSE__URL": f"postgresql://loader:{password}@127.0.0.1:5432/test",
        "COLUMNS": "200",
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        ["export-worker", "demo", "--keep", "--vehicles", "1", "--files", "1", "--rows", "5"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("celery -A worker.app worker"):
                break
        output = "".join(lines)
        assert f"an embedded Redis (nothing answered at {tried})" in output, output
        assert "COMPLETED" in output and password not in output
        assert "EXPORT_WORKER_DATABASES=<secret, in the file>" in output
        [source] = [line.split(" ", 1)[1].strip() for line in lines if line.startswith(". ")]
        assert oct(os.stat(source).st_mode & 0o777) == "0o600"
        assert password in open(source).read()
    finally:
        process.terminate()  # the demo stops its stack on SIGTERM as on Ctrl-C
        process.wait(timeout=60)
    assert not os.path.exists(source), "the settings file goes with the stack"
