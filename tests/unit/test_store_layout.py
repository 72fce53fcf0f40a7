"""Store details other processes rely on: the documented key layout, TTLs in the right unit, list limits."""

from __future__ import annotations

import fakeredis

from tests.unit.test_store import new_record
from worker.store import ExportStore


def test_sink_streams_are_where_the_key_layout_says() -> None:
    """Other applications XREAD these keys, as documented at the top of worker/store/__init__.py."""
    store = ExportStore(fakeredis.FakeRedis(), prefix="unit")
    assert store.records_key("e1", "0-1") == "unit:export:e1:records:0-1"
    assert store.quarantine_key("e1", "0-1") == "unit:export:e1:quarantine:0-1"


def test_a_store_from_a_url_uses_its_prefix_and_checks_idle_connections() -> None:
    store = ExportStore.from_url("redis://127.0.0.1:6379/3", "custom")
    assert store.prefix == "custom"
    assert store.redis.connection_pool.connection_kwargs["health_check_interval"] == 30


def test_a_hold_lasts_the_seconds_asked_and_none_reads_zero(store: ExportStore) -> None:
    assert store.holds_left(["samsara:default:poll"])["samsara:default:poll"] == 0.0
    store.hold("samsara:default:poll", 2.5)
    assert 2.4 < store.holds_left(["samsara:default:poll"])["samsara:default:poll"] <= 2.5
    store.hold("samsara:default:poll", 100)
    assert 99.99 < store.holds_left(["samsara:default:poll"])["samsara:default:poll"] <= 100, "milliseconds read back as seconds"
    store.hold("samsara:default:create", 0.0001)
    assert store.holds_left(["samsara:default:create"])["samsara:default:create"] <= 0.001


def test_a_renewed_lease_lasts_the_seconds_asked(store: ExportStore, fake_redis: fakeredis.FakeRedis) -> None:
    assert store.acquire_lease("e1", "f", "worker-a", 5)
    assert store.renew_lease("e1", "f", "worker-a", 30)
    assert 29_000 < fake_redis.pttl("unit:export:e1:lease:f") <= 30_000


def test_listing_returns_the_newest_exports_up_to_the_limit(store: ExportStore) -> None:
    for number in range(60):
        record = new_record(f"e{number:02d}")
        record.created_at = 1000.0 + number
        store.create(record)
    assert store.list_ids(limit=3) == ["e59", "e58", "e57"]
    assert store.list_ids() == [f"e{number:02d}" for number in range(59, 9, -1)]


def test_a_lease_expires_so_a_dead_worker_cannot_keep_a_file(store: ExportStore, fake_redis: fakeredis.FakeRedis) -> None:
    assert store.acquire_lease("e1", "f", "worker-a", 30)
    assert 29_000 < fake_redis.pttl("unit:export:e1:lease:f") <= 30_000


def test_a_transaction_that_changes_nothing_writes_nothing(store: ExportStore) -> None:
    store.create(new_record())
    before = store.get("e1")
    store.transact("e1", lambda record, writes: None)
    assert store.get("e1") == before
    assert [event["type"] for _, event in store.read_events("0")] == ["created"]


def test_events_carry_export_id_and_time(store: ExportStore) -> None:
    store.create(new_record())
    [(_, event)] = store.read_events("0")
    assert event["export_id"] == "e1" and float(event["at"]) > 0 and event["type"] == "created"


def test_scripts_are_loaded_again_after_redis_lost_them(store: ExportStore, fake_redis: fakeredis.FakeRedis) -> None:
    """A restarted Redis has no scripts: the next call reloads its script once instead of failing."""
    assert store.acquire_lease("e1", "f", "worker-a", 5)
    assert store.renew_lease("e1", "f", "worker-a", 10)
    fake_redis.script_flush()
    assert store.renew_lease("e1", "f", "worker-a", 30)
    assert 29_000 < fake_redis.pttl("unit:export:e1:lease:f") <= 30_000
    fake_redis.script_flush()
    store.release_lease("e1", "f", "worker-a")
    assert store.acquire_lease("e1", "f", "worker-b", 5), "the reloaded release script ran"
