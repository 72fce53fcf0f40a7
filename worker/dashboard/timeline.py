"""An export's events as sentences, and each file's attempts, for the one-export page."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class TimelineEntry(BaseModel):
    id: str
    at: float
    type: str
    text: str
    due_at: float | None = None
    """When the next step is due (polls, retried downloads)."""
    actor: str | None = None
    bad: bool = False


def _job(event: dict[str, Any]) -> str:
    return f"job {event.get('job', '?')}"


def describe(event: dict[str, Any]) -> str:
    """One line per event type the engine writes; an unknown type is shown by name, never hidden."""
    kind = event.get("type", "?")
    if kind == "created":
        return "submitted"
    if kind == "status":
        status = event.get("status", "?")
        if event.get("files") is not None:
            return f"every provider job done: {event['files']} file(s) found, downloading"
        if event.get("retried_files") is not None:
            return f"{event['retried_files']} file(s) reopened for download"
        if event.get("resubmitted_job") is not None:
            return f"{_job({'job': event['resubmitted_job']})} submitted again (it failed before the provider had it)"
        if event.get("replayed_job") is not None:
            return f"{_job({'job': event['replayed_job']})} replayed at the provider; polling again"
        if status == "COMPLETED":
            return f"completed: {event.get('rows', 0)} rows written, {event.get('quarantined', 0)} quarantined"
        if status == "FAILED":
            return f"failed: {event.get('error', '')}"
        return f"status {status}"
    if kind == "submitted":
        return f"{_job(event)} created at the provider as {event.get('provider_job_id')}"
    if kind == "polled":
        return f"{_job(event)} polled ({event.get('provider_status')}), poll #{event.get('polls')}"
    if kind == "job_status":
        message = f": {event['message']}" if event.get("message") else ""
        return f"{_job(event)} is {event.get('provider_status')} at the provider{message}"
    if kind == "split":
        return f"{_job(event)} too large, split into {', '.join(event.get('children', []))} ({event.get('reason')})"
    if kind == "file_done":
        return f"file {event.get('file')} written: {event.get('rows')} rows, {event.get('quarantined')} quarantined"
    if kind == "file_retry":
        return f"file {event.get('file')} attempt {event.get('attempt')} failed at {event.get('stage')}: {event.get('error')}"
    if kind == "file_failed":
        attempt = event.get("attempt")
        return f"file {event.get('file')} failed at {event.get('stage')} on attempt {attempt}, given up: {event.get('error')}"
    if kind == "url_refreshed":
        return f"file {event.get('file')}: download URL refreshed"
    if kind == "revived":
        what = f"file {event['file']}" if event.get("file") else _job(event)
        return f"{what}: silent chain revived by the watchdog"
    if kind == "warning":
        return f"warning: {event.get('message')}"
    if kind == "action":
        return f"{event.get('action')} asked by {event.get('actor')}"
    return kind


def entries(events: list[dict[str, Any]]) -> list[TimelineEntry]:
    return [
        TimelineEntry(
            id=event["id"],
            at=float(event.get("at", 0)),
            type=str(event.get("type", "?")),
            text=describe(event),
            due_at=event.get("next_poll_at") or event.get("next_at"),
            actor=event.get("actor"),
            bad=event.get("type") in ("file_retry", "file_failed") or event.get("status") == "FAILED",
        )
        for event in events
    ]


def attempt_errors(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each file's failed attempts, oldest first, as ``attempt N (stage): error``; the last one of a file
    that failed says it was given up (a user's retry starts counting again)."""
    errors: dict[str, list[str]] = {}
    for event in events:
        kind = event.get("type")
        if kind in ("file_retry", "file_failed"):
            given_up = ", given up" if kind == "file_failed" else ""
            line = f"attempt {event.get('attempt', '?')} ({event.get('stage')}{given_up}): {event.get('error')}"
            errors.setdefault(str(event.get("file")), []).append(line)
    return errors
