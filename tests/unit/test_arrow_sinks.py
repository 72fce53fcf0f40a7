"""Sinks fed Arrow batches write what they write from the exact parser's batches: JSONL byte for byte, Parquet equal."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.file_transfer import transfer_file
from worker.parsing.arrow_chunks import ArrowBatch
from worker.parsing.csv_stream import parse_csv
from worker.parsing.row_path import parse_rows
from worker.parsing.schema import ColumnType, RowSchema
from worker.sinks.jsonl import JsonlSink
from worker.sinks.parquet import ParquetSink

SCHEMA = RowSchema(types={"i": ColumnType.INT, "f": ColumnType.FLOAT, "t": ColumnType.DATETIME})
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r\n"), max_size=8)
FLOAT = st.floats(allow_nan=False, allow_infinity=False)
TIME = st.sampled_from(["2024-01-01T00:00:00Z", "1999-12-31T23:59:59", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59", ""])


def cell(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if any(ch in value for ch in ',"') or value.strip() != value else value


@st.composite
def clean_files(draw: st.DrawFn) -> bytes:
    rows = draw(
        st.lists(st.tuples(st.integers(-(2**63), 2**63 - 1) | st.none(), FLOAT | st.none(), TIME, TEXT), min_size=1, max_size=40)
    )
    lines = ["i,f,t,s"]
    for number, real, moment, text in rows:
        float_text = "" if real is None else draw(st.sampled_from([repr(real), f"{real:.3f}", f"{real:e}"]))
        lines.append(",".join(["" if number is None else str(number), float_text, moment, cell(text)]))
    return ("\n".join(lines) + "\n").encode()


def jsonl_of(tmp_path: Path, name: str, batches: list) -> bytes:
    writer = JsonlSink(tmp_path).open_file("e", "k", name)
    for batch in batches:
        writer.write_batch(batch)
    return Path(writer.commit().path).read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=clean_files())
def test_jsonl_from_arrow_batches_is_byte_identical(tmp_path: Path, data: bytes) -> None:
    fast = list(parse_rows([data], SCHEMA, max_field_bytes=1 << 20, batch_rows=1000))
    assert all(isinstance(batch, ArrowBatch) for batch in fast), "a clean file goes through Arrow"
    exact = list(parse_csv([data], SCHEMA, max_field_bytes=1 << 20, batch_rows=1000))
    assert jsonl_of(tmp_path, "fast.csv", fast) == jsonl_of(tmp_path, "exact.csv", exact)


def test_floats_outside_the_plain_band_and_escapes_are_written_as_orjson_does(tmp_path: Path) -> None:
    values = ["1e16", "1.5e-7", "12345678901.5", "0.000001", "-0", "5", "0.1", "1e-5", "9999999999.5"]
    texts = ["tab\there", 'q"uote', "back\\slash", "\x01\x1f\x0b\x0c", "\u2028\x7f", "caf\u00e9"]
    body = "i,f,t,s\n" + "".join(f"1,{value},,{cell(text)}\n" for value in values for text in texts)
    data = body.encode()
    fast = list(parse_rows([data], SCHEMA, max_field_bytes=1 << 20, batch_rows=1000))
    assert all(isinstance(batch, ArrowBatch) for batch in fast)
    exact = list(parse_csv([data], SCHEMA, max_field_bytes=1 << 20, batch_rows=1000))
    assert jsonl_of(tmp_path, "fast.csv", fast) == jsonl_of(tmp_path, "exact.csv", exact)


FLOATS_AROUND = RowSchema(types={"a": ColumnType.FLOAT, "b": ColumnType.FLOAT, "i": ColumnType.INT, "z": ColumnType.FLOAT})


@st.composite
def float_edged_files(draw: st.DrawFn) -> bytes:
    """Floats first, side by side, and last in the row (where each value carries the row's closing brace)."""
    rows = draw(st.lists(st.tuples(FLOAT | st.none(), FLOAT | st.none(), TEXT, FLOAT | st.none()), min_size=1, max_size=40))
    lines = ["a,b,s,z"]
    for first, second, text, last in rows:
        lines.append(",".join(["" if value is None else repr(value) for value in (first, second)] + [cell(text)]))
        lines[-1] += "," + ("" if last is None else repr(last))
    return ("\n".join(lines) + "\n").encode()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=float_edged_files(), batch_rows=st.sampled_from([1, 3, 1000]))
def test_jsonl_floats_first_together_and_last_are_byte_identical(tmp_path: Path, data: bytes, batch_rows: int) -> None:
    """Small batches are slices of one Arrow chunk: the float text must start at each slice's own first row."""
    fast = list(parse_rows([data], FLOATS_AROUND, max_field_bytes=1 << 20, batch_rows=batch_rows))
    assert all(isinstance(batch, ArrowBatch) for batch in fast), "a clean file goes through Arrow"
    exact = list(parse_csv([data], FLOATS_AROUND, max_field_bytes=1 << 20, batch_rows=batch_rows))
    assert jsonl_of(tmp_path, "fast.csv", fast) == jsonl_of(tmp_path, "exact.csv", exact)


def test_jsonl_of_a_table_in_several_chunks_some_empty_is_byte_identical(tmp_path: Path) -> None:
    """Arrow batches hold one chunk per column today; the encoder must not depend on it."""
    data = ("a,b,s,z\n" + "".join(f"{i / 7},{-i},t{i},{i * 1e-3}\n" for i in range(50))).encode()
    (batch,) = parse_rows([data], FLOATS_AROUND, max_field_bytes=1 << 20, batch_rows=1000)
    assert isinstance(batch, ArrowBatch)
    table = batch.table
    pieces = [table.slice(0, 0), table.slice(0, 20), table.slice(20, 0), table.slice(20, 30), table.slice(50, 0)]
    chunked = ArrowBatch(batch.names, batch.types, pa.concat_tables(pieces), batch.lines)
    assert chunked.table.column(0).num_chunks == 5
    exact = list(parse_csv([data], FLOATS_AROUND, max_field_bytes=1 << 20, batch_rows=1000))
    assert jsonl_of(tmp_path, "fast.csv", [chunked]) == jsonl_of(tmp_path, "exact.csv", exact)


def parquet_table(tmp_path: Path, name: str, data: bytes, monkeypatch_fast: bool) -> list[dict]:
    writer = ParquetSink(tmp_path).open_file("e", "k", name)
    if monkeypatch_fast:
        transfer_file([data], schema=SCHEMA, writer=writer, source_name=name, max_field_bytes=1 << 20)
    else:
        for batch in parse_csv([data], SCHEMA, max_field_bytes=1 << 20):
            writer.write_batch(batch)
    table = pq.read_table(writer.commit().path)
    return table.to_pylist()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=clean_files())
def test_parquet_from_arrow_batches_holds_the_same_rows_and_types(tmp_path: Path, data: bytes) -> None:
    fast = parquet_table(tmp_path, "fast.csv", data, True)
    exact = parquet_table(tmp_path, "exact.csv", data, False)
    assert len(fast) == len(exact)
    for mine, theirs in zip(fast, exact, strict=True):
        assert mine.keys() == theirs.keys()
        for key in mine:
            if isinstance(mine[key], float):
                assert math.copysign(1, mine[key]) == math.copysign(1, theirs[key]) and mine[key] == theirs[key]
            else:
                assert mine[key] == theirs[key]
