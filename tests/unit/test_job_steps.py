"""Submit and poll steps at their edges: a worker dying mid-create, a chain taken over mid-call, the
countdowns of child jobs, and the messages a user and an operator read.

Another actor is forced into the provider call itself (the scripted handler runs it), so a collision
happens on every run, not when threads happen to meet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest
from prometheus_client import REGISTRY

from tests.conftest import FakeClock
from tests.engine_driver import Driver
from tests.scripted_samsara import TOO_BIG, FakeSamsara, job, remote_file, submit
from worker.api import ExportClient
from worker.engine import transitions as tr
from worker.engine.context import Runtime
from worker.engine.jobs import run_submit
from worker.engine.watchdog import run_watchdog
from worker.models import ExportRecord, ExportStatus, JobStatus, Writes

CREATE = ("POST", "/ifta-detail/csv")
POLL = ("GET", "/ifta-detail/csv/j1")


class WorkerKilled(BaseException):
    """The worker process dies: nothing in the engine may catch it."""


def during(provider: FakeSamsara, route: tuple[str, str], act: Callable[[], None], answer: httpx.Response) -> None:
    """Run ``act`` while the provider is handling the next ``route`` call, then answer."""
    original = provider.handler

    def handler(request: httpx.Request) -> httpx.Response:
        if (request.method, request.url.path) == route:
            provider.handler = original  # type: ignore[method-assign]
            provider.requests.append(request)
            act()
            return answer
        return original(request)

    provider.handler = handler  # type: ignore[method-assign]


def take_over(rt: Runtime, export_id: str, now: float) -> None:
    """What the watchdog does to a chain it finds overdue: a new token, so the running task goes stale."""

    def revive(state: ExportRecord, writes: Writes) -> JobStatus:
        return tr.revive_job(state, "0", state.jobs["0"].token, now, writes)

    rt.store.transact(export_id, revive)


def stale(step: str) -> float:
    return REGISTRY.get_sample_value("aew_stale_tasks_total", {"step": step}) or 0.0


@pytest.fixture
def routed(rt: Runtime, provider: FakeSamsara) -> FakeSamsara:
    """The scripted provider behind a transport that looks the handler up on every call, so a test can swap it."""
    rt.transport = httpx.MockTransport(lambda request: provider.handler(request))
    return provider


def test_a_worker_dying_mid_create_is_revived_after_the_claim_timeout_and_warns_of_an_orphan(
    rt: Runtime, driver: Driver, routed: FakeSamsara, clock: FakeClock
) -> None:
    """The claim lasts two HTTP timeouts (the create and a retry of it) plus 5 s before the watchdog may take over."""

    def die() -> None:
        raise WorkerKilled

    routed.on(*CREATE, httpx.Response(201, json=job("j1", "Requested")))
    routed.on(*POLL, httpx.Response(200, json=job("j1", "Completed", files=[])))
    export_id = submit(rt)
    during(routed, CREATE, die, httpx.Response(500))
    claimed_at = clock.now
    with pytest.raises(WorkerKilled):
        driver.step()
    assert rt.store.get(export_id).jobs["0"].status is JobStatus.SUBMITTING
    claim_timeout = 2 * rt.settings.http_timeout_seconds + 5
    clock.now = claimed_at + claim_timeout + rt.settings.stale_after_seconds - 0.001
    assert run_watchdog(rt).jobs_revived == 0, "a create may still be running: too early to take over"
    clock.now += 0.001
    assert run_watchdog(rt).jobs_revived == 1
    [(kind, _args, countdown)] = driver.dispatcher.sent
    assert (kind, countdown) == ("submit", 0)
    driver.run()
    record = rt.store.get(export_id)
    assert record.status is ExportStatus.COMPLETED
    assert record.jobs["0"].ambiguous_creates == 1 and "provider may hold an orphan job" in record.warnings[0]
    _, events = ExportClient(rt).read_events(export_id, since="0", block_ms=None)
    assert [e["message"] for e in events if e["type"] == "warning"] == record.warnings


def test_a_create_whose_job_moved_on_meanwhile_is_logged_and_not_tracked(
    rt: Runtime, driver: Driver, routed: FakeSamsara, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    export_id = submit(rt)
    during(routed, CREATE, lambda: take_over(rt, export_id, clock.now), httpx.Response(201, json=job("j7", "Requested")))
    with caplog.at_level(logging.INFO, logger="worker"):
        driver.step()
    assert driver.dispatcher.sent == [], "the task that took over owns the chain"
    record = rt.store.get(export_id)
    assert record.jobs["0"].provider_job_id is None
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["provider job j7 was created but job 0 moved on meanwhile; it will not be tracked"]
    assert [r for r in caplog.records if r.getMessage().startswith("created provider job")] == []


def test_a_created_job_is_logged_with_its_provider_id(
    rt: Runtime, driver: Driver, provider: FakeSamsara, caplog: pytest.LogCaptureFixture
) -> None:
    provider.on(*CREATE, httpx.Response(201, json=job("j1", "Requested")))
    export_id = submit(rt)
    with caplog.at_level(logging.INFO, logger="worker"):
        driver.step()
    [created] = [r for r in caplog.records if r.getMessage().startswith("created provider job")]
    assert created.getMessage() == "created provider job j1"
    fields = (created.export_id, created.provider, created.provider_job_id)  # type: ignore[attr-defined]
    assert fields == (export_id, "samsara", "j1"), "the JSON log line names the export, the provider and its job"


def test_a_poll_whose_chain_was_taken_over_mid_call_exits_counted_as_stale(
    rt: Runtime, driver: Driver, routed: FakeSamsara, clock: FakeClock
) -> None:
    routed.on(*CREATE, httpx.Response(201, json=job("j1", "Requested")))
    export_id = submit(rt)
    driver.step()
    during(routed, POLL, lambda: take_over(rt, export_id, clock.now), httpx.Response(200, json=job("j1", "Processing")))
    before = stale("poll")
    driver.step()
    assert stale("poll") == before + 1
    assert driver.dispatcher.sent == [], "no second chain beside the one that took over"


@pytest.mark.parametrize("route", [CREATE, POLL])
def test_a_refused_step_whose_chain_was_taken_over_mid_call_is_not_rescheduled(
    rt: Runtime, driver: Driver, routed: FakeSamsara, clock: FakeClock, route: tuple[str, str]
) -> None:
    step = "submit" if route == CREATE else "poll"
    routed.on(*CREATE, httpx.Response(201, json=job("j1", "Requested")))
    export_id = submit(rt)
    if route == POLL:
        driver.step()
    refusal = httpx.Response(429, headers={"Retry-After": "30"}, json={"message": "slow down"})
    during(routed, route, lambda: take_over(rt, export_id, clock.now), refusal)
    before = stale(step)
    driver.step()
    assert stale(step) == before + 1
    assert driver.dispatcher.sent == []


def test_a_rate_limited_poll_tells_the_user_why_it_waits(rt: Runtime, driver: Driver, provider: FakeSamsara) -> None:
    provider.on(*CREATE, httpx.Response(201, json=job("j1", "Requested")))
    provider.on(*POLL, httpx.Response(429, headers={"Retry-After": "42"}, json={"message": "slow down"}))
    export_id = submit(rt)
    driver.step()
    driver.step()
    waiting = rt.store.get(export_id).jobs["0"]
    assert waiting.message is not None and "429" in waiting.message and "42" in waiting.message
    assert waiting.transient_errors == 0, "a rate limit is not an error"


def test_child_jobs_of_a_split_are_submitted_at_once(rt: Runtime, driver: Driver, provider: FakeSamsara) -> None:
    provider.on(*CREATE, httpx.Response(201, json=job("j1", "Requested")))
    provider.on(*POLL, httpx.Response(200, json=job("j1", "Failed", details=TOO_BIG)))
    submit(rt)
    driver.step()
    driver.step()
    assert [(kind, args.job_key, countdown) for kind, args, countdown in driver.dispatcher.sent] == [
        ("submit", "0.0", 0),
        ("submit", "0.1", 0),
    ]


def test_a_create_refused_for_good_fails_the_export_saying_what_failed(
    rt: Runtime, driver: Driver, provider: FakeSamsara
) -> None:
    provider.on(*CREATE, httpx.Response(400, json={"message": "startHour must be before endHour"}))
    export_id = submit(rt)
    driver.run()
    error = rt.store.get(export_id).error or ""
    assert error.startswith("could not create the samsara job: ") and "startHour must be before endHour" in error


def test_a_poll_refused_for_good_fails_the_export_naming_the_job(rt: Runtime, driver: Driver, provider: FakeSamsara) -> None:
    provider.on(*CREATE, httpx.Response(201, json=job("j1", "Requested")))
    provider.on(*POLL, httpx.Response(400, json={"message": "bad job id"}))
    export_id = submit(rt)
    driver.run()
    error = rt.store.get(export_id).error or ""
    assert error.startswith("polling samsara job j1 failed: ") and "bad job id" in error


def test_files_of_a_completed_job_are_downloaded_at_once(rt: Runtime, driver: Driver, provider: FakeSamsara) -> None:
    files = [remote_file("a.csv", "https://files.example/a", 1)]
    provider.on(*CREATE, httpx.Response(201, json=job("j1", "Requested")))
    provider.on(*POLL, httpx.Response(200, json=job("j1", "Completed", files)))
    submit(rt)
    driver.step()
    driver.step()
    assert [(kind, countdown) for kind, _args, countdown in driver.dispatcher.sent] == [("download", 0)]


def test_a_redelivered_submit_after_the_create_is_stale(rt: Runtime, driver: Driver, provider: FakeSamsara) -> None:
    provider.on(*CREATE, httpx.Response(201, json=job("j1", "Requested")))
    submit(rt)
    first = driver.dispatcher.take_one("submit")
    run_submit(rt, first)
    before = stale("submit")
    run_submit(rt, first)
    assert stale("submit") == before + 1 and provider.count(*CREATE) == 1
