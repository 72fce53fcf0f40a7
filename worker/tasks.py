"""Thin Celery tasks: validate JSON arguments, hand over to the engine. No provider code here."""

from __future__ import annotations

import uuid
from typing import Any

from celery import Task

from worker.api import ExportClient
from worker.app import app
from worker.dispatch import DOWNLOAD_TASK, POLL_TASK, SUBMIT_TASK, WATCHDOG_TASK
from worker.engine.download_step import run_download
from worker.engine.jobs import run_poll, run_submit
from worker.engine.watchdog import run_watchdog
from worker.models import FileTaskArgs, JobTaskArgs
from worker.schedules import RUN_SCHEDULE_TASK
from worker.store import STORE_UNAVAILABLE
from worker.wiring import runtime

TASK_OPTIONS: dict[str, Any] = {
    "autoretry_for": STORE_UNAVAILABLE,
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "max_retries": 30,
}
"""While Redis is away a step can neither load nor save state: retry the task itself."""


@app.task(name=SUBMIT_TASK, **TASK_OPTIONS)
def submit_job(**kwargs: Any) -> None:
    run_submit(runtime(), JobTaskArgs.model_validate(kwargs))


@app.task(name=POLL_TASK, **TASK_OPTIONS)
def poll_job(**kwargs: Any) -> None:
    run_poll(runtime(), JobTaskArgs.model_validate(kwargs))


@app.task(name=DOWNLOAD_TASK, bind=True, **TASK_OPTIONS)
def download_file(self: Task, **kwargs: Any) -> None:
    run_download(runtime(), FileTaskArgs.model_validate(kwargs), owner=self.request.id or uuid.uuid4().hex)


@app.task(name=WATCHDOG_TASK, **TASK_OPTIONS)
def watchdog() -> dict[str, int]:
    return vars(run_watchdog(runtime()))


@app.task(name=RUN_SCHEDULE_TASK, **TASK_OPTIONS)
def run_schedule(name: str) -> str:
    return ExportClient(runtime()).run_schedule(name)
