"""The Celery app. Configuration comes from :mod:`worker.settings`; JSON only, acks late.

Why these options: ``task_acks_late`` + ``task_reject_on_worker_lost`` put a task back on the
queue when its worker dies mid-step; prefetch 1 keeps a long download from hoarding messages.

Two brokers. On Redis (directly or through Sentinel) the worker holds every countdown task (a
waiting export's next poll) in its own memory until it is due, and the visibility timeout must
exceed every countdown (checked by :class:`~worker.settings.Settings`). On RabbitMQ (``amqp://``)
the queue is a quorum queue (durable, replicated) on a *topic* exchange, which is what Celery's
native delayed delivery needs: a countdown task waits in the broker's delay queues, not in the
worker. Celery turns global QoS off for quorum queues by itself (they do not support it); publisher
confirms make ``send_task`` return only once the broker has the message.
"""

from __future__ import annotations

import logging
import math
import sys
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from celery import Celery, signals
from pydantic import ValidationError

from worker.logs import configure_logging
from worker.schedules import beat_schedule
from worker.settings import Settings, get_settings, settings_problems

log = logging.getLogger("worker.app")


def sentinel_options(settings: Settings) -> dict[str, Any]:
    """How kombu and Celery's result backend find the Redis primary: the service name and how to talk to the
    Sentinels (their own password and TLS). The data password and db come in the ``sentinel://`` URLs."""
    sentinel_kwargs: dict[str, Any] = {}
    if settings.redis_sentinel_username:
        sentinel_kwargs["username"] = settings.redis_sentinel_username
    if settings.redis_sentinel_password:
        sentinel_kwargs["password"] = settings.redis_sentinel_password.get_secret_value()
    if settings.redis_sentinel_tls:
        sentinel_kwargs.update(ssl=True, **redis_tls_options(settings))
    return {"master_name": settings.redis_sentinel_master, "sentinel_kwargs": sentinel_kwargs}


def redis_tls_options(settings: Settings) -> dict[str, str]:
    """The ``ssl_*`` query options of a ``rediss://`` redis_url (a ``sentinel://`` URL cannot carry them)."""
    parts = urlsplit(settings.redis_url)
    return {name: value for name, value in parse_qsl(parts.query) if name.startswith("ssl_")}


def _through_sentinel(url: str) -> bool:
    return url.lower().startswith("sentinel://")


def broker_options(settings: Settings) -> dict[str, Any]:
    """What differs between the brokers (RabbitMQ, Redis, Redis through Sentinel); everything else is the same app."""
    retry_seconds = math.ceil(settings.redis_retry_seconds)
    backend_options: dict[str, Any] = {
        # Storing a result retries for as long as the store does, so a failover does not lose it.
        "retry_policy": {"max_retries": retry_seconds, "interval_start": 0, "interval_step": 1, "interval_max": 1},
    }
    if _through_sentinel(settings.effective_result_backend):
        backend_options.update(sentinel_options(settings))
    options: dict[str, Any] = {"result_backend_transport_options": backend_options}
    if _through_sentinel(settings.effective_result_backend) and urlsplit(settings.redis_url).scheme == "rediss":
        options["redis_backend_use_ssl"] = redis_tls_options(settings)
    if settings.broker_transport == "amqp":
        return {
            **options,
            "task_default_queue_type": "quorum",
            "task_default_exchange_type": "topic",
            "worker_detect_quorum_queues": True,
            "broker_native_delayed_delivery_queue_type": "quorum",
            "broker_transport_options": {"confirm_publish": True},
        }
    transport_options: dict[str, Any] = {
        "visibility_timeout": settings.visibility_timeout_seconds,
        "unacked_restore_interval": settings.unacked_restore_seconds,
        "unacked_restore_throttle": 1,
    }
    backend_options.update(transport_options)
    if _through_sentinel(settings.effective_broker_url):
        transport_options.update(sentinel_options(settings))
        if urlsplit(settings.redis_url).scheme == "rediss":
            options["broker_use_ssl"] = redis_tls_options(settings)
    return {
        **options,
        "broker_transport_options": transport_options,
        # A READONLY reply from a demoted primary is a channel error to kombu: reconnect on it too (celery#7946).
        "broker_channel_error_retry": True,
        # Sending the next step retries through a failover instead of failing the step after it was saved.
        "task_publish_retry_policy": {
            "max_retries": retry_seconds + 2,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
    }


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


def _app_or_exit() -> Celery:
    """A worker or beat started with unusable settings says why in one line and exits 2, as the CLI does."""
    try:
        return create_app()
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        print(f"error: {settings_problems(exc)}", file=sys.stderr)
        raise SystemExit(2) from None


app = _app_or_exit()


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
