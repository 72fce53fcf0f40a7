"""Filtered, paginated listings of exports and the Needs-attention list, read through the store's bulk queries.

The ``exports`` index is ordered by creation time only, so a filter on status, provider, schedule or
error text walks it newest first in batches (one MGET per batch) until the page is full; pages are
keyset-paginated (``before`` = the last export shown), so page N never re-reads pages 1..N-1. A walk
stops after ``scan_limit`` records and says so, rather than reading a whole large store per request.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, Field

from worker.attention import Concern, concern, failure_stage, hold_bucket
from worker.models import ExportRecord, ExportStatus, FailureStage, FileStatus, JobStatus
from worker.store import ExportStore
from worker.store.queries import SCAN_BATCH, Cursor, Index

DEFAULT_SCAN_LIMIT = 20_000
FILES_CHUNK = 1_000
"""File records per MGET when a page needs files (failed exports' stages, downloads that may be stuck)."""
FAILED_SHOWN = 100
"""Failures on the Needs-attention list, newest first; the rest are one click away (All exports, status FAILED)."""


class ExportFilter(BaseModel):
    """What the All-exports page and ``/api/exports`` filter on; every field is also a URL query parameter."""

    status: ExportStatus | None = None
    provider: str | None = None
    schedule: str | None = None
    since: float | None = None
    """Created at or after (Unix time)."""
    until: float | None = None
    """Created at or before (Unix time)."""
    text: str | None = Field(None, max_length=200)
    """Case-insensitive text in the error or a warning."""

    @property
    def needles(self) -> list[str]:
        """Text every matching record's stored JSON contains: its own ``"field":"value"`` pairs as pydantic
        writes them (no spaces). A necessary condition only, so Redis can drop most records unparsed."""
        pairs = [("status", self.status.value if self.status else None), ("provider", self.provider), ("schedule", self.schedule)]
        return [f'"{name}":{json.dumps(value, ensure_ascii=False)}' for name, value in pairs if value]

    @property
    def folded(self) -> list[str]:
        """The error text, lower-cased, when the stored JSON spells it as typed (plain ASCII, nothing JSON escapes):
        then a record whose JSON lacks it cannot match, and Redis drops it unparsed."""
        text = (self.text or "").lower()
        plain = text.isascii() and text.isprintable() and not any(char in text for char in '"\\')
        return [text] if text and plain else []

    def matches(self, record: ExportRecord) -> bool:
        if self.status is not None and record.status is not self.status:
            return False
        if self.provider and record.provider != self.provider:
            return False
        if self.schedule and record.schedule != self.schedule:
            return False
        if self.text:
            needle = self.text.lower()
            haystack = [record.error or "", *record.warnings]
            if not any(needle in item.lower() for item in haystack):
                return False
        return True

    @property
    def narrows(self) -> bool:
        """True when some records of the time range may not match (so the range's count is not the total)."""
        return bool(self.status or self.provider or self.schedule or self.text)


class ExportRow(BaseModel):
    """One line of a listing: the record's own fields, plus where it broke when it failed."""

    id: str
    provider: str
    schedule: str | None
    status: ExportStatus
    created_at: float
    updated_at: float
    finished_at: float | None
    rows: int
    quarantined: int
    files_total: int
    error: str | None
    stage: FailureStage | None
    sink: str


class ExportPage(BaseModel):
    rows: list[ExportRow]
    next_before: str | None
    """Cursor of the next (older) page, ``<created_at>:<id>``; None on the last page."""
    in_range: int
    """Exports created in the filter's time range, whatever the other filters."""
    scanned: int
    scan_limited: bool
    """The walk stopped at ``scan_limit`` records before the page was full."""


def parse_cursor(raw: str | None) -> Cursor | None:
    if not raw:
        return None
    score, _, export_id = raw.partition(":")
    try:
        return float(score), export_id
    except ValueError:
        return None


def format_cursor(cursor: Cursor) -> str:
    return f"{cursor[0]!r}:{cursor[1]}"


def _needs_files(record: ExportRecord) -> bool:
    """A failed export's stage needs its files only when no job failed (a provider failure says so itself)."""
    return record.status is ExportStatus.FAILED and not any(job.status is JobStatus.FAILED for job in record.jobs.values())


def rows_of(store: ExportStore, records: list[ExportRecord]) -> list[ExportRow]:
    files = store.files_of(chunk=FILES_CHUNK, export_ids=[record.id for record in records if _needs_files(record)])
    return [
        ExportRow(
            id=record.id,
            provider=record.provider,
            schedule=record.schedule,
            status=record.status,
            created_at=record.created_at,
            updated_at=record.updated_at,
            finished_at=record.finished_at,
            rows=record.rows,
            quarantined=record.quarantined,
            files_total=record.files_total,
            error=record.error,
            stage=failure_stage(record, files.get(record.id, [])),
            sink=record.sink,
        )
        for record in records
    ]


def scan(
    store: ExportStore, where: ExportFilter, *, before: Cursor | None, wanted: int, scan_limit: int, index: Index = "exports"
) -> tuple[list[tuple[Cursor, ExportRecord]], int, bool]:
    """Up to ``wanted`` matching records newest first after ``before``: (matches, records read, limit hit).
    On the ``ended`` index, ``since`` and ``until`` bound the end time instead of the creation time.

    Redis keeps only records whose JSON contains the filter's ``"field":"value"`` pairs; the rest of the
    filter (error text, and the exact fields) is checked here on the parsed records."""
    matches: list[tuple[Cursor, ExportRecord]] = []
    scanned = 0
    cursor = before
    while len(matches) < wanted:
        batch = min(SCAN_BATCH, scan_limit - scanned)
        if batch <= 0:
            return matches, scanned, True
        step = store.scan_exports(
            before=cursor,
            since=where.since,
            until=where.until,
            needles=where.needles,
            folded=where.folded,
            batch=batch,
            index=index,
        )
        scanned += step.scanned
        cursor = step.last
        for score, export_id, raw in step.matches:
            record = store.parse_scanned(raw, export_id)
            if where.matches(record):
                matches.append(((score, export_id), record))
                if len(matches) == wanted:
                    return matches, scanned, False
        if step.exhausted:
            break
    return matches, scanned, False


def page(
    store: ExportStore, where: ExportFilter, *, before: Cursor | None = None, size: int = 50, scan_limit: int = DEFAULT_SCAN_LIMIT
) -> ExportPage:
    matches, scanned, limited = scan(store, where, before=before, wanted=size + 1, scan_limit=scan_limit)
    shown = matches[:size]
    more = len(matches) > size or limited
    return ExportPage(
        rows=rows_of(store, [record for _cursor, record in shown]),
        next_before=format_cursor(shown[-1][0]) if more and shown else None,
        in_range=store.count_ids(since=where.since, until=where.until),
        scanned=scanned,
        scan_limited=limited,
    )


def matching_ids(store: ExportStore, where: ExportFilter, *, limit: int, scan_limit: int = DEFAULT_SCAN_LIMIT) -> list[str]:
    """Every export id the filter selects (at most ``limit``): what a bulk action would act on."""
    matches, _scanned, _limited = scan(store, where, before=None, wanted=limit, scan_limit=scan_limit)
    return [record.id for _cursor, record in matches]


class Attention(BaseModel):
    """The Needs-attention list: stuck active exports first (oldest first), then failures newest first."""

    items: list[Concern]
    active: int
    failed_scanned: int
    failed_more: bool
    """More failures than shown (``FAILED_SHOWN``) matched the window."""
    scan_limited: bool


def active_concerns(store: ExportStore, *, now: float, stale_after: float) -> tuple[list[ExportRecord], list[Concern]]:
    """Every active export, and the concerns among them (stuck, deadline near, provider hold), oldest first.

    Round trips: the active set and its records (2), pending files of downloading exports (2), their
    leases (1) and the holds of the credentials in use (1), whatever the number of exports.
    """
    active = store.active_records()
    downloading = [record.id for record in active if record.status is ExportStatus.DOWNLOADING]
    files = store.files_of(chunk=FILES_CHUNK, export_ids=downloading)
    pending = [
        (export_id, file.key) for export_id in downloading for file in files[export_id] if file.status is FileStatus.PENDING
    ]
    leased = store.leases_held(pending)
    holds = store.holds_left(hold_bucket(record) for record in active)
    concerns: list[Concern] = []
    for record in sorted(active, key=lambda record: record.created_at):
        held = {key for export_id, key in leased if export_id == record.id}
        hold_left = holds.get(hold_bucket(record), 0.0)
        item = concern(record, files.get(record.id, []), now=now, stale_after=stale_after, leased=held, hold_left=hold_left)
        if item is not None:
            concerns.append(item)
    return active, concerns


def attention(
    store: ExportStore, *, now: float, stale_after: float, failed_since: float, scan_limit: int = DEFAULT_SCAN_LIMIT
) -> Attention:
    """Active exports that need a look, and exports that ended FAILED since ``failed_since``, newest end
    first. They are read off the index of ended exports, which a retry leaves: these are the failures
    not since retried."""
    active, items = active_concerns(store, now=now, stale_after=stale_after)
    only_failed = ExportFilter(status=ExportStatus.FAILED, since=failed_since)
    wanted = FAILED_SHOWN + 1
    failed, scanned, limited = scan(store, only_failed, before=None, wanted=wanted, scan_limit=scan_limit, index="ended")
    more = len(failed) > FAILED_SHOWN
    failed = failed[:FAILED_SHOWN]
    files = store.files_of(chunk=FILES_CHUNK, export_ids=[record.id for _cursor, record in failed if _needs_files(record)])
    for _cursor, record in failed:
        item = concern(record, files.get(record.id, []), now=now, stale_after=stale_after)
        if item is not None:
            items.append(item)
    return Attention(items=items, active=len(active), failed_scanned=scanned, failed_more=more, scan_limited=limited)
