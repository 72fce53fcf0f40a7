"""Column conversion: the bulk fast paths must give exactly what the per-value path gives.

A typed column is converted in one go (one ``orjson`` call for numbers, a strided check for
datetimes already in normal form); one bad value sends the whole column value by value instead.
So the same values, once with and once without a bad value beside them, must come out the same:
these tests feed columns shaped to pass a fast path's shortcuts (equal widths, a width one off the
normal form, compact ISO forms, empties next to numbers, offsets with seconds) and compare.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Sequence
from typing import Any

import pytest

from worker.parsing.columns import Plan
from worker.parsing.csv_stream import BadRow, ParsedBatch, parse_csv
from worker.parsing.schema import ColumnType, RowSchema

SCHEMA = RowSchema(types={"i": ColumnType.INT, "f": ColumnType.FLOAT, "t": ColumnType.DATETIME})
BAD = "x"
"""Invalid for every typed column: beside it, the column takes the exact per-value path."""

INTS = ["0", "-0", "7", "-12", " 5", "9223372036854775807", "-9223372036854775808", "9223372036854775808", "1_000", ""]
FLOATS = ["1.5", "-0", "5", "-2.5e-3", "1e308", "1e309", ""]
DT_19 = ["2024-01-01T00:00:00", "1999-12-31T12:30:45", "20240101T000000.123", "2024-01-01 00:00:00"]
DT_20 = ["2024-01-01T00:00:00Z", "2024-02-29T23:59:59Z", "20240101T000000+0100", "2024-01-01 00:00:00Z"]
DT_21 = ["2024-01-01T00:00:00.5", "1999-12-31T12:30:45.1", "2024-01-01T00:00+0100"]
DT_OTHER = ["2024-01-01T00:00:00+01:00", "2024-01-01T00:00:00-05:30", "2024-01-01T00:00:00+00:00:30", "2024-01-01", ""]
POOLS: dict[str, tuple[str, list[str]]] = {
    "int": ("i", INTS),
    "float": ("f", FLOATS),
    "dt19": ("t", DT_19),
    "dt20": ("t", DT_20),
    "dt21": ("t", DT_21),
    "dt19+21": ("t", DT_19 + DT_21),
    "dt-all": ("t", DT_19 + DT_20 + DT_21 + DT_OTHER),
}


def columns_from(pool: list[str], seed: int) -> list[list[str]]:
    """Every column of one or two values from ``pool``, plus longer seeded random ones."""
    pick = random.Random(seed)
    short = [list(values) for size in (1, 2) for values in itertools.product(pool, repeat=size)]
    return short + [[pick.choice(pool) for _ in range(pick.randint(3, 9))] for _ in range(60)]


def parse(body: str) -> tuple[list[dict[str, Any]], list[BadRow], list[ParsedBatch]]:
    batches = list(parse_csv([body.encode("utf-8", "surrogateescape")], SCHEMA, max_field_bytes=1024, batch_rows=1000))
    return [row for b in batches for row in b.rows], [bad for b in batches for bad in b.bad], batches


def table(name: str, values: Sequence[str]) -> str:
    """A CSV with a string key beside the typed column, so an empty value is not a blank line."""
    return f"k,{name}\n" + "".join(f"{k},{value}\n" for k, value in enumerate(values))


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_a_bad_value_beside_a_column_changes_none_of_its_values(pool: str) -> None:
    """The bulk answer for a column equals the per-value answer that one bad value forces."""
    name, values_pool = POOLS[pool]
    for values in columns_from(values_pool, seed=len(pool)):
        bulk_rows, bulk_bad, _ = parse(table(name, values))
        exact_rows, exact_bad, _ = parse(table(name, [*values, BAD]))
        assert [(b.line, b.reason) for b in exact_bad] == [(b.line, b.reason) for b in bulk_bad] + [
            (len(values) + 2, f"column {name!r}: invalid {SCHEMA.types[name]} {BAD!r}")
        ], values
        assert json.dumps(bulk_rows) == json.dumps(exact_rows), values  # tells -0.0 from 0.0 and 5 from 5.0


def convert(values: Sequence[str]) -> tuple[list[Any], list[tuple[int, str]]]:
    """One DATETIME column through the plan ``csv_stream`` uses; the good values and the bad lines."""
    plan = Plan(["t"], SCHEMA, 1024)
    batch = plan.convert_columns([list(values)], len(values), range(1, len(values) + 1), values.__getitem__)
    return list(batch.columns[0]), [(b.line, b.reason) for b in batch.bad]


@pytest.mark.parametrize("width", [1, 2, 5])
def test_the_plan_normalises_whatever_fromisoformat_accepts_on_either_path(width: int) -> None:
    """CPython 3.11's ``fromisoformat`` takes a trailing NUL: the 20-character form must still be written out.

    ``csv_stream`` quarantines NUL records before conversion, so this holds the column plan to its
    own promise (normal form, bulk equal to per-value) whatever its caller filters.
    """
    values = ["2024-01-01T00:00:00\x00"] * width
    bulk, bulk_bad = convert(values)
    exact, exact_bad = convert([*values, BAD])
    assert exact_bad == [(width + 1, f"column 't': invalid datetime {BAD!r}")]
    assert (bulk, bulk_bad) == (exact[:width], [])
    assert all("\x00" not in value for value in bulk)


@pytest.mark.parametrize(
    ("values", "normal"),
    [
        (["2024-01-01T00:00:00.5", "1999-12-31T12:30:45.1"], ["2024-01-01T00:00:00.500000", "1999-12-31T12:30:45.100000"]),
        (["20240101T000000.123", "19991231T123045.500"], ["2024-01-01T00:00:00.123000", "1999-12-31T12:30:45.500000"]),
        (["2024-01-01T00:00:00", "2024-01-01T00:00:00.5"], ["2024-01-01T00:00:00", "2024-01-01T00:00:00.500000"]),
        (["2024-01-01T00:00:00Z", "2024-01-01T00:00:00.5Z"], ["2024-01-01T00:00:00Z", "2024-01-01T00:00:00.500000Z"]),
        (["2024-01-01T00:00:00+00:00:30", ""], ["2024-01-01T00:00:00+00:00:30", None]),
        (
            ["", "2024-01-01T00:00:00-00:00:30", "2024-01-01T00:00:00+01:00"],
            [None, "2024-01-01T00:00:00-00:00:30", "2024-01-01T00:00:00+01:00"],
        ),
    ],
)
def test_datetime_columns_that_look_almost_normal_are_written_in_normal_form(values: list[str], normal: list[str | None]) -> None:
    """Widths one off the usual form, compact ISO, mixed widths: none is passed through unnormalised."""
    rows, bad, _ = parse(table("t", values))
    assert bad == []
    assert [row["t"] for row in rows] == normal


@pytest.mark.parametrize(
    ("values", "typed"),
    [
        (["5", ""], [5, None]),
        (["", "-7", ""], [None, -7, None]),
        (["", ""], [None, None]),
        (["9223372036854775807", "", "-9223372036854775808"], [2**63 - 1, None, -(2**63)]),
    ],
)
def test_empty_int_values_are_none_and_the_others_keep_their_place(values: list[str], typed: list[int | None]) -> None:
    """An empty INT value is ``None`` in its own row; no number moves to a neighbouring row."""
    rows, bad, _ = parse(table("i", values))
    assert bad == []
    assert [(row["k"], row["i"]) for row in rows] == [(str(k), value) for k, value in enumerate(typed)]


def test_a_batch_of_only_bad_records_still_has_one_empty_column_per_name() -> None:
    """Sinks zip ``columns`` with ``names`` and ``types``: a batch with no good row keeps that shape."""
    _, bad, batches = parse("i,f,t\n1,2\n3,4,5,6\n")
    assert [(b.line, b.reason) for b in bad] == [(2, "expected 3 columns, got 2"), (3, "expected 3 columns, got 4")]
    assert [(list(b.names), [list(c) for c in b.columns], list(b.lines), b.rows) for b in batches] == [
        (["i", "f", "t"], [[], [], []], [], [])
    ]
