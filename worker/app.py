"""The Celery app. Configuration comes from :mod:`worker.settings`; JSON only, acks late.

Why these options: ``task_acks_late`` + ``task_reject_on_worker_lost`` put a task back on the
queue when its worker dies mid-step; prefetch 1 keeps a long download from hoarding messages.

Two brokers. On Redis the worker holds every countdown task (a waiting export's next poll) in its
own memory until it is due, and the visibility timeout must exceed every countdown (checked by
:class:`~worker.settings.Settings`). On RabbitMQ (``amqp://``) the queue is a quorum queue (durable,
replicated) on a *topic* exchange, which is what Celery's native delayed delivery needs: a countdown
task waits in the broker's delay queues, not in the worker. Celery turns global QoS off for quorum
queues by itself (they do not support it); publisher confirms make ``send_task`` return only once
the broker has the message.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals

from worker.logs import configure_logging
from worker.schedules import beat_schedule
from worker.settings import Settings, get_settings

log = logging.getLogger("worker.app")


def broker_options(settings: Settings) -> dict[str, Any]:
    """What differs between the two brokers; everything else is the same app."""
    if settings.broker_transport == "amqp":
        return {
            "task_default_queue_type": "quorum",
            "task_default_exchange_type": "topic",
            "worker_detect_quorum_queues": True,
            "broker_native_delayed_delivery_queue_type": "quorum",
            "broker_transport_options": {"confirm_publish": True},
        }
    transport_options = {
        "visibility_timeout": settings.visibility_timeout_seconds,
        "unacked_restore_interval": settings.unacked_restore_seconds,
        "unacked_restore_throttle": 1,
    }
    return {"broker_transport_options": transport_options, "result_backend_transport_options": transport_options}


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("worker", include=["worker.tasks"])
    app.conf.update(
        broker_url=settings.effective_broker_url,
        result_backend=settings.effective_result_backend,
        **broker_options(settings),
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
def _refuse_an_evicting_store(**_: Any) -> None:
    """Exit at once, with one clear line, when Redis may evict export records (see :mod:`worker.store.server`).

    SystemExit, not an exception: Celery logs and ignores exceptions of signal handlers.
    """
    from worker.errors import EvictingStore
    from worker.store import STORE_UNAVAILABLE
    from worker.wiring import make_store

    store = make_store(get_settings())
    try:
        policy = store.check_server()
    except EvictingStore as refusal:
        log.critical("refusing to start: %s", refusal)
        raise SystemExit(2) from None
    except STORE_UNAVAILABLE as exc:
        log.warning("could not check Redis at start (%s); each worker process checks it when it first connects", exc)
        return
    if policy is None:
        log.warning(
            "%s answers neither CONFIG GET nor INFO memory, so its maxmemory-policy is unknown: make sure it is "
            "noeviction, or Redis may evict export records under memory pressure",
            store.where,
        )


@signals.worker_init.connect
def _serve_metrics(**_: Any) -> None:
    from worker.observability import serve_metrics
    from worker.wiring import make_store

    settings = get_settings()
    serve_metrics(settings, make_store(settings))
