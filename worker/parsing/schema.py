"""What a provider knows about the columns of its CSV files.

The header row is the schema: every column of the header is kept, unknown ones as strings; the
columns a provider declares are typed when they are present. A provider may declare several
spellings of one column (``vehicleId`` and ``device_id``) because a declared column that is absent
costs nothing. ``required`` columns, when a provider sets any, decide whether a header is
recognised at all; providers whose column names are unverified set none.
"""

from __future__ import annotations

from collections.abc import Mapping
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

    def with_types(self, overrides: Mapping[str, ColumnType]) -> RowSchema:
        """This schema with some column types replaced or added (``COLUMN_TYPES`` in the settings)."""
        if not overrides:
            return self
        return self.model_copy(update={"types": {**self.types, **overrides}})
