"""The terminal view of one export (a table) and its live follow on the event stream; the CLI and the demo share it.

Every text that comes from a user, a provider or an error goes into the table as a :class:`rich.text.Text`,
never as markup: ``pip install 'async-export-worker[parquet]'`` must print as written.
"""

from __future__ import annotations

import time
from collections import Counter

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from worker.api import ExportClient, ExportView
from worker.models import ExportRecord, FileStatus
from worker.settings import redact_url

NO_WORKER_NOTICE_SECONDS = 10.0
"""How long an export may wait for its first submit before ``follow`` says no worker has taken it. An idle
worker takes it within milliseconds; ten seconds also covers a worker busy with short downloads."""


def files_summary(view: ExportView) -> str:
    """``2 of 3 written, 1 failed``: failed files are never counted as done."""
    counts = Counter(file.status for file in view.files)
    summary = f"{counts[FileStatus.DONE]} of {len(view.files)} written"
    if counts[FileStatus.FAILED]:
        summary += f", {counts[FileStatus.FAILED]} failed"
    if counts[FileStatus.PENDING] and not view.record.status.terminal:
        summary += f", {counts[FileStatus.PENDING]} in progress"
    return summary


def progress_table(view: ExportView) -> Table:
    record, progress = view.record, view.progress
    table = Table(title=Text(f"export {record.id} ({record.provider})"), show_header=False)
    table.add_row("status", Text(record.status.value, style="bold"))
    table.add_row("jobs", f"{progress.jobs_done}/{progress.jobs_total} done")
    for job in record.jobs.values():
        detail = f"{job.status.value} {job.raw_status or ''} {job.provider_job_id or ''}".strip()
        if job.percent_complete is not None:
            detail += f" {job.percent_complete}%"
        if job.records_processed is not None:
            detail += f" {job.records_processed} records"
        if job.message:
            detail += f" - {job.message}"
        table.add_row(f"  job {job.key}", Text(detail))
    table.add_row("files", files_summary(view))
    table.add_row("rows written", str(progress.rows))
    table.add_row("rows quarantined", str(progress.quarantined))
    for warning in record.warnings[-3:]:
        table.add_row("warning", Text(warning, style="yellow"))
    if record.error:
        table.add_row("error", Text(record.error, style="red"))
    return table


def not_picked_up(record: ExportRecord) -> bool:
    """No worker has started any submit of this export yet."""
    return not record.status.terminal and not any(job.submit_attempts for job in record.jobs.values())


def no_worker_notice(client: ExportClient, export_id: str, waited: float) -> Text:
    settings = client.rt.settings
    return Text(
        f"no worker has picked up export {export_id} after {waited:.0f}s: start one on queue {settings.queue!r} "
        f"(celery -A worker.app worker -Q {settings.queue}) with the same broker ({redact_url(settings.effective_broker_url)}) "
        "and Redis, or wait for a busy one",
        style="yellow",
    )


def follow(console: Console, client: ExportClient, export_id: str) -> ExportView:
    """Redraw on every event of this export (the Redis stream); the block timeout is the fallback refresh.

    If no worker has taken the export after :data:`NO_WORKER_NOTICE_SECONDS`, say so once, above the table."""
    view = client.get(export_id)
    last = "$"
    started = time.monotonic()
    noticed = False
    with Live(progress_table(view), console=console, refresh_per_second=4) as live:
        while not view.record.status.terminal:
            last, _events = client.read_events(export_id, since=last, block_ms=1000)
            view = client.get(export_id)
            live.update(progress_table(view))
            waited = time.monotonic() - started
            if not noticed and waited >= NO_WORKER_NOTICE_SECONDS and not_picked_up(view.record):
                live.console.print(no_worker_notice(client, export_id, waited))
                noticed = True
    if not console.is_terminal:  # Live ends its last render with a newline on a terminal only
        console.line()
    return view
