"""The Celery app. Configuration comes from :mod:`worker.settings`; JSON only, acks late.

Why these options: ``task_acks_late`` + ``task_reject_on_worker_lost`` put a task back on the
queue when its worker dies mid-step; prefetch 1 keeps a long download from hoarding messages; the
broker visibility timeout must exceed every countdown or Redis would redeliver waiting polls early
(harmless thanks to fencing, but wasteful).
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from worker.logs import configure_logging
from worker.schedules import beat_schedule
from worker.settings import Settings, get_settings


def check_settings(settings: Settings) -> None:
    longest = max(settings.poll_max_seconds, settings.slow_poll_seconds * (1 + settings.poll_jitter))
    if settings.visibility_timeout_seconds <= longest:
        raise ValueError(
            f"EXPORT_WORKER_VISIBILITY_TIMEOUT_SECONDS ({settings.visibility_timeout_seconds}) must exceed the "
            f"longest countdown ({longest:.0f}s from poll_max_seconds/slow_poll_seconds)"
        )


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    check_settings(settings)
    app = Celery("worker", include=["worker.tasks"])
    transport_options = {
        "visibility_timeout": settings.visibility_timeout_seconds,
        "unacked_restore_interval": settings.unacked_restore_seconds,
        "unacked_restore_throttle": 1,
    }
    app.conf.update(
        broker_url=settings.effective_broker_url,
        result_backend=settings.effective_result_backend,
        broker_transport_options=transport_options,
        result_backend_transport_options=transport_options,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=settings.queue,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        timezone="UTC",
        enable_utc=True,
        beat_schedule=beat_schedule(settings),
    )
    return app


app = create_app()


@signals.setup_logging.connect
def _configure_logging(**_: Any) -> None:
    """Connected so Celery leaves logging to us: one format for the worker, beat and the engine."""
    configure_logging(get_settings())


@signals.worker_init.connect
def _serve_metrics(**_: Any) -> None:
    from worker.observability import serve_metrics
    from worker.wiring import make_store

    settings = get_settings()
    serve_metrics(settings, make_store(settings))
