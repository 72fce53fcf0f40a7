"""Thin Celery tasks: validate JSON arguments, hand over to the engine. No provider code here.

``worker.submit_export`` and ``worker.get_export`` are public (see :mod:`worker.remote`); they are
the only tasks that store a result, since their callers wait for it.
"""

from __future__ import annotations

import uuid
from typing import Any

from celery import Task

from worker import remote
from worker.api import ExportClient, ExportView
from worker.app import app
from worker.dispatch import DOWNLOAD_TASK, POLL_TASK, SUBMIT_TASK, WATCHDOG_TASK
from worker.engine.download_step import run_download
from worker.engine.jobs import run_poll, run_submit
from worker.engine.watchdog import run_watchdog
from worker.errors import InvalidRequest, UnknownExport
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
    run_submit(runtime(app), JobTaskArgs.model_validate(kwargs))


@app.task(name=POLL_TASK, **TASK_OPTIONS)
def poll_job(**kwargs: Any) -> None:
    run_poll(runtime(app), JobTaskArgs.model_validate(kwargs))


@app.task(name=DOWNLOAD_TASK, bind=True, **TASK_OPTIONS)
def download_file(self: Task, **kwargs: Any) -> None:
    run_download(runtime(app), FileTaskArgs.model_validate(kwargs), owner=self.request.id or uuid.uuid4().hex)


@app.task(name=WATCHDOG_TASK, **TASK_OPTIONS)
def watchdog() -> dict[str, int]:
    return vars(run_watchdog(runtime(app)))


@app.task(name=RUN_SCHEDULE_TASK, **TASK_OPTIONS)
def run_schedule(name: str) -> str:
    return ExportClient(runtime(app)).run_schedule(name)


@app.task(name=remote.SUBMIT_EXPORT_TASK, bind=True, ignore_result=False, throws=(InvalidRequest,), **TASK_OPTIONS)
def submit_export(self: Task, **kwargs: Any) -> str:
    return remote.submit_export(ExportClient(runtime(app)), kwargs, self.request.id)


@app.task(
    name=remote.GET_EXPORT_TASK,
    ignore_result=False,
    throws=(UnknownExport,),
    pydantic=True,
    pydantic_dump_kwargs={"mode": "json"},
    **TASK_OPTIONS,
)
def get_export(export_id: str) -> ExportView:
    return ExportClient(runtime(app)).get(export_id)
