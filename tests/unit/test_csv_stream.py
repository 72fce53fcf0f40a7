"""Streaming CSV parsing: typed rows out, every bad record quarantined with its line, nothing stops."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import worker.parsing.columns as columns
import worker.parsing.csv_stream as csv_stream
from worker.errors import PermanentError
from worker.parsing.csv_stream import BadRow, ParsedBatch, parse_csv
from worker.parsing.schema import ColumnType, RowSchema

SCHEMA = RowSchema(
    types={"id": ColumnType.INT, "amount": ColumnType.FLOAT, "at": ColumnType.DATETIME},
    required=frozenset({"id"}),
)
STR_ONLY = RowSchema()


def split(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def parse(
    data: bytes, schema: RowSchema = SCHEMA, *, size: int = 1 << 20, max_field_bytes: int = 1 << 20, batch_rows: int = 1000
) -> tuple[list[dict], list[BadRow]]:
    batches = list(parse_csv(split(data, size), schema, max_field_bytes=max_field_bytes, batch_rows=batch_rows))
    assert all(isinstance(b, ParsedBatch) and len(b.rows) <= batch_rows for b in batches)
    return [row for b in batches for row in b.rows], [bad for b in batches for bad in b.bad]


def reader_rows(text: str) -> tuple[list[list[str]], list[int]]:
    """csv.reader's records (blank lines skipped) after the header, with the line each starts on."""
    reader = csv.reader(io.StringIO(text, newline=""))
    records, starts, previous = [], [], 0
    for record in reader:
        if record:
            records.append(record)
            starts.append(previous + 1)
        previous = reader.line_num
    return records[1:], starts[1:]


def parse_every_way(data: bytes, schema: RowSchema = SCHEMA, **kwargs: int) -> tuple[list[dict], list[BadRow]]:
    """Parse with many chunkings and batch sizes; they must all agree."""
    reference = parse(data, schema, **kwargs)
    for size in (1, 2, 3, 7, 64, 1 << 20):
        for batch_rows in (1, 2, 1000):
            assert parse(data, schema, size=size, batch_rows=batch_rows, **kwargs) == reference, (size, batch_rows)
    return reference


@pytest.fixture
def tiny_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cut input into 5-byte segments so segment boundaries fall everywhere."""
    monkeypatch.setattr(csv_stream, "SEGMENT_BYTES", 5)


# --- typed rows ----------------------------------------------------------------------------------------


def test_good_rows_are_typed_and_unknown_columns_kept_as_strings() -> None:
    data = b"id,name,amount,at,extra\n1,Truck 1,12.5,2024-03-01T10:00:00Z,x\n2,,7,2024-03-01T10:00:00+00:00,\n3,Truck 3,,,y\n"
    rows, bad = parse_every_way(data)
    assert bad == []
    assert rows == [
        {"id": 1, "name": "Truck 1", "amount": 12.5, "at": "2024-03-01T10:00:00Z", "extra": "x"},
        {"id": 2, "name": "", "amount": 7.0, "at": "2024-03-01T10:00:00Z", "extra": ""},
        {"id": 3, "name": "Truck 3", "amount": None, "at": None, "extra": "y"},
    ]
    assert isinstance(rows[1]["amount"], float)


@pytest.mark.parametrize(
    ("value", "normal"),
    [
        ("2024-03-01T10:00:00Z", "2024-03-01T10:00:00Z"),
        ("2024-03-01T10:00:00", "2024-03-01T10:00:00"),
        ("2024-03-01T10:00:00+00:00", "2024-03-01T10:00:00Z"),
        ("2024-03-01T10:00:00-00:00", "2024-03-01T10:00:00Z"),
        ("2024-03-01 10:00:00.5+05:30", "2024-03-01T10:00:00.500000+05:30"),
        ("2024-03-01T10:00:00.123Z", "2024-03-01T10:00:00.123000Z"),
        ("2024-03-01", "2024-03-01T00:00:00"),
        ("2024-03-01T10:00:00+01:00:30", "2024-03-01T10:00:00+01:00:30"),
    ],
)
def test_datetimes_come_out_normalised(value: str, normal: str) -> None:
    rows, bad = parse(f"id,at\n1,{value}\n2,{value}\n".encode())
    assert bad == [] and [row["at"] for row in rows] == [normal, normal]


def test_numbers_follow_int_and_float_exactly() -> None:
    data = b"id,amount\n10,5\n-3,-0\n" + b"007,1e3\n" + b"2,0.1\n"
    rows, bad = parse_every_way(data)
    assert bad == []
    assert [(r["id"], r["amount"]) for r in rows] == [(10, 5.0), (-3, -0.0), (7, 1000.0), (2, 0.1)]
    assert str(rows[1]["amount"]) == "-0.0"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"x,1", "column 'id': invalid int 'x'"),
        (b"1.5,1", "column 'id': invalid int '1.5'"),
        (b"true,1", "column 'id': invalid int 'true'"),
        (b"null,1", "column 'id': invalid int 'null'"),
        (b"99999999999999999999,1", "column 'id': invalid int '99999999999999999999'"),
        (b"9223372036854775808,1", "column 'id': invalid int '9223372036854775808'"),
        (b"-9223372036854775809,1", "column 'id': invalid int '-9223372036854775809'"),
        (b"1,abc", "column 'amount': invalid float 'abc'"),
        (b"1,nan", "column 'amount': invalid float 'nan'"),
        (b"1,inf", "column 'amount': invalid float 'inf'"),
        (b'1,"1,2"', "column 'amount': invalid float '1,2'"),
        (b"1,[2]", "column 'amount': invalid float '[2]'"),
    ],
)
def test_bad_numbers_are_quarantined_naming_column_and_value(line: bytes, reason: str) -> None:
    rows, bad = parse(b"id,amount\n5,1\n" + line + b"\n6,2\n")
    assert [r["id"] for r in rows] == [5, 6]
    assert [(b.line, b.reason) for b in bad] == [(3, reason)]


# --- bad records -------------------------------------------------------------------------------------

BAD_FILE = (
    b"id,name,amount,at\n"  # 1
    b'1,"multi\nline, with ""quotes""",1.5,2024-01-01T00:00:00Z\n'  # 2-3
    b"2,b\n"  # 4: wrong column count
    b"x,c,1,\n"  # 5: bad int
    b"3,d,abc,\n"  # 6: bad float
    b"4,e,1,not-a-date\n"  # 7: bad datetime
    b"5,f\xff\xfe,1,\n"  # 8: invalid UTF-8
    b"6,g\x00h,1,\n"  # 9: NUL
    b'7,"quoted\r\nagain",2,\n'  # 10-11
    b"8,i,1,2024-02-30T00:00:00Z\n"  # 12: no such day
    b"9,j,1,2024-01-01T00:00:00Z,extra\n"  # 13: too many columns
    b"10,k,3,\n"  # 14
)


def test_each_kind_of_bad_row_is_quarantined_with_its_line_and_the_rest_comes_through() -> None:
    rows, bad = parse_every_way(BAD_FILE)
    assert [r["id"] for r in rows] == [1, 7, 10]
    assert rows[0]["name"] == 'multi\nline, with "quotes"'
    assert rows[1]["name"] == "quoted\r\nagain"
    assert [b.line for b in bad] == [4, 5, 6, 7, 8, 9, 12, 13]
    reasons = [b.reason for b in bad]
    assert reasons[0] == "expected 4 columns, got 2"
    assert reasons[1] == "column 'id': invalid int 'x'"
    assert reasons[2] == "column 'amount': invalid float 'abc'"
    assert reasons[3] == "column 'at': invalid datetime 'not-a-date'"
    assert reasons[4] == "invalid UTF-8 (byte 0xff)"
    assert reasons[5] == "record contains a NUL character"
    assert reasons[6] == "column 'at': invalid datetime '2024-02-30T00:00:00Z'"
    assert reasons[7] == "expected 4 columns, got 5"
    assert [b.raw for b in bad][:2] == ["2,b", "x,c,1,"]
    assert bad[4].raw == "5,f\\xff\\xfe,1,"  # undecodable bytes shown, and JSON-safe
    bad[4].raw.encode("utf-8")


def test_bad_rows_are_found_with_tiny_segments_too(tiny_segments: None) -> None:
    rows, bad = parse_every_way(BAD_FILE)
    assert [r["id"] for r in rows] == [1, 7, 10]
    assert [b.line for b in bad] == [4, 5, 6, 7, 8, 9, 12, 13]


def test_invalid_utf8_spoils_only_its_own_row() -> None:
    data = b"id,name\n1,caf\xc3\xa9\n2,caf\xe9\n3,\xe2\x82\xac\n"
    rows, bad = parse_every_way(data)
    assert [(r["id"], r["name"]) for r in rows] == [(1, "caf\u00e9"), (3, "\u20ac")]
    assert [(b.line, b.reason) for b in bad] == [(3, "invalid UTF-8 (byte 0xe9)")]


BAD_BYTES = [(b"\x00", "record contains a NUL character"), (b"\xff", "invalid UTF-8 (byte 0xff)")]


@pytest.mark.parametrize(("byte", "reason"), BAD_BYTES)
@pytest.mark.parametrize("where", [0, 1, 2])
def test_a_bad_byte_in_any_line_of_a_record_spanning_segments_spoils_that_record(
    byte: bytes, reason: str, where: int, tiny_segments: None
) -> None:
    parts = [b"ab", b"cd", b"ef"]
    parts[where] += byte
    data = b'id,name\n1,"' + b"\n".join(parts) + b'"\n2,ok\n3,"x\ny"\n'
    rows, bad = parse_every_way(data)
    assert rows == [{"id": 2, "name": "ok"}, {"id": 3, "name": "x\ny"}]
    assert [(b.line, b.reason) for b in bad] == [(2, reason)]


def test_truncated_multibyte_character_at_end_of_file() -> None:
    rows, bad = parse(b"id,name\n1,a\n2,\xe2\x82")
    assert [r["id"] for r in rows] == [1]
    assert [b.line for b in bad] == [3]


@pytest.mark.parametrize(
    ("field", "size"),
    [("\r\n".join(["abcdefghi"] * 60), 658), ("\U0001f600" * 100 + "\n" + "\U0001f600" * 100, 801)],
)
def test_field_over_max_field_bytes_is_quarantined_when_made_of_short_lines(field: str, size: int) -> None:
    """No physical line is long (in characters) but the field, over several lines, is (in bytes)."""
    data = f'id,name\n1,ok\n2,"{field}"\n3,fine\n'.encode()
    rows, bad = parse_every_way(data, max_field_bytes=500)
    assert [r["id"] for r in rows] == [1, 3]
    reason = f"field in column 'name' is {size} bytes, more than 500; "
    reason += "raise EXPORT_WORKER_MAX_FIELD_BYTES if such fields are legitimate"
    assert [(b.line, b.reason) for b in bad] == [(3, reason)]


@pytest.mark.parametrize("quoted", [False, True])
def test_field_over_max_field_bytes_is_quarantined(quoted: bool) -> None:
    huge = "é" * 300  # 600 bytes of UTF-8
    field = f'"{huge}"' if quoted else huge
    data = f"id,name\n1,ok\n2,{field}\n3,fine\n".encode()
    rows, bad = parse_every_way(data, max_field_bytes=500)
    assert [r["id"] for r in rows] == [1, 3]
    assert [b.line for b in bad] == [3]
    assert "600 bytes, more than 500" in bad[0].reason and "EXPORT_WORKER_MAX_FIELD_BYTES" in bad[0].reason
    assert len(bad[0].raw) <= csv_stream.RAW_LIMIT


def test_reader_recovers_after_csv_field_limit_errors(small_csv_field_limit: None) -> None:
    """Past csv's limit but within the parser's line limit, csv.Error is what stops a field; twice here."""
    first = '2,"ab\n' + "x" * 2000 + '"'  # the error is raised on the record's second line
    data = f'id,name\n1,a\n{first}\n3,"b"\n4,"{"z" * 1500}"\n5,c\n6,"{"w" * 1500}"\n'.encode()
    rows, bad = parse_every_way(data, max_field_bytes=400)
    assert [r["id"] for r in rows] == [1, 3, 5]
    reason = "a field is larger than 400 bytes; raise EXPORT_WORKER_MAX_FIELD_BYTES if such fields are legitimate"
    assert [(b.line, b.reason) for b in bad] == [(3, reason), (6, reason), (8, reason)]
    assert bad[0].raw == first[: csv_stream.RAW_LIMIT]


def test_the_end_of_segment_marker_never_shows_in_a_bad_rows_raw_text(small_csv_field_limit: None) -> None:
    """A quoted field 10 characters short of csv's limit at a segment end: the marker line pushes it over."""
    chunks = [b"id,name\n1,a\n", b'2,"' + b"x" * 990 + b"\n", b'y"\n3,b\n']
    batches = list(parse_csv(chunks, SCHEMA, max_field_bytes=400))
    bad = [b for batch in batches for b in batch.bad]
    assert bad[0].line == 3 and bad[0].raw == '2,"' + "x" * 990 + "\n"


def test_a_header_past_the_csv_field_limit_is_unreadable(small_csv_field_limit: None) -> None:
    with pytest.raises(PermanentError, match=r"^CSV header is unreadable: field larger than field limit \(1000\)$"):
        parse_every_way(b'id,"' + b"n" * 1500 + b'"\n1,a\n', max_field_bytes=400)


def test_a_header_whose_quote_never_closes_is_unreadable() -> None:
    """Past the header line limit; the field limit (and so csv's) is higher, or csv.Error would come first."""
    saved = csv.field_size_limit()
    try:
        with pytest.raises(PermanentError) as caught:
            parse(b'id,"name\n' + b"1,a\n" * 800_000, size=1 << 16, max_field_bytes=1 << 22)
    finally:
        csv.field_size_limit(saved)
    assert str(caught.value) == "CSV header is unreadable: unterminated quoted field: record is longer than 1048576 characters"


def test_endless_line_is_cut_so_memory_stays_bounded() -> None:
    data = b"id,name\n1,a\n2," + b"y" * 200_000 + b"\n3,b\n"
    rows, bad = parse(data, max_field_bytes=100, size=4096)
    assert [r["id"] for r in rows] == [1, 3]
    assert [b.line for b in bad] == [3]
    assert "longer than" in bad[0].reason


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
def test_a_line_cut_inside_quotes_does_not_swallow_the_lines_after_it(end: str) -> None:
    data = end.join(["id,name", "1,a", '2,"' + "x" * 5000 + '"', '3,"b"', "4,c", "x,d", "5,e", ""]).encode()
    for size in (1, 2, 3, 7, 64, 4096, 1 << 20):
        rows, bad = parse(data, max_field_bytes=100, size=size)
        assert [r["id"] for r in rows] == [1, 3, 4, 5], size
        assert [b.line for b in bad] == [3, 6], size


@pytest.mark.parametrize("quote", ["", '"'])
@pytest.mark.parametrize("after", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
def test_parsing_resumes_at_the_line_after_a_cut_one_wherever_the_chunks_end(end: str, after: str, quote: str) -> None:
    """The rest of a cut line is skipped up to its own line break, which may be split by chunks or mixed."""
    long = f"2,{quote}{'x' * 700}{quote}"
    head = f"id,name\n1,a\n{long}".encode()
    data = head + f"{end}3,b{after}x,c\n4,d\n".encode()
    chunkings = [list(split(data, size)) for size in (1, 2, 3, 5, 7, 64, 4096)]
    chunkings += [[*split(data[:at], 64), data[at:]] for at in range(len(head) - 3, len(head) + 4)]
    for chunks in chunkings:
        batches = list(parse_csv(chunks, SCHEMA, max_field_bytes=100))
        assert [r["id"] for b in batches for r in b.rows] == [1, 3, 4], chunks
        assert [bad.line for b in batches for bad in b.bad] == [3, 5], chunks


@pytest.mark.parametrize(("byte", "reason"), BAD_BYTES)
def test_a_line_ending_in_cr_before_a_cut_line_keeps_its_own_checks(byte: bytes, reason: str) -> None:
    """Its "\\r" waited for a "\\n" at the chunk end; the next chunk, one long line, is cut without it."""
    chunks = [b"id,name\r1,a" + byte + b"\r", b"2," + b"y" * 700, b"\r3,b\r"]
    batches = list(parse_csv(chunks, SCHEMA, max_field_bytes=100))
    assert [row for batch in batches for row in batch.rows] == [{"id": 3, "name": "b"}]
    assert [(b.line, b.reason) for batch in batches for b in batch.bad] == [
        (2, reason),
        (3, "line longer than 609 characters was cut off (or the record contains a NUL character)"),
    ]


@pytest.mark.parametrize(("length", "cut"), [(39, False), (40, True)])
def test_a_line_is_cut_only_past_the_longest_record_of_valid_fields(length: int, cut: bool) -> None:
    """Two fields of at most 5 bytes, all doubled quotes, plus separators: (2 + 1) * (2 * 5 + 3) = 39."""
    data = b"id,name\n1,a\n" + (b"2," + b"y" * (length - 2)) + b"\n4," + b"z" * 37 + b"\n3,b\n"
    rows, bad = parse(data, max_field_bytes=5, size=1)  # byte by byte: the line grows until its break
    assert [r["id"] for r in rows] == [1, 3]
    oversized = (
        "field in column 'name' is {} bytes, more than 5; raise EXPORT_WORKER_MAX_FIELD_BYTES if such fields are legitimate"
    )
    reason = "line longer than 39 characters was cut off (or the record contains a NUL character)"
    assert [(b.line, b.reason) for b in bad] == [(3, reason if cut else oversized.format(length - 2)), (4, oversized.format(37))]


def test_wide_rows_of_valid_fields_are_never_cut_even_with_a_tiny_field_limit() -> None:
    """40 columns of 3-byte fields: lines far longer than 16 fields, and quoted ones twice that."""
    header = [f"c{i}" for i in range(40)]
    table = [['"""'] * 40, ["abc"] * 40, ["a,b", "", "\n"] * 13 + ["x"]]
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\r\n").writerows([header, *table])
    rows, bad = parse_every_way(buffer.getvalue().encode(), STR_ONLY, max_field_bytes=3)
    assert bad == []
    assert rows == [dict(zip(header, record, strict=True)) for record in table]


@pytest.mark.parametrize("extra", [0, 1])
def test_a_header_may_be_a_mebibyte_long_whatever_the_field_limit(extra: int) -> None:
    names = [f"{i:04d}".ljust(999, "x") for i in range(1048)] + ["y" * (576 + extra)]
    header = ",".join(names)
    assert len(header) == columns.HEADER_LINE_CHARS + extra
    chunks = [header.encode(), f"\n{','.join('1' * 1049)}\n".encode()]  # the header ends before its break
    if extra:
        with pytest.raises(PermanentError, match="^CSV header is longer than 1048576 characters$"):
            list(parse_csv(chunks, STR_ONLY, max_field_bytes=1))
    else:
        batches = list(parse_csv(chunks, STR_ONLY, max_field_bytes=1))
        assert [row for batch in batches for row in batch.rows] == [dict.fromkeys(names, "1")]
        assert [bad for batch in batches for bad in batch.bad] == []


def test_unterminated_quote_at_end_of_file_behaves_like_csv_reader() -> None:
    data = b'id,name\n1,a\n2,"never closed\n3,b\n'
    rows, bad = parse_every_way(data)
    assert rows == [{"id": 1, "name": "a"}, {"id": 2, "name": "never closed\n3,b\n"}]
    assert bad == []


@pytest.mark.parametrize(("size", "batch_rows"), [(7, 1000), (64, 1), (4096, 1000), (4096, 1)])
def test_unterminated_quote_that_runs_on_forever_is_given_up(size: int, batch_rows: int) -> None:
    """The record is quarantined once past the line limit; every line after it is read again as rows."""
    data = b'id,name\n1,a\n2,"never closed\n' + b"3,b\n" * 5_000
    batches = list(parse_csv(split(data, size), SCHEMA, max_field_bytes=100, batch_rows=batch_rows))
    lines = [line for batch in batches for line in batch.lines]
    rows = [row for batch in batches for row in batch.rows]
    assert [(b.line, b.reason) for batch in batches for b in batch.bad] == [
        (3, "unterminated quoted field: record is longer than 609 characters")
    ]
    (raw,) = [b.raw for batch in batches for b in batch.bad]
    assert data.decode()[data.index(b'2,"') :].startswith(raw) and 609 <= len(raw) <= csv_stream.RAW_LIMIT  # as read, clipped
    resumed = lines[1]
    assert lines == [2, *range(resumed, 5_004)]
    assert rows == [{"id": 1, "name": "a"}] + [{"id": 3, "name": "b"}] * (5_004 - resumed)
    assert (resumed - 3) * len(b"3,b\n") <= 3 * 609 + 2 * size  # given up after about the limit, not at EOF


@pytest.mark.parametrize("batch_rows", [1, 2, 1000])
def test_a_given_up_quote_is_quarantined_after_the_bad_rows_before_it(batch_rows: int) -> None:
    """Bad rows come out in file order even when an endless quote is given up in the same segment."""
    data = b"id,name\n" + b"1,a\n" * 1100 + b"x,bad\n" + b"1,a\n" * 5 + b'2,"never closed\n' + b"3,b\n" * 2000
    batches = list(parse_csv(split(data, 4096), SCHEMA, max_field_bytes=100, batch_rows=batch_rows))
    assert [(b.line, b.reason) for batch in batches for b in batch.bad] == [
        (1102, "column 'id': invalid int 'x'"),
        (1108, "unterminated quoted field: record is longer than 609 characters"),
    ]


def test_blank_lines_are_skipped_and_do_not_shift_line_numbers() -> None:
    rows, bad = parse_every_way(b"\n\nid,name\n\n1,a\n\n\n2\n3,c\n\n")
    assert [r["id"] for r in rows] == [1, 3]
    assert [(b.line, b.reason) for b in bad] == [(8, "expected 2 columns, got 1")]


def test_single_column_file_keeps_quoted_empty_values_and_skips_blank_lines() -> None:
    rows, bad = parse_every_way(b'name\na\n\n""\nb\n', STR_ONLY)
    assert rows == [{"name": "a"}, {"name": ""}, {"name": "b"}] and bad == []
    rows, bad = parse_every_way(b"name\na\n\nb\n\n", STR_ONLY)  # no quote anywhere: a blank line is no value
    assert rows == [{"name": "a"}, {"name": "b"}] and bad == []


# --- header ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\n\n\r\n", b"\xef\xbb\xbf", b"\xef\xbb\xbf\n"])
def test_missing_header_is_permanent(data: bytes) -> None:
    with pytest.raises(PermanentError, match="header is missing"):
        parse(data)


def test_header_without_required_columns_is_permanent() -> None:
    with pytest.raises(PermanentError, match=r"header lacks required column\(s\) id; got name, amount"):
        parse(b"name,amount\na,1\n")


def test_header_with_duplicate_columns_is_permanent() -> None:
    with pytest.raises(PermanentError, match="repeats"):
        parse(b"id,name,name\n1,a,b\n")


def test_header_only_gives_no_rows() -> None:
    assert parse(b"id,name\n") == ([], [])


def test_bom_is_stripped_even_when_split_across_chunks() -> None:
    data = b"\xef\xbb\xbfid,name\r\n1,a\r\n"
    rows, bad = parse_every_way(data)
    assert rows == [{"id": 1, "name": "a"}] and bad == []


def test_quoted_multiline_header() -> None:
    rows, _ = parse_every_way(b'id,"long\nname"\n1,a\n')
    assert rows == [{"id": 1, "long\nname": "a"}]


# --- chunk boundaries ---------------------------------------------------------------------------------


def test_multibyte_characters_and_crlf_split_by_chunks(tiny_segments: None) -> None:
    text = 'id,name,note\r\n1,caf\u00e9,\u20ac\U0001d11e\r\n2,"a\r\nb",x\r\n3,\u65e5\u672c,\r\n'
    rows, bad = parse_every_way(text.encode())
    assert bad == []
    assert rows == [
        {"id": 1, "name": "caf\u00e9", "note": "\u20ac\U0001d11e"},
        {"id": 2, "name": "a\r\nb", "note": "x"},
        {"id": 3, "name": "\u65e5\u672c", "note": ""},
    ]


def test_a_field_ending_in_cr_before_one_starting_with_lf_spans_two_line_breaks() -> None:
    rows, bad = parse_every_way(b'id,name,x\n1,"a\r","\nb"\n2\n3,c,d\n', STR_ONLY)
    assert rows == [{"id": "1", "name": "a\r", "x": "\nb"}, {"id": "3", "name": "c", "x": "d"}]
    assert [(b.line, b.reason) for b in bad] == [(5, "expected 3 columns, got 1")]


def test_old_mac_line_endings() -> None:
    rows, bad = parse_every_way(b"id,name\r1,a\r2\r3,c\r")
    assert [r["id"] for r in rows] == [1, 3] and [b.line for b in bad] == [3]


def test_splitlines_breaks_beside_quoted_line_breaks_and_old_mac_endings() -> None:
    rows, bad = parse_every_way(b'id,name\r1,"x\r\ny\x0c"\r2,"\n"\r3,b\r', STR_ONLY)
    assert rows == [{"id": "1", "name": "x\r\ny\x0c"}, {"id": "2", "name": "\n"}, {"id": "3", "name": "b"}] and bad == []


@pytest.mark.parametrize("odd", ["a\x0cb\u2028c\x1d", "a\x85b\u2028c\u2029d", "\x0b\x1c\x1e"])
def test_characters_splitlines_would_break_at_are_data(odd: str) -> None:
    rows, bad = parse_every_way(f"id,name\n1,{odd}\n2,\x85\n".encode(), STR_ONLY)
    assert rows == [{"id": "1", "name": odd}, {"id": "2", "name": "\x85"}] and bad == []


# --- properties -------------------------------------------------------------------------------------------

CELL = st.text(
    alphabet=st.one_of(
        st.characters(blacklist_categories=("Cs", "Cc")),
        st.sampled_from([",", '"', "\n", "\r", " ", "\t"]),
        st.sampled_from(csv_stream._ASCII_BREAKS + csv_stream._OTHER_BREAKS),  # splitlines breaks, csv does not
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ncols=st.integers(1, 5),
    data=st.data(),
    terminator=st.sampled_from(["\r\n", "\n", "\r"]),
    cuts=st.lists(st.integers(1, 50), min_size=1, max_size=8),
    segment_bytes=st.sampled_from([3, 16, csv_stream.SEGMENT_BYTES]),
    batch_rows=st.integers(1, 7),
)
def test_property_same_rows_and_lines_as_csv_reader(
    ncols: int, data: st.DataObject, terminator: str, cuts: list[int], segment_bytes: int, batch_rows: int
) -> None:
    """Rows, their file lines and the lines of bad records are csv.reader's, whatever the chunking."""
    header = [f"c{i}" for i in range(ncols)]
    width = st.lists(CELL, min_size=ncols, max_size=ncols) | st.lists(CELL, min_size=max(ncols - 1, 1), max_size=ncols + 1)
    table = data.draw(st.lists(st.tuples(width, st.booleans()), max_size=12))
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator=terminator)
    writer.writerow(header)
    for record, blank_before in table:
        buffer.write(terminator if blank_before else "")
        writer.writerow(record)
    text = buffer.getvalue()
    raw = text.encode()
    chunks, position, turn = [], 0, 0
    while position < len(raw):
        size = cuts[turn % len(cuts)]
        chunks.append(raw[position : position + size])
        position, turn = position + size, turn + 1
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(csv_stream, "SEGMENT_BYTES", segment_bytes)
        batches = list(parse_csv(chunks, STR_ONLY, max_field_bytes=1 << 20, batch_rows=batch_rows))
    rows = [row for b in batches for row in b.rows]
    lines = [line for b in batches for line in b.lines]
    bad = [b for batch in batches for b in batch.bad]
    # csv.writer leaves a lone "\r" unquoted when the terminator is "\n", so the table read back may
    # differ from the one written; what must match is csv.reader over the same text.
    records, starts = reader_rows(text)
    good = [(record, line) for record, line in zip(records, starts, strict=True) if len(record) == ncols]
    assert rows == [dict(zip(header, record, strict=True)) for record, _ in good]
    assert lines == [line for _, line in good]
    assert [b.line for b in bad] == [line for record, line in zip(records, starts, strict=True) if len(record) != ncols]
    assert all(b.reason.startswith("expected") for b in bad)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=400), cuts=st.lists(st.integers(1, 40), min_size=1, max_size=5))
def test_property_arbitrary_bytes_after_a_header_never_raise(body: bytes, cuts: list[int]) -> None:
    raw = b"id,name,amount,at\n" + body
    chunks, position, turn = [], 0, 0
    while position < len(raw):
        size = cuts[turn % len(cuts)]
        chunks.append(raw[position : position + size])
        position, turn = position + size, turn + 1
    batches = list(parse_csv(chunks, SCHEMA, max_field_bytes=64, batch_rows=3))
    lines = raw.count(b"\n") + raw.count(b"\r") + 1
    seen = 0
    for batch in batches:
        for row in batch.rows:
            assert list(row) == ["id", "name", "amount", "at"]
            assert row["id"] is None or isinstance(row["id"], int)
        for bad in batch.bad:
            assert 2 <= bad.line <= lines and bad.reason
            bad.raw.encode("utf-8")  # always writable as JSON
        seen += len(batch.rows) + len(batch.bad)
    assert seen <= lines


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=20))
def test_property_bulk_float_parsing_matches_float(values: list[float]) -> None:
    texts = [repr(v) for v in values] + [f"{v:.3f}" for v in values] + [f"{v:e}" for v in values]
    column = columns._float_column(texts)
    assert [repr(v) for v in column] == [repr(float(t)) for t in texts]


@settings(max_examples=200, deadline=None)
@given(
    moments=st.lists(
        st.datetimes(timezones=st.one_of(st.none(), st.timezones())).filter(lambda d: d.year >= 1), min_size=1, max_size=10
    )
)
def test_property_bulk_datetime_normalisation_matches_isoformat(moments: list) -> None:
    texts = [m.isoformat() for m in moments]
    assert list(columns._datetime_column(texts)) == [columns._datetime_value(t) for t in texts]


@pytest.mark.parametrize("other", [b"", b"x,3\n"])
def test_the_64_bit_bounds_themselves_are_valid_ints(other: bytes) -> None:
    """Whether the column converts in bulk or, because of a bad value, value by value."""
    rows, bad = parse(b"id,amount\n9223372036854775807,1\n-9223372036854775808,2\n" + other)
    assert [r["id"] for r in rows] == [2**63 - 1, -(2**63)]
    assert [b.line for b in bad] == ([4] if other else [])
