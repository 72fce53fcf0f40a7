"""Which writes wait for a replica, and what happens when none confirms in time.

WAIT itself is Redis' (fakeredis has none): :func:`worker.store.transactions.replication_of` is
replaced by a stand-in that answers as a primary with the given replicas would. The real WAIT,
against a real replica that is paused, is in ``tests/integration/test_sentinel_failover.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
import redis

from tests.unit.test_store import new_record
from worker.errors import TransientError
from worker.models import ExportRecord, ExportStatus, Writes
from worker.store import ExportStore, StoreUnavailable
from worker.store.transactions import AcknowledgingPipeline, Confirm, NotReplicated, Replication


class Replicas:
    """A primary with ``connected`` replicas, of which ``confirming`` answer a WAIT; records what was asked."""

    def __init__(self, connected: int = 1, confirming: int = 1) -> None:
        self.connected = connected
        self.confirming = confirming
        self.asked: list[tuple[int, int]] = []

    def __call__(self, connection: Any, replicas: int, timeout_ms: int) -> Replication:
        self.asked.append((replicas, timeout_ms))
        if self.connected == 0:
            return Replication(replicas, 0, 0)
        return Replication(replicas, min(self.confirming, replicas, self.connected), self.connected)


@pytest.fixture
def store() -> ExportStore:
    store = ExportStore(fakeredis.FakeRedis(), prefix="unit")
    store.wait_replicas = 1
    store.wait_timeout_ms = 250
    return store


def replicas(monkeypatch: pytest.MonkeyPatch, **state: int) -> Replicas:
    stand_in = Replicas(**state)
    monkeypatch.setattr("worker.store.transactions.replication_of", stand_in)
    return stand_in


def set_status(status: ExportStatus) -> Callable[[ExportRecord, Writes], None]:
    def mutate(record: ExportRecord, writes: Writes) -> None:
        record.status = status

    return mutate


def test_the_create_a_caller_is_answered_waits_for_a_replica(store: ExportStore, monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in = replicas(monkeypatch)
    record, created = store.create(new_record())
    assert created and stand_in.asked == [(1, 250)]


def test_a_create_no_replica_confirmed_is_a_retryable_error_and_the_retry_returns_the_same_export(
    store: ExportStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    replicas(monkeypatch, confirming=0)
    record = new_record().model_copy(update={"idempotency_key": "k-1"})
    with pytest.raises(NotReplicated, match="0 of its 1 replica.* within 250 ms.*Retry the call") as refused:
        store.create(record)
    assert isinstance(refused.value, StoreUnavailable | redis.ConnectionError), "retried like a lost connection"
    assert store.get(record.id).id == record.id, "saved on the primary all the same"

    stand_in = replicas(monkeypatch, confirming=1)
    again = record.model_copy(update={"id": "e2"})
    found, created = store.create(again)
    assert (found.id, created) == (record.id, False)
    assert stand_in.asked == [(1, 250)], "the answer read from the primary waits for the replica too"


def test_a_primary_without_replicas_is_not_waited_on(store: ExportStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """No replica connected: none could be promoted without the write, so there is nothing to wait for."""
    stand_in = replicas(monkeypatch, connected=0)
    _record, created = store.create(new_record())
    assert created and stand_in.asked == [(1, 250)]


def test_nothing_waits_when_waiting_is_off(store: ExportStore, monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in = replicas(monkeypatch)
    store.wait_replicas = 0
    store.create(new_record())
    store.transact("e1", set_status(ExportStatus.CANCELLED))
    assert stand_in.asked == []


@pytest.mark.parametrize(
    ("before", "after", "confirm"),
    [
        (ExportStatus.PENDING, ExportStatus.RUNNING, Confirm.NONE),
        (ExportStatus.RUNNING, ExportStatus.DOWNLOADING, Confirm.NONE),
        (ExportStatus.DOWNLOADING, ExportStatus.COMPLETED, Confirm.BEST_EFFORT),
        (ExportStatus.RUNNING, ExportStatus.FAILED, Confirm.BEST_EFFORT),
        (ExportStatus.RUNNING, ExportStatus.CANCELLED, Confirm.REQUIRED),
        (ExportStatus.FAILED, ExportStatus.DOWNLOADING, Confirm.REQUIRED),
        (ExportStatus.COMPLETED, ExportStatus.RUNNING, Confirm.REQUIRED),
        (ExportStatus.RUNNING, ExportStatus.RUNNING, Confirm.NONE),
    ],
)
def test_which_changes_wait_for_a_replica_and_how_hard(
    store: ExportStore, monkeypatch: pytest.MonkeyPatch, before: ExportStatus, after: ExportStatus, confirm: Confirm
) -> None:
    """Ends come before their callback (best effort); a cancel or a reopening answers a caller (required)."""
    replicas(monkeypatch)
    store.create(new_record())
    store.transact("e1", set_status(before))
    stand_in = replicas(monkeypatch, confirming=0)
    if confirm is Confirm.REQUIRED:
        with pytest.raises(NotReplicated):
            store.transact("e1", set_status(after))
    else:
        store.transact("e1", set_status(after))
    assert stand_in.asked == ([] if confirm is Confirm.NONE else [(1, 250)])
    assert store.get("e1").status is after


def test_an_end_no_replica_confirmed_is_logged_and_goes_on(
    store: ExportStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    replicas(monkeypatch)
    store.create(new_record())
    replicas(monkeypatch, connected=2, confirming=0)
    with caplog.at_level(logging.WARNING, logger="worker.store"):
        store.transact("e1", set_status(ExportStatus.FAILED))
    assert store.get("e1").status is ExportStatus.FAILED
    assert "0 of its 2 replica(s) confirmed it within 250 ms" in caplog.text


def test_redis_away_longer_than_the_budget_says_whether_the_change_may_have_been_saved(
    store: ExportStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An EXEC that got no answer may have applied: the error says so, for a caller deciding to retry."""
    replicas(monkeypatch)
    store.create(new_record())
    store.retry_seconds = 2
    monkeypatch.setattr("worker.store.transactions.time.sleep", lambda _seconds: None)
    clock = iter(range(1000))
    monkeypatch.setattr("worker.store.transactions.time.monotonic", lambda: float(next(clock)))

    def unreachable(*_args: Any, **_kwargs: Any) -> Any:
        raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr("worker.store.transactions.AcknowledgingPipeline.execute", unreachable)
    with pytest.raises(StoreUnavailable, match="for 2s: Connection refused; the change may or may not have been saved"):
        store.transact("e1", set_status(ExportStatus.CANCELLED))


def test_a_transaction_refused_by_a_demoted_primary_runs_again_on_a_fresh_connection(
    store: ExportStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A managed service's endpoint name moves to the new primary; the pooled connections still reach the old one
    (now a replica, answering READONLY). They are dropped and the transaction decided again."""
    replicas(monkeypatch)
    store.create(new_record())
    monkeypatch.setattr("worker.store.transactions.time.sleep", lambda _seconds: None)
    dropped: list[bool] = []
    monkeypatch.setattr(
        store.redis.connection_pool, "disconnect", lambda inuse_connections=True: dropped.append(inuse_connections)
    )
    original = AcknowledgingPipeline.execute
    refusals = iter([redis.exceptions.ReadOnlyError("You can't write against a read only replica.")])

    def execute(pipe: AcknowledgingPipeline, raise_on_error: bool = True) -> Any:
        refusal = next(refusals, None)
        if refusal is not None:
            pipe.reset()
            raise refusal
        return original(pipe, raise_on_error)

    monkeypatch.setattr(AcknowledgingPipeline, "execute", execute)
    decided: list[ExportStatus] = []

    def cancel(record: ExportRecord, writes: Writes) -> None:
        decided.append(record.status)
        record.status = ExportStatus.CANCELLED

    store.transact("e1", cancel)
    assert store.get("e1").status is ExportStatus.CANCELLED
    assert decided == [ExportStatus.PENDING, ExportStatus.PENDING], "decided again on the state there is"
    assert dropped == [False], "the idle connections to the demoted primary are dropped"


def test_a_new_export_is_started_before_its_replica_is_waited_for(store: ExportStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first submits go out once the export is saved: told to retry, the caller finds it running."""
    replicas(monkeypatch, confirming=0)
    started: list[str] = []
    with pytest.raises(NotReplicated):
        store.create(new_record(idempotency_key="k-2"), then=lambda record: started.append(record.id))
    assert started == ["e1"]
    replicas(monkeypatch, confirming=1)
    found, created = store.create(new_record("e2", idempotency_key="k-2"), then=lambda record: started.append(record.id))
    assert (found.id, created, started) == ("e1", False, ["e1"]), "the retry returns it and starts nothing twice"


def test_what_a_saved_change_implies_failing_is_raised_as_it_is(store: ExportStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sending the first steps failed (the broker is away): the caller hears that, not a lost Redis connection."""
    stand_in = replicas(monkeypatch)

    def broker_away(_record: ExportRecord) -> None:
        raise redis.ConnectionError("Error 111 connecting to the broker")

    with pytest.raises(redis.ConnectionError, match="connecting to the broker"):
        store.create(new_record(), then=broker_away)
    assert store.get("e1").id == "e1" and stand_in.asked == [], "saved once, not sent again by redis-py's retry"


def test_a_staging_stream_that_lost_or_repeated_entries_publishes_nothing(store: ExportStore) -> None:
    """Across a failover appends can be lost with the old primary, or sent twice after a lost reply: counted first."""
    store.wait_replicas = 0
    store.create(new_record())
    final, staging = store.records_key("e1", "0-0"), store.key("staging", "a", "records")
    store.append_stream(staging, [b"1", b"2", b"2"], 60)
    with pytest.raises(TransientError, match="holds 3 entries, not the ones this attempt wrote"):
        store.publish_streams("e1", [(final, staging, 2)], 60)
    assert not store.redis.exists(final) and store.redis.xlen(staging) == 3, "nothing published"


def test_a_publish_sent_again_after_its_reply_was_lost_finds_it_done(store: ExportStore) -> None:
    store.wait_replicas = 0
    store.create(new_record())
    final, staging = store.records_key("e1", "0-0"), store.key("staging", "a", "records")
    store.append_stream(staging, [b"1", b"2"], 60)
    for _ in range(2):
        store.publish_streams("e1", [(final, staging, 2)], 60)
    assert [fields[b"row"] for _id, fields in store.redis.xrange(final)] == [b"1", b"2"]
