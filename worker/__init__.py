"""async-export-worker: submit, poll, download and parse asynchronous provider exports with Celery.

Other applications use the functions re-exported here; they validate input, write the export to
Redis and enqueue its first task.
"""

from __future__ import annotations

from typing import Any

__all__ = ["submit_export", "get_export", "cancel_export", "retry_export", "list_exports", "ExportClient"]


def __getattr__(name: str) -> Any:
    """Import the API lazily so ``import worker.settings`` never drags in Celery."""
    if name in __all__:
        from worker import api

        return getattr(api, name)
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
