"""What is checked before the provider is asked to create anything (impact.com allows 100 report exports a day).

The caller may be another application without the worker's settings, so the worker's submit step checks
before the provider job is created: the sink can take the rows (database configured and accepting the
login, pyarrow present, output folder writable), the credential exists, and the provider's own checks
of the request pass (impact.com: report parameters against the report's MetaData). A caller that has
the credential gets the provider's refusal at enqueue already, and nothing is stored.
"""

from __future__ import annotations

import random
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FakeClock, make_settings
from tests.contract import RecordingTransport
from tests.engine_driver import Driver
from tests.scripted_samsara import FakeSamsara, script_happy_path, submit
from worker.api import ExportClient
from worker.dev.simulator import SimulatorConfig, SimulatorThread
from worker.dev.testing import RecordingDispatcher
from worker.engine.context import Runtime
from worker.errors import InvalidRequest
from worker.models import ExportStatus, JobStatus
from worker.providers.impact import METADATA_TTL_SECONDS
from worker.settings import Credential, Database
from worker.store import ExportStore

# --- the sink, on the scripted Samsara (rt, driver, provider: tests/unit/conftest.py) ----------------


def creates(provider: FakeSamsara) -> int:
    return provider.count("POST", "/ifta-detail/csv")


def refused_before_create(rt: Runtime, driver: Driver, provider: FakeSamsara, export_id: str) -> str:
    driver.run()
    record = rt.store.get(export_id)
    assert record.status is ExportStatus.FAILED and record.jobs["0"].status is JobStatus.FAILED
    assert creates(provider) == 0 and record.jobs["0"].provider_job_id is None
    assert (record.error or "").startswith("refused before the samsara job was created: ")
    return record.error or ""


def test_a_database_not_configured_on_the_worker_fails_the_export_before_the_job(
    rt: Runtime, driver: Driver, provider: FakeSamsara
) -> None:
    script_happy_path(provider)
    export_id = submit(rt, sink="postgres", sink_options={"database": "warehouse"})
    error = refused_before_create(rt, driver, provider, export_id)
    assert "database 'warehouse' is not configured on this worker" in error
    assert "EXPORT_WORKER_DATABASES__WAREHOUSE__URL" in error


def test_a_database_that_refuses_connections_is_retried_then_fails(rt: Runtime, driver: Driver, provider: FakeSamsara) -> None:
    script_happy_path(provider)
    rt.settings.max_transient_retries = 2
    rt.settings.databases = {"warehouse": Database(url="postgresql://loader:pw-9@127.0.0.1:1/dw")}
    export_id = submit(rt, sink="postgres", sink_options={"database": "warehouse"})
    driver.run()
    record = rt.store.get(export_id)
    assert driver.executed == ["submit"] * 3, "a server that is down may come back: retried like any transient error"
    assert record.status is ExportStatus.FAILED and creates(provider) == 0
    assert "submit of job 0 failed 3 times" in (record.error or "") and "database 'warehouse' is unreachable" in (
        record.error or ""
    )
    assert "pw-9" not in (record.error or "")


def test_a_worker_without_pyarrow_refuses_a_parquet_export_before_the_job(
    rt: Runtime, driver: Driver, provider: FakeSamsara, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "worker.sinks.parquet", None)  # what `import` sees without pyarrow
    script_happy_path(provider)
    export_id = submit(rt, sink="parquet")
    assert "pip install 'async-export-worker[parquet]'" in refused_before_create(rt, driver, provider, export_id)


def test_an_output_folder_that_cannot_be_created_refuses_a_file_export_before_the_job(
    rt: Runtime, driver: Driver, provider: FakeSamsara
) -> None:
    Path(rt.settings.output_dir).write_text("a file where the output folder should be")
    script_happy_path(provider)
    export_id = submit(rt)
    assert "cannot create EXPORT_WORKER_OUTPUT_DIR" in refused_before_create(rt, driver, provider, export_id)


def test_retry_after_fixing_the_setting_submits_the_job_it_refused(rt: Runtime, driver: Driver, provider: FakeSamsara) -> None:
    script_happy_path(provider)
    export_id = submit(rt, credential="fleet-b")
    assert "credential 'fleet-b' is not configured" in refused_before_create(rt, driver, provider, export_id)
    rt.settings.credentials["fleet-b"] = Credential(token="fleet-b-token")
    ExportClient(rt).retry(export_id)
    assert rt.store.get(export_id).status is ExportStatus.PENDING
    with pytest.raises(InvalidRequest, match="is PENDING; only FAILED exports can be retried"):
        ExportClient(rt).retry(export_id)  # a second retry meanwhile submits nothing more
    driver.run()
    record = rt.store.get(export_id)
    assert (record.status, record.rows, record.error) == (ExportStatus.COMPLETED, 5, None)
    assert creates(provider) == 1 and driver.executed.count("submit") == 2


# --- impact.com report parameters against the report's MetaData (the simulator on 127.0.0.1) ------------

DAY = {"START_DATE": "2024-03-01", "END_DATE": "2024-03-01"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[SimulatorThread]:
    with SimulatorThread(SimulatorConfig(), clock=clock) as server:
        yield server


@pytest.fixture
def transport() -> RecordingTransport:
    return RecordingTransport()


def impact_runtime(
    tmp_path: Path, store: ExportStore, sim: SimulatorThread, clock: FakeClock, transport: RecordingTransport, *, credential: bool
) -> Runtime:
    config = sim.app.state.sim.config
    credentials = {"impact": Credential(account_sid=config.impact_account_sid, auth_token=config.impact_auth_token)}
    settings = make_settings(tmp_path, base_urls={"impact": sim.url}, credentials=credentials if credential else {})
    return Runtime(settings, store, RecordingDispatcher(), clock=clock, rng=random.Random(1), transport=transport)


@pytest.fixture
def worker_rt(
    tmp_path: Path, store: ExportStore, sim: SimulatorThread, clock: FakeClock, transport: RecordingTransport
) -> Runtime:
    return impact_runtime(tmp_path, store, sim, clock, transport, credential=True)


def metadata_calls(transport: RecordingTransport) -> int:
    return sum(request.url.path.endswith("/MetaData") for request, _ in transport.exchanges)


def report_exports(sim: SimulatorThread) -> int:
    return sim.app.state.sim.counters["creates"]["impact"]


@pytest.mark.parametrize(
    ("report_id", "api_root", "report_params", "message"),
    [
        ("att_adv_performance_by_day", "Mediapartners", {**DAY, "CAMPAIGN": "7"}, "CAMPAIGN: not a parameter of this report"),
        ("mp_action_listing_fast", "Mediapartners", {**DAY, "MIN_PAYOUT": "ten"}, "MIN_PAYOUT: must be a number (Decimal)"),
        ("adv_action_listing_pm", "Advertisers", {"EndDate": "2024-03-02T00:00:00Z"}, "StartDate: missing"),
        (
            "adv_action_listing_pm",
            "Advertisers",
            {"StartDate": "2024-03-01T00:00:00Z", "EndDate": "2024-03-02T00:00:00Z", "SUBAID": "x"},
            "SUBAID: must be an integer",
        ),
        ("mp_payment_history", "Mediapartners", DAY, "impact has no report 'mp_payment_history'"),
    ],
)
def test_report_params_that_do_not_fit_the_metadata_are_refused_at_enqueue(
    worker_rt: Runtime, sim: SimulatorThread, report_id: str, api_root: str, report_params: dict, message: str
) -> None:
    params = {"report_id": report_id, "report_params": report_params, "api_root": api_root}
    with pytest.raises(InvalidRequest, match=re.escape(message)) as refused:
        ExportClient(worker_rt).submit("impact", params, credential="impact")
    assert "export-worker reports impact" in str(refused.value)
    assert worker_rt.store.list_ids(10) == [] and report_exports(sim) == 0


def test_an_unknown_report_is_refused_when_the_account_lists_its_reports(worker_rt: Runtime, sim: SimulatorThread) -> None:
    sim.app.state.sim.config.impact_unlisted_reports = False
    with pytest.raises(
        InvalidRequest, match="no report 'att_adv_perf' .* `export-worker reports impact --api-root Mediapartners`"
    ):
        ExportClient(worker_rt).submit("impact", {"report_id": "att_adv_perf", "report_params": DAY}, credential="impact")


def test_the_metadata_is_read_once_per_account_report_and_hour(
    worker_rt: Runtime, sim: SimulatorThread, transport: RecordingTransport, clock: FakeClock
) -> None:
    client = ExportClient(worker_rt)
    for day in ("2024-03-01", "2024-03-02", "2024-03-03"):
        client.submit(
            "impact",
            {"report_id": "att_adv_performance_by_day", "report_params": {"START_DATE": day, "END_DATE": day}},
            credential="impact",
        )
    assert metadata_calls(transport) == 1
    key = f"unit:cache:impact:{sim.app.state.sim.config.impact_account_sid}:Mediapartners:metadata:att_adv_performance_by_day"
    assert METADATA_TTL_SECONDS - 5 < worker_rt.store.redis.pttl(key) / 1000 <= METADATA_TTL_SECONDS
    worker_rt.store.redis.delete(key)  # the hour is over
    client.submit("impact", {"report_id": "att_adv_performance_by_day", "report_params": DAY}, credential="impact")
    assert metadata_calls(transport) == 2


def test_without_the_credential_at_enqueue_the_worker_refuses_before_report_export(
    tmp_path: Path, store: ExportStore, sim: SimulatorThread, clock: FakeClock, transport: RecordingTransport, worker_rt: Runtime
) -> None:
    caller = impact_runtime(tmp_path, store, sim, clock, transport, credential=False)
    params = {"report_id": "att_adv_performance_by_day", "report_params": {**DAY, "CAMPAIGN": "7"}}
    export_id = ExportClient(caller).submit("impact", params, credential="impact")
    assert transport.exchanges == [], "the caller cannot ask impact.com: it has no credential"
    worker_rt.dispatcher.sent.extend(caller.dispatcher.take())
    Driver(worker_rt, worker_rt.dispatcher, clock).run()
    record = store.get(export_id)
    assert record.status is ExportStatus.FAILED and record.jobs["0"].status is JobStatus.FAILED
    assert "refused before the impact job was created: invalid impact report_params" in (record.error or "")
    assert "CAMPAIGN: not a parameter of this report" in (record.error or "")
    assert report_exports(sim) == 0 and metadata_calls(transport) == 1


def test_an_unavailable_metadata_at_enqueue_leaves_the_check_to_the_worker(
    worker_rt: Runtime, sim: SimulatorThread, transport: RecordingTransport, clock: FakeClock
) -> None:
    from worker.dev.simulator.faults import FaultSpec

    sim.app.state.sim.faults.add(FaultSpec(path_contains="/MetaData", statuses=[503]))
    params = {"report_id": "att_adv_performance_by_day", "report_params": {**DAY, "CAMPAIGN": "7"}}
    export_id = ExportClient(worker_rt).submit("impact", params, credential="impact")
    Driver(worker_rt, worker_rt.dispatcher, clock).run()
    record = worker_rt.store.get(export_id)
    assert record.status is ExportStatus.FAILED and "CAMPAIGN: not a parameter" in (record.error or "")
    assert metadata_calls(transport) == 2 and report_exports(sim) == 0


def test_fitting_report_params_are_exported(worker_rt: Runtime, sim: SimulatorThread, clock: FakeClock) -> None:
    params = {"report_id": "mp_action_listing_fast", "report_params": {**DAY, "MIN_PAYOUT": "10.5", "SUBAID": "10306"}}
    export_id = ExportClient(worker_rt).submit("impact", params, credential="impact")
    Driver(worker_rt, worker_rt.dispatcher, clock).run()
    assert worker_rt.store.get(export_id).status is ExportStatus.COMPLETED
    assert report_exports(sim) == 1
