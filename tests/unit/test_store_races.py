"""Store races with the collision forced: another writer runs between our read and our EXEC, every run."""

from __future__ import annotations

import fakeredis
import pytest

from tests.interleave import InterleavingRedis
from tests.unit.test_store import new_record
from worker.models import ExportRecord, FileRecord, FileStatus, Writes
from worker.store import ExportStore


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def ours(server: fakeredis.FakeServer) -> InterleavingRedis:
    return InterleavingRedis(server=server)


@pytest.fixture
def other(server: fakeredis.FakeServer) -> ExportStore:
    """The concurrent actor: another worker on the same Redis."""
    return ExportStore(fakeredis.FakeRedis(server=server), prefix="unit")


def test_create_that_collides_on_its_idempotency_key_returns_the_winner(ours: InterleavingRedis, other: ExportStore) -> None:
    store = ExportStore(ours, prefix="unit")
    ours.after_read("unit:idem:same-key", lambda: other.create(new_record("winner", "same-key")))
    record, created = store.create(new_record("loser", "same-key"))
    assert ours.fired == ["unit:idem:same-key"], "the collision was forced"
    assert (record.id, created) == ("winner", False)
    assert store.list_ids() == ["winner"] and store.active_ids() == ["winner"]
    assert store.status_counts() == {"PENDING": 1}
    assert [event["export_id"] for _, event in store.read_events("0")] == ["winner"]


def test_transaction_that_collides_reruns_on_the_new_state(ours: InterleavingRedis, other: ExportStore) -> None:
    store = ExportStore(ours, prefix="unit")
    store.create(new_record())

    def bump(record: ExportRecord, writes: Writes) -> int:
        record.jobs["0"].polls += 1
        return record.jobs["0"].polls

    ours.after_read("unit:export:e1", lambda: other.transact("e1", bump))
    assert store.transact("e1", bump) == 2
    assert store.get("e1").jobs["0"].polls == 2


def test_completion_check_reruns_when_a_file_finishes_concurrently(ours: InterleavingRedis, other: ExportStore) -> None:
    """watch_files: a file finishing between our read and our EXEC aborts the EXEC, so we see it."""
    store = ExportStore(ours, prefix="unit")
    store.create(new_record())

    def add_file(record: ExportRecord, writes: Writes) -> None:
        writes.put_file(FileRecord(key="0-0", job_key="0", name="f.csv", safe_name="f.csv", url="u"))

    store.transact("e1", add_file)

    def finish(file: FileRecord, writes: Writes) -> None:
        file.status = FileStatus.DONE

    runs: list[int] = []

    def check(record: ExportRecord, writes: Writes) -> None:
        runs.append(len(runs) + 1)
        record.warnings.append(f"run {runs[-1]}")

    ours.after_read("unit:export:e1", lambda: other.transact_file("e1", "0-0", finish))
    store.transact("e1", check, watch_files=True)
    assert runs == [1, 2], "the EXEC of run 1 was aborted by the file that finished"
    assert store.get("e1").warnings == ["run 2"]


def test_file_transaction_that_collides_reruns_on_the_new_state(ours: InterleavingRedis, other: ExportStore) -> None:
    store = ExportStore(ours, prefix="unit")
    store.create(new_record())
    store.transact("e1", lambda r, w: w.put_file(FileRecord(key="0-0", job_key="0", name="f.csv", safe_name="f.csv", url="u")))

    def attempt(file: FileRecord, writes: Writes) -> int:
        file.attempts += 1
        return file.attempts

    ours.after_read("unit:export:e1:file:0-0", lambda: other.transact_file("e1", "0-0", attempt))
    assert store.transact_file("e1", "0-0", attempt) == 2
    assert store.get_file("e1", "0-0").attempts == 2
