"""What the store promises beyond its method results: the documented Redis layout, isolation between
exports and from caller-chosen text, a bounded events stream, errors that name the export, and
export-only changes that file traffic does not hold up.

The layout is the table at the top of ``worker/store/__init__.py``, which the README's ``KEY_PREFIX`` setting
points operators to; these tests read the raw keys from fakeredis, as an operator or another process would.
"""

from __future__ import annotations

from collections.abc import Callable

import fakeredis
import pytest

import worker.store.base
from tests.interleaving import RoundTrips, hooked_client
from tests.unit.test_store import new_record
from worker.errors import UnknownExport
from worker.models import ExportRecord, ExportStatus, FileRecord, FileStatus, Writes
from worker.store import CorruptRecord, ExportStore
from worker.store.limits import Spend


def file_record(key: str, status: FileStatus = FileStatus.PENDING) -> FileRecord:
    return FileRecord(key=key, job_key="0", name=f"{key}.csv", safe_name=f"{key}.csv", url="u", status=status)


def put_files(store: ExportStore, export_id: str, *files: FileRecord) -> None:
    def put(_record: ExportRecord, writes: Writes) -> None:
        for file in files:
            writes.put_file(file)

    store.transact(export_id, put)


def members(client: fakeredis.FakeRedis, key: str) -> set[str]:
    return {raw.decode() for raw in client.smembers(key)}


# -- the documented key layout -------------------------------------------------------------------


def test_a_store_built_without_a_prefix_keeps_every_key_under_aew() -> None:
    """``KEY_PREFIX`` defaults to ``aew`` and so does the store: ACL key patterns and operators look under ``aew:``."""
    client = fakeredis.FakeRedis()
    store = ExportStore(client)
    store.create(new_record())
    assert client.get("aew:export:e1") is not None
    keys = sorted(key.decode() for key in client.keys("*"))
    writes = [key for key in keys if key.startswith("aew:write:")]
    assert [key for key in keys if key not in writes] == [
        "aew:active",
        "aew:deadlines",
        "aew:events",
        "aew:export:e1",
        "aew:export:e1:events",
        "aew:exports",
        "aew:stats:status",
        "aew:watch",
    ]
    assert len(writes) == 1 and 110_000 < client.pttl(writes[0]) <= 120_000, "the create's write key, kept 2 minutes"


def test_file_records_their_index_and_the_finished_set_are_where_the_layout_says(fake_redis: fakeredis.FakeRedis) -> None:
    """``export:<id>:files`` (set), ``export:<id>:file:<key>`` (FileRecord JSON), ``export:<id>:finished`` (set)."""
    store = ExportStore(fake_redis, prefix="unit")
    store.create(new_record())
    done = file_record("0-1", FileStatus.DONE)
    put_files(store, "e1", file_record("0-0"), done)

    assert fake_redis.type("unit:export:e1:files") == b"set"
    assert members(fake_redis, "unit:export:e1:files") == {"0-0", "0-1"}
    assert fake_redis.type("unit:export:e1:file:0-1") == b"string"
    assert FileRecord.model_validate_json(fake_redis.get("unit:export:e1:file:0-1")) == done
    assert fake_redis.type("unit:export:e1:finished") == b"set"
    assert members(fake_redis, "unit:export:e1:finished") == {"0-1"}
    assert sorted(key.decode() for key in fake_redis.keys("unit:export:e1*")) == [
        "unit:export:e1",
        "unit:export:e1:events",
        "unit:export:e1:file:0-0",
        "unit:export:e1:file:0-1",
        "unit:export:e1:files",
        "unit:export:e1:finished",
    ]


def test_file_records_written_under_the_layout_are_what_the_store_reads(fake_redis: fakeredis.FakeRedis) -> None:
    """The layout read the other way: records placed at the documented keys are the export's files."""
    store = ExportStore(fake_redis, prefix="unit")
    store.create(new_record())
    failed = file_record("0-0", FileStatus.FAILED)
    fake_redis.sadd("unit:export:e1:files", "0-0")
    fake_redis.set("unit:export:e1:file:0-0", failed.model_dump_json())
    fake_redis.sadd("unit:export:e1:finished", "0-0")
    assert store.files("e1") == [failed]
    assert store.get_file("e1", "0-0").status is FileStatus.FAILED
    assert store.finished_count("e1") == (1, 1)
    assert store.transact_with_files("e1", lambda record, files, writes: [file.key for file in files]) == ["0-0"]


def test_an_idempotency_key_is_stored_at_idem_and_names_the_export(fake_redis: fakeredis.FakeRedis) -> None:
    """``idem:<idempotency_key>`` holds the export id created for that key."""
    store = ExportStore(fake_redis, prefix="unit")
    store.create(new_record("e1", "fleet-a-2026-11-23"))
    assert fake_redis.get("unit:idem:fleet-a-2026-11-23") == b"e1"
    fake_redis.set("unit:idem:daily", "e1")
    again, created = store.create(new_record("e2", "daily"))
    assert (again.id, created) == ("e1", False), "a key recorded at idem:<key> is a key already used"


# -- isolation ---------------------------------------------------------------------------------------


def test_exports_with_the_same_file_keys_keep_their_own_files() -> None:
    """File keys (``<job>-<n>``) recur in every export: one export's files never show in another's."""
    store = ExportStore(fakeredis.FakeRedis(), prefix="unit")
    for export_id in ("e1", "e2"):
        store.create(new_record(export_id))
    put_files(store, "e1", file_record("0-0", FileStatus.DONE), file_record("0-1", FileStatus.DONE))
    put_files(store, "e2", file_record("0-0"))

    assert store.finished_count("e1") == (2, 2)
    assert store.finished_count("e2") == (0, 1)
    assert [file.status for file in store.files("e2")] == [FileStatus.PENDING]
    assert store.get_file("e1", "0-0").status is FileStatus.DONE
    assert store.transact_with_files("e2", lambda record, files, writes: [(f.key, f.status) for f in files]) == [
        ("0-0", FileStatus.PENDING)
    ]


@pytest.mark.parametrize("idempotency_key", ["active", "exports", "events", "stats:status", "export:other"])
def test_an_idempotency_key_that_spells_a_store_key_is_just_a_key(idempotency_key: str) -> None:
    """The caller picks the idempotency key: whatever its text, it cannot land on one of the store's own keys."""
    store = ExportStore(fakeredis.FakeRedis(), prefix="unit")
    first, created = store.create(new_record("e1", idempotency_key))
    second, created_again = store.create(new_record("e2", idempotency_key))
    assert created and not created_again and second == first
    assert store.list_ids() == ["e1"] and store.active_ids() == ["e1"] and store.status_counts() == {"PENDING": 1}


def test_a_store_over_a_client_that_decodes_replies_reads_the_same() -> None:
    """``ExportStore`` takes any ``redis.Redis``; one built with ``decode_responses=True`` answers str, not bytes."""
    store = ExportStore(fakeredis.FakeRedis(decode_responses=True), prefix="unit")
    store.create(new_record("e1", "same"))
    again, created = store.create(new_record("e2", "same"))
    assert (again.id, created) == ("e1", False)
    put_files(store, "e1", file_record("0-0", FileStatus.DONE))
    assert [file.key for file in store.files("e1")] == ["0-0"] and store.finished_count("e1") == (1, 1)
    assert store.list_ids() == ["e1"] and store.active_ids() == ["e1"] and store.status_counts() == {"PENDING": 1}
    assert [(event["export_id"], event["type"]) for _, event in store.read_events("0")] == [("e1", "created")]


# -- the events stream -----------------------------------------------------------------------------


def test_the_events_stream_is_capped_and_keeps_the_newest(
    monkeypatch: pytest.MonkeyPatch, store: ExportStore, fake_redis: fakeredis.FakeRedis
) -> None:
    """Every state change adds an event, forever: the stream is trimmed to about ``EVENTS_MAXLEN`` so Redis memory stays bounded.

    The cap is shrunk to 10 to keep the test fast. Redis trims approximately (whole nodes), so only
    "far fewer than written" and "at least the newest ``EVENTS_MAXLEN``" are promised.
    """
    monkeypatch.setattr(worker.store.base, "EVENTS_MAXLEN", 10)
    store.create(new_record())

    def chatter(_record: ExportRecord, writes: Writes) -> None:
        for number in range(1000):
            writes.event("noted", number=number)

    store.transact("e1", chatter)
    kept = fake_redis.xlen("unit:events")
    assert 10 <= kept <= 200, f"{kept} of 1001 events kept"
    numbers = [event["number"] for _, event in store.read_events("0", count=1000)]
    assert numbers[-10:] == list(range(990, 1000)) and len(numbers) == kept


# -- errors name the export ------------------------------------------------------------------------


@pytest.mark.parametrize("with_files", [False, True])
def test_a_transaction_on_a_missing_or_corrupt_export_names_it(
    store: ExportStore, fake_redis: fakeredis.FakeRedis, with_files: bool
) -> None:
    """The message reaches the CLI and logs; ``UnknownExport.export_id`` is what callers report."""

    def run(export_id: str) -> None:
        if with_files:
            store.transact_with_files(export_id, lambda record, files, writes: None)
        else:
            store.transact(export_id, lambda record, writes: None)

    with pytest.raises(UnknownExport, match="'nope'") as missing:
        run("nope")
    assert missing.value.export_id == "nope"
    fake_redis.set("unit:export:bad", b'{"id": "bad"}')
    with pytest.raises(CorruptRecord, match="export bad in Redis does not validate"):
        run("bad")


# -- export-only changes and file traffic ------------------------------------------------------------


def test_an_export_only_change_is_not_rerun_by_a_file_changing_meanwhile() -> None:
    """``transact`` WATCHes the export record only: downloads finishing files never make it run again.

    Only ``transact_with_files`` (ending decisions) pays for a view of every file; a poll or a
    cancel of a busy export must not contend with each of its downloads. The download is run at
    every round trip of the change, in turn.
    """

    def setup(store: ExportStore) -> None:
        store.create(new_record())
        put_files(store, "e1", file_record("0-0"), file_record("0-1"))

    def finish(_record: ExportRecord, file: FileRecord, writes: Writes) -> None:
        file.status = FileStatus.DONE

    def count_trips() -> int:
        server = fakeredis.FakeServer()
        setup(ExportStore(fakeredis.FakeRedis(server=server), prefix="unit"))
        trips = RoundTrips()
        ExportStore(hooked_client(server, trips), prefix="unit").transact("e1", start_running([]))
        return trips.count

    for at in range(count_trips()):
        server = fakeredis.FakeServer()
        other = ExportStore(fakeredis.FakeRedis(server=server), prefix="unit")
        setup(other)
        calls: list[int] = []
        trips = RoundTrips(at, lambda other=other: other.transact_file("e1", "0-1", finish))
        ExportStore(hooked_client(server, trips), prefix="unit").transact("e1", start_running(calls))
        assert trips.insert is None, f"round trip {at}: the download did not run"
        assert calls == [1], f"round trip {at}: the change ran {len(calls)} times"
        assert other.get("e1").status is ExportStatus.RUNNING and other.finished_count("e1") == (1, 2), at


def start_running(calls: list[int]) -> Callable[[ExportRecord, Writes], None]:
    def mutate(record: ExportRecord, writes: Writes) -> None:
        calls.append(1)
        record.status = ExportStatus.RUNNING

    return mutate


def test_a_rate_budget_and_a_hold_live_where_the_layout_says(fake_redis: fakeredis.FakeRedis) -> None:
    """Operators inspect (and after an incident clear) ``rate:`` and ``hold:`` keys by these documented names."""
    store = ExportStore(fake_redis, prefix="unit")
    store.spend(Spend("samsara:default", (("samsara:default:poll", 5, 1.0),)))
    store.hold("samsara:default", 30)
    assert {key.decode() for key in fake_redis.keys("unit:*")} == {"unit:rate:samsara:default:poll", "unit:hold:samsara:default"}
    fake_redis.delete("unit:hold:samsara:default")
    assert store.holds_left(["samsara:default"]) == {"samsara:default": 0}
