"""Prometheus metrics. Under prefork set PROMETHEUS_MULTIPROC_DIR so children share one exposition."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EXPORTS_FINISHED = Counter("aew_exports_finished_total", "Exports that reached a terminal state", ["provider", "status"])
POLLS = Counter("aew_polls_total", "Poll steps run", ["provider", "provider_status"])
API_CALLS = Counter(
    "aew_provider_api_calls_total", "Provider API calls by HTTP status ('error' when no answer)", ["provider", "method", "status"]
)
RETRIES = Counter("aew_retries_total", "Steps rescheduled after an error", ["provider", "step", "reason"])
STALE_TASKS = Counter("aew_stale_tasks_total", "Duplicate or superseded tasks that exited", ["step"])
BYTES_DOWNLOADED = Counter("aew_bytes_downloaded_total", "Bytes of result files downloaded", ["provider"])
ROWS_WRITTEN = Counter("aew_rows_written_total", "Rows written to the sink", ["provider"])
ROWS_QUARANTINED = Counter("aew_rows_quarantined_total", "Malformed rows sent to quarantine", ["provider"])
CHAINS_REVIVED = Counter("aew_chains_revived_total", "Dead task chains revived by the watchdog", ["kind"])
EXPORT_FAILURES = Counter("aew_export_failures_total", "Exports that ended FAILED, by where they broke", ["provider", "stage"])
EXPORT_SECONDS = Histogram(
    "aew_export_duration_seconds",
    "Time from submit to terminal state",
    ["provider", "status"],
    buckets=(5, 15, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400),
)
