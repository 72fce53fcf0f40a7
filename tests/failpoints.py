"""A harness that breaks the store's connection at one Redis round trip of a run, every round trip in turn.

Three ways to break it, each at round trip ``at`` of the run (counted over every step):

- ``drop``: the command never reaches Redis (a primary already gone, a refused connection);
- ``lost_reply``: Redis applied it and the reply is lost (the connection dropped after sending);
  for an EXEC this is the ambiguous case the store settles with its write key;
- ``failover``: the primary applied it and died; the replica that takes over holds only what the
  last confirmed WAIT covered, so every write since, this one included, is lost.

The primary is one fakeredis server. The replica is a DUMP of every key, taken whenever the store's
WAIT succeeds: :func:`replicating` stands in for :func:`worker.store.transactions.replication_of`,
makes one round trip itself (a PING, so a failure right after an EXEC is enumerated too) and copies
the primary. A failover RESTOREs that copy in place of the primary's keys.

The store's client is the production :class:`~worker.store.connection.FailoverRedis` over the fake
server, so commands and transactions are retried exactly as they would be; a step that still raises
a lost-connection error is run again, as Celery's autoretry would.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import fakeredis
import httpx
import redis

from tests.interleaving import World
from worker.engine.context import Runtime
from worker.engine.download_step import run_download
from worker.engine.jobs import run_poll, run_submit
from worker.store import STORE_UNAVAILABLE, ExportStore
from worker.store.connection import FailoverRedis
from worker.store.transactions import Replication

Mode = Literal["drop", "lost_reply", "failover"]
MODES: tuple[Mode, ...] = ("drop", "lost_reply", "failover")


@dataclass
class Replica:
    """What the replica holds: every key of the primary as of the last confirmed WAIT."""

    server: fakeredis.FakeServer
    keys: dict[bytes, tuple[bytes, int]] = field(default_factory=dict)

    def catch_up(self) -> None:
        client = fakeredis.FakeRedis(server=self.server)
        self.keys = {key: (client.dump(key), client.pttl(key)) for key in client.keys("*")}

    def promote(self) -> None:
        """The primary is gone; the replica's copy is all there is."""
        client = fakeredis.FakeRedis(server=self.server)
        client.flushall()
        for key, (dumped, ttl) in self.keys.items():
            client.restore(key, max(ttl, 0), dumped)


@dataclass
class FailPoint:
    """Breaks round trip ``at`` (None: none) of one client in ``mode``; counts the round trips."""

    replica: Replica
    at: int | None = None
    mode: Mode = "drop"
    count: int = 0
    fired: bool = False

    def send(self, connection: Any, command: Any, check_health: bool, send: Callable[..., None]) -> None:
        number = self.count
        self.count += 1
        if number != self.at:
            send(command, check_health)
            return
        self.fired = True
        if self.mode != "drop":
            send(command, check_health)
            if self.mode == "failover":
                self.replica.promote()
        connection.disconnect()
        raise redis.ConnectionError(f"connection lost at round trip {number} ({self.mode})")


def failing_client(server: fakeredis.FakeServer, point: FailPoint) -> FailoverRedis:
    pool = fakeredis.FakeRedis(server=server).connection_pool
    base: Any = pool.connection_class

    class Failing(base):  # type: ignore[misc, valid-type]
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            point.send(self, command, check_health, super().send_packed_command)

    pool.connection_class = Failing
    client = FailoverRedis(connection_pool=pool)
    client.retry_seconds = 5
    client.answered = True
    return client


def replicating(replica: Replica) -> Callable[[Any, int, int], Replication]:
    """A WAIT that always gets its replica: one round trip, then the replica holds everything so far."""

    def wait(connection: Any, replicas: int, _timeout_ms: int) -> Replication:
        connection.send_command("PING")
        connection.read_response()
        replica.catch_up()
        return Replication(replicas, replicas, 1)

    return wait


def failing_runtime(world: World, point: FailPoint) -> Runtime:
    store = ExportStore(failing_client(world.server, point), prefix="il")
    store.wait_replicas = 1
    store.retry_seconds = 5
    return Runtime(
        settings=world.settings,
        store=store,
        dispatcher=world.dispatcher,
        clock=world.clock,
        rng=random.Random(7),
        transport=httpx.MockTransport(world.handler),
    )


def as_celery_would(step: Callable[[], Any], retries: int = 3) -> Any:
    """Run a step; a lost-connection error runs it again, as the tasks' autoretry does."""
    for _ in range(retries):
        try:
            return step()
        except STORE_UNAVAILABLE:
            continue
    return step()


def run_dispatched(world: World, rt: Runtime, limit: int = 300) -> list[Exception]:
    """Run every task the steps dispatch, in order, ignoring countdowns, on ``rt``; returns what tasks raised.

    A task that raises fails, as a Celery task would: its chain ends there (the watchdog revives it).
    """
    failed: list[Exception] = []
    for number in range(limit):
        if not world.dispatcher.sent:
            return failed
        kind, args, _countdown = world.dispatcher.sent.pop(0)
        try:
            if kind == "submit":
                as_celery_would(lambda args=args: run_submit(rt, args))
            elif kind == "poll":
                as_celery_would(lambda args=args: run_poll(rt, args))
            else:
                as_celery_would(lambda args=args, number=number: run_download(rt, args, owner=f"task-{number}"))
        except Exception as exc:  # noqa: BLE001 - a failed task, whatever it raised
            failed.append(exc)
    raise AssertionError(f"still dispatching after {limit} tasks")
