"""Arrow batches as the exact path's text, built column-wise in Arrow's C++ kernels: JSON Lines.

Each column becomes one string array of its values as text (escaped where needed), and one
``binary_join_element_wise`` glues the columns and the fixed fragments between them into one string
per row; the rows are then the array's data buffer, written as is. No Python object per value.

JSON Lines must be byte for byte what ``orjson.dumps`` of each row dict gives (the exact path's
output): ints are Arrow's decimal text; floats are Arrow's shortest round-trip text, which is
orjson's where both write plain decimals, 1e-5 to 1e10 and zero (plus ``.0`` on integral values),
so a column with a value outside that band is written through orjson instead; text gets orjson's
escapes.
"""

from __future__ import annotations

from typing import TypeAlias

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from worker.parsing.arrow_chunks import ArrowBatch
from worker.parsing.schema import ColumnType

_Part: TypeAlias = "pa.Array | pa.ChunkedArray | str"
_SHORT_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
_PLAIN_LOW, _PLAIN_HIGH = 1e-5, 1e10
"""Where Arrow's and orjson's float text agree (both plain decimal notation)."""


def _marking(chars: bytes) -> bytes:
    """A translate table that maps ``chars`` to 0 and every other byte to 1."""
    return bytes(0 if byte in chars else 1 for byte in range(256))


_JSON_SPECIAL = _marking(bytes(range(0x20)) + b'"\\')


def jsonl(batch: ArrowBatch) -> list[pa.Buffer]:
    """The batch's rows as JSON Lines, one buffer per chunk of the table."""
    parts: list[_Part] = []
    closing = ""
    for index, (name, kind) in enumerate(zip(batch.names, batch.types, strict=True)):
        column = batch.table.column(index)
        quoted = kind is ColumnType.STR  # never null: its quotes go into the fixed fragments
        parts.append(closing + ("{" if index == 0 else ",") + orjson.dumps(name).decode() + (':"' if quoted else ":"))
        parts.append(_json_text(column) if quoted else _json_values(column, kind))
        closing = '"' if quoted else ""
    parts.append(closing + "}\n")
    return _joined(parts)


def _joined(parts: list[_Part]) -> list[pa.Buffer]:
    rows = pc.binary_join_element_wise(*parts, "")
    chunks = rows.chunks if isinstance(rows, pa.ChunkedArray) else [rows]
    return [_text_bytes(chunk) for chunk in chunks if len(chunk)]


def _text_bytes(array: pa.Array) -> pa.Buffer:
    """The concatenated values of a string array: its data buffer between its first and last offset."""
    offsets = memoryview(array.buffers()[1]).cast("i")  # type: ignore[arg-type]
    start, end = offsets[array.offset], offsets[array.offset + len(array)]
    data = array.buffers()[2]
    assert data is not None
    return data.slice(start, end - start)


def _json_values(column: pa.ChunkedArray, kind: ColumnType) -> pa.ChunkedArray | pa.Array:
    if kind is ColumnType.INT:
        return pc.fill_null(column.cast(pa.string()), "null")
    if kind is ColumnType.FLOAT:
        return _json_floats(column)
    return pc.fill_null(pc.binary_join_element_wise('"', column, '"', ""), "null")  # datetimes: checked text


def _json_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return _json_escaped(column) if _holds_any(column, _JSON_SPECIAL) else column


def _holds_any(column: pa.ChunkedArray, special: bytes) -> bool:
    """Whether any value holds a byte marked 0 in ``special`` (a translate table): one pass over the text
    buffer in C, where a regular expression per value cost ~30 ns a value."""
    return any(b"\x00" in _text_bytes(chunk).to_pybytes().translate(special) for chunk in column.chunks if len(chunk))


def _json_floats(column: pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
    if column.null_count == len(column):
        return pc.fill_null(column.cast(pa.string()), "null")
    low, high = pc.min_max(pc.abs(column)).values()
    if not (_PLAIN_LOW <= low.as_py() and high.as_py() < _PLAIN_HIGH):
        magnitude = pc.abs(column)
        band = pc.and_(pc.greater_equal(magnitude, _PLAIN_LOW), pc.less(magnitude, _PLAIN_HIGH))
        if pc.all(pc.or_(pc.equal(magnitude, 0.0), band)).as_py() is False:  # exact, slower: orjson writes the column
            values = orjson.dumps(column.to_pylist())[1:-1].decode().split(",")
            return pa.array(values, type=pa.string())
    text = column.cast(pa.string())
    whole = pc.equal(pc.floor(column), column)  # Arrow writes 5.0 as "5", orjson as "5.0"
    if pc.any(whole).as_py():
        text = pc.if_else(whole, pc.binary_join_element_wise(text, ".0", ""), text)
    return pc.fill_null(text, "null")


def _json_escaped(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """orjson's escapes: backslash and quote, the short forms, and ``\\u00XX`` for other control characters."""
    column = pc.replace_substring(column, "\\", "\\\\")
    column = pc.replace_substring(column, '"', '\\"')
    for code in range(0x20):
        char = chr(code)
        column = pc.replace_substring(column, char, _SHORT_ESCAPES.get(char, f"\\u{code:04x}"))
    return column
