"""Store races with the collision forced: another writer runs at each Redis round trip of ours, in turn.

``tests/interleaving.py`` pauses our client before round trip ``k`` and lets the other actor (a
second client on the same fake server) finish its change there. Trying every ``k`` covers every
point between our read and our EXEC, so a check moved outside the WATCH fails on every run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import fakeredis

from tests.interleaving import RoundTrips, hooked_client
from tests.unit.test_store import new_record
from worker.errors import StaleTask
from worker.models import ExportRecord, FileRecord, FileStatus, Writes
from worker.store import ExportStore

Setup = Callable[[ExportStore], object]


def collide(setup: Setup, ours: Callable[[ExportStore], object], theirs: Callable[[ExportStore], object]):
    """For every round trip ``k`` of ``ours``: yield (our result, their result, a store to inspect)."""
    probe = fakeredis.FakeServer()
    setup(ExportStore(fakeredis.FakeRedis(server=probe), prefix="unit"))
    count = RoundTrips()
    ours(ExportStore(hooked_client(probe, count), prefix="unit"))
    for at in range(count.count):
        server = fakeredis.FakeServer()
        other = ExportStore(fakeredis.FakeRedis(server=server), prefix="unit")
        setup(other)
        their_result: list[object] = []
        trips = RoundTrips(at, lambda other=other, sink=their_result: sink.append(theirs(other)))
        result = ours(ExportStore(hooked_client(server, trips), prefix="unit"))
        assert their_result, f"round trip {at}: the other writer did not run"
        yield at, result, their_result[0], other


def no_setup(store: ExportStore) -> None:
    return None


def test_idempotent_create_under_a_forced_collision_stores_one_export() -> None:
    schedules = list(
        collide(
            no_setup,
            lambda store: store.create(new_record("ours", "same-key")),
            lambda store: store.create(new_record("theirs", "same-key")),
        )
    )
    assert len(schedules) >= 3, "WATCH, GET and EXEC are separate round trips"
    for at, ours, theirs, store in schedules:
        assert theirs == (store.get("theirs"), True), at
        assert ours == (store.get("theirs"), False), at
        assert store.list_ids() == ["theirs"] and store.active_ids() == ["theirs"], at
        assert store.status_counts() == {"PENDING": 1}, at


def create(store: ExportStore) -> None:
    store.create(new_record())


def bump(record: ExportRecord, writes: Writes) -> int:
    record.jobs["0"].polls += 1
    return record.jobs["0"].polls


def test_transaction_under_a_forced_collision_loses_no_update() -> None:
    for at, ours, theirs, store in collide(create, lambda s: s.transact("e1", bump), lambda s: s.transact("e1", bump)):
        assert sorted([ours, theirs]) == [1, 2], at
        assert store.get("e1").jobs["0"].polls == 2, at


def with_file(store: ExportStore) -> None:
    create(store)
    store.transact("e1", lambda r, w: w.put_file(FileRecord(key="0-0", job_key="0", name="f.csv", safe_name="f.csv", url="u")))


def attempt(record: ExportRecord, file: FileRecord, writes: Writes) -> int:
    file.attempts += 1
    return file.attempts


def test_file_transaction_under_a_forced_collision_loses_no_update() -> None:
    for at, ours, theirs, store in collide(
        with_file, lambda s: s.transact_file("e1", "0-0", attempt), lambda s: s.transact_file("e1", "0-0", attempt)
    ):
        assert sorted([ours, theirs]) == [1, 2], at
        assert store.get_file("e1", "0-0").attempts == 2, at


def finish(record: ExportRecord, file: FileRecord, writes: Writes) -> None:
    file.status = FileStatus.DONE


def test_a_decision_over_every_file_sees_a_file_that_finishes_during_it() -> None:
    """transact_with_files: a file finishing between our read and our EXEC aborts the EXEC; the rerun sees it."""

    def decide(store: ExportStore) -> list[FileStatus]:
        def look(record: ExportRecord, files: list[FileRecord], writes: Writes) -> list[FileStatus]:
            record.warnings = [f"saw {[file.status.value for file in files]}"]
            return [file.status for file in files]

        return store.transact_with_files("e1", look)

    for at, ours, _, store in collide(with_file, decide, lambda s: s.transact_file("e1", "0-0", finish)):
        assert store.get_file("e1", "0-0").status is FileStatus.DONE, at
        assert ours == [FileStatus.DONE], f"round trip {at}: the decision committed on a view without the finished file"
        assert store.get("e1").warnings == ["saw ['DONE']"], at


def test_a_lease_taken_during_an_unleased_file_change_refuses_the_change() -> None:
    """The watchdog's revive (``unleased``) must lose to a worker that takes the lease at any point before EXEC."""

    def revive(store: ExportStore) -> str:
        def bump(record: ExportRecord, file: FileRecord, writes: Writes) -> None:
            file.token += 1

        try:
            store.transact_file("e1", "0-0", bump, unleased=True)
        except StaleTask:
            return "refused"
        return "revived"

    schedules = list(collide(with_file, revive, lambda s: s.acquire_lease("e1", "0-0", "worker-1", 30)))
    assert len(schedules) >= 4, "WATCH, the reads and EXEC are separate round trips"
    for at, ours, theirs, store in schedules:
        assert (ours, theirs) == ("refused", True), at
        assert store.get_file("e1", "0-0").token == 0, at


def test_a_watch_kept_across_a_provider_call_is_trusted_only_on_its_own_live_connection() -> None:
    """redis-py connects again silently when a connection was lost or its health check's PING fails;
    the EXEC would then go unwatched, so a poll's change decides again on a fresh read instead."""
    store = ExportStore(fakeredis.FakeRedis(), prefix="unit")
    store.create(new_record())
    fresh = store._pipeline()
    fresh.watch_then(store.key("export", "e1"), "GET", store.key("export", "e1"))
    assert fresh.watch_holds()
    connection = fresh.connection
    assert connection is not None
    connection.health_check_interval = 30
    connection.next_health_check = time.monotonic() + 30
    assert fresh.watch_holds()
    connection.next_health_check = time.monotonic() + 0.5
    assert not fresh.watch_holds(), "a health check due before the EXEC may reconnect unwatched"
    connection.next_health_check = time.monotonic() + 30
    connection.disconnect()
    assert not fresh.watch_holds(), "a lost connection watches nothing once connected again"
    fresh.reset()
    assert not fresh.watch_holds()
