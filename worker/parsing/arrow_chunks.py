"""The fast path: a chunk of whole records parsed and converted by Arrow's C++ CSV reader.

A chunk is taken only when Arrow's answer is provably the exact parser's (:mod:`worker.parsing.csv_stream`):
otherwise :meth:`ChunkReader.read` returns None and the caller parses the chunk exactly. Arrow's
tokenizer is ``csv.reader``'s (non-strict, excel dialect: a quote opens a field only at its start, a
closing quote followed by text goes on unquoted, doubled quotes inside quotes); what it is more
lenient about is closed here:

- **Structure.** Every physical line must be exactly one record: Arrow's row count equals the
  chunk's line count, so no blank line, no line break inside quotes, and the line numbers are a
  plain range. A wrong field count fails Arrow's parse. No NUL byte, valid UTF-8 (Python's strict
  decoder decides).
- **Null spellings.** Only the empty field is null (``null_values=[""]``), and only in typed
  columns, as in the exact parser; text columns keep ``""``.
- **Ints.** Arrow also reads ``0x1F`` as hex: a chunk holding ``0x``/``0X`` is parsed exactly. Its other
  forms (digits with a ``-`` sign, spaces or tabs around) are ``int()``'s with the same value.
- **Floats.** Arrow also reads ``nan``/``inf``, which the exact parser refuses: any non-finite value
  sends the chunk to the exact parser. Its finite forms are ``float()``'s, correctly rounded.
- **Datetimes** are taken only as ``YYYY-MM-DDTHH:MM:SS`` with or without ``Z`` (the exact parser's
  normal form, so the text is the value): a regular expression, then ``strptime`` and ``strftime``
  back, which must give the same text (no 30 February, no 24:00). Any other form goes the exact way.
- **Field size.** A field over ``max_field_bytes`` is impossible when no run of that many bytes lacks
  a line break; otherwise text columns are measured and a chunk with numeric columns goes the exact way.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from worker.parsing.columns import BadRow, Plan
from worker.parsing.schema import ColumnType

ARROW_TYPES = {ColumnType.INT: pa.int64(), ColumnType.FLOAT: pa.float64(), ColumnType.STR: pa.string()}
"""How each column is read; a datetime column is read as text and checked (see the module docstring)."""
_DATETIME_TEXT = r"^(?:[1-9]\d{3}|0[1-9]\d{2}|00[1-9]\d|000[1-9])-\d\d-\d\dT\d\d:\d\d:\d\dZ?$"
_DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


@dataclass(slots=True)
class ArrowBatch:
    """Good rows of a clean chunk as an Arrow table: int64, float64 and string columns (datetimes as their text)."""

    names: Sequence[str]
    types: Sequence[ColumnType]
    table: pa.Table
    """One chunk per column."""
    lines: range
    """The file line of each row (one line a row)."""
    bad: list[BadRow] = field(default_factory=list)
    """Always empty: a chunk with a bad record is parsed exactly."""

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The rows as dicts, as the exact parser gives them (only the Redis-stream sink wants them)."""
        return self.table.to_pylist()

    def slice(self, start: int, stop: int) -> ArrowBatch:
        return ArrowBatch(self.names, self.types, self.table.slice(start, stop - start), self.lines[start:stop])


class ChunkReader:
    """Reads chunks of one file (its header's plan) with Arrow, or says the chunk needs the exact parser."""

    def __init__(self, plan: Plan, max_field_bytes: int) -> None:
        self.plan = plan
        self.max_field_bytes = max_field_bytes
        names = [f"c{index}" for index in range(plan.ncols)]
        self._names = names
        self._parse = pacsv.ParseOptions(
            delimiter=",", quote_char='"', double_quote=True, escape_char=False, newlines_in_values=True, ignore_empty_lines=True
        )
        self._convert = pacsv.ConvertOptions(
            column_types={name: ARROW_TYPES.get(kind, pa.string()) for name, kind in zip(names, plan.types, strict=True)},
            null_values=[""],
            strings_can_be_null=False,
            quoted_strings_can_be_null=True,
            check_utf8=True,
        )
        self._ints = ColumnType.INT in plan.types
        self._numbers = self._ints or ColumnType.FLOAT in plan.types
        self._texts = [i for i, kind in enumerate(plan.types) if kind in (ColumnType.STR, ColumnType.DATETIME)]

    def read(self, data: bytes, first_line: int) -> ArrowBatch | None:
        """``data`` (whole records, ending at a line break) as a batch, or None when in any doubt."""
        if b"\x00" in data or not _strict_utf8(data):
            return None
        if self._ints and _hex_possible(data):
            return None
        oversize_possible = _long_run(data, self.max_field_bytes)
        if oversize_possible and self._numbers:
            return None
        try:
            table = pacsv.read_csv(
                pa.py_buffer(data),
                read_options=self._whole_block(len(data)),
                parse_options=self._parse,
                convert_options=self._convert,
            )
        except pa.ArrowException:
            return None  # a wrong field count, a value that does not convert, ...
        lines = _line_count(data)
        if table.num_rows != lines:
            return None  # a blank line or a line break inside quotes: line numbers need the exact parser
        try:
            checked = self._checked(table, oversize_possible)
        except pa.ArrowException:
            return None
        if checked is None:
            return None
        checked = checked.rename_columns(list(self.plan.header)).combine_chunks()
        return ArrowBatch(self.plan.header, self.plan.types, checked, range(first_line, first_line + lines))

    def _whole_block(self, size: int) -> pacsv.ReadOptions:
        """The chunk as one block, parsed on this thread: one chunk per column, nothing to combine.

        The transfer already keeps both cores busy (download and parse on one thread, encoding and
        writing on others); Arrow's own threads only added their overhead: measured on 1.66 M rows in
        4 MiB chunks, 0.48 s of CPU this way against 0.62 s with ``use_threads`` and 1 MiB blocks,
        whose columns then had to be combined.
        """
        return pacsv.ReadOptions(column_names=self._names, block_size=size + 1, use_threads=False)

    def _checked(self, table: pa.Table, oversize_possible: bool) -> pa.Table | None:
        """The table with empty datetimes as nulls, or None when a column holds what Arrow must not decide."""
        if oversize_possible:
            for index in self._texts:
                longest = pc.max(pc.binary_length(table.column(index))).as_py()
                if longest is not None and longest > self.max_field_bytes:
                    return None
        for index, kind in enumerate(self.plan.types):
            column = table.column(index)
            if kind is ColumnType.FLOAT and column.null_count < len(column) and not pc.all(pc.is_finite(column)).as_py():
                return None
            if kind is ColumnType.DATETIME:
                column = pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)
                if not _normal_datetimes(column):
                    return None
                table = table.set_column(index, table.field(index), column)
        return table


def _normal_datetimes(column: pa.ChunkedArray) -> bool:
    """Every value is ``YYYY-MM-DDTHH:MM:SS[Z]`` and a real moment that ``strftime`` gives back unchanged."""
    if column.null_count == len(column):
        return True
    if not pc.all(pc.match_substring_regex(column, _DATETIME_TEXT)).as_py():
        return False
    naive = pc.utf8_rtrim(column, characters="Z")
    moments = pc.strptime(naive, format=_DATETIME_FORMAT, unit="s", error_is_null=True)
    if moments.null_count != column.null_count:
        return False
    return bool(pc.all(pc.equal(pc.strftime(moments, format=_DATETIME_FORMAT), naive)).as_py())


def datetimes(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """A checked datetime text column as ``timestamp[us, UTC]``: ``Z`` or not, the time is UTC, as in every sink."""
    moments = pc.strptime(pc.utf8_rtrim(column, characters="Z"), format=_DATETIME_FORMAT, unit="us")
    return moments.cast(pa.timestamp("us", tz="UTC"))


def _strict_utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        codecs.utf_8_decode(data, "strict", True)
    except UnicodeDecodeError:
        return False
    return True


_HEX_LOOK_BYTES = 1024
"""One letter ``x``/``X`` per this many bytes is looked at one by one before a plain search for ``0x``/``0X``
takes over: a look costs less than searching this many bytes for two bytes."""


def _hex_possible(data: bytes) -> bool:
    """Whether ``data`` holds ``0x`` or ``0X``.

    A one-byte search (memchr) is ~20x faster than a two-byte one, and an ``x`` is rare in most
    files: each one found is checked for a ``0`` before it, up to one per :data:`_HEX_LOOK_BYTES`.
    """
    find = data.find
    looks = len(data) // _HEX_LOOK_BYTES + 1
    for letter, prefix in ((b"x", b"0x"), (b"X", b"0X")):
        at = find(letter, 1)
        for _ in range(looks):
            if at < 0:
                break
            if data[at - 1] == 0x30:  # "0"
                return True
            at = find(letter, at + 1)
        else:
            if find(prefix, at - 1) >= 0:
                return True
    return False


def _line_count(data: bytes) -> int:
    """Physical lines ending in ``\n``, ``\r\n`` or ``\r``; the ``\r`` counts (slower) only when there is one."""
    lines = data.count(b"\n")
    if b"\r" in data:
        lines += data.count(b"\r") - data.count(b"\r\n")
    return lines


def _long_run(data: bytes, limit: int) -> bool:
    """Whether ``data`` may hold more than ``limit`` bytes without a line break (conservative, in C)."""
    if len(data) <= limit:
        return False
    step = max(limit // 2, 1)
    find = data.find
    for position in range(0, len(data), step):
        end = position + step
        if find(b"\n", position, end) < 0 and find(b"\r", position, end) < 0:
            return True
    return False
