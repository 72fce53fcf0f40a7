"""The differential test: the row path (Arrow where provably exact) against the exact parser as the oracle.

Whatever the input, :func:`parse_rows` must give what :func:`parse_csv` gives for the same download
chunks: the same good rows (values and types) on the same lines, the same quarantined records (line,
reason, raw text) and the same counts, at Arrow chunk sizes small enough that records land on chunk
boundaries everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_csv_stream import BAD_FILE
from worker.errors import PermanentError
from worker.parsing.arrow_chunks import ArrowBatch
from worker.parsing.csv_stream import parse_csv
from worker.parsing.row_path import parse_rows
from worker.parsing.schema import ColumnType, RowSchema

SCHEMA = RowSchema(
    types={"id": ColumnType.INT, "amount": ColumnType.FLOAT, "at": ColumnType.DATETIME},
    required=frozenset({"id"}),
)
CHUNK_SIZES = (1, 16, 64, 200, 4096, 1 << 22)


def split(data: bytes, sizes: list[int]) -> list[bytes]:
    chunks, position, turn = [], 0, 0
    while position < len(data):
        size = sizes[turn % len(sizes)]
        chunks.append(data[position : position + size])
        position, turn = position + size, turn + 1
    return chunks


Outcome = tuple[str, list[int], list[tuple[int, str, str]]] | str


def outcome(batches: Iterator[Any]) -> Outcome:
    """Rows as JSON (tells 5 from 5.0 and -0.0 from 0.0), their lines, bad records; or the error raised."""
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    bad: list[tuple[int, str, str]] = []
    try:
        for batch in batches:
            assert len(batch.rows) == len(batch.lines)
            rows.extend(batch.rows)
            lines.extend(batch.lines)
            bad.extend((b.line, b.reason, b.raw) for b in batch.bad)
    except PermanentError as exc:
        return f"PermanentError: {exc}"
    return json.dumps(rows), lines, bad


def compare(data: bytes, schema: RowSchema, *, sizes: list[int], max_field_bytes: int, batch_rows: int = 1000) -> int:
    """Assert both paths agree for every Arrow chunk size; return how many rows Arrow converted."""
    chunks = split(data, sizes)
    oracle = outcome(parse_csv(chunks, schema, max_field_bytes=max_field_bytes, batch_rows=batch_rows))
    fast_rows = 0
    for chunk_bytes in CHUNK_SIZES:
        batches = list_or_error(
            parse_rows(chunks, schema, max_field_bytes=max_field_bytes, batch_rows=batch_rows, chunk_bytes=chunk_bytes)
        )
        assert outcome(iter(batches)) == oracle, chunk_bytes
        if isinstance(batches, list):
            assert all(len(b.lines) <= batch_rows for b in batches)
            fast_rows += sum(len(b.lines) for b in batches if isinstance(b, ArrowBatch))
    return fast_rows


def list_or_error(batches: Iterator[Any]) -> list[Any] | Any:
    collected: list[Any] = []
    try:
        collected.extend(batches)
    except PermanentError as exc:
        return _Raising(exc, collected)
    return collected


class _Raising:
    """Replays the batches, then the error, so ``outcome`` sees what the stream did."""

    def __init__(self, error: PermanentError, batches: list[Any]) -> None:
        self.error = error
        self.batches = batches

    def __iter__(self) -> Iterator[Any]:
        yield from self.batches
        raise self.error


CLEAN = (
    b"id,name,amount,at\n"
    + b"".join(b"%d,name %d,%d.5,2024-01-%02dT10:00:00Z\n" % (i, i, i, i % 28 + 1) for i in range(300))
    + b'7,"quoted, with ""quotes""",1e3,2024-02-29T23:59:59\n'
    + b"8,caf\xc3\xa9 \xe2\x82\xac,-0,\n"
    + b"9,,,\n"
)

CORPUS = [
    CLEAN,
    BAD_FILE,
    BAD_FILE.replace(b"\n", b"\r\n"),
    CLEAN.replace(b"\n", b"\r\n"),
    CLEAN.replace(b"\n", b"\r"),
    b"\xef\xbb\xbf" + CLEAN,
    CLEAN + b"\n\n",
    CLEAN[:-1],
    CLEAN + b"10,x,1,",
    b'id,"long\nname"\n1,a\n2,b\n',
    b"\n\nid,name\n\n1,a\n\n\n2\n3,c\n\n",
    CLEAN + b'11,"never closed\n' + b"12,b,1,\n" * 400,
    CLEAN + b"13,a,nan,\n14,b,inf,\n15,c,Infinity,\n",
    CLEAN + b"16,0x1F,1,\n0x1F,a,1,\n",
    CLEAN + b"17,a,1,2024-02-30T00:00:00Z\n18,a,1,0000-01-01T00:00:00\n19,a,1,2024-01-01T24:00:00\n",
    CLEAN + b"20,a,1,2024-01-01T10:00:00+00:00\n21,a,1,2024-01-01 10:00:00\n22,a,1,2024-01-01\n",
    CLEAN + b" 23,a, 1.5 ,\n24,a,\t2,\n+25,a,+1,\n-0,a,-0.0,\n",
    CLEAN + b"26,a b,1,\n 27,a,1,\n",
    CLEAN + b"9223372036854775807,a,1,\n9223372036854775808,a,1,\n",
    CLEAN + b"28,\x00,1,\n29,\xff,1,\n30,ok,1,\n",
    CLEAN + b'31,"a"b,1,\n32,a"b,1,\n33,"a""b",1,\n',
    CLEAN + b"34,\xe2\x82,1,\n",
    CLEAN + b"35," + b"y" * 3000 + b",1,\n36,ok,1,\n",
]


@pytest.mark.parametrize("body", CORPUS, ids=range(len(CORPUS)))
@pytest.mark.parametrize("sizes", [[1 << 20], [7], [64, 3, 200], [4096]], ids=["whole", "7", "mixed", "4k"])
def test_the_corpus_gives_the_oracles_answer(body: bytes, sizes: list[int]) -> None:
    compare(body, SCHEMA, sizes=sizes, max_field_bytes=1 << 20)


@pytest.mark.parametrize("body", CORPUS, ids=range(len(CORPUS)))
@pytest.mark.parametrize("max_field_bytes", [8, 100])
def test_the_corpus_gives_the_oracles_answer_with_small_field_limits(body: bytes, max_field_bytes: int) -> None:
    compare(body, SCHEMA, sizes=[64, 3, 200], max_field_bytes=max_field_bytes, batch_rows=7)


def test_clean_chunks_do_go_through_arrow() -> None:
    """Not a vacuous comparison: most rows of a clean file are Arrow's, at every chunk size."""
    assert compare(CLEAN * 1, SCHEMA, sizes=[1 << 20], max_field_bytes=1 << 20) >= 300 * (len(CHUNK_SIZES) - 2)


def test_a_chunk_with_a_bad_record_is_parsed_exactly_and_the_clean_ones_around_it_by_arrow() -> None:
    body = CLEAN + b"x,bad,1,\n" + CLEAN[CLEAN.index(b"\n") + 1 :]
    batches = list(parse_rows(split(body, [1000]), SCHEMA, max_field_bytes=1 << 20, batch_rows=1000, chunk_bytes=4096))
    kinds = {type(batch).__name__ for batch in batches}
    assert kinds == {"ArrowBatch", "ParsedBatch"}
    bad = [b for batch in batches for b in batch.bad]
    assert [(b.line, b.reason, b.raw) for b in bad] == [(305, "column 'id': invalid int 'x'", "x,bad,1,")]


# --- generated files --------------------------------------------------------------------------------

INTS = [
    "0",
    "-0",
    "7",
    "-12",
    "007",
    "+5",
    " 5",
    "5 ",
    "\t5",
    "1_000",
    "0x1F",
    "9223372036854775807",
    "9223372036854775808",
    "5.0",
    "x",
    " ",
    "",
]
FLOATS = ["1.5", "-0", "-0.0", "5", ".5", "5.", "1e308", "1e309", "nan", "inf", "-Infinity", " 2.5", "1_0.5", "0x1p3", "x", ""]
TIMES = [
    "2024-01-01T00:00:00Z",
    "2024-02-29T23:59:59",
    "2024-02-30T00:00:00Z",
    "2024-01-01T24:00:00",
    "0000-01-01T00:00:00",
    "0001-01-01T00:00:00Z",
    "2024-01-01T00:00:00+00:00",
    "2024-01-01 00:00:00",
    "2024-01-01",
    "garbage",
    "",
]
TEXTS = [
    "a",
    "",
    " ",
    "caf\u00e9",
    "a,b",
    'say "hi"',
    "line\nbreak",
    "cr\rhere",
    "crlf\r\nx",
    "\u2028",
    "\x0c",
    "tab\there",
    "\\",
]
CLEAN_POOLS = {"id": INTS[:4], "amount": FLOATS[:6], "at": TIMES[:2], "name": TEXTS[:4]}
ALL_POOLS = {"id": INTS, "amount": FLOATS, "at": TIMES, "name": TEXTS}


def render(value: str, quote: str) -> str:
    needs = any(ch in value for ch in ',"\r\n') or value == ""
    if quote == "always" or (quote == "minimal" and needs):
        return '"' + value.replace('"', '""') + '"'
    if quote == "odd":
        return '"' + value + '"x'  # a closing quote followed by text: csv.reader goes on unquoted
    return value


@st.composite
def files(draw: st.DrawFn) -> bytes:
    columns = draw(st.permutations(["id", "amount", "at", "name"]))
    dirty = draw(st.booleans())
    pools = ALL_POOLS if dirty else CLEAN_POOLS
    terminator = draw(st.sampled_from(["\n", "\r\n"] + (["\r"] if dirty else [])))
    lines = [",".join(columns)]
    for _ in range(draw(st.integers(0, 60))):
        kind = draw(st.sampled_from(["row"] * 12 + (["blank", "short", "long", "bytes"] if dirty else [])))
        if kind == "blank":
            lines.append("")
            continue
        values = [draw(st.sampled_from(pools[name])) for name in columns]
        quote = draw(st.sampled_from(["minimal"] * 6 + (["always", "odd"] if dirty else ["always"])))
        cells = [render(value, "minimal" if quote == "odd" and draw(st.booleans()) else quote) for value in values]
        if kind == "short":
            cells = cells[:-1]
        elif kind == "long":
            cells.append("extra")
        lines.append(",".join(cells))
    text = terminator.join(lines) + (terminator if draw(st.booleans()) or not dirty else "")
    data = text.encode("utf-8")
    if dirty and draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\x00", b"\xff", b"\xe2\x82", b'"'])) + data[at:]
    return data


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    data=files(),
    sizes=st.lists(st.integers(1, 300), min_size=1, max_size=4),
    max_field_bytes=st.sampled_from([4, 12, 1 << 20]),
    batch_rows=st.sampled_from([1, 3, 1000]),
)
def test_generated_files_give_the_oracles_answer(data: bytes, sizes: list[int], max_field_bytes: int, batch_rows: int) -> None:
    compare(data, SCHEMA, sizes=sizes, max_field_bytes=max_field_bytes, batch_rows=batch_rows)


def test_a_file_dense_with_bad_records_is_not_offered_to_arrow_chunk_after_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a declined chunk the next 1, 2, 4, ... go straight to the exact parser: few wasted Arrow reads."""
    from worker.parsing.arrow_chunks import ChunkReader

    offered: list[int] = []
    read = ChunkReader.read
    monkeypatch.setattr(ChunkReader, "read", lambda self, data, line: offered.append(line) or read(self, data, line))
    row = b"1,a,1.5,\n" * 9 + b"x,bad,1,\n"
    body = b"id,name,amount,at\n" + row * 200
    chunks = [body[:18], *split(body[18:], [len(row)])]
    batches = list(parse_rows(chunks, SCHEMA, max_field_bytes=1 << 20, batch_rows=1000))
    assert sum(len(b.bad) for b in batches) == 200 and sum(len(b.lines) for b in batches) == 1800
    assert len(offered) <= 10  # chunks 1, 3, 7, 15, 31, 63, 127, 191 of 200
    compare(body, SCHEMA, sizes=[len(row)], max_field_bytes=1 << 20)
