"""Retention: the EXEC that ends an export bounds every key of it, the one that reopens it unbounds them,
keys written late never outlive it, the indexes drop what is forgotten, and the sweep bounds old records."""

from __future__ import annotations

from collections.abc import Callable

import fakeredis
import pytest

from tests.conftest import make_settings
from tests.interleaving import RoundTrips, hooked_client
from tests.unit.test_store import new_record
from worker.errors import UnknownExport
from worker.models import ExportRecord, ExportStatus, FileRecord, FileStatus, Writes
from worker.store import ExportStore, retention

RETENTION = 600
LEASE_MS = 30_000
SINK_TTL = 7 * 86400


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def store(server: fakeredis.FakeServer) -> ExportStore:
    return ExportStore(fakeredis.FakeRedis(server=server), prefix="ret", retention_seconds=RETENTION)


def file(key: str, status: FileStatus = FileStatus.PENDING) -> FileRecord:
    return FileRecord(key=key, job_key="0", name=f"{key}.csv", safe_name=f"{key}.csv", url="u", status=status)


def move(status: ExportStatus, finished_at: float | None = None) -> Callable[[ExportRecord, Writes], None]:
    def mutate(record: ExportRecord, writes: Writes) -> None:
        record.status = status
        record.finished_at = finished_at

    return mutate


def add_files(*keys: str) -> Callable[[ExportRecord, Writes], None]:
    def mutate(record: ExportRecord, writes: Writes) -> None:
        for key in keys:
            writes.put_file(file(key))

    return mutate


def with_everything(store: ExportStore) -> None:
    """Export e1 (idempotency key, two files, a lease, published sink streams and its own events stream), live."""
    store.create(new_record("e1", "daily-1"))
    store.transact("e1", add_files("0-0", "0-1"))
    store.transact_file("e1", "0-1", lambda record, current, writes: setattr(current, "status", FileStatus.DONE))
    assert store.acquire_lease("e1", "0-0", "worker-a", LEASE_MS / 1000)
    store.append_stream(store.key("staging", "a", "records"), [b"{}"], SINK_TTL)
    store.publish_streams("e1", [(store.records_key("e1", "0-0"), store.key("staging", "a", "records"), 1)], SINK_TTL)
    store.redis.xadd(store.export_events_key("e1"), {"data": "{}"})


def keys_of(store: ExportStore, export_id: str) -> dict[str, int]:
    """Every key of the export, its idempotency key included, with its TTL in ms (-1: none)."""
    idem = [name for name in store.redis.keys("ret:idem:*") if store.redis.get(name) == export_id.encode()]
    return {name.decode(): int(store.redis.pttl(name)) for name in [*store.redis.keys(f"ret:export:{export_id}*"), *idem]}


OWN = {"ret:export:e1", "ret:export:e1:files", "ret:export:e1:finished", "ret:export:e1:events", "ret:idem:daily-1"}
FILE_RECORDS = {"ret:export:e1:file:0-0", "ret:export:e1:file:0-1"}
BOUNDED = {"ret:export:e1:lease:0-0", "ret:export:e1:records:0-0"}
FORGET_KEYS = ("ended_status", "stats:status", "exports", "unannounced", "ended")


def index(store: ExportStore, name: str) -> list[str]:
    kind = store.redis.type(store.key(name))
    raw = store.redis.smembers(store.key(name)) if kind == b"set" else store.redis.zrange(store.key(name), 0, -1)
    return sorted(item.decode() for item in raw)


# -- the end and the reopen ------------------------------------------------------------------------


@pytest.mark.parametrize("end", [ExportStatus.COMPLETED, ExportStatus.FAILED, ExportStatus.CANCELLED])
def test_the_exec_that_ends_an_export_gives_every_key_of_it_the_retention(store: ExportStore, end: ExportStatus) -> None:
    with_everything(store)
    assert set(keys_of(store, "e1")) >= OWN | FILE_RECORDS | BOUNDED
    assert all(ttl == -1 for name, ttl in keys_of(store, "e1").items() if name not in BOUNDED), "a live export never expires"
    store.transact("e1", move(end, finished_at=1500.0))
    ttls = keys_of(store, "e1")
    assert set(ttls) == OWN | FILE_RECORDS | BOUNDED
    for name, ttl in ttls.items():
        assert 0 < ttl <= RETENTION * 1000, name
    assert ttls["ret:export:e1:lease:0-0"] <= LEASE_MS, "a lease keeps its own, shorter bound"
    assert (index(store, "ended"), index(store, "unannounced")) == (["e1"], ["e1"])
    assert store.redis.zscore(store.key("ended"), "e1") == 1500.0, "ended is scored by end time"
    assert (index(store, "active"), index(store, "watch"), index(store, "deadlines")) == ([], [], [])


def test_a_stream_never_gets_longer_than_its_own_ttl_at_the_end(server: fakeredis.FakeServer) -> None:
    """With a retention longer than the sink's TTL, the end keeps the sink's (EXPIRE … LT)."""
    store = ExportStore(fakeredis.FakeRedis(server=server), prefix="ret", retention_seconds=30 * 86400)
    with_everything(store)
    store.transact("e1", move(ExportStatus.COMPLETED, 1500.0))
    ttls = keys_of(store, "e1")
    assert 0 < ttls["ret:export:e1:records:0-0"] <= SINK_TTL * 1000
    assert SINK_TTL * 1000 < ttls["ret:export:e1"] <= 30 * 86400 * 1000


def test_the_exec_that_reopens_an_export_makes_its_keys_persistent_again(store: ExportStore) -> None:
    with_everything(store)
    store.transact("e1", move(ExportStatus.FAILED, 1500.0))
    store.transact("e1", move(ExportStatus.DOWNLOADING))  # a retry
    ttls = keys_of(store, "e1")
    assert {name for name, ttl in ttls.items() if ttl == -1} == OWN | FILE_RECORDS
    assert all(0 < ttls[name] for name in BOUNDED), "a lease and a sink stream keep their own bound"
    assert (index(store, "ended"), index(store, "active"), index(store, "watch"), index(store, "deadlines")) == (
        [],
        ["e1"],
        ["e1"],
        ["e1"],
    )
    assert store.redis.zscore(store.key("watch"), "e1") == 0, "a reopened export is looked at on the next run"
    assert store.redis.zscore(store.key("deadlines"), "e1") == store.get("e1").deadline_at


def test_a_fail_or_cancel_covers_a_file_that_arrives_during_it_at_every_round_trip(server: fakeredis.FakeServer) -> None:
    """Ending without a view of the files (``transact``) reads the files index under WATCH: a fan-out landing at
    any round trip of the cancel either aborts its EXEC (it runs again and sees the file) or is refused after it."""

    def run(at: int | None) -> tuple[ExportStore, RoundTrips]:
        server = fakeredis.FakeServer()
        plain = ExportStore(fakeredis.FakeRedis(server=server), prefix="ret", retention_seconds=RETENTION)
        plain.create(new_record())
        plain.transact("e1", add_files("0-0"))

        def fan_out() -> None:
            try:
                plain.transact("e1", lambda record, writes: None if record.status.terminal else add_files("0-1")(record, writes))
            except UnknownExport:
                raise AssertionError("the record vanished") from None

        trips = RoundTrips(at, fan_out)
        paused = ExportStore(hooked_client(server, trips), prefix="ret", retention_seconds=RETENTION)
        paused.transact("e1", move(ExportStatus.CANCELLED, 1500.0))
        return plain, trips

    total = run(None)[1].count
    assert total >= 4
    for at in range(total + 1):
        store, _trips = run(at)
        files = sorted(key.decode().rsplit(":", 1)[-1] for key in store.redis.smembers("ret:export:e1:files"))
        for key in files:
            assert 0 < store.redis.ttl(f"ret:export:e1:file:{key}") <= RETENTION, f"file {key} unbounded (fan-out at {at})"
        assert 0 < store.redis.ttl("ret:export:e1:files") <= RETENTION


def test_a_record_written_again_after_the_end_keeps_its_ttl(store: ExportStore) -> None:
    with_everything(store)
    store.transact("e1", move(ExportStatus.COMPLETED, 1500.0))
    store.transact("e1", lambda record, writes: writes.event("noted"))
    assert 0 < store.redis.ttl("ret:export:e1") <= RETENTION


# -- keys written after the end ----------------------------------------------------------------------


def test_a_lease_taken_or_renewed_after_the_end_expires_with_the_export(store: ExportStore) -> None:
    with_everything(store)
    assert store.acquire_lease("e1", "0-1", "w", 30)
    assert 29_000 < store.redis.pttl("ret:export:e1:lease:0-1") <= 30_000, "a live export's lease lasts what is asked"
    store.release_lease("e1", "0-1", "w")
    store.transact("e1", move(ExportStatus.CANCELLED, 1500.0))
    assert store.acquire_lease("e1", "0-1", "late", 10 * RETENTION)
    assert 0 < store.redis.pttl("ret:export:e1:lease:0-1") <= RETENTION * 1000
    assert store.renew_lease("e1", "0-1", "late", 10 * RETENTION)
    assert 0 < store.redis.pttl("ret:export:e1:lease:0-1") <= RETENTION * 1000


def test_a_stream_published_after_the_end_expires_with_the_export(store: ExportStore) -> None:
    with_everything(store)
    store.transact("e1", move(ExportStatus.CANCELLED, 1500.0))
    staging = store.key("staging", "late", "records")
    store.append_stream(staging, [b"{}"], SINK_TTL)
    assert 0 < store.redis.ttl(staging) <= RETENTION, "a staging stream never outlives the retention"
    store.publish_streams("e1", [(store.records_key("e1", "0-1"), staging, 1)], SINK_TTL)
    expires_at = store.redis.pexpiretime(store.records_key("e1", "0-1"))
    assert 0 < expires_at <= store.redis.pexpiretime("ret:export:e1"), (
        "absolute expiry times: two PTTL reads differ by the ms between them"
    )


def test_publishing_renames_each_staging_stream_and_deletes_a_final_one_without(store: ExportStore) -> None:
    store.create(new_record())
    final, other = store.records_key("e1", "0-0"), store.quarantine_key("e1", "0-0")
    store.redis.xadd(other, {"row": b"old"})
    staging = store.key("staging", "s", "records")
    store.append_stream(staging, [b"a", b"b"], 60)
    store.publish_streams("e1", [(final, staging, 2), (other, None, 0)], 60)
    assert [fields[b"row"] for _id, fields in store.redis.xrange(final)] == [b"a", b"b"]
    assert not store.redis.exists(staging) and not store.redis.exists(other)
    assert 55 < store.redis.ttl(final) <= 60


# -- the idempotency key after the retention ----------------------------------------------------------


def test_an_idempotency_key_whose_export_was_forgotten_creates_a_new_export(store: ExportStore) -> None:
    """The keys of an export expire together; should the record go first, the key is free all the same."""
    store.create(new_record("old", "daily-1"))
    store.redis.delete("ret:export:old")
    stored, created = store.create(new_record("new", "daily-1"))
    assert (stored.id, created) == ("new", True)
    assert store.redis.get("ret:idem:daily-1") == b"new"
    again, created_again = store.create(new_record("third", "daily-1"))
    assert (again.id, created_again) == ("new", False)


def test_a_forgotten_export_is_unknown_with_where_it_was_looked_for_and_the_retention(store: ExportStore) -> None:
    with pytest.raises(UnknownExport) as missing:
        store.get("gone")
    message = str(missing.value)
    assert missing.value.export_id == "gone"
    assert "no export 'gone' in Redis at " in message and "under key prefix 'ret'" in message
    assert "forgotten" in message and "10 minutes" in message and "EXPORT_WORKER_RETENTION_SECONDS=600" in message
    assert str(UnknownExport(*missing.value.args)) == message, "Celery rebuilds it from args in a caller"


# -- the indexes --------------------------------------------------------------------------------------


def ended(store: ExportStore, export_id: str, at: float) -> None:
    store.create(new_record(export_id))
    store.transact(export_id, move(ExportStatus.COMPLETED, at))


def test_forgotten_exports_leave_every_index_and_the_others_stay(store: ExportStore) -> None:
    for number in range(7):
        ended(store, f"e{number}", 1000.0 + number)
    for number in (0, 1, 2, 4, 6):  # their retention is over: the keys expired
        store.redis.delete(f"ret:export:e{number}")
    assert store.forget_expired(1005.5, page=2, limit=100) == 4, "e6 ended after the cutoff"
    for name in ("exports", "ended", "unannounced"):
        assert index(store, name) == ["e3", "e5", "e6"], name
    assert store.list_ids() == ["e6", "e5", "e3"]


def test_a_forgotten_export_leaves_the_status_counts_once(store: ExportStore) -> None:
    """``aew_exports{status}`` counts the ended exports still kept: forgetting one uncounts it, once."""
    for number in range(3):
        ended(store, f"e{number}", 1000.0 + number)
    store.create(new_record("e3"))
    store.transact("e3", move(ExportStatus.FAILED, 1003.0))
    assert store.status_counts() == {"PENDING": 0, "COMPLETED": 3, "FAILED": 1}
    for number in (0, 1, 3):
        store.redis.delete(f"ret:export:e{number}")
    assert store.forget_expired(2000.0, page=10, limit=100) == 3
    assert store.status_counts() == {"PENDING": 0, "COMPLETED": 1, "FAILED": 0}
    store._eval(retention._FORGET_SCRIPT, [*(f"ret:{name}" for name in FORGET_KEYS), "ret:export:e0"], ["e0"])
    assert store.status_counts()["COMPLETED"] == 1, "a second watchdog forgetting the same export uncounts nothing"
    assert store.redis.hkeys("ret:ended_status") == [b"e2"]


def test_a_reopened_export_is_no_longer_counted_as_ended_when_forgetting(store: ExportStore) -> None:
    ended(store, "e1", 1000.0)
    store.transact("e1", move(ExportStatus.RUNNING, None))
    assert store.redis.hkeys("ret:ended_status") == []
    assert store.status_counts() == {"PENDING": 0, "COMPLETED": 0, "RUNNING": 1}


def test_forgetting_looks_at_no_more_ids_than_its_limit(store: ExportStore) -> None:
    for number in range(5):
        ended(store, f"e{number}", 1000.0 + number)
        store.redis.delete(f"ret:export:e{number}")
    assert store.forget_expired(2000.0, page=2, limit=3) == 3
    assert index(store, "ended") == ["e3", "e4"]
    assert store.forget_expired(2000.0, page=2, limit=3) == 2


def test_events_older_than_the_retention_are_trimmed_by_redis_clock(server: fakeredis.FakeServer) -> None:
    store = ExportStore(fakeredis.FakeRedis(server=server), prefix="ret", retention_seconds=100)
    now_ms = int(store.redis.time()[0]) * 1000
    for offset in (500, 300, 50, 10):
        store.redis.xadd(store.events_key, {"data": "{}"}, id=f"{now_ms - offset * 1000}-0")
    store.trim_events()
    assert [int(entry_id.decode().split("-")[0]) for entry_id, _ in store.redis.xrange(store.events_key)] == [
        now_ms - 50_000,
        now_ms - 10_000,
    ]


# -- the sweep of records without a TTL ---------------------------------------------------------------


def legacy(store: ExportStore, export_id: str, status: ExportStatus, finished_at: float | None, files: int = 0) -> None:
    """An export as the version before retention left it: no TTL, no ended/watch/deadlines entries."""
    record = new_record(export_id, f"key-{export_id}")
    record.status, record.finished_at = status, finished_at
    redis = store.redis
    redis.set(f"ret:export:{export_id}", record.model_dump_json())
    redis.set(f"ret:idem:key-{export_id}", export_id)
    redis.zadd("ret:exports", {export_id: record.created_at})
    for number in range(files):
        key = f"0-{number}"
        redis.sadd(f"ret:export:{export_id}:files", key)
        redis.set(f"ret:export:{export_id}:file:{key}", file(key, FileStatus.DONE).model_dump_json())
    if status.terminal:
        redis.zadd("ret:unannounced", {export_id: finished_at or record.updated_at})
    else:
        redis.sadd("ret:active", export_id)


def test_the_sweep_bounds_old_ended_exports_by_what_is_left_of_their_retention(store: ExportStore) -> None:
    legacy(store, "recent", ExportStatus.COMPLETED, finished_at=10_000.0, files=2)
    legacy(store, "old", ExportStatus.FAILED, finished_at=1_000.0)
    legacy(store, "live", ExportStatus.RUNNING, finished_at=None)
    report = store.sweep(now=10_100.0, count=100)
    assert (report.bounded, report.watched) == (2, 1)
    recent = keys_of(store, "recent")
    assert {name for name in recent if "idem" not in name} == {
        "ret:export:recent",
        "ret:export:recent:files",
        "ret:export:recent:file:0-0",
        "ret:export:recent:file:0-1",
    }
    assert all(0 < ttl <= (RETENTION - 100) * 1000 for ttl in recent.values())
    assert 0 < store.redis.ttl("ret:idem:key-recent") <= RETENTION - 100
    assert 0 < store.redis.pttl("ret:export:old") <= 1000, "past its retention already: forgotten at once"
    assert store.redis.ttl("ret:export:live") == -1, "a live export never expires"
    assert index(store, "ended") == ["old", "recent"]
    assert store.redis.zscore("ret:watch", "live") == 0 and store.redis.zscore("ret:deadlines", "live") == 2000.0
    again = store.sweep(now=10_100.0, count=100)
    assert (again.bounded, again.watched) == (0, 0), "a second pass finds nothing left to do"


def test_the_sweep_walks_a_large_index_a_page_per_call(store: ExportStore) -> None:
    """Over 128 entries a zset is a hash table and ZSCAN's COUNT bounds a page; the cursor lives in Redis."""
    for number in range(400):
        legacy(store, f"x{number:03d}", ExportStatus.COMPLETED, finished_at=10_000.0)
    pages = []
    while True:
        pages.append(store.sweep(now=10_000.0, count=50).bounded)
        if store.redis.get("ret:sweep") == b"0":
            break
    assert sum(pages) == 400 and len(pages) >= 4
    assert max(pages) < 200, f"a page bounded far more than COUNT: {pages}"


def test_the_retention_must_outlast_the_wait_before_an_unreported_end_is_reported(tmp_path) -> None:
    with pytest.raises(ValueError, match="RETENTION_SECONDS .* must exceed"):
        make_settings(tmp_path, retention_seconds=30)  # stale after 3 x 10 s, plus the watchdog interval
    assert make_settings(tmp_path, retention_seconds=100, watchdog_interval_seconds=60).retention_seconds == 100
