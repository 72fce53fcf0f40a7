"""How the store reaches Redis: one URL, or whichever primary a set of Sentinels names; and how it rides out a failover.

With Sentinels, redis-py's ``Sentinel(...).master_for(name)`` asks them for the primary on every new
connection, and a connection that meets a demoted primary (``READONLY``) is dropped, so the next one
goes to the new primary. ``redis_url`` still gives the database, user, password and TLS options of
the data nodes; its host and port are not used.

A failover takes seconds (Sentinel's ``down-after-milliseconds`` plus an election), so every command
of :class:`FailoverRedis` is retried, with backoff, until Redis answers again or ``retry_seconds``
have passed; then :class:`StoreUnavailable` says so. A Redis that never answered this process is a
configuration problem, not a failover: it fails at once. Transactions have their own retry, which
also settles an EXEC whose reply was lost (see :mod:`worker.store.exports`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import redis
from pydantic import BaseModel, ConfigDict, SecretStr
from redis.backoff import ExponentialWithJitterBackoff
from redis.connection import SSLConnection, parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel

T = TypeVar("T")

SOCKET_TIMEOUT_SECONDS = 10.0
"""A primary that stops answering mid-command (its host is gone) is given up after this long; above
every blocking read the store makes (event reads block for at most a few seconds)."""
CONNECT_TIMEOUT_SECONDS = 5.0
HEALTH_CHECK_INTERVAL_SECONDS = 30
FIRST_BACKOFF_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 1.0

UNREACHABLE: tuple[type[Exception], ...] = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
"""A command that raised one of these may or may not have run; only idempotent ones are simply repeated."""


class StoreUnavailable(redis.exceptions.ConnectionError):
    """Redis did not answer within the retry budget; the call can be retried once it is back."""


class RedisTarget(BaseModel):
    """Where the store's Redis is (``url`` alone, or the primary ``master`` that ``sentinels`` name), and how
    long to wait for it and its replicas."""

    model_config = ConfigDict(frozen=True)

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str | None = None
    sentinel_username: str | None = None
    sentinel_password: SecretStr | None = None
    sentinel_tls: bool = False
    retry_seconds: float = 30.0
    wait_replicas: int = 0
    """Replicas a write callers rely on waits for (see :mod:`worker.store.transactions`)."""
    wait_timeout_ms: int = 1000

    def describe(self) -> str:
        """For messages: where the data is, never a user or password."""
        options = parse_url(self.url)
        db = options.get("db", 0)
        if self.sentinels:
            listed = ",".join(f"{host}:{port}" for host, port in self.sentinels)
            return f"the Redis primary of {self.master!r}, db {db} (Sentinels {listed})"
        if "path" in options:
            return f"Redis at {options['path']}/{db}"
        return f"Redis at {options.get('host', 'localhost')}:{options.get('port', 6379)}/{db}"


class FailoverRedis(redis.Redis):
    """A client whose every command is retried until Redis answers again, for up to ``retry_seconds``."""

    retry_seconds: float = 30.0
    where: str = "Redis"
    answered: bool = False
    """Whether Redis ever answered this client: before that, unreachable is a configuration error."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        return self.ride_out(lambda: super(FailoverRedis, self).execute_command(*args, **options))

    def ride_out(self, call: Callable[[], T]) -> T:
        """``call`` (which must be safe to repeat), retried with backoff while Redis is away or read-only."""
        deadline = time.monotonic() + self.retry_seconds
        delay = FIRST_BACKOFF_SECONDS
        while True:
            try:
                result = call()
            except redis.exceptions.ReadOnlyError as exc:
                # A demoted primary behind a name that now points elsewhere (a managed service's
                # endpoint): drop the pooled connections so the next one resolves the name again.
                self.connection_pool.disconnect(inuse_connections=False)
                error: Exception = exc
            except UNREACHABLE as exc:
                error = exc
            else:
                self.answered = True
                return result
            if not self.answered or time.monotonic() + delay > deadline:
                raise self.unavailable(error) from error
            time.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)

    def unavailable(self, error: Exception) -> StoreUnavailable:
        waited = f" for {self.retry_seconds:.0f}s" if self.answered else ""
        return StoreUnavailable(f"no answer from {self.where}{waited}: {error}")


def connect(target: RedisTarget, **client_options: Any) -> FailoverRedis:
    """A client of ``target``; ``client_options`` go to every connection (e.g. ``redis_connect_func``)."""
    options: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT_SECONDS,
        "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "health_check_interval": HEALTH_CHECK_INTERVAL_SECONDS,
        # redis-py's own retry absorbs a blip; a failover is ridden out by FailoverRedis.ride_out.
        "retry": Retry(ExponentialWithJitterBackoff(cap=0.2, base=0.02), 2),
        **client_options,
    }
    client: FailoverRedis
    if not target.sentinels:
        client = cast(FailoverRedis, FailoverRedis.from_url(target.url, **options))
    else:
        assert target.master is not None, "Sentinels need the name of the primary they monitor"
        data = parse_url(target.url)
        tls = data.pop("connection_class", None) is SSLConnection
        data.pop("host", None)
        data.pop("port", None)
        sentinel_options: dict[str, Any] = {
            "socket_timeout": options["socket_timeout"],
            "socket_connect_timeout": options["socket_connect_timeout"],
            "username": target.sentinel_username,
            "password": target.sentinel_password.get_secret_value() if target.sentinel_password else None,
        }
        if target.sentinel_tls:
            sentinel_options.update(ssl=True, **{name: value for name, value in data.items() if name.startswith("ssl_")})
        sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_options, ssl=tls, **data, **options)
        client = cast(FailoverRedis, sentinel.master_for(target.master, redis_class=FailoverRedis))
    client.retry_seconds = target.retry_seconds
    client.where = target.describe()
    return client
