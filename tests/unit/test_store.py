"""The Redis store: idempotent create, atomic transitions, finished-file bookkeeping, leases, limits."""

from __future__ import annotations

import pytest

from worker.errors import UnknownExport
from worker.models import ExportRecord, FileRecord, FileStatus, JobRecord, Writes
from worker.store import ExportStore
from worker.store.limits import Spend


def new_record(export_id: str = "e1", idempotency_key: str | None = None) -> ExportRecord:
    return ExportRecord(
        id=export_id,
        provider="samsara",
        params={},
        credential="default",
        idempotency_key=idempotency_key,
        jobs={"0": JobRecord(key="0", params={}, token=1)},
        created_at=1000.0,
        updated_at=1000.0,
        deadline_at=2000.0,
    )


def test_same_idempotency_key_returns_the_first_export(store: ExportStore) -> None:
    first, created = store.create(new_record("a", "daily-2026-11-24"))
    second, created_again = store.create(new_record("b", "daily-2026-11-24"))
    assert created and not created_again and second.id == "a"
    with pytest.raises(UnknownExport, match="'b'"):
        store.get("b")
    assert store.list_ids() == ["a"] and store.active_ids() == ["a"]


def test_transaction_that_raises_writes_nothing(store: ExportStore) -> None:
    store.create(new_record())

    def explode(record: ExportRecord, writes: Writes) -> None:
        record.error = "should not be saved"
        writes.event("never")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.transact("e1", explode)
    assert store.get("e1").error is None
    assert [event["type"] for _, event in store.read_events("0")] == ["created"]


def test_files_and_finished_set_stay_in_step(store: ExportStore) -> None:
    store.create(new_record())

    def add_files(record: ExportRecord, writes: Writes) -> None:
        for index in range(3):
            writes.put_file(FileRecord(key=f"0-{index}", job_key="0", name=f"f{index}.csv", safe_name=f"f{index}.csv", url="u"))

    store.transact("e1", add_files)
    assert store.finished_count("e1") == (0, 3)

    def finish(_record: ExportRecord, file: FileRecord, writes: Writes) -> None:
        file.status = FileStatus.DONE

    store.transact_file("e1", "0-1", finish)
    assert store.finished_count("e1") == (1, 3)
    assert [f.status for f in store.files("e1")] == [FileStatus.PENDING, FileStatus.DONE, FileStatus.PENDING]


def test_terminal_status_leaves_the_active_index(store: ExportStore) -> None:
    from worker.models import ExportStatus

    store.create(new_record())

    def complete(record: ExportRecord, writes: Writes) -> None:
        record.status = ExportStatus.COMPLETED

    store.transact("e1", complete)
    assert store.active_ids() == []


def test_lease_is_exclusive_and_only_its_owner_renews_or_releases(store: ExportStore) -> None:
    assert store.acquire_lease("e1", "f", "worker-a", 30)
    assert not store.acquire_lease("e1", "f", "worker-b", 30)
    assert not store.renew_lease("e1", "f", "worker-b", 30)
    store.release_lease("e1", "f", "worker-b")
    assert not store.acquire_lease("e1", "f", "worker-b", 30), "another owner's release must not free the lease"
    assert store.renew_lease("e1", "f", "worker-a", 30)
    store.release_lease("e1", "f", "worker-a")
    assert store.acquire_lease("e1", "f", "worker-b", 30), "the owner's release frees the lease"


def test_rate_limit_allows_a_burst_then_asks_to_wait(store: ExportStore) -> None:
    spend = Spend("samsara:default", (("samsara:default:poll", 5, 1.0),))
    refusals = [store.spend(spend) for _ in range(6)]
    assert refusals[:5] == [None] * 5
    assert refusals[5] is not None and refusals[5].budget == 0 and 0 < refusals[5].seconds <= 0.2 + 1e-6


def test_corrupt_record_is_reported_not_reinterpreted(store: ExportStore, fake_redis) -> None:
    from worker.store import CorruptRecord

    fake_redis.set("unit:export:bad", b'{"id": "bad"}')
    with pytest.raises(CorruptRecord, match="does not validate"):
        store.get("bad")


def test_a_file_change_that_needs_no_lease_is_refused_while_a_worker_holds_it(store: ExportStore) -> None:
    from worker.errors import StaleTask

    store.create(new_record())
    new_file = FileRecord(key="f", job_key="0", name="f", safe_name="f", url="u")
    store.transact("e1", lambda record, writes: writes.put_file(new_file))
    assert store.acquire_lease("e1", "f", "worker-1", 30)

    def revive(_record: ExportRecord, file: FileRecord, writes: Writes) -> None:
        file.token += 1

    with pytest.raises(StaleTask, match="being downloaded"):
        store.transact_file("e1", "f", revive, unleased=True)
    store.release_lease("e1", "f", "worker-1")
    store.transact_file("e1", "f", revive, unleased=True)
    assert store.get_file("e1", "f").token == 1
