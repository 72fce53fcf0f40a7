"""Sentinel settings: the store, the Celery broker and the result backend all find the primary through the Sentinels.

``redis_url`` keeps the database, user, password and TLS options; the Sentinels' own password and TLS
are separate settings. The failover itself is tested against real processes in
``tests/integration/test_sentinel_failover.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis
from redis.sentinel import SentinelConnectionPool, SentinelManagedConnection, SentinelManagedSSLConnection

from tests.conftest import make_settings
from tests.unit.test_store_server import CONFIG, ScriptedConnection
from worker.app import create_app
from worker.errors import EvictingStore
from worker.store.connection import FailoverRedis, StoreUnavailable
from worker.wiring import make_store

SENTINELS = "10.0.0.1:26379,10.0.0.2:26380, sentinel-3:26381"


def sentinel_settings(tmp_path: Path, **overrides: object):
    values = {
        "redis_url": "redis://exporter:data-pw@ignored-host:6379/4",
        "redis_sentinels": SENTINELS,
        "redis_sentinel_master": "aew",
        "redis_sentinel_password": "sentinel-pw",
        **overrides,
    }
    return make_settings(tmp_path, **values)


def test_sentinels_are_parsed_and_the_wait_for_a_replica_is_on_by_default(tmp_path: Path) -> None:
    settings = sentinel_settings(tmp_path)
    assert settings.sentinel_addresses == [("10.0.0.1", 26379), ("10.0.0.2", 26380), ("sentinel-3", 26381)]
    assert settings.effective_wait_replicas == 1
    assert make_settings(tmp_path).effective_wait_replicas == 0, "no WAIT without replicas to wait for"
    assert sentinel_settings(tmp_path, redis_wait_replicas=0).effective_wait_replicas == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"redis_sentinels": "10.0.0.1"}, "entry '10.0.0.1' is not host:port"),
        ({"redis_sentinels": "10.0.0.1:26379,"}, "entry '' is not host:port"),
        ({"redis_sentinel_master": None}, "go together"),
        ({"redis_sentinels": None}, "go together"),
    ],
)
def test_an_incomplete_sentinel_configuration_is_refused_at_start(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sentinel_settings(tmp_path, **overrides)


def test_the_sentinel_password_stays_secret(tmp_path: Path) -> None:
    settings = sentinel_settings(tmp_path)
    assert "sentinel-pw" not in repr(settings) and "sentinel-pw" not in settings.model_dump_json()


def test_the_store_asks_the_sentinels_for_the_primary_with_the_data_password_and_db(tmp_path: Path) -> None:
    store = make_store(sentinel_settings(tmp_path, redis_retry_seconds=12))
    client = store.redis
    pool = client.connection_pool
    assert isinstance(client, FailoverRedis) and client.retry_seconds == 12
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "aew"
    assert pool.connection_class is SentinelManagedConnection
    kwargs = pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("exporter", "data-pw", 4)
    assert "host" not in kwargs, "the host of redis_url is not used behind Sentinel"
    sentinels = pool.sentinel_manager.sentinels
    assert [(s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"]) for s in sentinels] == [
        ("10.0.0.1", 26379),
        ("10.0.0.2", 26380),
        ("sentinel-3", 26381),
    ]
    assert all(s.connection_pool.connection_kwargs["password"] == "sentinel-pw" for s in sentinels)
    assert "ignored-host" not in client.where and "data-pw" not in client.where and "sentinel-3:26381" in client.where


def test_tls_to_the_data_nodes_and_to_the_sentinels(tmp_path: Path) -> None:
    settings = sentinel_settings(
        tmp_path,
        redis_url="rediss://:data-pw@ignored-host:6380/0?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required",
        redis_sentinel_tls=True,
    )
    pool = make_store(settings).redis.connection_pool
    assert pool.connection_class is SentinelManagedSSLConnection
    assert pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    sentinel_kwargs = pool.sentinel_manager.sentinel_kwargs
    assert sentinel_kwargs["ssl"] is True and sentinel_kwargs["ssl_ca_certs"] == "/etc/ca.pem"

    app = create_app(settings)
    assert app.conf.broker_use_ssl == {"ssl_ca_certs": "/etc/ca.pem", "ssl_cert_reqs": "required"}
    assert app.conf.redis_backend_use_ssl == app.conf.broker_use_ssl
    assert app.conf.broker_transport_options["sentinel_kwargs"]["ssl"] is True


def test_the_redis_broker_and_result_backend_go_through_the_sentinels(tmp_path: Path) -> None:
    app = create_app(sentinel_settings(tmp_path, visibility_timeout_seconds=1234))
    expected = ";".join(
        f"sentinel://exporter:data-pw@{address}/4" for address in ("10.0.0.1:26379", "10.0.0.2:26380", "sentinel-3:26381")
    )
    assert app.conf.broker_url == app.conf.result_backend == expected
    for options in (app.conf.broker_transport_options, app.conf.result_backend_transport_options):
        assert options["master_name"] == "aew"
        assert options["sentinel_kwargs"] == {"password": "sentinel-pw"}
    assert app.conf.broker_transport_options["visibility_timeout"] == 1234
    assert app.conf.broker_channel_error_retry, "a READONLY reply must make kombu reconnect (celery#7946)"
    policy = app.conf.task_publish_retry_policy
    step, cap = policy["interval_step"], policy["interval_max"]
    waits = [min(policy["interval_start"] + n * step, cap) for n in range(policy["max_retries"])]
    assert sum(waits) >= 30, "sending the next step retries for as long as a failover may take"


def test_rabbitmq_broker_with_the_state_store_and_result_backend_behind_sentinel(tmp_path: Path) -> None:
    app = create_app(sentinel_settings(tmp_path, broker_url="amqp://guest:guest@127.0.0.1:5672//"))
    assert app.conf.broker_url.startswith("amqp://")
    assert "master_name" not in app.conf.broker_transport_options
    assert app.conf.result_backend.startswith("sentinel://")
    assert app.conf.result_backend_transport_options["master_name"] == "aew"


def test_an_explicit_redis_broker_is_used_as_given(tmp_path: Path) -> None:
    app = create_app(sentinel_settings(tmp_path, broker_url="redis://other:6379/1"))
    assert app.conf.broker_url == "redis://other:6379/1"
    assert "master_name" not in app.conf.broker_transport_options


class Flaky:
    """A call that fails ``times`` times with ``error``, then answers."""

    def __init__(self, times: int, error: Exception) -> None:
        self.left = times
        self.error = error
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.left:
            self.left -= 1
            raise self.error
        return "answer"


def rider(monkeypatch: pytest.MonkeyPatch, retry_seconds: float) -> tuple[FailoverRedis, list[float]]:
    slept: list[float] = []
    monkeypatch.setattr("worker.store.connection.time.sleep", slept.append)
    client = FailoverRedis()
    client.retry_seconds = retry_seconds
    client.answered = True
    return client, slept


def test_a_command_is_retried_with_backoff_until_redis_answers_again(monkeypatch: pytest.MonkeyPatch) -> None:
    client, slept = rider(monkeypatch, retry_seconds=30)
    call = Flaky(6, redis.ConnectionError("Connection refused"))
    assert client.ride_out(call) == "answer" and call.calls == 7
    assert slept == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0]


def test_a_demoted_primary_drops_the_pooled_connections_before_the_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    client, _slept = rider(monkeypatch, retry_seconds=30)
    dropped: list[bool] = []
    monkeypatch.setattr(client.connection_pool, "disconnect", lambda inuse_connections=True: dropped.append(inuse_connections))
    call = Flaky(1, redis.exceptions.ReadOnlyError("You can't write against a read only replica."))
    assert client.ride_out(call) == "answer"
    assert dropped == [False], "idle connections to the old primary go; a name pointing elsewhere resolves again"


def test_redis_away_longer_than_the_budget_is_a_clear_retryable_error(monkeypatch: pytest.MonkeyPatch) -> None:
    client, slept = rider(monkeypatch, retry_seconds=3)
    clock = iter(range(0, 1000))
    monkeypatch.setattr("worker.store.connection.time.monotonic", lambda: float(next(clock)))
    with pytest.raises(StoreUnavailable, match="no answer from Redis for 3s: Connection refused") as caught:
        client.ride_out(Flaky(100, redis.ConnectionError("Connection refused")))
    assert isinstance(caught.value, redis.ConnectionError), "tasks retry on it like on any lost connection"
    assert slept, "it waited before giving up"


def test_a_redis_that_never_answered_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    client, slept = rider(monkeypatch, retry_seconds=30)
    client.answered = False
    with pytest.raises(StoreUnavailable, match="no answer from Redis: Connection refused"):
        client.ride_out(Flaky(1, redis.ConnectionError("Connection refused")))
    assert slept == [], "a misconfigured URL is reported now, not after the failover budget"


def test_the_compose_override_runs_a_replica_and_three_sentinels_and_points_every_process_at_them(tmp_path: Path) -> None:
    """Read as text, like tests/unit/test_containers.py: no Docker engine or PyYAML needed."""
    text = (Path(__file__).parents[2] / "docker-compose.sentinel.yml").read_text()
    services = set(re.findall(r"^  ([a-z][a-z0-9-]*):$", text, flags=re.MULTILINE))
    assert {"redis", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3", "worker", "beat", "cli", "flower"} <= services
    assert '"--replicaof", "redis", "6379"' in text and "sentinel monitor aew redis 6379 2" in text
    env = dict(re.findall(r"^  (EXPORT_WORKER_[A-Z_]+): (\S+)$", text, flags=re.MULTILINE))
    settings = make_settings(tmp_path, **{name.removeprefix("EXPORT_WORKER_").lower(): value for name, value in env.items()})
    assert settings.sentinel_addresses == [("sentinel-1", 26379), ("sentinel-2", 26379), ("sentinel-3", 26379)]
    assert settings.redis_sentinel_master == "aew" and settings.effective_wait_replicas == 1
    for process in ("worker", "beat", "cli"):
        assert re.search(rf"^  {process}:\n    environment: \*sentinel-store$", text, flags=re.MULTILINE), process
    assert "ports:" not in text, "nothing more published on the host"


class PrimaryConnection(ScriptedConnection):
    """A connection to one primary (host and port), answering the eviction check from a table."""

    def __init__(self, port: int, policy: bytes) -> None:
        super().__init__({"ROLE": [b"master", 0, []], CONFIG: [b"maxmemory-policy", policy]})
        self.host, self.port = "10.0.0.9", port


def test_the_eviction_check_runs_again_on_each_new_primary_sentinel_names(tmp_path: Path) -> None:
    store = make_store(sentinel_settings(tmp_path))
    guard = store.redis.connection_pool.connection_kwargs["redis_connect_func"]
    first = PrimaryConnection(6379, b"noeviction")
    guard(first)
    again = PrimaryConnection(6379, b"allkeys-lru")
    guard(again)
    assert again.sent == ["ROLE"], "the primary already checked is not asked for its policy again"
    promoted = PrimaryConnection(6380, b"allkeys-lru")
    with pytest.raises(EvictingStore, match=r"the Redis primary of 'aew', db 4 \(Sentinels .*\), now 10.0.0.9:6380, has"):
        guard(promoted)
    assert promoted.sent == ["ROLE", CONFIG]


def test_a_replica_a_stale_sentinel_names_is_refused_as_a_connection_error(tmp_path: Path) -> None:
    store = make_store(sentinel_settings(tmp_path))
    guard = store.redis.connection_pool.connection_kwargs["redis_connect_func"]
    loading = PrimaryConnection(6379, b"noeviction")
    loading.answers["ROLE"] = [b"slave", b"10.0.0.9", 6380, b"sync", -1]
    with pytest.raises(redis.ConnectionError, match=r"10.0.0.9:6379 is a slave, not the primary"):
        guard(loading)
    assert loading.sent == ["ROLE"], "nothing is read from it"
    guard(PrimaryConnection(6380, b"noeviction"))
