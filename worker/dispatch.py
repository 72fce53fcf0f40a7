"""Sending the engine's next steps to Celery, by task name, so any process with a broker URL can do it."""

from __future__ import annotations

import math
from typing import Any

from celery import Celery

from worker.models import Callback, ExportRecord, FileTaskArgs, JobTaskArgs
from worker.settings import Settings

SUBMIT_TASK = "worker.submit_job"
POLL_TASK = "worker.poll_job"
DOWNLOAD_TASK = "worker.download_file"
WATCHDOG_TASK = "worker.watchdog"


class CeleryDispatcher:
    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.queue = settings.queue
        self.in_broker = settings.broker_transport == "amqp"
        """RabbitMQ keeps countdowns in its delay queues: whole seconds, no cap."""
        self.max_countdown = math.inf if self.in_broker else settings.visibility_timeout_seconds * 0.9
        """On Redis a longer countdown would outlive the visibility timeout and be redelivered early."""

    def countdown(self, seconds: float) -> float:
        """The countdown actually sent: Celery's delayed delivery takes whole seconds and refuses 0 < s < 1."""
        seconds = min(max(seconds, 0.0), self.max_countdown)
        return float(math.ceil(seconds)) if self.in_broker else seconds

    def _send(self, task: str, kwargs: dict[str, Any], countdown: float) -> None:
        countdown = self.countdown(countdown)
        # ignore_result: state lives in our store; otherwise each send subscribes to the result backend.
        self.app.send_task(task, kwargs=kwargs, countdown=countdown, queue=self.queue, ignore_result=True)

    def submit(self, args: JobTaskArgs, countdown: float) -> None:
        self._send(SUBMIT_TASK, args.model_dump(exclude_none=True), countdown)

    def poll(self, args: JobTaskArgs, countdown: float) -> None:
        self._send(POLL_TASK, args.model_dump(exclude_none=True), countdown)

    def download(self, args: FileTaskArgs, countdown: float) -> None:
        self._send(DOWNLOAD_TASK, args.model_dump(), countdown)

    def callback(self, callback: Callback, record: ExportRecord) -> None:
        kwargs = {**callback.kwargs, "export_id": record.id, "status": record.status.value}
        self.app.send_task(
            callback.task, args=callback.args, kwargs=kwargs, queue=callback.queue or self.queue, ignore_result=True
        )
