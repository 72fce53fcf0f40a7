"""`retry` and `cancel` on ended exports: the engine against the simulator on 127.0.0.1, time on a fake clock.

impact.com jobs can be replayed (``PUT /Jobs/{id}/Replay``), so retrying a failed impact export, or
re-running a completed one, must replay the same provider job instead of submitting a new one;
Samsara jobs cannot, and saying so is the whole answer.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FakeClock, make_settings
from tests.engine_driver import Driver
from worker.api import ExportClient
from worker.dev.simulator import ImpactBehaviour, SamsaraBehaviour, SimulatorConfig, SimulatorThread
from worker.dev.testing import RecordingDispatcher
from worker.engine.context import Runtime
from worker.errors import InvalidRequest, ReplayNotAllowed
from worker.models import ExportStatus, JobStatus
from worker.settings import Credential
from worker.store import ExportStore

REPORT = {
    "report_id": "att_adv_performance_by_day",
    "report_params": {"START_DATE": "2024-03-01", "END_DATE": "2024-03-01"},
    "api_root": "Mediapartners",
}
SAMSARA = {"startHour": "2026-11-23T00:00:00Z", "endHour": "2026-11-24T00:00:00Z", "vehicleIds": [1, 2]}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[SimulatorThread]:
    config = SimulatorConfig(
        samsara_default=SamsaraBehaviour(files=2, rows_per_file=4),
        impact_default=ImpactBehaviour(rows=6),
    )
    with SimulatorThread(config, clock=clock) as server:
        yield server


@pytest.fixture
def rt(tmp_path: Path, store: ExportStore, dispatcher: RecordingDispatcher, sim: SimulatorThread, clock: FakeClock) -> Runtime:
    config = sim.app.state.sim.config
    settings = make_settings(
        tmp_path,
        base_urls={"samsara": sim.url, "impact": sim.url},
        download_hosts={"samsara": ["127.0.0.1"]},
        credentials={
            "default": Credential(token=config.samsara_token),
            "impact": Credential(account_sid=config.impact_account_sid, auth_token=config.impact_auth_token),
        },
    )
    return Runtime(settings=settings, store=store, dispatcher=dispatcher, clock=clock, rng=random.Random(5))


@pytest.fixture
def driver(rt: Runtime, dispatcher: RecordingDispatcher, clock: FakeClock) -> Driver:
    return Driver(rt, dispatcher, clock)


def impact_jobs_created(sim: SimulatorThread) -> int:
    return sim.app.state.sim.counters["creates"]["impact"]


def test_retrying_a_failed_impact_export_replays_its_job_and_completes(rt: Runtime, driver: Driver, sim: SimulatorThread) -> None:
    sim.app.state.sim.config.impact_default = ImpactBehaviour(rows=6, error_phases=5, error_retry_seconds=30)
    export_id = ExportClient(rt).submit("impact", dict(REPORT), credential="impact")
    driver.run()
    failed = rt.store.get(export_id)
    assert failed.status is ExportStatus.FAILED and failed.jobs["0"].status is JobStatus.FAILED
    provider_job_id = failed.jobs["0"].provider_job_id

    ExportClient(rt).retry(export_id)
    [(kind, args, countdown)] = driver.dispatcher.sent
    assert (kind, args.job_key) == ("poll", "0"), "a replayed job is polled, never submitted again"
    first, second = rt.policy.initial, rt.policy.initial * rt.policy.multiplier
    jitter = rt.policy.jitter
    assert second * (1 - jitter) > first * (1 + jitter), "the first two delays must be told apart"
    assert first * (1 - jitter) <= countdown <= first * (1 + jitter), "a replayed job starts polling afresh"
    driver.run()
    record = rt.store.get(export_id)
    assert (record.status, record.rows, record.error) == (ExportStatus.COMPLETED, 6, None)
    assert record.jobs["0"].provider_job_id == provider_job_id
    assert impact_jobs_created(sim) == 1


def test_retrying_a_completed_impact_export_replays_its_job_to_refresh_the_data(
    rt: Runtime, driver: Driver, sim: SimulatorThread
) -> None:
    export_id = ExportClient(rt).submit("impact", dict(REPORT), credential="impact")
    driver.run()
    done = rt.store.get(export_id)
    assert (done.status, done.rows) == (ExportStatus.COMPLETED, 6)

    ExportClient(rt).retry(export_id)
    reopened = rt.store.get(export_id)
    assert reopened.status is ExportStatus.RUNNING and reopened.jobs["0"].status is not JobStatus.SUCCEEDED
    assert [kind for kind, _args, _countdown in driver.dispatcher.sent] == ["poll"]
    driver.run()
    record = rt.store.get(export_id)
    assert (record.status, record.rows) == (ExportStatus.COMPLETED, 6)
    assert record.jobs["0"].provider_job_id == done.jobs["0"].provider_job_id
    assert impact_jobs_created(sim) == 1


def test_retrying_a_failed_samsara_export_says_its_jobs_cannot_be_replayed(
    rt: Runtime, driver: Driver, sim: SimulatorThread
) -> None:
    sim.app.state.sim.config.samsara_default = SamsaraBehaviour(outcome="Failed", failure_details="vehicle 2 has no data")
    export_id = ExportClient(rt).submit("samsara", dict(SAMSARA))
    driver.run()
    assert rt.store.get(export_id).status is ExportStatus.FAILED
    with pytest.raises(ReplayNotAllowed, match="samsara jobs cannot be replayed; submit a new export instead"):
        ExportClient(rt).retry(export_id)
    assert rt.store.get(export_id).status is ExportStatus.FAILED and driver.dispatcher.sent == []


def test_retrying_a_completed_samsara_export_says_its_job_cannot_be_replayed(rt: Runtime, driver: Driver) -> None:
    export_id = ExportClient(rt).submit("samsara", dict(SAMSARA))
    driver.run()
    assert rt.store.get(export_id).status is ExportStatus.COMPLETED
    with pytest.raises(ReplayNotAllowed, match="samsara jobs cannot be replayed"):
        ExportClient(rt).retry(export_id)


def test_cancelling_an_ended_export_says_how_it_ended(rt: Runtime, driver: Driver) -> None:
    export_id = ExportClient(rt).submit("samsara", dict(SAMSARA))
    driver.run()
    with pytest.raises(InvalidRequest, match=f"export {export_id} already ended as COMPLETED; nothing to cancel"):
        ExportClient(rt).cancel(export_id)
