"""Where the byte stream is cut into segments must never show: same rows, lines, reasons and raw text."""

from __future__ import annotations

import pytest

from tests.unit.test_csv_stream import SCHEMA, STR_ONLY, parse, parse_every_way, reader_rows, split
from worker.parsing.csv_stream import BadRow, parse_csv

CUT = "line longer than 609 characters was cut off (or the record contains a NUL character)"
TOO_BIG = "field in column 'name' is {} bytes, more than 100; raise EXPORT_WORKER_MAX_FIELD_BYTES if such fields are legitimate"


def chunked(chunks: list[bytes], max_field_bytes: int = 100) -> tuple[list[dict], list[int], list[BadRow]]:
    batches = list(parse_csv(chunks, SCHEMA, max_field_bytes=max_field_bytes))
    return [r for b in batches for r in b.rows], [n for b in batches for n in b.lines], [x for b in batches for x in b.bad]


def test_a_nul_in_a_file_that_is_otherwise_valid_utf8_quarantines_its_row() -> None:
    """The NUL flag alone (no invalid UTF-8 beside it) must send the record to the NUL check."""
    rows, bad = parse_every_way(b"id,name\n1,a\x00b\n2,c\n")
    assert rows == [{"id": 2, "name": "c"}]
    assert [(b.line, b.reason) for b in bad] == [(2, "record contains a NUL character")]


def test_only_the_first_character_of_the_file_is_a_bom() -> None:
    """A U+FEFF starting a later chunk is data, not a byte order mark to strip."""
    rows, bad = parse_every_way("\ufeffname\n\ufeffa\n\ufeff\n".encode(), STR_ONLY)
    assert rows == [{"name": "\ufeffa"}, {"name": "\ufeff"}] and bad == []


def test_a_character_split_by_a_chunk_end_stays_valid_after_a_bad_byte_in_that_chunk() -> None:
    """Decoding a chunk with errors must still wait for the rest of a multi-byte character."""
    data = b"id,name\n1,\xff\n2,caf\xc3\xa9\n"
    expected = ([{"id": 2, "name": "caf\u00e9"}], [(2, "invalid UTF-8 (byte 0xff)")])
    rows, bad = parse_every_way(data)
    assert (rows, [(b.line, b.reason) for b in bad]) == expected
    rows, _, bad = chunked([data[:-2], data[-2:]])
    assert (rows, [(b.line, b.reason) for b in bad]) == expected


@pytest.mark.parametrize(("limit", "char"), [(1, "\u00e9"), (2, "\u20ac"), (3, "\U0001f600")])
def test_a_one_character_field_over_a_tiny_byte_limit_is_caught_at_a_segment_start(limit: int, char: str) -> None:
    """A single multi-byte character is more than 1-3 bytes: the long-run pre-filter must see position 0 too."""
    body = f"a\n1\n{char}\n".encode()
    size = len(char.encode())
    reason = f"field in column 'a' is {size} bytes, more than {limit}; "
    reason += "raise EXPORT_WORKER_MAX_FIELD_BYTES if such fields are legitimate"
    for chunk in range(1, len(body) + 1):
        batches = list(parse_csv(split(body, chunk), STR_ONLY, max_field_bytes=limit))
        assert [r for b in batches for r in b.rows] == [{"a": "1"}], chunk
        assert [(x.line, x.reason) for b in batches for x in b.bad] == [(3, reason)], chunk


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_a_last_line_of_one_multibyte_character_without_a_line_break_is_checked_against_a_tiny_limit(limit: int) -> None:
    """The final segment is one character long: under 4 bytes of limit, even a one-character run is checked."""
    char = "\U0001f600"
    batches = list(parse_csv([f"a\n1\n{char}".encode()], STR_ONLY, max_field_bytes=limit))
    reason = (
        f"field in column 'a' is 4 bytes, more than {limit}; raise EXPORT_WORKER_MAX_FIELD_BYTES if such fields are legitimate"
    )
    assert [r for b in batches for r in b.rows] == [{"a": "1"}]
    assert [(x.line, x.reason) for b in batches for x in b.bad] == [(3, reason)]


def test_a_cut_line_with_an_open_quote_is_quarantined_as_cut_and_the_lines_after_it_parse() -> None:
    """The cut line is parsed alone, as if the file ended there: its reason is the cut, not the open quote."""
    data = b'id,name\n1,a\n2,"' + b"y" * 700 + b"\n3,b\n4,c\n"
    for size in (1, 7, 64):
        rows, lines, bad = chunked(split(data, size))
        assert [r["id"] for r in rows] == [1, 3, 4] and lines == [2, 4, 5], size
        assert [(b.line, b.reason) for b in bad] == [(3, CUT)], size


@pytest.mark.parametrize(("ys", "cut"), [(607, False), (608, True)])
def test_a_line_of_exactly_the_limit_after_a_waiting_cr_is_not_cut(ys: int, cut: bool) -> None:
    """The "\\r" of line 2 waits for a possible "\\n"; split off, the 609-character line 3 is within the limit."""
    rows, lines, bad = chunked([b"id,name\n1,a\r", b"2," + b"y" * ys, b"\n3,b\n"])
    assert rows == [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}] and lines == [2, 4]
    assert [(b.line, b.reason) for b in bad] == [(3, CUT if cut else TOO_BIG.format(ys))]


def test_a_long_line_ending_in_cr_just_before_its_chunk_ends_keeps_the_next_line() -> None:
    """A "\\r" one character before the end of a chunk is a complete line break, not one that waits."""
    rows, lines, bad = chunked([b"id,name\n1,a\n", b"2," + b"y" * 700 + b"\r3", b",b\r4,c\r"])
    assert [r["id"] for r in rows] == [1, 3, 4] and lines == [2, 4, 5]
    assert [(b.line, b.reason) for b in bad] == [(3, TOO_BIG.format(700))]


@pytest.mark.parametrize("before", ["\n", "\n\r", "\n\n", "\r\n\r"])
def test_a_cut_line_keeps_exactly_the_limit_of_its_text_whatever_line_break_precedes_it(before: str) -> None:
    """The quarantined text of a cut line is its first 609 characters (the cut marker aside), also after a blank line."""
    line = "2," + "y" * 700
    chunks = [f"id,name\n1,a{before}".encode()[:-1], (before[-1] + line).encode(), b"\n3,b\n"]
    rows, lines, bad = chunked(chunks)
    blank = len(before) - 1 - before.count("\r\n")
    assert [r["id"] for r in rows] == [1, 3] and lines == [2, 4 + blank]
    assert [(b.line, b.reason) for b in bad] == [(3 + blank, CUT)]
    assert bad[0].raw.rstrip("\x00") == line[:609]


def test_old_mac_lines_held_back_past_the_line_limit_split_inside_a_quoted_field() -> None:
    """Byte by byte, "\\r" lines pile up until the line limit; the part split off ends inside quotes and must wait."""
    text = "id,name\n" + "2,b\r" * 150 + '3,"p\r' + "q" * 10 + '"\r4,c\r'
    rows, bad = parse_every_way(text.encode(), STR_ONLY, max_field_bytes=100)
    records, _ = reader_rows(text)
    assert rows == [dict(zip(["id", "name"], record, strict=True)) for record in records] and bad == []
    assert rows[-2] == {"id": "3", "name": "p\r" + "q" * 10}


def test_lines_after_a_quote_given_up_mid_segment_keep_their_numbers() -> None:
    """The runaway record starts on the segment's second line: parsing resumes at the next segment's true line."""
    chunks = [b"id,name\n", b'1,a\n2,"never closed\n' + b"3,b\n" * 200, b"4,c\n5,d\n"]
    rows, lines, bad = chunked(chunks)
    assert [r["id"] for r in rows] == [1, 4, 5] and lines == [2, 204, 205]
    assert [(b.line, b.reason) for b in bad] == [(3, "unterminated quoted field: record is longer than 609 characters")]


def test_a_bad_record_spanning_lines_is_quarantined_with_its_text_as_read() -> None:
    rows, bad = parse_every_way(b'id,name\n1,"a\nb"\nx,"c\r\nd"\n3,e\n')
    assert [r["id"] for r in rows] == [1, 3]
    assert [(b.line, b.reason, b.raw) for b in bad] == [(4, "column 'id': invalid int 'x'", 'x,"c\r\nd"')]


def test_a_csv_error_row_survives_a_quoted_record_running_past_its_segment(small_csv_field_limit: None) -> None:
    """The segment ends inside the quoted field of line 4: line 3's csv.Error must still be quarantined."""
    data = b"id,name\n1,a\n2," + b"y" * 1500 + b'\n3,"a\nb"\n4,c\n'
    reason = "a field is larger than 400 bytes; raise EXPORT_WORKER_MAX_FIELD_BYTES if such fields are legitimate"
    at = data.index(b"b")
    for chunks in ([data], [data[:12], data[12:at], data[at:]]):
        rows, lines, bad = chunked(chunks, max_field_bytes=400)
        assert [r["id"] for r in rows] == [1, 3, 4] and lines == [2, 4, 6], chunks
        assert [(b.line, b.reason) for b in bad] == [(3, reason)], chunks


def test_a_cut_line_at_end_of_file_keeps_its_reason_beside_a_truncated_character() -> None:
    """The last line is cut, then the file ends mid-character: still "cut off", not a plain NUL."""
    rows, bad = parse(b"id,name\n1,a\n2," + b"y" * 700 + b"\xe2\x82", size=64, max_field_bytes=100)
    assert [r["id"] for r in rows] == [1]
    assert [(b.line, b.reason) for b in bad] == [(3, CUT)]
