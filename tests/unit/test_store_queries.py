"""The dashboard's read-only queries: pages of the exports index, bulk reads in constant round trips,
each export's own events stream, and the schedule-success stamp."""

from __future__ import annotations

import fakeredis
import pytest

from tests.interleaving import RoundTrips, hooked_client
from tests.unit.test_store import new_record
from worker.models import ExportRecord
from worker.store import CorruptRecord, ExportStore
from worker.store.base import EXPORT_EVENTS_MAXLEN


def stored(store: ExportStore, export_id: str, created_at: float) -> ExportRecord:
    record = new_record(export_id).model_copy(update={"created_at": created_at})
    store.create(record)
    return record


def walk(store: ExportStore, batch: int, **where: object) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        step = store.scan_exports(before=cursor, batch=batch, **where)  # type: ignore[arg-type]
        seen += [export_id for _score, export_id, _raw in step.matches]
        cursor = step.last
        if step.exhausted:
            return seen


def test_a_scan_walks_every_export_once_newest_first_ties_included(store: ExportStore) -> None:
    for index in range(7):
        stored(store, f"e{index}", 100.0 + index // 3)  # three exports share each creation time
    assert walk(store, batch=2) == ["e6", "e5", "e4", "e3", "e2", "e1", "e0"]
    assert walk(store, batch=100) == ["e6", "e5", "e4", "e3", "e2", "e1", "e0"]


def test_a_scan_keeps_to_the_time_range_and_returns_only_records_with_every_needle(store: ExportStore) -> None:
    for index in range(10):
        stored(store, f"e{index}", 100.0 + index)
    store.transact("e4", lambda record, _w: setattr(record, "schedule", "nightly"))
    assert walk(store, batch=3, since=103, until=105) == ["e5", "e4", "e3"]
    assert walk(store, batch=3, needles=['"schedule":"nightly"', '"provider":"samsara"']) == ["e4"]
    assert walk(store, batch=3, needles=['"schedule":"nightly"', '"provider":"impact"']) == []
    assert walk(store, batch=3, folded=["nightly"]) == ["e4"] and walk(
        store, batch=3, folded=['"Schedule":"NIGHTLY"'.lower()]
    ) == ["e4"]
    assert [i for _s, i, _r in store.scan_exports(before=(108.0, "e8"), until=104.5, batch=10).matches][:1] == ["e4"]
    step = store.scan_exports(before=(105.0, "e5"), since=103, batch=10)
    assert ([i for _s, i, _r in step.matches], step.scanned, step.exhausted) == (["e4", "e3"], 2, True)
    assert store.count_ids(since=103, until=105) == 3
    assert store.count_ids() == 10


def test_a_scan_step_reads_at_most_its_batch_in_one_round_trip() -> None:
    server = fakeredis.FakeServer()
    trips = RoundTrips()
    store = ExportStore(hooked_client(server, trips), prefix="q")
    for index in range(30):
        stored(store, f"e{index:02d}", float(index))
    store.scan_exports(batch=1)  # loads the script
    before = trips.count
    step = store.scan_exports(batch=12, needles=['"status":"PENDING"'])
    assert (trips.count - before, step.scanned, len(step.matches), step.exhausted) == (1, 12, 12, False)
    assert step.last == (18.0, "e18")


def test_active_records_cost_two_round_trips_for_one_export_or_fifty() -> None:
    server = fakeredis.FakeServer()
    trips = RoundTrips()
    store = ExportStore(hooked_client(server, trips), prefix="q")

    def cost() -> tuple[int, int]:
        before = trips.count
        found = len(store.active_records())
        return found, trips.count - before

    stored(store, "e0", 0.0)
    assert cost() == (1, 2)
    for index in range(1, 50):
        stored(store, f"e{index}", float(index))
    assert cost() == (50, 2)


def test_a_scanned_record_that_does_not_validate_is_reported(store: ExportStore, fake_redis: fakeredis.FakeRedis) -> None:
    stored(store, "a", 1)
    fake_redis.set("unit:export:a", "{not json")
    step = store.scan_exports()
    with pytest.raises(CorruptRecord, match="export a in Redis does not validate"):
        store.parse_scanned(step.matches[0][2], "a")


def test_every_event_also_lands_on_its_exports_own_stream_in_order(store: ExportStore) -> None:
    stored(store, "a", 1)
    stored(store, "b", 2)
    store.transact("a", lambda _r, w: w.event("status", status="RUNNING"))
    own = store.export_events("a")
    assert [event["type"] for _id, event in own] == ["created", "status"]
    assert all(event["export_id"] == "a" for _id, event in own)
    assert [event["type"] for _id, event in store.export_events("a", after=own[0][0])] == ["status"]
    assert [event["type"] for _id, event in store.read_export_events("b", "0")] == ["created"]


def test_an_exports_own_stream_is_capped(store: ExportStore, fake_redis: fakeredis.FakeRedis) -> None:
    stored(store, "a", 1)
    for _ in range(EXPORT_EVENTS_MAXLEN // 100 + 1):
        store.transact("a", lambda _r, w: [w.event("polled") for _ in range(150)])
    assert EXPORT_EVENTS_MAXLEN <= fake_redis.xlen("unit:export:a:events") < EXPORT_EVENTS_MAXLEN + 300


def test_holds_and_leases_in_bulk(store: ExportStore) -> None:
    store.hold("samsara:default", 30)
    store.acquire_lease("a", "0-0", "w1", 10)
    holds = store.holds_left(["samsara:default", "impact:impact", "samsara:default"])
    assert 29 < holds["samsara:default"] <= 30 and holds["impact:impact"] == 0
    assert store.leases_held([("a", "0-0"), ("a", "0-1")]) == {("a", "0-0")}


def test_a_schedule_keeps_its_latest_success(store: ExportStore) -> None:
    store.record_schedule_success("nightly", 200.0)
    store.record_schedule_success("nightly", 150.0)  # a late report of an older export
    store.record_schedule_success("hourly", 10.0)
    assert store.schedule_successes() == {"nightly": 200.0, "hourly": 10.0}
