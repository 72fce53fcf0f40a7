"""What the store keeps beside each record: status counts, the active and unannounced indexes, timestamps,
side writes of a transaction, and the shared rate limiter's arithmetic (on a clock that moves only when told)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

import worker.store.base
from tests.conftest import FakeClock
from tests.unit.test_store import new_record
from worker.errors import UnknownExport
from worker.models import ExportRecord, ExportStatus, FileRecord, Writes
from worker.store import ExportStore
from worker.store.limits import Refusal, Spend


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The store's wall clock (rate limiter, ``updated_at``, event times); Redis keeps its own."""
    fake = FakeClock()
    monkeypatch.setattr(worker.store.base, "time", SimpleNamespace(time=fake))
    return fake


def move_to(status: ExportStatus, finished_at: float | None = None):
    def mutate(record: ExportRecord, writes: Writes) -> None:
        record.status = status
        record.finished_at = finished_at

    return mutate


def wait(store: ExportStore, bucket: str, requests: int, per_seconds: float) -> float:
    """Seconds to wait before one request of ``bucket`` may go (0: it went, and was charged)."""
    refusal = store.spend(Spend("samsara:default", ((bucket, requests, per_seconds),)))
    return 0 if refusal is None else refusal.seconds


def test_a_call_waits_for_the_hold_then_spends_each_budget_in_turn(store: ExportStore, clock: FakeClock) -> None:
    """The hold first (nothing is spent while it lasts), then the budgets, scarcest first; the one that
    refuses is named, and those before it stay charged, as a call per budget would leave them."""
    spend = Spend("impact:default", (("impact:default:ReportExport", 2, 60.0), ("impact:default:requests", 1, 1.0)))
    store.hold("impact:default", 5)
    assert store.spend(spend) == Refusal(None, pytest.approx(5, abs=0.01))
    assert store.redis.keys("unit:rate:*") == [], "a held call spent from a budget"
    store.redis.delete("unit:hold:impact:default")
    assert store.spend(spend) is None
    refused = store.spend(spend)
    assert refused is not None and (refused.budget, refused.seconds) == (1, pytest.approx(1.0, abs=1e-9))
    clock.advance(1.0)
    refused = store.spend(spend)
    assert refused is not None and refused.budget == 0, "the second call spent the quota's last request"


def test_rate_limit_lets_a_burst_through_then_spaces_requests_by_the_interval(store: ExportStore, clock: FakeClock) -> None:
    bucket = "samsara:default:poll"
    assert [wait(store, bucket, 4, 2.0) for _ in range(4)] == [0, 0, 0, 0]
    assert wait(store, bucket, 4, 2.0) == pytest.approx(0.5, abs=1e-9)
    clock.advance(0.2)
    assert wait(store, bucket, 4, 2.0) == pytest.approx(0.3, abs=1e-9)
    clock.advance(0.3)
    assert wait(store, bucket, 4, 2.0) == 0, "the interval has passed: one more may go"
    assert wait(store, bucket, 4, 2.0) == pytest.approx(0.5, abs=1e-9)
    assert wait(store, "samsara:other:poll", 4, 2.0) == 0, "each bucket has its own budget"
    clock.advance(1.0)
    assert [wait(store, bucket, 4, 2.0) for _ in range(3)] == [0, 0, 0.5], "a second earns two intervals"


def test_a_refusal_shorter_than_a_millisecond_is_not_read_as_go(store: ExportStore, clock: FakeClock) -> None:
    """Redis answers a Lua number as an integer: a wait of 0.5 ms must not come back as 0, uncharged."""
    bucket = "samsara:default:poll"
    assert [wait(store, bucket, 4, 2.0) for _ in range(4)] == [0, 0, 0, 0]
    clock.advance(0.4995)
    assert [wait(store, bucket, 4, 2.0) for _ in range(3)] == [0.001, 0.001, 0.001]
    clock.advance(0.0005)
    assert [wait(store, bucket, 4, 2.0) > 0 for _ in range(2)] == [False, True]
    same_instant = [wait(store, "impact:default:poll", 3, 2.0) for _ in range(10)]
    assert same_instant.count(0) <= 3, "never more requests at one instant than the budget holds"


def test_status_counts_and_indexes_follow_every_transition(store: ExportStore, clock: FakeClock) -> None:
    store.create(new_record())
    assert store.status_counts() == {"PENDING": 1} and store.active_ids() == ["e1"]
    store.transact("e1", move_to(ExportStatus.RUNNING))
    assert store.status_counts() == {"PENDING": 0, "RUNNING": 1} and store.active_ids() == ["e1"]
    assert store.unannounced_ids(ended_before=float("inf")) == []
    store.transact("e1", move_to(ExportStatus.FAILED, finished_at=1500.0))
    assert store.status_counts() == {"PENDING": 0, "RUNNING": 0, "FAILED": 1} and store.active_ids() == []
    assert store.unannounced_ids(ended_before=1499.0) == [] and store.unannounced_ids(ended_before=1500.0) == ["e1"]
    store.mark_announced("e1")
    assert store.unannounced_ids(ended_before=float("inf")) == []
    store.transact("e1", move_to(ExportStatus.RUNNING))  # a retry reopens it
    assert store.status_counts() == {"PENDING": 0, "RUNNING": 1, "FAILED": 0} and store.active_ids() == ["e1"]


def test_an_end_without_finished_at_is_unannounced_from_the_time_of_the_change(store: ExportStore, clock: FakeClock) -> None:
    store.create(new_record())
    clock.advance(60)
    store.transact("e1", move_to(ExportStatus.CANCELLED))
    assert store.get("e1").updated_at == clock.now
    assert store.unannounced_ids(ended_before=clock.now - 1) == [] and store.unannounced_ids(ended_before=clock.now) == ["e1"]


def test_a_change_stamps_updated_at_and_a_no_op_does_not(store: ExportStore, clock: FakeClock) -> None:
    store.create(new_record())
    clock.advance(5)
    store.transact("e1", lambda record, writes: None)
    assert store.get("e1").updated_at == 1000.0
    store.transact("e1", lambda record, writes: setattr(record, "warnings", ["w"]))
    assert store.get("e1").updated_at == clock.now


def test_a_transaction_that_only_stages_a_file_or_an_event_is_saved(store: ExportStore) -> None:
    store.create(new_record())
    file = FileRecord(key="0-0", job_key="0", name="f.csv", safe_name="f.csv", url="u")
    store.transact("e1", lambda record, writes: writes.put_file(file))
    assert store.files("e1") == [file]
    store.transact("e1", lambda record, writes: writes.event("noted", detail=1))
    assert [(event["type"], event.get("detail")) for _, event in store.read_events("0")] == [("created", None), ("noted", 1)]


def test_a_file_transaction_saves_its_events_and_names_what_is_missing(store: ExportStore) -> None:
    store.create(new_record())
    store.transact("e1", lambda r, w: w.put_file(FileRecord(key="0-0", job_key="0", name="f", safe_name="f", url="u")))

    def note(record: ExportRecord, file: FileRecord, writes: Writes) -> str:
        writes.event("file_noted", file=file.key)
        return record.id

    assert store.transact_file("e1", "0-0", note) == "e1"
    assert [event for _, event in store.read_events("0")][-1]["file"] == "0-0"
    with pytest.raises(UnknownExport, match="no file '0-9' of export 'e1' in Redis at .* under key prefix 'unit'"):
        store.transact_file("e1", "0-9", note)
    with pytest.raises(UnknownExport, match="no export 'nope'"):
        store.transact_file("nope", "0-0", note)
    with pytest.raises(UnknownExport, match="no file '0-9' of export 'e1'"):
        store.get_file("e1", "0-9")


def test_events_are_read_after_the_given_id_and_up_to_count(store: ExportStore) -> None:
    for number in range(3):
        store.create(new_record(f"e{number}"))
    every = store.read_events("0")
    assert [event["export_id"] for _, event in every] == ["e0", "e1", "e2"]
    assert [event["export_id"] for _, event in store.read_events(every[0][0])] == ["e1", "e2"]
    assert [event["export_id"] for _, event in store.read_events("0", count=2)] == ["e0", "e1"]
    assert store.read_events(every[-1][0]) == []


def test_a_blocking_event_read_waits_for_the_next_event(store: ExportStore) -> None:
    """``watch`` follows an export with blocking reads; without the block it would see nothing and spin."""
    store.create(new_record("e0"))
    [(last, _)] = store.read_events("0")
    reading = threading.Event()
    answers: list[list[tuple[str, dict]]] = []

    def follow() -> None:
        reading.set()
        answers.append(store.read_events(last, block_ms=30_000))

    follower = threading.Thread(target=follow)
    follower.start()
    reading.wait()
    time.sleep(0.2)  # let the follower reach its XREAD; arriving later it would find the event at once, same answer
    store.create(new_record("e1"))
    follower.join(timeout=30)
    assert [[event["export_id"] for _, event in answer] for answer in answers] == [["e1"]]
