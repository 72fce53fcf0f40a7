"""Column converters: a batch of records becomes typed columns, each column converted at once.

Half of the parser's speed comes from here: one ``orjson`` call parses a whole numeric column,
datetimes already in the usual ``YYYY-MM-DDTHH:MM:SSZ`` form are only validated, and a value that
fails sends only its own column to the exact per-value path. The result stays columnar
(:class:`ParsedBatch`), so each sink encodes whole columns (Arrow arrays for Parquet and PostgreSQL) and only the
sinks that want dicts build them.
"""

from __future__ import annotations

import math
import operator
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from worker.parsing.schema import ColumnType, RowSchema

RAW_LIMIT = 1024
"""Characters of an offending record kept in its :class:`BadRow`."""
HEADER_LINE_CHARS = 1 << 20
"""Longest header line, read before the column count (and so the line limit) is known."""
NUL = 1
BAD_UTF8 = 2
LONG = 4
CUT = 8
"""Segment flags the tokenizer sets and the per-record checks read."""
SURROGATE = re.compile("[\udc80-\udcff]")
SENTINEL = "\x00\x00end-of-segment\x00\x00"
"""The tokenizer's end-of-segment marker; never part of a record's raw text."""
_VALUE_PREVIEW = 60


def line_limit(ncols: int, max_field_bytes: int) -> int:
    """Characters a record of ``ncols`` valid fields can take, so a longer line can be cut.

    A field of ``max_field_bytes`` bytes has at most that many characters; quoted, every one may
    be a doubled ``"``, plus its two quotes and a separator; one more slot covers a ``\\r\\n``.
    """
    return (ncols + 1) * (2 * max_field_bytes + 3)


@dataclass(slots=True)
class BadRow:
    """A record that did not make it; it goes to the quarantine, the file goes on."""

    line: int
    """1-based physical line of the file where the record starts."""
    reason: str
    raw: str
    """The record's text as read (undecodable bytes shown as ``\\xNN``), cut to ~1 KiB."""


@dataclass(slots=True)
class ParsedBatch:
    """Good rows of a batch as converted columns (one per header name), plus its bad rows."""

    names: Sequence[str]
    types: Sequence[ColumnType]
    columns: list[Sequence[Any]]
    lines: Sequence[int]
    """The file line of each good row: ``len(lines)`` is the batch's row count."""
    bad: list[BadRow]
    build: Callable[..., list[dict[str, Any]]]

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The good rows as dicts, built on demand: only sinks that want dicts pay for them."""
        return self.build(*self.columns) if self.lines else []


_ColumnConverter = Callable[[Sequence[str]], Sequence[Any]]
"""Converts a whole column; raises ``ValueError`` when any value is bad (then we go per value)."""
_ValueConverter = Callable[[str], Any]


def _json_numbers(values: Sequence[str], allowed: set[type]) -> tuple[list[Any], set[type]]:
    """Parse a column of numbers with one ``orjson`` call; raise ``ValueError`` unless it is clean.

    Clean means one element per value and only ``allowed`` types: anything that could change the
    shape of the JSON array (``1,2``, ``[1]``, ``"x"``, ``null``) fails that check, and the column goes
    to the exact per-value path instead. Empty values are parsed as ``0`` and then set to ``None``.
    """
    empty = [i for i, value in enumerate(values) if not value] if "" in values else None
    if empty:
        values = [value or "0" for value in values]
    parsed = orjson.loads("[" + ",".join(values) + "]")
    types = set(map(type, parsed))
    if len(parsed) != len(values) or not types <= allowed:
        raise ValueError  # never shown: the caller converts this column value by value instead
    if empty:
        for i in empty:
            parsed[i] = None
    return parsed, types


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""An INT column is 64-bit, as every sink stores it (bigint, int64, JSON numbers other tools read)."""


def _int_column(values: Sequence[str]) -> list[Any]:
    parsed = _json_numbers(values, {int})[0]
    present = [number for number in parsed if number is not None]
    if present and (max(present) > INT64_MAX or min(present) < INT64_MIN):
        raise ValueError  # never shown: the caller converts this column value by value instead
    return parsed


def _int_value(value: str) -> int:
    number = int(value)
    if not INT64_MIN <= number <= INT64_MAX:
        raise ValueError  # outside 64 bits; as for every failed value, the caller writes the reason
    return number


def _float_column(values: Sequence[str]) -> list[Any]:
    parsed, types = _json_numbers(values, {float, int})
    if int in types:  # "5" or "-0": let float() read the text itself
        parsed = [float(text) if type(number) is int else number for number, text in zip(parsed, values, strict=True)]
    return parsed


def _float_value(value: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError  # nan or inf; as for every failed value, the caller writes the reason
    return number


def _iso(value: datetime) -> str:
    """The normalised form: ``datetime.isoformat()``, with a zero UTC offset written ``Z``."""
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _datetime_value(value: str) -> str:
    return _iso(datetime.fromisoformat(value))


_GET_TZ = operator.attrgetter("tzinfo")
_MINUTE = timedelta(minutes=1)
_NORMAL_SEPARATORS = ((4, "-"), (7, "-"), (10, "T"), (13, ":"), (16, ":"))


def _already_normal(values: Sequence[str]) -> bool:
    """Whether validated values are all ``YYYY-MM-DDTHH:MM:SSZ`` (or all without the ``Z``).

    Equal lengths let strided slices of the joined column check one position of every value at once.
    """
    lengths = set(map(len, values))
    if len(lengths) != 1:
        return False
    width = lengths.pop()
    if width not in (19, 20):
        return False
    joined = "".join(values)
    count = len(values)
    if width == 20 and joined[19::20] != "Z" * count:
        return False
    return all(joined[pos::width] == char * count for pos, char in _NORMAL_SEPARATORS)


def _datetime_column(values: Sequence[str]) -> Sequence[Any]:
    """Validate with ``fromisoformat``; normalise in bulk unless the column already is normal.

    ``YYYY-MM-DDTHH:MM:SS`` and ``…Z`` (the usual export formats) are already in normal form, so a
    validated column of only those is returned as is; otherwise ``orjson`` writes the whole column
    (its RFC 3339 output is our normal form for whole-minute offsets).
    """
    if "" in values:
        parsed = [datetime.fromisoformat(value) if value else None for value in values]
    elif _already_normal(values):
        deque(map(datetime.fromisoformat, values), maxlen=0)  # validation only
        return values
    else:
        parsed = list(map(datetime.fromisoformat, values))
    for tz in set(map(_GET_TZ, filter(None, parsed))):
        offset = tz.utcoffset(None) if tz is not None else None
        if offset is not None and offset % _MINUTE:
            return [_iso(value) if value is not None else None for value in parsed]
    out: list[Any] = orjson.loads(orjson.dumps(parsed, option=orjson.OPT_UTC_Z))
    return out


_CONVERTERS: dict[ColumnType, tuple[_ColumnConverter, _ValueConverter, str]] = {
    ColumnType.INT: (_int_column, _int_value, "int"),
    ColumnType.FLOAT: (_float_column, _float_value, "float"),
    ColumnType.DATETIME: (_datetime_column, _datetime_value, "datetime"),
}

_MAX_GENERATED_COLUMNS = 200


def _rows_builder(header: list[str]) -> Callable[..., list[dict[str, Any]]]:
    """A function ``(column0, column1, ...) -> [{name0: v0, name1: v1, ...}, ...]``.

    A generated comprehension with a dict display is ~2x faster than ``dict(zip())`` per row. Only
    generated identifiers go into the source; the (untrusted) column names are closure values.
    """
    n = len(header)
    if n > _MAX_GENERATED_COLUMNS:
        names = tuple(header)
        return lambda *columns: [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    keys = ", ".join(f"k{i}" for i in range(n))
    values = ", ".join(f"v{i}" for i in range(n))
    columns = ", ".join(f"c{i}" for i in range(n))
    body = ", ".join(f"k{i}: v{i}" for i in range(n))
    trailing = "," if n == 1 else ""
    source = (
        f"def factory({keys}):\n"
        f"    def build({columns}):\n"
        f"        return [{{{body}}} for {values}{trailing} in zip({columns})]\n"
        f"    return build\n"
    )
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # noqa: S102 - the source holds generated identifiers only
    build: Callable[..., list[dict[str, Any]]] = namespace["factory"](*header)
    return build


class Plan:
    """Everything decided once from the header: column types, converters per column index, the row builder."""

    def __init__(self, header: list[str], schema: RowSchema, max_field_bytes: int) -> None:
        self.header = header
        self.ncols = len(header)
        self.max_field_bytes = max_field_bytes
        self.max_line_chars = line_limit(self.ncols, max_field_bytes)
        self.typed = [
            (index, *_CONVERTERS[schema.types[name]])
            for index, name in enumerate(header)
            if schema.types.get(name, ColumnType.STR) is not ColumnType.STR
        ]
        self.types = [schema.types.get(name, ColumnType.STR) for name in header]
        self.build_rows = _rows_builder(header)

    def batch(self, columns: list[Sequence[Any]], lines: Sequence[int], bad: list[BadRow]) -> ParsedBatch:
        return ParsedBatch(self.header, self.types, columns, lines, bad, self.build_rows)

    def convert(self, records: list[list[str]], lines: Sequence[int], raw: Callable[[int], str]) -> ParsedBatch:
        """Convert well-formed records (each exactly ``ncols`` fields)."""
        if not records:
            return self.batch([[] for _ in self.header], [], [])
        return self.convert_columns(list(zip(*records, strict=True)), len(records), lines, raw)

    def convert_columns(
        self, columns: list[Sequence[Any]], count: int, lines: Sequence[int], raw: Callable[[int], str]
    ) -> ParsedBatch:
        """Convert column by column; a value that fails makes its row bad, the rest go on."""
        failures: dict[int, str] = {}
        for index, column_converter, value_converter, kind in self.typed:
            try:
                columns[index] = column_converter(columns[index])
            except (ValueError, TypeError, OverflowError):
                columns[index] = self._per_value(columns[index], index, value_converter, kind, failures)
        if not failures:
            return self.batch(columns, lines, [])
        keep = [i for i in range(count) if i not in failures]
        bad = [BadRow(lines[i], reason, clip(raw(i))) for i, reason in sorted(failures.items())]
        return self.batch([[column[i] for i in keep] for column in columns], [lines[i] for i in keep], bad)

    def _per_value(
        self, column: Sequence[str], index: int, convert: _ValueConverter, kind: str, failures: dict[int, str]
    ) -> list[Any]:
        out: list[Any] = []
        append = out.append
        for i, value in enumerate(column):
            if not value:
                append(None)
                continue
            try:
                append(convert(value))
            except (ValueError, TypeError, OverflowError):
                append(None)
                failures.setdefault(i, f"column {self.header[index]!r}: invalid {kind} {_preview(value)}")
        return out

    def check(
        self,
        records: list[list[str]],
        lines: Sequence[int],
        raw: Callable[[int], str],
        flags: int,
        multiline: Sequence[bool] | None,
        bad: list[BadRow],
    ) -> ParsedBatch:
        """Per-record checks, for batches the bulk path cannot take; then convert the good ones."""
        good: list[list[str]] = []
        good_index: list[int] = []
        bad = list(bad)
        for index, record in enumerate(records):
            if not record:  # blank line
                continue
            reason = self._problem(record, flags, multiline is not None and multiline[index])
            if reason is None:
                good.append(record)
                good_index.append(index)
            else:
                bad.append(BadRow(lines[index], reason, clip(raw(index))))
        batch = self.convert(good, [lines[index] for index in good_index], lambda i: raw(good_index[i]))
        if bad:
            batch.bad = sorted(batch.bad + bad, key=operator.attrgetter("line"))
        return batch

    def _problem(self, record: list[str], flags: int, multiline: bool) -> str | None:
        if flags & (NUL | BAD_UTF8):
            joined = "".join(record)
            if "\x00" in joined:
                if flags & CUT:
                    return (
                        f"line longer than {self.max_line_chars} characters was cut off (or the record contains a NUL character)"
                    )
                return "record contains a NUL character"
            match = SURROGATE.search(joined) if flags & BAD_UTF8 else None
            if match:
                return f"invalid UTF-8 (byte 0x{ord(match.group()) - 0xDC00:02x})"
        if flags & LONG or multiline:
            reason = self._oversized(record)
            if reason:
                return reason
        if len(record) != self.ncols:
            return f"expected {self.ncols} columns, got {len(record)}"
        return None

    def _oversized(self, record: list[str]) -> str | None:
        limit = self.max_field_bytes
        quarter = limit // 4
        for index, value in enumerate(record):
            if len(value) > quarter:
                size = len(value.encode("utf-8", "surrogateescape"))
                if size > limit:
                    column = repr(self.header[index]) if index < self.ncols else f"#{index + 1}"
                    return (
                        f"field in column {column} is {size} bytes, more than {limit}; "
                        "raise EXPORT_WORKER_MAX_FIELD_BYTES if such fields are legitimate"
                    )
        return None


def _preview(value: str) -> str:
    shown = value if len(value) <= _VALUE_PREVIEW else value[:_VALUE_PREVIEW] + "…"
    return repr(_printable(shown))


def _printable(text: str) -> str:
    """Undecodable bytes (kept as surrogates) become ``\\xNN`` so the text can be written as JSON."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def clip(text: str) -> str:
    text = text[: RAW_LIMIT + 2].rstrip("\r\n")
    return _printable(text[:RAW_LIMIT].replace(SENTINEL, ""))
