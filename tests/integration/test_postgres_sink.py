"""PostgreSQL sink on the real server: typed COPY, replace per file, concurrent new columns, quarantine, failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.pg import TEST_DATABASE_URL, query, scratch_schema, table_rows
from tests.sink_data import BAD_LINES, EXPECTED, as_instants, csv_of, load
from worker.errors import PermanentError, TransientError
from worker.parsing.columns import BadRow
from worker.parsing.schema import ColumnType, RowSchema
from worker.sinks.base import FileWriter
from worker.sinks.postgres import PostgresSink, lock_key

pytestmark = pytest.mark.integration


@pytest.fixture
def schema() -> Iterator[str]:
    with scratch_schema() as name:
        yield name


def execute(statement: str) -> None:
    with psycopg.connect(TEST_DATABASE_URL, autocommit=True) as conn:
        conn.execute(statement)


def sink(schema: str, table: str = "ifta", url: str = TEST_DATABASE_URL) -> PostgresSink:
    return PostgresSink(url, "test", schema, table)


def column_types(schema: str, table: str) -> dict[str, str]:
    rows = query(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
        schema,
        table,
    )
    return dict(rows)  # type: ignore[arg-type]


def test_rows_land_typed_with_their_file_and_line(schema: str) -> None:
    writer: FileWriter = sink(schema).open_file("exp1", "0-0000", "f.csv")
    result = load(writer)
    assert (result.rows, result.quarantined) == (5, 2)
    assert result.path == f"postgres://test/{schema}.ifta" and "127.0.0.1" not in result.path
    assert column_types(schema, "ifta") == {
        "_export_id": "text",
        "_file_key": "text",
        "_line": "bigint",
        "_loaded_at": "timestamp with time zone",
        "id": "bigint",
        "name": "text",
        "amount": "double precision",
        "at": "timestamp with time zone",
    }
    assert table_rows(schema, "ifta") == as_instants(EXPECTED)
    assert [line for (line,) in query(f'SELECT _line FROM "{schema}".ifta ORDER BY _line')] == [2, 3, 4, 5, 7]
    quarantine = query(f'SELECT _file, _line, reason, raw FROM "{schema}".ifta_quarantine ORDER BY _line')
    assert [row[1] for row in quarantine] == BAD_LINES
    assert quarantine[0] == ("f.csv", 6, "column 'id': invalid int 'oops'", "oops,bad int,1,2026-01-01T00:00:00Z")
    assert query(f'SELECT DISTINCT _export_id, _file_key FROM "{schema}".ifta_quarantine') == [("exp1", "0-0000")]


def test_a_source_name_that_is_not_valid_unicode_is_still_quarantined(schema: str) -> None:
    """A provider's JSON can name a file with a lone surrogate; the quarantine shows it escaped."""
    writer = sink(schema).open_file("exp1", "0-0000", "f.csv")
    writer.write_bad([BadRow(line=2, reason="bad", raw="x")], "f\udcff.csv")
    assert writer.commit().quarantined == 1
    assert query(f'SELECT _file, raw FROM "{schema}".ifta_quarantine') == [("f\\udcff.csv", "x")]


def test_a_retry_replaces_the_earlier_attempt_and_leaves_other_files_alone(schema: str) -> None:
    target = sink(schema)
    load(target.open_file("exp1", "0-0000", "a.csv"), csv_of(50))
    load(target.open_file("exp1", "0-0001", "b.csv"), csv_of(7, start=100))
    again = load(target.open_file("exp1", "0-0000", "a.csv"), csv_of(20))
    assert again.rows == 20 and again.quarantine_path is None
    counts = dict(query(f'SELECT _file_key, count(*) FROM "{schema}".ifta GROUP BY 1'))  # type: ignore[arg-type]
    assert counts == {"0-0000": 20, "0-0001": 7}
    assert query(f'SELECT count(*) FROM "{schema}".ifta_quarantine') == [(0,)]


def test_a_retry_without_good_rows_still_replaces_the_earlier_attempt(schema: str) -> None:
    target = sink(schema)
    load(target.open_file("exp1", "0-0000", "a.csv"), csv_of(4))
    empty = load(target.open_file("exp1", "0-0000", "a.csv"), b"id,name,amount,at\nx,1,2,3\n")
    assert (empty.rows, empty.quarantined) == (0, 1)
    assert query(f'SELECT count(*) FROM "{schema}".ifta') == [(0,)]
    assert query(f'SELECT _line FROM "{schema}".ifta_quarantine') == [(2,)]


def test_an_attempt_that_never_commits_leaves_the_committed_rows(schema: str) -> None:
    target = sink(schema)
    load(target.open_file("exp1", "0-0000", "a.csv"), csv_of(10))
    dead = target.open_file("exp1", "0-0000", "a.csv")
    dead.write_batch(next(iter_batches(csv_of(500))))  # rows deleted and COPYed, uncommitted
    dead.abort()  # the connection closes, as when the worker is killed
    assert query(f'SELECT count(*) FROM "{schema}".ifta') == [(10,)]
    file_lock = lock_key(f"{schema}.ifta:exp1:0-0000")
    assert query("SELECT pg_try_advisory_xact_lock(%s)", file_lock) == [(True,)], "the aborted attempt let go of the file"


def iter_batches(data: bytes) -> Iterator:
    from tests.sink_data import SCHEMA
    from worker.parsing.csv_stream import parse_csv

    return iter(parse_csv([data], SCHEMA, max_field_bytes=1024))


def wait_for_a_waiter_on(key: int, timeout: float = 10.0) -> None:
    """Until a session is queued on advisory lock ``key`` (pg_locks splits it in two 32-bit halves)."""
    high, low = (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF
    deadline = time.monotonic() + timeout
    while not query(
        "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = %s AND objid = %s", high, low
    ):
        if time.monotonic() > deadline:
            raise AssertionError(f"no attempt waited on the file lock {key} within {timeout}s")
        time.sleep(0.02)


def test_two_attempts_of_one_file_at_once_never_double_a_row(schema: str) -> None:
    """The second attempt waits on the file's advisory lock, then its DELETE sees the first one's rows."""
    target = sink(schema)
    load(target.open_file("exp1", "0-0000", "a.csv"), csv_of(1))  # the table exists
    first, second = target.open_file("exp1", "0-0000", "a.csv"), target.open_file("exp1", "0-0000", "a.csv")
    first.write_batch(next(iter_batches(csv_of(30))))
    done = threading.Event()

    def run_second() -> None:
        second.write_batch(next(iter_batches(csv_of(30))))
        second.commit()
        done.set()

    thread = threading.Thread(target=run_second)
    thread.start()
    wait_for_a_waiter_on(lock_key(f"{schema}.ifta:exp1:0-0000"))
    assert not done.is_set(), "the second attempt must wait for the first"
    first.commit()
    thread.join(10)
    assert done.is_set()
    assert query(f'SELECT count(*), count(DISTINCT _line) FROM "{schema}".ifta') == [(30, 30)]


def test_a_column_from_a_later_file_is_added_while_other_workers_load(schema: str) -> None:
    target = sink(schema)
    load(target.open_file("exp1", "0-0000", "a.csv"), csv_of(5))
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            load(target.open_file("exp1", f"1-{index:04d}", "b.csv"), csv_of(200, extra=f"new_{index % 3}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    types = column_types(schema, "ifta")
    assert {types["new_0"], types["new_1"], types["new_2"]} == {"text"}
    assert query(f'SELECT count(*), count(new_0), count(new_1) FROM "{schema}".ifta') == [(1205, 400, 400)]


def test_a_value_postgres_refuses_fails_the_file_and_commits_nothing(schema: str) -> None:
    target = sink(schema)
    load(target.open_file("exp1", "0-0001", "a.csv"), csv_of(2))
    # An analyst constrained the table; binary COPY skips the text parser, not the table's checks.
    execute(f'ALTER TABLE "{schema}".ifta ADD CONSTRAINT small CHECK (amount < 100)')
    with pytest.raises(PermanentError, match=rf"^PostgreSQL refused the rows for {schema}\.ifta: new row [^\n]*\"small\"$"):
        load(target.open_file("exp1", "0-0000", "a.csv"), b"id,name,amount,at\n1,x,1,\n2,y,1000,\n")
    assert query(f'SELECT _file_key, count(*) FROM "{schema}".ifta GROUP BY 1') == [("0-0001", 2)]


def test_a_file_typed_otherwise_than_the_table_fails_naming_the_columns_and_commits_nothing(schema: str) -> None:
    """Binary rows carry no types: text bytes sent to a bigint column would be refused at best, read as a number at
    worst, so the column types are compared before the COPY and the file fails saying what to change."""
    target = sink(schema)
    load(target.open_file("exp1", "0-0001", "a.csv"), csv_of(2))
    # A deployment changed COLUMN_TYPES: ``id`` and ``at`` are now text, but the table's columns are bigint, timestamptz.
    retyped = RowSchema(types={"amount": ColumnType.FLOAT})
    with pytest.raises(PermanentError) as caught:
        load(target.open_file("exp1", "0-0000", "a.csv"), b"id,name,amount,at\nabcdefgh,x,1,\n", schema=retyped)
    assert str(caught.value) == (
        f"{schema}.ifta does not have the column types the sink writes (column 'id' is bigint, the sink writes text; "
        "column 'at' is timestamp with time zone, the sink writes text); the sink loads by binary COPY, which takes each "
        f'column\'s exact type: change the column (ALTER TABLE "{schema}"."ifta" ALTER COLUMN "id" TYPE text) or point '
        "the export at another table (another table option), then retry the export"
    )
    assert query(f'SELECT _file_key, count(*) FROM "{schema}".ifta GROUP BY 1') == [("0-0001", 2)]


@pytest.mark.parametrize(
    ("column", "altered"),
    [("amount", "numeric"), ("id", "double precision"), ("name", "character varying"), ("_line", "integer")],
)
def test_a_column_altered_to_another_type_fails_the_file_naming_it_and_the_fix(schema: str, column: str, altered: str) -> None:
    """bigint to double precision is the silent case: both take 8 bytes, so the server would read an int64 as a double."""
    target = sink(schema)
    load(target.open_file("exp1", "0-0001", "a.csv"), csv_of(2))
    execute(f'ALTER TABLE "{schema}".ifta ALTER COLUMN {column} TYPE {altered}')
    with pytest.raises(PermanentError) as caught:
        load(target.open_file("exp1", "0-0000", "b.csv"), csv_of(3))
    wanted = {"amount": "double precision", "id": "bigint", "name": "text", "_line": "bigint"}[column]
    assert f"(column '{column}' is {altered}, the sink writes {wanted});" in str(caught.value)
    assert f'ALTER COLUMN "{column}" TYPE {wanted}' in str(caught.value)
    assert query(f'SELECT _file_key, count(*) FROM "{schema}".ifta GROUP BY 1') == [("0-0001", 2)]
    execute(f'ALTER TABLE "{schema}".ifta ALTER COLUMN {column} TYPE {wanted}')  # what the message says to do
    assert load(target.open_file("exp1", "0-0000", "b.csv"), csv_of(3)).rows == 3


def test_an_int_outside_64_bits_is_quarantined_not_refused(schema: str) -> None:
    result = load(sink(schema).open_file("exp1", "0-0000", "a.csv"), b"id,name,amount,at\n99999999999999999999,x,1,\n1,y,2,\n")
    assert (result.rows, result.quarantined) == (1, 1)
    reasons = query(f'SELECT reason FROM "{schema}".ifta_quarantine')
    assert reasons == [("column 'id': invalid int '99999999999999999999'",)]


def test_columns_that_clash_or_do_not_fit_are_refused_with_a_reason(schema: str) -> None:
    clash = RowSchema(types={"id": ColumnType.INT})
    from worker.file_transfer import transfer_file

    writer = sink(schema).open_file("exp1", "0-0000", "a.csv")
    with pytest.raises(PermanentError, match="_line clash"):
        transfer_file([b"id,_line\n1,2\n"], schema=clash, writer=writer, source_name="a.csv", max_field_bytes=64)
    writer.abort()


def test_an_unreachable_database_is_retried_without_showing_the_password(schema: str) -> None:
    target = sink(schema, url="postgresql://postgres:s3cret-pw@127.0.0.1:1/test")
    writer = target.open_file("exp1", "0-0000", "a.csv")
    with pytest.raises(TransientError, match="database 'test' is unreachable") as caught:
        load(writer, csv_of(1))
    assert "s3cret-pw" not in str(caught.value)
    assert "port 1 failed" in str(caught.value) and "\n" not in str(caught.value), "the server's first line, alone"


def test_a_database_missing_from_the_settings_is_named(tmp_path) -> None:
    from tests.conftest import make_settings
    from worker.models import ExportRecord, SinkOptions

    record = ExportRecord.model_validate(
        {"id": "e", "provider": "samsara", "params": {}, "credential": "default", "jobs": {}, "created_at": 0,
         "updated_at": 0, "deadline_at": 0, "sink": "postgres", "sink_options": SinkOptions(database="warehouse", table="t")}
    )  # fmt: skip
    sink = PostgresSink.for_export(make_settings(tmp_path), record)
    assert sink.discard_attempts("e") == 0  # an export can still end without its database
    with pytest.raises(PermanentError, match="EXPORT_WORKER_DATABASES__WAREHOUSE__URL"):
        sink.open_file("e", "0-0000", "f.csv")
