"""What a provider knows about the columns of its CSV files.

The header row is the schema: unknown columns are kept as strings, known ones are typed.
``required`` columns decide whether a header is recognised at all.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class ColumnType(StrEnum):
    STR = "str"
    INT = "int"
    FLOAT = "float"
    DATETIME = "datetime"


class RowSchema(BaseModel):
    model_config = ConfigDict(frozen=True)

    types: dict[str, ColumnType] = {}
    required: frozenset[str] = frozenset()
