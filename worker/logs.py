"""Structured logging: every line carries export id, provider, provider job id and Celery task id.

The export id comes from the running task's arguments, so even lines from libraries logged inside a
task are attributable. Tokens are never logged: we log no headers, and httpx's per-request lines
(which include signed URLs) are kept at WARNING.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
from celery import current_task

from worker.settings import Settings

CONTEXT_FIELDS = ("export_id", "provider", "provider_job_id", "task_id")


class TaskContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        task = current_task
        request = getattr(task, "request", None) if task else None
        kwargs: dict[str, Any] = getattr(request, "kwargs", None) or {}
        if getattr(record, "task_id", None) is None:
            record.task_id = getattr(request, "id", None)
        if getattr(record, "export_id", None) is None:
            record.export_id = kwargs.get("export_id")
        for name in ("provider", "provider_job_id"):
            if not hasattr(record, name):
                setattr(record, name, None)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({name: getattr(record, name, None) for name in CONTEXT_FIELDS})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [export=%(export_id)s job=%(provider_job_id)s task=%(task_id)s] %(message)s"


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(TaskContextFilter())
    handler.setFormatter(JsonFormatter() if settings.log_json else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
