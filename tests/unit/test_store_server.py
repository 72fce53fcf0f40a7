"""The store's server checks: where it is (never a password), its eviction policy read two ways, the guard's
verdicts, the worker refusing to start, and the memory gauges."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

import worker.app
from tests.conftest import make_settings
from worker.dev.embedded import EmbeddedRedis
from worker.errors import EvictingStore
from worker.observability import StoreMemory
from worker.store import ExportStore
from worker.store.server import EvictionGuard, location, read_policy


class ScriptedConnection:
    """A connection that answers each command from a table; a missing command is refused as Redis would."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.sent: list[str] = []
        self.connected = 0

    def on_connect(self) -> None:
        self.connected += 1

    def send_command(self, *command: str) -> None:
        self.sent.append(" ".join(command))

    def read_response(self) -> Any:
        answer = self.answers.get(self.sent[-1])
        if answer is None or isinstance(answer, Exception):
            raise answer or redis.ResponseError(f"ERR unknown command '{self.sent[-1]}'")
        return answer


CONFIG = "CONFIG GET maxmemory-policy"
INFO = "INFO memory"
INFO_REPLY = b"# Memory\r\nused_memory:1024\r\nmaxmemory:0\r\nmaxmemory_policy:volatile-ttl\r\n"


@pytest.mark.parametrize(
    ("answers", "policy"),
    [
        ({CONFIG: [b"maxmemory-policy", b"allkeys-lru"]}, "allkeys-lru"),
        ({CONFIG: {"maxmemory-policy": "noeviction"}}, "noeviction"),  # RESP3, decoded
        ({CONFIG: redis.ResponseError("NOPERM no permission to run 'config|get'"), INFO: INFO_REPLY}, "volatile-ttl"),
        ({INFO: INFO_REPLY}, "volatile-ttl"),  # CONFIG renamed away, as managed services do
        ({CONFIG: [], INFO: INFO_REPLY.decode()}, "volatile-ttl"),
        ({INFO: b"# Memory\r\nused_memory:1024\r\n"}, None),
        ({}, None),  # neither: the embedded demo server
    ],
)
def test_the_policy_is_read_from_config_or_else_from_info(answers: dict[str, Any], policy: str | None) -> None:
    assert read_policy(ScriptedConnection(answers)) == policy  # type: ignore[arg-type]


def test_the_guard_refuses_an_evicting_redis_on_every_new_connection() -> None:
    guard = EvictionGuard(allow_evicting=False)
    guard.where = "Redis at db:6379/0"
    for _ in range(2):
        connection = ScriptedConnection({CONFIG: [b"maxmemory-policy", b"allkeys-lru"]})
        with pytest.raises(EvictingStore) as refused:
            guard(connection)  # type: ignore[arg-type]
        assert connection.connected == 1, "the connection's own handshake runs first"
    message = str(refused.value)
    assert "Redis at db:6379/0 has maxmemory-policy 'allkeys-lru'" in message
    assert "noeviction" in message and "EXPORT_WORKER_ALLOW_EVICTING_STORE=true" in message and "\n" not in message


def test_an_accepted_risk_is_one_warning_then_no_more_checks(caplog: pytest.LogCaptureFixture) -> None:
    guard = EvictionGuard(allow_evicting=True)
    with caplog.at_level(logging.WARNING, logger="worker.store"):
        for _ in range(3):
            connection = ScriptedConnection({CONFIG: [b"maxmemory-policy", b"allkeys-lfu"]})
            guard(connection)  # type: ignore[arg-type]
    assert guard.policy == "allkeys-lfu" and connection.sent == [], "checked once, on the first connection"
    [warning] = [record.getMessage() for record in caplog.records]
    assert "'allkeys-lfu'" in warning and "EXPORT_WORKER_ALLOW_EVICTING_STORE=true" in warning


@pytest.mark.parametrize("answers", [{CONFIG: [b"maxmemory-policy", b"noeviction"]}, {}])
def test_noeviction_or_a_server_that_will_not_say_passes(answers: dict[str, Any]) -> None:
    guard = EvictionGuard(allow_evicting=False)
    guard(ScriptedConnection(answers))  # type: ignore[arg-type]
    assert guard.checked


def test_where_names_host_port_and_db_or_the_socket_and_never_the_password() -> None:
    client = redis.Redis.from_url("redis://exporter:s3cret@redis.internal:6380/2")
    assert location(client) == "redis.internal:6380/2"
    assert location(redis.Redis.from_url("unix:///run/redis.sock?db=1")) == "/run/redis.sock/1"
    store = ExportStore.from_url("rediss://exporter:s3cret@redis.internal:6380/2", "custom")
    assert store.where == "Redis at redis.internal:6380/2 under key prefix 'custom'"
    assert "s3cret" not in store.where


def test_a_store_from_a_url_checks_on_its_first_connection() -> None:
    """The embedded server answers neither CONFIG nor INFO: the store works, its policy is unknown."""
    with EmbeddedRedis() as url:
        store = ExportStore.from_url(url, "guarded")
        assert store.check_server() is None
        assert store._guard is not None and store._guard.checked
        store.redis.set("guarded:probe", b"1")
        assert store.redis.get("guarded:probe") == b"1"


# -- the worker at start -------------------------------------------------------------------------


def start_with(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, check: Callable[[], str | None]) -> None:
    class Store:
        where = "Redis at db:6379/0 under key prefix 'aew'"

        def check_server(self) -> str | None:
            return check()

    monkeypatch.setattr("worker.wiring.make_store", lambda settings: Store())
    monkeypatch.setattr(worker.app, "get_settings", lambda: make_settings(tmp_path))
    worker.app._refuse_an_evicting_store()


def test_a_worker_exits_at_start_on_an_evicting_redis_with_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse() -> str | None:
        raise EvictingStore("Redis at db:6379/0", "allkeys-lru")

    with caplog.at_level(logging.CRITICAL, logger="worker.app"), pytest.raises(SystemExit) as exited:
        start_with(monkeypatch, tmp_path, refuse)
    assert exited.value.code == 2
    [line] = [record.getMessage() for record in caplog.records]
    assert line.startswith("refusing to start: Redis at db:6379/0 has maxmemory-policy 'allkeys-lru'")


def test_a_worker_warns_when_redis_will_not_say_and_starts_when_redis_is_down(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def down() -> str | None:
        raise redis.ConnectionError("connection refused")

    with caplog.at_level(logging.WARNING, logger="worker.app"):
        start_with(monkeypatch, tmp_path, lambda: None)
        start_with(monkeypatch, tmp_path, down)
        start_with(monkeypatch, tmp_path, lambda: "noeviction")
    unknown, unreachable = [record.getMessage() for record in caplog.records]
    assert "maxmemory-policy is unknown" in unknown and "noeviction" in unknown
    assert "could not check Redis at start (connection refused)" in unreachable


# -- gauges -----------------------------------------------------------------------------------------


def test_memory_gauges_read_the_store_at_scrape_time() -> None:
    readings = iter([(1000, 0), (2000, 4096)])

    class Store:
        def memory(self) -> tuple[int, int] | None:
            return next(readings)

    collector = StoreMemory(Store())  # type: ignore[arg-type]
    for used, limit in ((1000, 0), (2000, 4096)):
        samples = {metric.name: metric.samples[0].value for metric in collector.collect()}
        assert samples == {"aew_redis_used_memory_bytes": used, "aew_redis_maxmemory_bytes": limit}


def test_no_memory_gauge_for_a_server_without_info() -> None:
    class Store:
        def memory(self) -> None:
            return None

    assert list(StoreMemory(Store()).collect()) == []  # type: ignore[arg-type]
