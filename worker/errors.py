"""Failures a user can hit, each carrying a message that says what happened and what to do.

The engine decides what to do from the *class* (retry later, retry with backoff, fail now);
the message is what ends up on the export record, in logs and in the CLI.
"""

from __future__ import annotations


class ExportWorkerError(Exception):
    """Base class; ``str(error)`` is the user-facing message."""


class InvalidRequest(ExportWorkerError):
    """Rejected at enqueue time, before anything reaches Redis."""


class UnknownExport(ExportWorkerError):
    """No such export where the store looked: never created there, or forgotten after the retention period.

    ``args`` is the message alone, so Celery rebuilds it unchanged in a caller (``worker.get_export``).
    """

    def __init__(self, message: str, export_id: str | None = None) -> None:
        super().__init__(message)
        self.export_id = export_id

    @classmethod
    def missing(cls, export_id: str, *, where: str, retention_seconds: int, file_key: str | None = None) -> UnknownExport:
        what = f"export {export_id!r}" if file_key is None else f"file {file_key!r} of export {export_id!r}"
        return cls(
            f"no {what} in {where}: it does not exist there, or it ended more than {_duration(retention_seconds)} ago "
            f"and was forgotten (EXPORT_WORKER_RETENTION_SECONDS={retention_seconds}); check EXPORT_WORKER_REDIS_URL "
            "and EXPORT_WORKER_KEY_PREFIX, or run `export-worker list` to see the exports kept there",
            export_id,
        )


class EvictingStore(ExportWorkerError):
    """Redis may evict keys under memory pressure, which would drop export records without a word."""

    def __init__(self, where: str, policy: str) -> None:
        super().__init__(
            f"{where} has maxmemory-policy {policy!r}: under memory pressure it would evict export records and lose "
            "exports; set maxmemory-policy to noeviction (CONFIG SET maxmemory-policy noeviction, or your provider's "
            "parameter group), or set EXPORT_WORKER_ALLOW_EVICTING_STORE=true to accept the risk"
        )
        self.policy = policy


def _duration(seconds: int) -> str:
    """``2592000`` as ``30 days``: the retention as an operator set it, in the largest whole unit."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


class RetryLater(ExportWorkerError):
    """The provider asked us to slow down (429); ``retry_after`` is in seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransientError(ExportWorkerError):
    """5xx, connection reset, timeout, truncated body: worth retrying with backoff."""


class PermanentError(ExportWorkerError):
    """Retrying cannot help; the export (or file) fails with this message."""


class AuthError(PermanentError):
    def __init__(self, credential_name: str, status_code: int, provider: str) -> None:
        super().__init__(
            f"{provider} rejected credential {credential_name!r} (HTTP {status_code}); check that "
            f"EXPORT_WORKER_CREDENTIALS__{credential_name.upper()}__* is set and has the needed scopes"
        )
        self.credential_name = credential_name
        self.status_code = status_code


class NotFound(PermanentError):
    """The provider answered 404 for something other than a job (a report, say)."""


class JobNotFound(PermanentError):
    def __init__(self, provider: str, job_id: str) -> None:
        super().__init__(f"{provider} job {job_id!r} was not found (HTTP 404); it may have expired or been deleted")
        self.job_id = job_id


class PayloadError(TransientError):
    """The provider answered with a body that does not match its documented shape.

    Transient because providers do ship glitches; after ``max_transient_retries`` it fails the export.
    """


class DownloadUrlExpired(ExportWorkerError):
    """The signed download URL expired (or storage said 403): re-poll the job for a fresh one."""


class UrlRejected(PermanentError):
    """A URL failed the download allowlist; it is never requested."""


class ReplayNotAllowed(PermanentError):
    pass


class StaleTask(ExportWorkerError):
    """A duplicate or superseded task; it must exit without side effects."""
