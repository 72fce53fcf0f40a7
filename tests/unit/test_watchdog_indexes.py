"""The watchdog reads what may need it, a page at a time: its cost follows the exports due for a look, never
the number of active ones, one run is bounded, and it keeps its indexes, the retention and old records in order."""

from __future__ import annotations

import random
from pathlib import Path

import fakeredis
import pytest

from tests.conftest import FakeClock, make_settings
from tests.interleaving import RoundTrips, hooked_client
from tests.scripted_samsara import PARAMS
from worker.dev.testing import RecordingDispatcher
from worker.engine import transitions as tr
from worker.engine.context import Runtime
from worker.engine.watchdog import run_watchdog
from worker.models import ExportRecord, ExportStatus, FileRecord, FileStatus, JobRecord, JobStatus, Writes
from worker.store import ExportStore

NOW = 1_800_000_000.0


class World:
    def __init__(self, tmp_path: Path, **settings: object) -> None:
        self.server = fakeredis.FakeServer()
        self.settings = make_settings(tmp_path, **settings)
        self.dispatcher = RecordingDispatcher()
        self.clock = FakeClock(NOW)

    def runtime(self, trips: RoundTrips | None = None) -> Runtime:
        client = hooked_client(self.server, trips) if trips else fakeredis.FakeRedis(server=self.server)
        return Runtime(
            settings=self.settings,
            store=ExportStore(client, prefix="wd"),
            dispatcher=self.dispatcher,
            clock=self.clock,
            rng=random.Random(1),
        )

    @property
    def stale_after(self) -> float:
        return self.settings.stale_after_seconds

    def polling(self, export_id: str, due: float, deadline_in: float = 10**6) -> None:
        """A RUNNING export whose one job's next poll is due at ``due``."""
        job = JobRecord(key="0", params=dict(PARAMS), status=JobStatus.POLLING, provider_job_id="j", token=3, next_action_at=due)
        record = ExportRecord(
            id=export_id,
            provider="samsara",
            params=dict(PARAMS),
            credential="default",
            status=ExportStatus.RUNNING,
            jobs={"0": job},
            created_at=due,
            updated_at=due,
            deadline_at=self.clock.now + deadline_in,
        )
        self.runtime().store.create(record)

    def watch_score(self, export_id: str) -> float | None:
        return fakeredis.FakeRedis(server=self.server).zscore("wd:watch", export_id)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def revived(world: World) -> list[str]:
    return [args.export_id for kind, args, _countdown in world.dispatcher.take() if kind == "poll"]


def trips_of_a_run(world: World) -> int:
    trips = RoundTrips()
    run_watchdog(world.runtime(trips))
    return trips.count


# -- cost ------------------------------------------------------------------------------------------


def test_a_run_with_nothing_due_costs_the_same_few_round_trips_however_many_exports_are_active(tmp_path: Path) -> None:
    counts = {}
    for active in (10, 400):
        world = World(tmp_path / str(active))
        for number in range(active):
            world.polling(f"e{number:04d}", due=NOW + 5)
        run_watchdog(world.runtime())  # the sweep lists nothing new after its first page
        counts[active] = trips_of_a_run(world)
        assert revived(world) == []
    assert counts[10] == counts[400] <= 15, counts


def test_a_run_looks_only_at_the_exports_whose_chain_may_be_silent(world: World) -> None:
    for number in range(200):
        world.polling(f"healthy-{number:03d}", due=NOW + 5)
    for name in ("silent-a", "silent-b"):
        world.polling(name, due=NOW - world.stale_after - 1)
    report = run_watchdog(world.runtime())
    assert (report.scanned, report.jobs_revived) == (2, 2)
    assert revived(world) == ["silent-a", "silent-b"]


def test_one_run_looks_at_no_more_exports_than_its_budget_in_pages_and_the_next_run_goes_on(tmp_path: Path) -> None:
    world = World(tmp_path, watchdog_max_exports=5, watchdog_page_size=2)
    for number in range(12):
        world.polling(f"e{number:02d}", due=NOW - world.stale_after - 100 + number)
    rt = world.runtime()
    asked: list[int] = []
    due_for_look = rt.store.due_for_look
    rt.store.due_for_look = lambda stale_before, limit: asked.append(limit) or due_for_look(stale_before, limit)  # type: ignore[method-assign]
    assert [run_watchdog(rt).jobs_revived for _ in range(4)] == [5, 5, 2, 0]
    assert max(asked) == 2, "no reply lists more ids than a page"
    assert revived(world) == [f"e{number:02d}" for number in range(12)], "the most overdue first, each once"


# -- when an export is looked at -------------------------------------------------------------------


def test_a_healthy_export_is_looked_at_again_only_once_its_chain_could_be_silent(world: World) -> None:
    world.polling("e1", due=NOW)
    world.runtime().store.transact("e1", lambda record, writes: tr.reschedule(record.jobs["0"], 6, NOW))  # polled at NOW
    world.clock.now = NOW + world.stale_after
    report = run_watchdog(world.runtime())
    assert (report.scanned, report.jobs_revived) == (1, 0), "due at creation: looked at, found polled since"
    assert world.watch_score("e1") == NOW + 6, "next look: when its next poll could be silent"
    world.clock.now = NOW + world.stale_after + 5.9
    assert run_watchdog(world.runtime()).scanned == 0
    world.clock.now = NOW + world.stale_after + 6
    assert run_watchdog(world.runtime()).jobs_revived == 1
    assert revived(world) == ["e1"]


def test_a_chain_that_ends_brings_the_next_look_to_the_next_run(world: World) -> None:
    """Its completion check is due now; if the worker doing it dies, the watchdog does it on its next run."""
    store = world.runtime().store
    world.polling("e1", due=NOW + 100)
    store.transact(
        "e1", lambda record, writes: writes.put_file(FileRecord(key="0-0", job_key="0", name="a", safe_name="a", url="u"))
    )
    assert world.watch_score("e1") == NOW + 100, "a fan-out leaves the look where it was"
    store.transact_file("e1", "0-0", lambda record, file, writes: setattr(file, "status", FileStatus.DONE))
    assert world.watch_score("e1") == 0
    world.polling("e2", due=NOW + 100)

    def succeed_without_files(record: ExportRecord, writes: Writes) -> None:
        record.jobs["0"].status = JobStatus.SUCCEEDED

    store.transact("e2", succeed_without_files)
    assert world.watch_score("e2") == 0
    report = run_watchdog(world.runtime())
    assert (report.scanned, report.completed) == (2, 1), "e2 completes; e1's job is still polling"
    assert world.runtime().store.get("e2").status is ExportStatus.COMPLETED


def test_an_export_past_its_deadline_fails_though_its_chains_look_healthy(world: World) -> None:
    world.polling("late", due=NOW + 5, deadline_in=10)
    world.polling("fine", due=NOW + 5)
    world.clock.now = NOW + 11
    report = run_watchdog(world.runtime())
    assert (report.scanned, report.expired) == (1, 1)
    assert world.runtime().store.get("late").status is ExportStatus.FAILED
    assert world.runtime().store.get("fine").status is ExportStatus.RUNNING


def test_ids_left_in_the_live_indexes_by_an_ended_or_gone_export_are_dropped_and_a_live_one_kept(world: World) -> None:
    world.polling("ended", due=NOW)
    world.polling("gone", due=NOW)
    world.polling("live", due=NOW + 5)
    store = world.runtime().store
    store.transact("ended", lambda record, writes: tr.cancel(record, writes, NOW))
    store.redis.zadd("wd:watch", {"ended": 0})  # listed again, as a racing sweep may
    store.redis.zadd("wd:deadlines", {"ended": 0})
    store.redis.delete("wd:export:gone")
    world.clock.now = NOW + world.stale_after
    report = run_watchdog(world.runtime())
    assert report.scanned == 0
    assert sorted(member.decode() for member in store.redis.zrange("wd:watch", 0, -1)) == ["live"]
    assert sorted(member.decode() for member in store.redis.zrange("wd:deadlines", 0, -1)) == ["live"]
    assert store.active_ids() == ["live"]
    assert store.list_ids() == ["live", "ended"], "a gone record leaves every index; an ended one stays listed"
    assert store.stop_watching("live") is False and world.watch_score("live") is not None


# -- retention -------------------------------------------------------------------------------------


def test_a_run_drops_the_ids_of_exports_the_retention_removed(world: World) -> None:
    store = world.runtime().store
    for name in ("a", "b", "kept"):
        world.polling(name, due=NOW)
        store.transact(name, lambda record, writes: tr.cancel(record, writes, NOW))
    for name in ("a", "b"):  # their keys expired
        for key in store.redis.keys(f"wd:export:{name}*"):
            store.redis.delete(key)
    world.clock.now = NOW + store.retention_seconds + 1
    report = run_watchdog(world.runtime())
    assert report.forgotten == 2
    assert store.list_ids() == ["kept"]
    assert [member.decode() for member in store.redis.zrange("wd:ended", 0, -1)] == ["kept"]


def test_the_first_run_after_an_upgrade_bounds_old_ended_exports_and_watches_old_live_ones(world: World) -> None:
    """Records as the version before retention wrote them: no TTL, no ended, watch or deadlines entries."""
    store = world.runtime().store
    world.polling("old-live", due=NOW - world.stale_after - 1)
    world.polling("old-ended", due=NOW)
    store.transact("old-ended", lambda record, writes: tr.cancel(record, writes, NOW))
    for key in ("wd:watch", "wd:deadlines", "wd:ended", "wd:unannounced"):
        store.redis.delete(key)
    for key in store.redis.keys("wd:export:old-ended*"):
        store.redis.persist(key)
    report = run_watchdog(world.runtime())
    assert (report.swept, report.scanned) == (1, 0)
    assert 0 < store.redis.ttl("wd:export:old-ended") <= store.retention_seconds
    assert world.watch_score("old-live") == 0, "listed for a look on the next run"
    report = run_watchdog(world.runtime())
    assert (report.scanned, report.jobs_revived, report.swept) == (1, 1, 0)
    assert revived(world) == ["old-live"]
