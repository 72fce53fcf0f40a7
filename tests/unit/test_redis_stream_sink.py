"""Redis-stream sink on fakeredis: the streams other applications read, replaced per attempt, with a row cap."""

from __future__ import annotations

import json

import fakeredis
import pytest

from tests.sink_data import BAD_LINES, CSV, EXPECTED, csv_of, load
from worker.errors import PermanentError
from worker.parsing.columns import BadRow
from worker.sinks.base import FileWriter, SinkResult
from worker.sinks.redis_stream import RedisStreamSink
from worker.store import ExportStore

TTL = 600


@pytest.fixture
def sink(store: ExportStore) -> RedisStreamSink:
    return RedisStreamSink(store, max_rows=10, ttl_seconds=TTL)


def stream(redis: fakeredis.FakeRedis, key: str) -> list[dict]:
    """Each entry's single ``row`` field, decoded: what an XREAD consumer sees."""
    entries = redis.xrange(key)
    assert all(list(fields) == [b"row"] for _id, fields in entries)
    return [json.loads(fields[b"row"]) for _id, fields in entries]


def keys(redis: fakeredis.FakeRedis) -> list[str]:
    return sorted(key.decode() for key in redis.keys("*"))


def test_rows_and_bad_rows_land_on_the_documented_streams_with_the_sinks_ttl(
    sink: RedisStreamSink, fake_redis: fakeredis.FakeRedis
) -> None:
    writer: FileWriter = sink.open_file("e1", "0-0", "f.csv")
    result = load(writer)
    records, quarantine = "unit:export:e1:records:0-0", "unit:export:e1:quarantine:0-0"
    assert result == SinkResult(rows=5, quarantined=2, path=f"redis://{records}", quarantine_path=f"redis://{quarantine}")
    assert stream(fake_redis, records) == EXPECTED
    bad = stream(fake_redis, quarantine)
    assert [row["line"] for row in bad] == BAD_LINES
    assert bad[0] == {
        "file": "f.csv",
        "line": 6,
        "reason": "column 'id': invalid int 'oops'",
        "raw": "oops,bad int,1,2026-01-01T00:00:00Z",
    }
    assert keys(fake_redis) == [quarantine, records], "the staging streams were renamed onto the final ones"
    assert TTL - 5 < fake_redis.ttl(records) <= TTL and TTL - 5 < fake_redis.ttl(quarantine) <= TTL
    assert writer.commit() is result, "commit is idempotent"


def test_nothing_is_visible_before_commit_and_the_staging_streams_expire(
    sink: RedisStreamSink, fake_redis: fakeredis.FakeRedis
) -> None:
    writer = sink.open_file("e1", "0-0", "f.csv")
    writer.write_rows([{"id": 1}])
    writer.write_bad([], "f.csv")
    [staging] = keys(fake_redis)
    writer.write_bad([BadRow(line=3, reason="r", raw="x")], "f.csv")
    attempt = staging.split(":")[2]
    assert keys(fake_redis) == [f"unit:staging:{attempt}:quarantine", f"unit:staging:{attempt}:records"]
    assert all(TTL - 5 < fake_redis.ttl(key) <= TTL for key in keys(fake_redis)), "a killed attempt's streams expire"
    assert sink.discard_attempts("e1") == 0


def test_attempts_open_at_once_keep_their_rows_apart(sink: RedisStreamSink, fake_redis: fakeredis.FakeRedis) -> None:
    first, second = sink.open_file("e1", "0-0", "f.csv"), sink.open_file("e1", "0-1", "g.csv")
    first.write_rows([{"id": 1}])
    second.write_rows([{"id": 2}])
    first.write_bad([BadRow(line=3, reason="r1", raw="x")], "f.csv")
    second.write_bad([BadRow(line=4, reason="r2", raw="y")], "g.csv")
    first.commit()
    second.commit()
    assert stream(fake_redis, "unit:export:e1:records:0-0") == [{"id": 1}]
    assert stream(fake_redis, "unit:export:e1:records:0-1") == [{"id": 2}]
    assert [row["reason"] for row in stream(fake_redis, "unit:export:e1:quarantine:0-1")] == ["r2"]


def test_a_retry_replaces_the_rows_and_drops_the_earlier_quarantine(
    sink: RedisStreamSink, fake_redis: fakeredis.FakeRedis
) -> None:
    load(sink.open_file("e1", "0-0", "f.csv"))
    again = load(sink.open_file("e1", "0-0", "f.csv"), csv_of(3))
    assert again.quarantine_path is None and again.rows == 3
    assert [row["id"] for row in stream(fake_redis, "unit:export:e1:records:0-0")] == [0, 1, 2]
    assert keys(fake_redis) == ["unit:export:e1:records:0-0"]


def test_a_retry_without_good_rows_leaves_no_rows_of_the_earlier_attempt(
    sink: RedisStreamSink, fake_redis: fakeredis.FakeRedis
) -> None:
    load(sink.open_file("e1", "0-0", "f.csv"), csv_of(3))
    empty = load(sink.open_file("e1", "0-0", "f.csv"), b"id,name,amount,at\nx,1,2,3\n")
    assert (empty.rows, empty.quarantined) == (0, 1)
    assert keys(fake_redis) == ["unit:export:e1:quarantine:0-0"]


def test_an_aborted_attempt_leaves_the_committed_rows_and_no_staging(
    sink: RedisStreamSink, fake_redis: fakeredis.FakeRedis
) -> None:
    load(sink.open_file("e1", "0-0", "f.csv"), csv_of(2))
    writer = sink.open_file("e1", "0-0", "f.csv")
    writer.write_rows([{"id": 9}])
    writer.write_bad([BadRow(line=3, reason="r", raw="x")], "f.csv")
    writer.abort()
    assert keys(fake_redis) == ["unit:export:e1:records:0-0"]
    assert [row["id"] for row in stream(fake_redis, "unit:export:e1:records:0-0")] == [0, 1]


def test_abort_after_commit_keeps_the_committed_streams(sink: RedisStreamSink, fake_redis: fakeredis.FakeRedis) -> None:
    writer = sink.open_file("e1", "0-0", "f.csv")
    load(writer, CSV)
    writer.abort()
    assert keys(fake_redis) == ["unit:export:e1:quarantine:0-0", "unit:export:e1:records:0-0"]


def test_the_row_cap_allows_exactly_max_rows_and_refuses_one_more(sink: RedisStreamSink, fake_redis: fakeredis.FakeRedis) -> None:
    assert load(sink.open_file("e1", "0-0", "f.csv"), csv_of(10)).rows == 10
    writer = sink.open_file("e1", "0-1", "f.csv")
    writer.write_rows([{"id": i} for i in range(6)])
    too_many = (
        "more than 10 rows, too many for the redis_stream sink; "
        "submit it with sink='jsonl' or raise EXPORT_WORKER_REDIS_SINK_MAX_ROWS"
    )
    with pytest.raises(PermanentError, match=too_many):
        writer.write_rows([{"id": i} for i in range(5)])
    writer.write_rows([{"id": i} for i in range(4)])  # the refused batch was not counted
    assert writer.commit().rows == 10
