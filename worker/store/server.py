"""The Redis server behind the store: the one place that connects to it (a URL, or through Sentinel: see
:mod:`worker.store.connection`), says where it is, and checks it never evicts.

A Redis whose ``maxmemory-policy`` is anything but ``noeviction`` drops keys under memory pressure,
export and file records included, without a word. Every new connection of a store's client runs
:class:`EvictionGuard` (redis-py's ``redis_connect_func``) until one check has passed: it reads the
policy with ``CONFIG GET`` or, where a managed service disables CONFIG, from ``INFO memory``, and
refuses an evicting one with :class:`~worker.errors.EvictingStore` unless the operator accepted the
risk. So the worker, the API and the CLI all check on their first connection, with no call to forget;
behind Sentinel, also on their first connection to each new primary.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from redis.connection import AbstractConnection

from worker.errors import EvictingStore
from worker.store.connection import FailoverRedis, RedisTarget
from worker.store.connection import connect as connect_to

log = logging.getLogger("worker.store")

SAFE_POLICY = "noeviction"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def location(client: redis.Redis) -> str:
    """``host:port/db`` (or the socket path) of a client, for messages; never its user or password."""
    kwargs = client.connection_pool.connection_kwargs
    db = kwargs.get("db", 0)
    if kwargs.get("path"):
        return f"{kwargs['path']}/{db}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{db}"


def _ask(connection: AbstractConnection, *command: str) -> Any:
    connection.send_command(*command)
    return connection.read_response()


def read_policy(connection: AbstractConnection) -> str | None:
    """The server's ``maxmemory-policy``, or None when it answers neither CONFIG GET nor INFO memory."""
    try:
        reply = _ask(connection, "CONFIG", "GET", "maxmemory-policy")
    except redis.ResponseError:  # renamed or refused (ACL): managed services often disable CONFIG
        reply = None
    if reply:
        values = list(reply.values()) if isinstance(reply, dict) else reply[1::2]
        return _text(values[0])
    try:
        info = _text(_ask(connection, "INFO", "memory"))
    except redis.ResponseError:
        return None
    for line in info.splitlines():
        name, _, value = line.partition(":")
        if name == "maxmemory_policy":
            return value.strip()
    return None


class NotPrimary(redis.ConnectionError):
    """Sentinel named a server that is no primary (yet, or any more): a connection error, so it is ridden out."""


def refuse_a_replica(connection: AbstractConnection) -> None:
    """Behind Sentinel, a new connection must reach the primary. A Sentinel that has not yet heard of a failover
    still names the old primary, which may be back as a replica still loading its first copy: reads there find
    exports missing (empty until the sync ends) and redis-py checks nothing on connect."""
    role = _text(_ask(connection, "ROLE")[0])
    if role != "master":
        where = f"{getattr(connection, 'host', '?')}:{getattr(connection, 'port', '?')}"
        raise NotPrimary(f"{where} is a {role}, not the primary: a Sentinel named it before it learned of a failover")


class EvictionGuard:
    """Runs on each new connection of one client until a check of its server has passed; a refusal is raised
    again each time. Behind Sentinel the server changes with a failover: every new connection must reach a
    primary (:func:`refuse_a_replica`), and one to another primary than the one checked is checked again (its
    policy may differ)."""

    def __init__(self, allow_evicting: bool) -> None:
        self.allow_evicting = allow_evicting
        self.where = "Redis"
        self.checked = False
        self.per_primary = False
        """Behind Sentinel: say which primary a refusal is about."""
        self.server: tuple[object, object] | None = None
        """The address the check passed for."""
        self.policy: str | None = None
        """What the check read; None until it ran, or when the server would not say."""

    def __call__(self, connection: AbstractConnection) -> None:
        connection.on_connect()
        if self.per_primary:
            refuse_a_replica(connection)
        server = (getattr(connection, "host", None), getattr(connection, "port", None))
        if self.checked and server == self.server:
            return
        self.checked = False
        self.policy = read_policy(connection)
        if self.policy is not None and self.policy != SAFE_POLICY:
            where = f"{self.where}, now {server[0]}:{server[1]}," if self.per_primary else self.where
            if not self.allow_evicting:
                raise EvictingStore(where, self.policy)
            log.warning(
                "%s has maxmemory-policy %r and may evict export records under memory pressure; going on because "
                "EXPORT_WORKER_ALLOW_EVICTING_STORE=true",
                where,
                self.policy,
            )
        self.checked = True
        self.server = server


def connect(target: RedisTarget, *, allow_evicting: bool) -> tuple[FailoverRedis, EvictionGuard]:
    """A client for ``target`` whose connections pass the eviction guard (returned too, for what it read)."""
    guard = EvictionGuard(allow_evicting)
    client = connect_to(target, redis_connect_func=guard)
    guard.where = client.where
    guard.per_primary = bool(target.sentinels)
    return client, guard


def server_memory(client: redis.Redis) -> tuple[int, int] | None:
    """``(used_memory, maxmemory)`` in bytes (maxmemory 0: no limit); None when the server has no INFO."""
    try:
        info: Any = client.info("memory")
    except redis.ResponseError:
        return None
    return int(info["used_memory"]), int(info["maxmemory"])
