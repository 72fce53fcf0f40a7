"""What the CSV parser tells the user: exact reasons for unusable headers and quarantined rows."""

from __future__ import annotations

import pytest

from worker.errors import PermanentError
from worker.parsing.csv_stream import RAW_LIMIT, BadRow, parse_csv
from worker.parsing.schema import ColumnType, RowSchema

SCHEMA = RowSchema(types={"id": ColumnType.INT}, required=frozenset({"id", "name"}))
PLAIN = RowSchema()


def parse(body: bytes, schema: RowSchema = PLAIN, max_field_bytes: int = 1024) -> tuple[list[dict], list[BadRow]]:
    batches = list(parse_csv([body], schema, max_field_bytes=max_field_bytes, batch_rows=10))
    return [row for b in batches for row in b.rows], [bad for b in batches for bad in b.bad]


@pytest.mark.parametrize(("max_field_bytes", "batch_rows"), [(0, 5), (5, 0), (0, 0)])
def test_sizes_must_be_positive(max_field_bytes: int, batch_rows: int) -> None:
    with pytest.raises(ValueError, match="^max_field_bytes and batch_rows must be positive$"):
        list(parse_csv([b"a\n1\n"], PLAIN, max_field_bytes=max_field_bytes, batch_rows=batch_rows))


def test_a_one_byte_field_limit_is_allowed() -> None:
    assert parse(b"a\n1\n", max_field_bytes=1) == ([{"a": "1"}], [])


@pytest.mark.parametrize("body", [b"a\n1\n\nbc\n", b"a\n1\nbc\n\n", b"a\nbc\n", b"a\n1\nbc"])
def test_a_one_byte_field_limit_catches_a_two_byte_field_on_the_shortest_line(body: bytes) -> None:
    for size in range(1, len(body) + 1):
        batches = list(
            parse_csv([body[i : i + size] for i in range(0, len(body), size)], PLAIN, max_field_bytes=1, batch_rows=10)
        )
        bad = [(b.line, b.reason) for batch in batches for b in batch.bad]
        assert bad == [
            (
                body.split(b"\n").index(b"bc") + 1,
                "field in column 'a' is 2 bytes, more than 1; raise EXPORT_WORKER_MAX_FIELD_BYTES if such fields are legitimate",
            )
        ], size


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "CSV header is missing: the file is empty"),
        (b"\n\n", "CSV header is missing: the file is empty"),
        (b"id,na\x00me\n", "CSV header contains NUL or invalid UTF-8: 'id,na\\x00me'"),
        (b"id,na\xffme\n", "CSV header contains NUL or invalid UTF-8: 'id,na\\\\xffme'"),
        (b"x,y\n", "CSV header lacks required column(s) id, name; got x, y"),
        (b"id,name,b,a,b,a\n", "CSV header repeats column(s) 'a', 'b'"),
    ],
)
def test_unusable_headers_fail_the_file_saying_why(body: bytes, message: str) -> None:
    with pytest.raises(PermanentError) as caught:
        parse(body, SCHEMA)
    assert str(caught.value) == message


def test_the_header_shown_for_a_nul_is_cut_at_200_characters() -> None:
    header = "id,na\x00me," + "c" * 300
    with pytest.raises(PermanentError) as caught:
        parse(header.encode() + b"\n", SCHEMA)
    assert str(caught.value) == f"CSV header contains NUL or invalid UTF-8: {header[:200]!r}"


def test_the_header_shown_for_missing_columns_is_cut_at_500_characters() -> None:
    header = ",".join(f"col{i:04d}" for i in range(100))
    with pytest.raises(PermanentError) as caught:
        parse(header.encode() + b"\n", SCHEMA)
    assert str(caught.value) == f"CSV header lacks required column(s) id, name; got {', '.join(header.split(','))[:500]}"


def test_an_oversized_field_names_its_column_or_position() -> None:
    body = b"id,name\n1,abcdefgh\n2,abcdefghi\n3,ok,abcdefghi\n"
    rows, bad = parse(body, max_field_bytes=8)
    assert rows == [{"id": "1", "name": "abcdefgh"}]  # exactly the limit is fine
    assert [(b.line, b.reason) for b in bad] == [
        (3, "field in column 'name' is 9 bytes, more than 8; raise EXPORT_WORKER_MAX_FIELD_BYTES if such fields are legitimate"),
        (4, "field in column #3 is 9 bytes, more than 8; raise EXPORT_WORKER_MAX_FIELD_BYTES if such fields are legitimate"),
    ]


@pytest.mark.parametrize(("value", "shown"), [("x" * 60, "x" * 60), ("x" * 61, "x" * 60 + "…")])
def test_an_invalid_value_is_previewed_up_to_60_characters(value: str, shown: str) -> None:
    _, bad = parse(f"id,name\n{value},n\n".encode(), SCHEMA)
    assert [b.reason for b in bad] == [f"column 'id': invalid int {shown!r}"]


def test_the_raw_text_of_a_bad_row_is_kept_as_read_up_to_the_limit() -> None:
    long = "y" * (RAW_LIMIT + 50)
    _, bad = parse(f"id,name\nx,a b \nz,{long}\r\nq,XX\r\n".encode(), SCHEMA, max_field_bytes=1 << 16)
    assert [b.raw for b in bad] == ["x,a b ", ("z," + long)[:RAW_LIMIT], "q,XX"]


def test_a_file_wider_than_the_generated_row_builder_keeps_every_column() -> None:
    header = [f"c{i}" for i in range(250)]
    body = ",".join(header) + "\n" + ",".join(str(i) for i in range(250)) + "\n" + ",".join("x" * 250) + "\n"
    rows, bad = parse(body.encode())
    assert rows == [dict(zip(header, map(str, range(250)), strict=True)), dict.fromkeys(header, "x")]
    assert bad == []
