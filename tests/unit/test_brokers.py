"""What changes with the broker: queue shape on RabbitMQ, countdowns sent, and the Redis-only cap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_settings
from worker.app import create_app
from worker.dispatch import POLL_TASK, CeleryDispatcher
from worker.models import JobTaskArgs

AMQP = "amqp://guest:guest@127.0.0.1:5672//"


def test_rabbitmq_app_uses_a_quorum_queue_on_a_topic_exchange(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, broker_url=AMQP, queue="exports-unit"))
    queue = app.amqp.queues["exports-unit"]
    assert queue.queue_arguments == {"x-queue-type": "quorum"}
    assert queue.exchange.type == "topic", "native delayed delivery skips direct exchanges"
    assert app.conf.worker_detect_quorum_queues and app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert "visibility_timeout" not in app.conf.broker_transport_options


def test_redis_app_keeps_the_visibility_timeout(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, visibility_timeout_seconds=1234))
    assert app.conf.broker_transport_options["visibility_timeout"] == 1234
    assert app.amqp.queues[app.conf.task_default_queue].queue_arguments is None


class SentTasks:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_task(self, name: str, **options: Any) -> None:
        self.sent.append({"name": name, **options})


@pytest.mark.parametrize(
    ("broker_url", "asked", "sent"),
    [
        (None, 0.4, 0.4),
        (None, 10_000.0, 540.0),  # 0.9 x the visibility timeout
        (AMQP, 0.4, 1.0),  # delayed delivery refuses 0 < countdown < 1
        (AMQP, 2.2, 3.0),  # whole seconds, never early
        (AMQP, 10_000.0, 10_000.0),
        (AMQP, -5.0, 0.0),
    ],
)
def test_countdowns_sent_per_broker(tmp_path: Path, broker_url: str | None, asked: float, sent: float) -> None:
    settings = make_settings(tmp_path, broker_url=broker_url)
    app = SentTasks()
    CeleryDispatcher(app, settings).poll(JobTaskArgs(export_id="e1", job_key="0", token=1), asked)  # type: ignore[arg-type]
    assert app.sent == [
        {
            "name": POLL_TASK,
            "kwargs": {"export_id": "e1", "job_key": "0", "token": 1},
            "countdown": sent,
            "queue": settings.queue,
            "ignore_result": True,
        }
    ]
