"""The Celery configuration the reliability guarantees rest on, asserted so a refactor can't drop it.

README promises: a task whose worker dies is redelivered (acks late, reject on worker lost), one
message per process at a time (prefetch 1), JSON only, and no countdown outlives the broker's
visibility timeout (or Redis would redeliver a waiting poll early).
"""

from __future__ import annotations

import random
import time
from datetime import datetime
from pathlib import Path

import pytest
from celery import Celery
from kombu.exceptions import EncodeError

from tests.conftest import make_settings
from worker.app import create_app
from worker.dispatch import POLL_TASK, CeleryDispatcher
from worker.engine.backoff import BackoffPolicy
from worker.models import JobTaskArgs


def memory_app(tmp_path: Path, **overrides: object) -> Celery:
    """The real app configuration on kombu's in-process broker, so sent messages can be read back."""
    return create_app(make_settings(tmp_path, broker_url="memory://", result_backend="cache+memory://", **overrides))


def test_a_task_is_acked_only_after_it_ran_and_requeued_when_its_worker_dies(tmp_path: Path) -> None:
    conf = memory_app(tmp_path).conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True


def test_each_worker_process_reserves_one_message_at_a_time(tmp_path: Path) -> None:
    assert memory_app(tmp_path).conf.worker_prefetch_multiplier == 1


def test_messages_are_json_only(tmp_path: Path) -> None:
    app = memory_app(tmp_path)
    conf = app.conf
    assert (conf.task_serializer, conf.result_serializer, conf.event_serializer) == ("json", "json", "json")
    assert list(conf.accept_content) == ["json"]
    with pytest.raises(EncodeError):
        app.send_task(POLL_TASK, kwargs={"not json": {1, 2}}, queue="unit-json")


def test_broker_visibility_timeout_comes_from_the_settings(tmp_path: Path) -> None:
    conf = memory_app(tmp_path, visibility_timeout_seconds=4321).conf
    assert conf.broker_transport_options["visibility_timeout"] == 4321
    assert conf.result_backend_transport_options["visibility_timeout"] == 4321


@pytest.mark.parametrize(
    ("poll_max", "slow", "jitter", "longest"),
    [(300.0, 900.0, 0.2, 1080.0), (2000.0, 60.0, 0.5, 2000.0)],
)
def test_visibility_timeout_must_exceed_the_longest_countdown(
    tmp_path: Path, poll_max: float, slow: float, jitter: float, longest: float
) -> None:
    """The longest countdown is the poll cap or the jittered slow poll, whichever is larger."""
    timing = {"poll_max_seconds": poll_max, "slow_poll_seconds": slow, "poll_jitter": jitter}
    with pytest.raises(ValueError, match=rf"longest countdown \({longest:.0f}s"):
        make_settings(tmp_path, visibility_timeout_seconds=int(longest), **timing)
    make_settings(tmp_path, visibility_timeout_seconds=int(longest) + 1, **timing)


def test_the_settings_check_bounds_every_delay_the_backoff_can_choose(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, poll_max_seconds=30, slow_poll_seconds=100, poll_jitter=0.5)
    policy = BackoffPolicy.from_settings(settings)
    longest = max(settings.poll_max_seconds, settings.slow_poll_seconds * (1 + settings.poll_jitter))
    rng = random.Random(7)
    delays = [policy.delay(attempt, rng) for attempt in range(80)] + [policy.slow_delay(rng) for _ in range(500)]
    assert max(delays) <= longest
    assert max(delays) > settings.slow_poll_seconds * 1.4, "the jitter is applied, so the bound is not loose"


def test_dispatcher_caps_countdowns_below_the_visibility_timeout(tmp_path: Path) -> None:
    """A Retry-After of a day must not become a countdown the broker redelivers before it is due."""
    settings = make_settings(tmp_path, broker_url="memory://", result_backend="cache+memory://", queue="unit-cap")
    app = create_app(settings)
    dispatcher = CeleryDispatcher(app, settings)
    before = time.time()
    dispatcher.poll(JobTaskArgs(export_id="e1", job_key="0", token=3), countdown=86_400)
    dispatcher.poll(JobTaskArgs(export_id="e1", job_key="0", token=4), countdown=-5)
    after = time.time()
    with app.connection_for_read() as connection:
        queue = connection.SimpleQueue("unit-cap")
        messages = [queue.get(timeout=1) for _ in range(2)]
        queue.close()
    etas = {message.payload[1]["token"]: message.headers["eta"] for message in messages}
    for message in messages:
        message.ack()
    eta = datetime.fromisoformat(etas[3]).timestamp()
    cap = settings.visibility_timeout_seconds * 0.9
    assert before + cap - 1e-3 <= eta <= after + cap + 1e-3
    assert etas[4] is None, "a negative countdown means now, not a date in the past"
