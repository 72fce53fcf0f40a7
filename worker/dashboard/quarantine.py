"""A sample of an export's quarantined rows (line, reason, raw text), read from wherever its sink put them.

File sinks keep ``<file>.quarantine.jsonl`` beside the output, readable when the dashboard runs where
the files are; ``redis_stream`` keeps a stream; ``postgres`` keeps ``<table>_quarantine``, read with the
database URL from this process's settings. When a sample cannot be read, the page says why instead.
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import psycopg
from psycopg import sql
from pydantic import BaseModel

from worker.api import ExportClient
from worker.models import ExportRecord, FileRecord

REDIS_PREFIX = "redis://"
POSTGRES_PREFIX = "postgres://"


class BadRowSample(BaseModel):
    file: str
    line: int | None
    reason: str
    raw: str


class QuarantineSample(BaseModel):
    rows: list[BadRowSample]
    notes: list[str]
    """Why some files' quarantines could not be read from here."""


def _row(file: FileRecord, item: dict) -> BadRowSample:
    line = item.get("line", item.get("_line"))
    return BadRowSample(
        file=str(item.get("file") or item.get("_file") or file.name),
        line=int(line) if line is not None else None,
        reason=str(item.get("reason", "")),
        raw=str(item.get("raw", "")),
    )


def _from_jsonl(path: str, count: int) -> list[dict]:
    with Path(path).open(encoding="utf-8", errors="replace") as handle:
        return [json.loads(line) for line in islice(handle, count)]


def _from_postgres(client: ExportClient, record: ExportRecord, file: FileRecord, location: str, count: int) -> list[dict]:
    database, _, table = location.removeprefix(POSTGRES_PREFIX).partition("/")
    schema, _, name = table.partition(".")
    configured = client.rt.settings.databases.get(database)
    if configured is None:
        raise LookupError(f"database {database!r} is not configured here (EXPORT_WORKER_DATABASES__{database.upper()}__URL)")
    query = sql.SQL("SELECT _file, _line, reason, raw FROM {} WHERE _export_id = %s AND _file_key = %s ORDER BY _line LIMIT %s")
    with psycopg.connect(configured.url.get_secret_value(), connect_timeout=3) as connection:
        cursor = connection.execute(query.format(sql.Identifier(schema, name)), (record.id, file.key, count))
        return [{"_file": f, "_line": line, "reason": reason, "raw": raw} for f, line, reason, raw in cursor.fetchall()]


def sample(client: ExportClient, record: ExportRecord, files: list[FileRecord], count: int = 20) -> QuarantineSample:
    rows: list[BadRowSample] = []
    notes: list[str] = []
    for file in files:
        if not file.quarantined or not file.quarantine_path or len(rows) >= count:
            continue
        location, wanted = file.quarantine_path, count - len(rows)
        try:
            if location.startswith(REDIS_PREFIX):
                items = client.stream_sample(location.removeprefix(REDIS_PREFIX), wanted)
            elif location.startswith(POSTGRES_PREFIX):
                items = _from_postgres(client, record, file, location, wanted)
            else:
                items = _from_jsonl(location, wanted)
        except (OSError, LookupError, ValueError, psycopg.Error) as exc:
            notes.append(f"{file.name}: {file.quarantined} quarantined row(s) in {location}, not readable from here ({exc})")
            continue
        rows.extend(_row(file, item) for item in items)
    return QuarantineSample(rows=rows, notes=notes)
