"""A lost connection or a failover at every Redis round trip of a whole export, one at a time.

The export runs from submit to its end (create, submit, poll with fan-out, two downloads, the
completion that ends it) while :mod:`tests.failpoints` breaks one round trip: the command never
sent, applied with its reply lost, or applied and then lost with the primary (the replica holds what
the last WAIT confirmed). See :mod:`worker.store.transactions` for what the store does about each.

- A lost connection, either way, changes nothing a caller or the export can see: the same id, one
  provider job, every file written once, the export COMPLETED with the provider's rows, and no
  chain left for the watchdog. An EXEC whose reply was lost is settled by its write key, so the step
  goes on with its first result instead of finding its own change and calling itself stale.
- A failover may lose what no WAIT covered. The id the caller was given survives (its create
  waited for the replica), and everything lost is recovered: after the watchdog has revived what
  lost its chain, the export is COMPLETED with exactly the provider's rows, every file once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_settings
from tests.failpoints import MODES, FailPoint, Mode, Replica, as_celery_would, failing_runtime, replicating, run_dispatched
from tests.interleaving import Expected, World, check_invariants
from tests.scripted_samsara import PARAMS, csv_rows, job, remote_file
from worker.api import ExportClient
from worker.errors import UnknownExport
from worker.models import ExportStatus

FILE_ROWS = {"a.csv": 3, "b.csv": 2}
EXPECTED = Expected(files=2, rows=5)


class Provider:
    """Samsara: a create gives job j1, which is Completed with a.csv and b.csv at once."""

    def __init__(self) -> None:
        self.creates = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.url.host == "files.example":
            return httpx.Response(200, text=csv_rows(FILE_ROWS[path.lstrip("/")]))
        if request.method == "POST" and path == "/ifta-detail/csv":
            self.creates += 1
            return httpx.Response(201, json=job("j1", "Requested"))
        if request.method == "GET" and path == "/ifta-detail/csv/j1":
            files = [remote_file(name, f"https://files.example/{name}", rows) for name, rows in FILE_ROWS.items()]
            return httpx.Response(200, json=job("j1", "Completed", files))
        return httpx.Response(404, json={"message": f"unscripted {request.method} {path}"})


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's backoff sleeps are real time only; here a failed round trip is retried at once."""
    monkeypatch.setattr("worker.store.transactions.time.sleep", lambda _seconds: None)
    monkeypatch.setattr("worker.store.connection.time.sleep", lambda _seconds: None)


@dataclass
class Outcome:
    world: World
    export_id: str
    point: FailPoint
    provider: Provider
    failed_tasks: list[Exception]


Run = Callable[[int | None, Mode], Outcome]


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    counter = iter(range(1_000_000))

    def go(at: int | None, mode: Mode) -> Outcome:
        provider = Provider()
        settings = make_settings(tmp_path / f"w{next(counter)}", download_hosts={"samsara": ["files.example"]})
        world = World(settings=settings, handler=provider)
        replica = Replica(world.server)
        point = FailPoint(replica, at, mode)
        monkeypatch.setattr("worker.store.transactions.replication_of", replicating(replica))
        rt = failing_runtime(world, point)
        export_id = as_celery_would(lambda: ExportClient(rt).submit("samsara", dict(PARAMS), idempotency_key="fp-1"))
        failed = run_dispatched(world, rt)
        return Outcome(world, export_id, point, provider, failed)

    return go


def round_trips(run: Run) -> int:
    outcome = run(None, "drop")
    check_invariants(outcome.world, outcome.export_id, EXPECTED)
    assert outcome.world.runtime().store.get(outcome.export_id).status is ExportStatus.COMPLETED
    assert outcome.provider.creates == 1 and outcome.failed_tasks == []
    return outcome.point.count


@pytest.mark.parametrize("mode", [mode for mode in MODES if mode != "failover"])
def test_a_lost_connection_at_any_round_trip_changes_nothing_anyone_sees(run: Run, mode: Mode) -> None:
    total = round_trips(run)
    assert total > 40, "the whole export is enumerated: create, submit, poll, downloads, completion"
    for at in range(total):
        outcome = run(at, mode)
        world, export_id = outcome.world, outcome.export_id
        where = f"{mode} at round trip {at} of {total}"
        assert outcome.point.fired, where
        assert outcome.failed_tasks == [], f"{where}: tasks failed: {outcome.failed_tasks}"
        record = world.runtime().store.get(export_id)
        assert record.status is ExportStatus.COMPLETED, f"{where}: {record.status.value} without the watchdog"
        assert outcome.provider.creates == 1, f"{where}: {outcome.provider.creates} provider jobs"
        try:
            check_invariants(world, export_id, EXPECTED)
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}") from exc


def test_a_failover_at_any_round_trip_loses_only_what_is_recovered(run: Run) -> None:
    total = round_trips(run)
    revived = 0
    for at in range(total):
        outcome = run(at, "failover")
        world, export_id = outcome.world, outcome.export_id
        where = f"failover at round trip {at} of {total}"
        assert outcome.point.fired, where
        assert world.runtime().store.get(export_id).id == export_id, f"{where}: the id the caller got is gone"
        # A task for a file whose record the failover took back fails (the file is unknown again);
        # the watchdog revives the poll that lists it.
        assert all(isinstance(exc, UnknownExport) for exc in outcome.failed_tasks), f"{where}: {outcome.failed_tasks}"
        if not world.runtime().store.get(export_id).status.terminal:
            revived += 1
        world.settle()
        try:
            check_invariants(world, export_id, EXPECTED)
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}") from exc
        assert world.runtime().store.get(export_id).status is ExportStatus.COMPLETED, where
    assert revived > 0, "some failovers lost a chain the watchdog had to revive: the test reaches that case"
