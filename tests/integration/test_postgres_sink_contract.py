"""PostgreSQL sink promises the first file leaves open: escapes, nulls, names, closed writers, locks, lost connections."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from tests.pg import TEST_DATABASE_URL, query, scratch_schema, table_rows
from tests.sink_data import SCHEMA, csv_of, load
from worker.errors import PermanentError, TransientError
from worker.parsing.columns import BadRow, ParsedBatch
from worker.parsing.csv_stream import parse_csv
from worker.sinks.postgres import PostgresSink, lock_key

pytestmark = pytest.mark.integration


@pytest.fixture
def schema() -> Iterator[str]:
    with scratch_schema() as name:
        yield name


def sink(schema: str, table: str = "ifta") -> PostgresSink:
    return PostgresSink(TEST_DATABASE_URL, "test", schema, table)


def execute(statement: str) -> None:
    with psycopg.connect(TEST_DATABASE_URL, autocommit=True) as conn:
        conn.execute(statement)


def batches(data: bytes, rows: int = 1000) -> list[ParsedBatch]:
    return list(parse_csv([data], SCHEMA, max_field_bytes=1 << 16, batch_rows=rows))


def test_text_with_a_single_kind_of_special_character_and_nulls_round_trips(schema: str) -> None:
    """Each column is escaped on its own: a column whose only odd character is a backslash, a tab or a CR still
    needs COPY escaping, and a null among values must not null its neighbours."""
    data = (
        b"id,name,amount,at,tabbed,carriage\n"
        b'1,back\\slash,1.5,2026-01-01T00:00:00Z,"x\ty","p\rq"\n'
        b"2,plain,,,,\n"
        b"3,c,2.5,2026-01-02T00:00:00Z,z,w\n"
    )
    result = load(sink(schema).open_file("exp1", "0-0000", "f.csv"), data, batch_rows=100)
    assert result.rows == 3
    assert table_rows(schema, "ifta", "id, name, amount, at, tabbed, carriage") == [
        {"id": 1, "name": "back\\slash", "amount": 1.5, "at": datetime(2026, 1, 1, tzinfo=UTC), "tabbed": "x\ty",
         "carriage": "p\rq"},
        {"id": 2, "name": "plain", "amount": None, "at": None, "tabbed": "", "carriage": ""},
        {"id": 3, "name": "c", "amount": 2.5, "at": datetime(2026, 1, 2, tzinfo=UTC), "tabbed": "z", "carriage": "w"},
    ]  # fmt: skip


def test_a_null_among_values_of_one_batch_leaves_its_neighbours_alone(schema: str) -> None:
    """Parsed in one piece, the nulls share a batch with values: each column's null marker must go to its row only."""
    data = b"id,name,amount,at\n1,a,1.5,2026-01-01T00:00:00Z\n2,b,,\n3,c,2.5,2026-01-02T00:00:00Z\n"
    [batch] = batches(data)
    assert (batch.columns[2], batch.columns[3]) == ([1.5, None, 2.5], ["2026-01-01T00:00:00Z", None, "2026-01-02T00:00:00Z"])
    writer = sink(schema).open_file("exp1", "0-0000", "f.csv")
    writer.write_batch(batch)
    assert writer.commit().rows == 3
    assert table_rows(schema, "ifta") == [
        {"id": 1, "name": "a", "amount": 1.5, "at": datetime(2026, 1, 1, tzinfo=UTC)},
        {"id": 2, "name": "b", "amount": None, "at": None},
        {"id": 3, "name": "c", "amount": 2.5, "at": datetime(2026, 1, 2, tzinfo=UTC)},
    ]


def test_names_that_clash_or_exceed_63_bytes_are_refused_naming_them(schema: str) -> None:
    """A user must learn which header names to change: every clash, and the first too-long name (cut to 80 chars)."""
    target = sink(schema)
    with pytest.raises(PermanentError) as clash:
        load(target.open_file("exp1", "0-0000", "f.csv"), b"id,_line,_export_id\n1,2,3\n")
    another = "; load this export with another sink (jsonl or parquet)"
    assert str(clash.value) == "CSV column(s) _export_id, _line clash with the postgres sink's own columns" + another
    long_name, second = "b" * 100, "c" * 70
    with pytest.raises(PermanentError) as long:
        load(target.open_file("exp1", "0-0000", "f.csv"), f"id,{long_name},{second}\n1,2,3\n".encode())
    assert str(long.value) == f"CSV column name {'b' * 80!r} is longer than PostgreSQL's 63 bytes" + another
    with pytest.raises(PermanentError, match="is longer than PostgreSQL's 63 bytes"):
        load(target.open_file("exp1", "0-0000", "f.csv"), ("id," + "é" * 32 + "\n1,2\n").encode())  # 32 chars, 64 bytes
    fits = "a" * 63
    assert load(target.open_file("exp1", "0-0000", "f.csv"), f"id,{fits}\n1,x\n".encode()).rows == 1
    assert table_rows(schema, "ifta", f"id, {fits}") == [{"id": 1, fits: "x"}]


def test_an_export_without_a_table_is_refused_with_what_to_do() -> None:
    with pytest.raises(PermanentError) as caught:
        PostgresSink(TEST_DATABASE_URL, "test", "public", "").open_file("e", "0-0000", "f.csv")
    assert str(caught.value) == "the export has no target table; submit it through submit_export, which names one"


def test_several_bad_rows_at_once_are_quarantined_and_named_in_the_result(schema: str) -> None:
    """The result points at the quarantine table, and every bad row carries its export and file (so a retry replaces it)."""
    target = sink(schema)
    for _attempt in range(2):
        writer = target.open_file("exp1", "0-0000", "f.csv")
        writer.write_bad([BadRow(line=3, reason="r3", raw="a\tb"), BadRow(line=5, reason="r5", raw="c")], "f.csv")
        result = writer.commit()
    assert (result.rows, result.quarantined) == (0, 2)
    assert result.quarantine_path == f"postgres://test/{schema}.ifta_quarantine"
    rows = query(f'SELECT _export_id, _file_key, _file, _line, reason, raw FROM "{schema}".ifta_quarantine ORDER BY _line')
    assert rows == [("exp1", "0-0000", "f.csv", 3, "r3", "a\tb"), ("exp1", "0-0000", "f.csv", 5, "r5", "c")]


def test_a_committed_or_aborted_writer_refuses_further_use_saying_which(schema: str) -> None:
    target = sink(schema)
    batch = batches(csv_of(3))[0]
    bad = [BadRow(line=9, reason="r", raw="x")]
    committed = target.open_file("exp1", "0-0000", "f.csv")
    committed.write_batch(batch)
    committed.write_bad(bad, "f.csv")
    result = committed.commit()
    assert committed.commit() is result, "a second commit answers the same result"
    committed.abort()  # after a commit: nothing to undo
    for use in (lambda: committed.write_batch(batch), lambda: committed.write_bad(bad, "f.csv")):
        with pytest.raises(RuntimeError, match=r"^writer for 0-0000 is already committed$"):
            use()

    aborted = target.open_file("exp1", "0-0001", "g.csv")
    aborted.write_batch(batch)
    aborted.write_bad(bad, "g.csv")
    aborted.abort()
    aborted.abort()  # the engine may abort twice (a failed commit, then its cleanup)
    for use in (lambda: aborted.write_batch(batch), lambda: aborted.write_bad(bad, "g.csv"), aborted.commit):
        with pytest.raises(RuntimeError, match=r"^writer for 0-0001 is already aborted$"):
            use()
    counts = query(f'SELECT _file_key, count(*) FROM "{schema}".ifta GROUP BY 1')
    assert counts == [("0-0000", 3)]
    for file_key in ("0-0000", "0-0001"):
        held = query("SELECT pg_try_advisory_xact_lock(%s)", lock_key(f"{schema}.ifta:exp1:{file_key}"))
        assert held == [(True,)], "committed and aborted writers let go of their file"


def test_the_worker_names_its_sessions_and_bounds_its_connect() -> None:
    """A DBA spots the worker's sessions by name; a database that never answers fails the attempt instead of hanging."""
    with PostgresSink(TEST_DATABASE_URL, "test", "public", "t").connect() as conn:
        parameters = conn.info.get_parameters()
        assert parameters["application_name"] == "async-export-worker"
        assert int(parameters["connect_timeout"]) > 0
        assert conn.execute("SHOW TimeZone").fetchone() == ("UTC",)


def test_two_files_load_at_once_each_under_its_own_lock(schema: str) -> None:
    """The advisory lock is per file: an open attempt of one file never holds up another file."""
    target = sink(schema)
    load(target.open_file("exp1", "0-0000", "a.csv"), csv_of(1))  # the table exists
    first = target.open_file("exp1", "0-0000", "a.csv")
    first.write_batch(batches(csv_of(10))[0])  # holds file 0-0000's lock, uncommitted
    done = threading.Event()

    def other_file() -> None:
        load(target.open_file("exp1", "0-0001", "b.csv"), csv_of(4))
        done.set()

    thread = threading.Thread(target=other_file, daemon=True)
    thread.start()
    try:
        assert done.wait(10), "the other file waited on the first file's lock"
    finally:
        first.commit()
        thread.join(10)
    assert query(f'SELECT _file_key, count(*) FROM "{schema}".ifta GROUP BY 1 ORDER BY 1') == [("0-0000", 10), ("0-0001", 4)]


def test_a_table_that_is_not_the_sinks_fails_the_file_with_the_reason(schema: str) -> None:
    """Pointing an export at an unrelated table (no ``_export_id``) fails the file at once: a retry cannot add the column."""
    execute(f'CREATE SCHEMA "{schema}"; CREATE TABLE "{schema}".ifta (id bigint)')
    with pytest.raises(PermanentError) as caught:
        load(sink(schema).open_file("exp1", "0-0000", "f.csv"), csv_of(2))
    assert str(caught.value) == (
        f'PostgreSQL refused the load into {schema}.ifta: column "_export_id" does not exist; point the export at a '
        "table this sink created (another table option) or fix the table, then retry the export"
    )


@pytest.fixture
def unprivileged_url() -> Iterator[str]:
    """A login role that owns nothing and was granted nothing (trust auth lets it in without a password)."""
    role = f"aew_role_{uuid.uuid4().hex[:10]}"
    execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        yield TEST_DATABASE_URL.replace("postgres@", f"{role}@", 1)
    finally:
        execute(f'DROP ROLE "{role}"')


def test_a_role_without_privileges_fails_the_file_saying_what_to_grant(schema: str, unprivileged_url: str) -> None:
    """A missing GRANT is not transient: retrying would only repeat the refusal, so the user is told what to grant."""
    load(sink(schema).open_file("exp1", "0-0000", "f.csv"), csv_of(2))
    with pytest.raises(PermanentError) as caught:
        load(PostgresSink(unprivileged_url, "test", schema, "ifta").open_file("exp1", "0-0001", "g.csv"), csv_of(3))
    assert str(caught.value) == (
        f"PostgreSQL refused {schema}.ifta to the worker's role: permission denied for database test; grant the role "
        "what that names (the sink needs USAGE and CREATE on the schema, or CREATE on the database while the schema is "
        "missing, and SELECT, INSERT and DELETE on the table and its quarantine), then retry the export"
    )
    assert query(f'SELECT _file_key, count(*) FROM "{schema}".ifta GROUP BY 1') == [("0-0000", 2)]


def test_a_connection_lost_mid_file_is_retried_naming_the_database(schema: str) -> None:
    target = sink(schema)
    writer = target.open_file("exp1", "0-0000", "f.csv")
    parts = batches(csv_of(20000), rows=5000)
    writer.write_batch(parts[0])
    high, low = (lambda key: ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF))(lock_key(f"{schema}.ifta:exp1:0-0000"))
    [(pid,)] = query("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s", high, low)
    assert query("SELECT pg_terminate_backend(%s)", pid) == [(True,)]
    with pytest.raises(TransientError) as caught:
        for part in parts[1:]:
            writer.write_batch(part)
        writer.commit()
    writer.abort()
    assert re.match(r"^database 'test' failed: \S", str(caught.value)), str(caught.value)
    assert query(f'SELECT count(*) FROM "{schema}".ifta') == [(0,)]


def test_a_dropped_quarantine_comes_back_without_locking_out_readers(schema: str) -> None:
    """Recreating ``<table>_quarantine`` adds no column, so it must not wait for an analyst's open read of the table."""
    target = sink(schema)
    load(target.open_file("exp1", "0-0000", "a.csv"), csv_of(3))
    execute(f'DROP TABLE "{schema}".ifta_quarantine')
    with psycopg.connect(TEST_DATABASE_URL) as reader:
        reader.execute(f'SELECT count(*) FROM "{schema}".ifta').fetchall()  # holds ACCESS SHARE until the block ends
        result = load(target.open_file("exp1", "0-0001", "b.csv"), csv_of(2) + b"x,1,2,3\n")
    assert (result.rows, result.quarantined) == (2, 1)
    assert query(f'SELECT _file_key, _line FROM "{schema}".ifta_quarantine') == [("0-0001", 4)]
