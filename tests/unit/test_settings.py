"""Settings: every one documented, secrets never printable, and dangerous combinations refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_settings
from worker.settings import Settings

ENV_EXAMPLE = Path(__file__).parents[2] / "config" / ".env.example"


def test_every_setting_is_documented_in_env_example() -> None:
    documented = ENV_EXAMPLE.read_text()
    missing = [name for name in Settings.model_fields if f"EXPORT_WORKER_{name.upper()}=" not in documented]
    assert missing == []


def test_nested_credentials_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPORT_WORKER_CREDENTIALS__FLEET_A__TOKEN", "tok-123")
    monkeypatch.setenv("EXPORT_WORKER_CREDENTIALS__IMPACT__ACCOUNT_SID", "IR1")
    monkeypatch.setenv("EXPORT_WORKER_CREDENTIALS__IMPACT__AUTH_TOKEN", "sec")
    settings = Settings(_env_file=None)
    assert settings.credentials["fleet_a"].token.get_secret_value() == "tok-123"
    assert settings.credentials["impact"].account_sid == "IR1"
    assert "tok-123" not in repr(settings) and "sec'" not in repr(settings)


def test_visibility_timeout_must_outlast_every_countdown_on_redis(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="VISIBILITY_TIMEOUT_SECONDS .* on a Redis broker"):
        make_settings(tmp_path, visibility_timeout_seconds=100, slow_poll_seconds=900)
    assert make_settings(tmp_path).broker_transport == "redis"


def test_rabbitmq_broker_has_no_visibility_timeout_cap(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, broker_url="amqp://guest:guest@127.0.0.1:5672//", visibility_timeout_seconds=100, slow_poll_seconds=900
    )
    assert settings.broker_transport == "amqp"


def test_tls_and_acl_redis_urls_are_understood(tmp_path: Path) -> None:
    from redis.connection import SSLConnection

    from worker.wiring import make_store

    store = make_store(make_settings(tmp_path, redis_url="rediss://exporter:s3cret@redis.internal:6380/2"))
    kwargs = store.redis.connection_pool.connection_kwargs
    assert store.redis.connection_pool.connection_class is SSLConnection
    assert (kwargs["username"], kwargs["password"], kwargs["port"], kwargs["db"]) == ("exporter", "s3cret", 6380, 2)


def test_named_databases_come_from_the_environment_and_stay_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPORT_WORKER_DATABASES__WAREHOUSE__URL", "postgresql://loader:pw-123@db:5432/dw")
    settings = Settings(_env_file=None)
    assert settings.databases["warehouse"].url.get_secret_value() == "postgresql://loader:pw-123@db:5432/dw"
    assert "pw-123" not in repr(settings) and "pw-123" not in settings.model_dump_json()
