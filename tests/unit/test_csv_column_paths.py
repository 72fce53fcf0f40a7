"""The parser's bulk column conversion is an optimisation: it must give exactly the per-value answer.

Each typed column is converted in one go (``orjson`` for numbers, a strided check for datetimes
already in normal form) and only falls back value by value when that fails. These properties feed
columns mixing every shape the fast paths special-case and compare the rows with a plain
reference: ``int``, finite ``float``, ``datetime.fromisoformat`` written back with ``Z`` for UTC.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.parsing.csv_stream import parse_csv
from worker.parsing.schema import ColumnType, RowSchema

INTS = [
    "0",
    "-0",
    "7",
    "-12",
    "007",
    "+5",
    "1_000",
    "99999999999999999999",
    "9223372036854775807",
    "18446744073709551615",
    "5.0",
    "1e3",
    "x",
    "[1]",
    "null",
    "",
]
FLOATS = ["1.5", "-0", "-0.0", "5", "007", ".5", "5.", "1e308", "1e309", "nan", "inf", "-2.5e-3", "x", "true", ""]
NORMAL_Z = ["2024-01-01T00:00:00Z", "2024-02-29T23:59:59Z", "2024-13-01T00:00:00Z", "2024-01-01 00:00:00Z"]
NORMAL = ["2024-01-01T00:00:00", "1999-12-31T12:30:45", "2024-01-01 00:00:00", "2024-01-01T25:00:00"]
OTHER_TIMES = [
    "2024-01-01T00:00:00+01:00",
    "2024-01-01T00:00:00+00:00",
    "2024-01-01T00:00:00.123456Z",
    "2024-01-01T00:00:00+00:00:30",
    "2024-01-01",
    "2024-01-01T00:00",
    "garbage",
    "",
]

SCHEMA = RowSchema(types={"i": ColumnType.INT, "f": ColumnType.FLOAT, "t": ColumnType.DATETIME})


def as_int(value: str) -> int:
    number = int(value)
    if not -(2**63) <= number < 2**63:
        raise ValueError(value)
    return number


def as_float(value: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(value)
    return number


def as_datetime(value: str) -> str:
    text = datetime.fromisoformat(value).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


REFERENCE = {"i": as_int, "f": as_float, "t": as_datetime}


def expected_rows(rows: list[dict[str, str]]) -> tuple[list[dict[str, Any]], int]:
    good: list[dict[str, Any]] = []
    bad = 0
    for row in rows:
        try:
            good.append({name: REFERENCE[name](value) if value else None for name, value in row.items()})
        except ValueError:
            bad += 1
    return good, bad


def column(pool: list[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(pool), min_size=1, max_size=12)


@st.composite
def tables(draw: st.DrawFn) -> list[dict[str, str]]:
    ints = draw(st.one_of(column(INTS), column(INTS[:7])))
    floats = draw(st.one_of(column(FLOATS), column(FLOATS[:8])))
    times = draw(st.one_of(column(NORMAL_Z), column(NORMAL), column(NORMAL_Z + NORMAL + OTHER_TIMES)))
    size = min(len(ints), len(floats), len(times))
    return [{"i": ints[k], "f": floats[k], "t": times[k]} for k in range(size)]


@settings(max_examples=120, deadline=None)
@given(rows=tables())
def test_bulk_conversion_gives_the_per_value_answer(rows: list[dict[str, str]]) -> None:
    body = "i,f,t\n" + "".join(f"{row['i']},{row['f']},{row['t']}\n" for row in rows)
    batches = list(parse_csv([body.encode()], SCHEMA, max_field_bytes=1024, batch_rows=1000))
    good = [row for batch in batches for row in batch.rows]
    bad = [row for batch in batches for row in batch.bad]
    want, want_bad = expected_rows(rows)
    assert json.dumps(good) == json.dumps(want)  # tells -0.0 from 0.0 and 5 from 5.0
    assert len(bad) == want_bad
