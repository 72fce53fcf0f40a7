"""The real PostgreSQL the tests load into (127.0.0.1:5432, trust auth, database ``test``), one schema per run."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

TEST_DATABASE_URL = os.environ.get("AEW_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def unique_schema() -> str:
    return f"aew_test_{uuid.uuid4().hex[:10]}"


@contextmanager
def scratch_schema(name: str | None = None) -> Iterator[str]:
    """A schema name for this run; whatever a test created in it is dropped afterwards."""
    schema = name or unique_schema()
    try:
        yield schema
    finally:
        with psycopg.connect(TEST_DATABASE_URL, autocommit=True) as conn:
            # A transaction the code under test leaked would make the DROP wait forever: fail instead.
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def query(statement: str | sql.Composed, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(TEST_DATABASE_URL) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        return conn.execute(statement, params or None).fetchall()


def table_rows(schema: str, table: str, columns: str = "id, name, amount, at", **where: str) -> list[dict[str, Any]]:
    """Rows in load order (export, file, line), optionally only ``where`` column = value."""
    names = [name.strip() for name in columns.split(",")]
    condition = (
        sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(key)) for key in where) if where else sql.SQL("true")
    )
    statement = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY _export_id, _file_key, _line").format(
        sql.SQL(", ").join(map(sql.Identifier, names)), sql.Identifier(schema, table), condition
    )
    return [dict(zip(names, row, strict=True)) for row in query(statement, *where.values())]
