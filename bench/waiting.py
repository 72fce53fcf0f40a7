"""Waiting exports on both brokers: who holds the next poll of an export that waits on its provider.

On Redis, Celery's worker fetches every countdown task at once and keeps it in memory until due;
on RabbitMQ (quorum queues, native delayed delivery) the message waits in the broker's delay
queues. For each broker in the same run, on one worker process (prefork, concurrency 2):

1. **due together**: N polls of one finished export, each with a stale fencing token (so a run is
   a real poll step that exits at once), all due at the same instant T. ``bench.probe``, loaded
   into the worker, records when each poll ran; reported: time from T to the median and the last.
2. **held**: on a fresh worker, N more polls due far in the future (``HOLD_SECONDS``). Reported: the worker's RSS
   growth (whole process tree, once it stops moving) and broker memory per waiting export (Redis
   ``used_memory`` delta; RabbitMQ the delay queues' memory from ``rabbitmqctl``, which needs
   local rabbitmqctl rights; otherwise not measured).

On RabbitMQ the run uses a throw-away vhost (``rabbitmqctl add_vhost``, deleted afterwards) so the
held messages leave with it; without rabbitmqctl it uses the default vhost and the held messages
are dropped by the broker when they come due (their queue is gone by then).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from kombu import Connection
from redis import Redis

from bench.common import Deadline, MiB, RedisProbe, Result, median, redis_url, tree_memory
from bench.probe import polled_key
from worker.dev.localstack import RABBITMQ_URL, Broker, LocalStack
from worker.dev.simulator import SamsaraBehaviour, SimulatorConfig
from worker.models import JobTaskArgs

NAME = "waiting"
TITLE = "Waiting exports: next polls held by the worker (Redis) or by the broker (RabbitMQ)"
SIZES = {"smoke": 100, "full": 50_000}
SIZE_UNIT = "waiting exports per broker"
TIME_BOUND = {"smoke": 120.0, "full": 2400.0}
GOAL_EXPORTS = 50_000
GOAL_RSS_MIB = 50.0
HOLD_SECONDS = 1800.0
SETTINGS = {"visibility_timeout_seconds": 7200, "poll_max_seconds": 300.0, "slow_poll_seconds": 900.0, "log_level": "WARNING"}
"""Production poll settings; a visibility timeout above the hold countdown so Redis never redelivers."""
REDIS_BROKER_DB = 15
"""kombu's ``unacked`` hash is one per Redis database: a worker of another deployment on the same
database, with a shorter visibility timeout, would put our held messages back on our queue."""
BROKERS: tuple[Broker, ...] = ("redis", "rabbitmq")
SAMPLE = 100
"""Polls sent to time the sender, which sets how far ahead the common due time is."""
SAMPLE_COUNTDOWN_SECONDS = 1.0
DELAY_QUEUES = [f"celery_delayed_{level}" for level in range(28)]


def run(result: Result) -> None:
    deadline = Deadline(TIME_BOUND["smoke" if result.smoke else "full"], NAME)
    count = result.size
    result.params.update({"hold_seconds": HOLD_SECONDS, "concurrency": 2, "settings": SETTINGS})
    for broker in BROKERS:
        with _rabbitmq_url() if broker == "rabbitmq" else contextlib.nullcontext((None, None)) as (url, vhost):
            overrides: dict[str, Any] = dict(SETTINGS)
            if broker == "redis":
                overrides["broker_url"] = _own_database(redis_url(), REDIS_BROKER_DB)
            stack = LocalStack(
                simulator_config=SimulatorConfig(samsara_default=SamsaraBehaviour(requested_seconds=0, processing_seconds=0)),
                redis_url=redis_url(),
                require_real_redis=True,
                settings_overrides=overrides,
                broker=broker,
                rabbitmq_url=url or RABBITMQ_URL,
            )
            with stack:
                _measure(result, stack, broker, vhost, count, deadline)


def _own_database(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


@contextlib.contextmanager
def _rabbitmq_url() -> Iterator[tuple[str, str | None]]:
    """A throw-away vhost when ``rabbitmqctl`` may create one, else the default vhost."""
    vhost = f"aew-bench-{uuid.uuid4().hex[:8]}"
    if shutil.which("rabbitmqctl") is None or _rabbitmqctl("add_vhost", vhost) is None:
        yield RABBITMQ_URL, None
        return
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"{RABBITMQ_URL.rstrip('/')}/{vhost}", vhost
    finally:
        _rabbitmqctl("delete_vhost", vhost)


def _rabbitmqctl(*args: str) -> str | None:
    try:
        done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _measure(result: Result, stack: LocalStack, broker: Broker, vhost: str | None, count: int, deadline: Deadline) -> None:
    assert stack.client is not None and stack.settings is not None
    worker = stack.start_worker(concurrency=2, extra_args=("--include", "bench.probe"))
    stack.wait_ready()
    export_id = stack.client.submit("samsara", {"startHour": "2026-11-23T00:00:00Z", "endHour": "2026-11-24T00:00:00Z"})
    stack.client.wait(export_id, timeout=deadline.remaining(), interval=0.2)
    redis = stack.client.rt.store.redis
    polled = polled_key(stack.settings.key_prefix)
    redis.delete(polled)
    dispatcher = stack.client.rt.dispatcher
    stale = JobTaskArgs(export_id=export_id, job_key="0", token=0)

    # 1. N polls due together at `due`. Poll i carries the stale token -i; one sent after `due`
    #    (a slow sender) counts from its send time instead.
    rate = _send_rate(stack, stale, deadline)
    sent_at = time.time()
    due = sent_at + count / rate * 1.25 + 2
    sent: dict[int, float] = {}
    for number in range(1, count + 1):
        dispatcher.poll(stale.model_copy(update={"token": -number}), due - time.time())
        sent[-number] = time.time()
    finished = time.time()
    while (done := int(redis.llen(polled))) < count:
        deadline.check(f"{broker}: {done:,} of {count:,} due polls ran")
        time.sleep(0.5)
    time.sleep(1.0)
    runs = [(raw if isinstance(raw, str) else raw.decode()).split() for raw in redis.lrange(polled, 0, -1)]
    lags = sorted(float(at) - max(due, sent[int(token)]) for token, at in runs)
    late = sum(when > due for when in sent.values())
    tag = f"{broker}:"
    result.add(
        f"{tag} time from due to polled, median / last of {count:,} due together",
        f"{median(lags):.2f} / {lags[-1]:.2f}",
        "s",
        note=f"{len(lags):,} runs of {count:,} polls sent, at {count / (finished - sent_at):,.0f} tasks/s; {late:,} sent after "
        "the due time count from their send; on RabbitMQ countdowns are whole seconds, rounded up",
    )
    result.extra[f"{broker}_lags"] = {
        "p50": median(lags), "max": lags[-1], "min": lags[0], "runs": len(lags), "sent_late": late,
        "sent_seconds": finished - sent_at,
    }  # fmt: skip

    # 2. N polls held far in the future, by a fresh worker (the first one's heap grew for the due ones).
    stack.stop_workers()
    worker = stack.start_worker(concurrency=2, extra_args=("--include", "bench.probe"))
    stack.wait_ready()
    before = _steady_memory(worker.pid)
    broker_before = _broker_memory(stack, broker, vhost)
    for _ in range(count):
        dispatcher.poll(stale, HOLD_SECONDS)
    _wait_held(stack, broker, count, deadline)
    after = _steady_memory(worker.pid)
    broker_after = _broker_memory(stack, broker, vhost)
    growth = (after - before) / MiB
    at_goal = growth / count * GOAL_EXPORTS
    result.add(
        f"{tag} worker RSS growth holding {count:,} waiting exports ({growth * 1024 / count:.2f} KiB each)",
        growth,
        "MiB",
        goal=f"< {GOAL_RSS_MIB:.0f} MB for {GOAL_EXPORTS:,} on RabbitMQ" if broker == "rabbitmq" else None,
        met=(at_goal * MiB < GOAL_RSS_MIB * 1e6) if broker == "rabbitmq" else None,
        note=f"{before / MiB:.0f} → {after / MiB:.0f} MiB; {growth * 1024 / count:.2f} KiB each; "
        f"{at_goal:,.0f} MiB for {GOAL_EXPORTS:,}" + ("" if count == GOAL_EXPORTS else " (extrapolated)"),
    )
    per_export = None if broker_before is None or broker_after is None else (broker_after - broker_before) / count / 1024
    result.add(
        f"{tag} broker memory per waiting export",
        per_export,
        "KiB",
        note=("Redis used_memory delta (message in the unacked hash)" if broker == "redis"
              else "delay queues' memory (rabbitmqctl list_queues)" if per_export is not None
              else "not measured: needs rabbitmqctl"),
    )  # fmt: skip
    result.extra[f"{broker}_memory"] = {"rss_before": before, "rss_after": after, "broker_before": broker_before,
                                        "broker_after": broker_after}  # fmt: skip


def _send_rate(stack: LocalStack, stale: JobTaskArgs, deadline: Deadline) -> float:
    """Tasks per second this broker takes from one sender (RabbitMQ waits for each publisher confirm).

    Timed with a countdown: on RabbitMQ a countdown message crosses Celery's delay exchanges and
    publishes at half the rate of a plain one, which made a 50,000 run send most polls late.
    """
    assert stack.client is not None and stack.settings is not None
    redis, polled = stack.client.rt.store.redis, polled_key(stack.settings.key_prefix)
    started = time.time()
    for _ in range(SAMPLE):
        stack.client.rt.dispatcher.poll(stale, SAMPLE_COUNTDOWN_SECONDS)
    rate = SAMPLE / (time.time() - started)
    while int(redis.llen(polled)) < SAMPLE:
        deadline.check("timing the sender")
        time.sleep(0.1)
    redis.delete(polled)
    return rate


def _wait_held(stack: LocalStack, broker: Broker, count: int, deadline: Deadline) -> None:
    """Redis: the worker has fetched every message (queue empty). RabbitMQ: all are in the delay queues."""
    assert stack.client is not None and stack.settings is not None
    if broker == "redis":
        redis = Redis.from_url(stack.settings.effective_broker_url)
        while (left := int(redis.llen(stack.settings.queue))) > 0:
            deadline.check(f"the worker still has {left:,} countdown tasks to fetch")
            time.sleep(0.5)
        return
    while (delayed := _delayed_messages(stack)) < count:
        deadline.check(f"{delayed:,} of {count:,} in the delay queues")
        time.sleep(0.5)


def _delayed_messages(stack: LocalStack) -> int:
    assert stack.settings is not None
    with Connection(stack.settings.effective_broker_url) as connection:
        channel = connection.default_channel
        return sum(channel.queue_declare(name, passive=True).message_count for name in DELAY_QUEUES)


def _broker_memory(stack: LocalStack, broker: Broker, vhost: str | None) -> int | None:
    assert stack.client is not None and stack.settings is not None
    if broker == "redis":
        return RedisProbe(Redis.from_url(stack.settings.effective_broker_url)).used_memory()
    if vhost is None:
        return None
    listing = _rabbitmqctl("list_queues", "-p", vhost, "--no-table-headers", "name", "memory")
    if listing is None:
        return None
    rows = (line.split() for line in listing.splitlines() if line.strip())
    return sum(int(memory) for name, memory in rows if name.startswith("celery_delayed_"))


def _steady_memory(pid: int) -> int:
    """The process tree's RSS once it stops growing: three samples a second apart within 1 MiB."""
    samples = [tree_memory(pid)]
    while len(samples) < 3 or max(samples[-3:]) - min(samples[-3:]) > MiB:
        time.sleep(1.0)
        samples.append(tree_memory(pid))
        if len(samples) > 60:
            break
    return samples[-1]
