"""The terminal view of one export (a table) and its live follow on the event stream; the CLI and the demo share it."""

from __future__ import annotations

from rich.console import Console
from rich.live import Live
from rich.table import Table

from worker.api import ExportClient, ExportView


def progress_table(view: ExportView) -> Table:
    record, progress = view.record, view.progress
    table = Table(title=f"export {record.id} ({record.provider})", show_header=False)
    table.add_row("status", f"[bold]{record.status.value}[/]")
    table.add_row("jobs", f"{progress.jobs_done}/{progress.jobs_total} done")
    for job in record.jobs.values():
        detail = f"{job.status.value} {job.raw_status or ''} {job.provider_job_id or ''}".strip()
        if job.percent_complete is not None:
            detail += f" {job.percent_complete}%"
        if job.records_processed is not None:
            detail += f" {job.records_processed} records"
        if job.message:
            detail += f" - {job.message}"
        table.add_row(f"  job {job.key}", detail)
    table.add_row("files", f"{progress.files_done}/{progress.files_total} done")
    table.add_row("rows written", str(progress.rows))
    table.add_row("rows quarantined", str(progress.quarantined))
    for warning in record.warnings[-3:]:
        table.add_row("warning", f"[yellow]{warning}[/]")
    if record.error:
        table.add_row("error", f"[red]{record.error}[/]")
    return table


def follow(console: Console, client: ExportClient, export_id: str) -> ExportView:
    """Redraw on every event of this export (the Redis stream); the block timeout is the fallback refresh."""
    view = client.get(export_id)
    last = "$"
    with Live(progress_table(view), console=console, refresh_per_second=4) as live:
        while not view.record.status.terminal:
            last, _events = client.read_events(export_id, since=last, block_ms=1000)
            view = client.get(export_id)
            live.update(progress_table(view))
    return view
