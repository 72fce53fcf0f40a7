"""Worker settings, read once from the environment (prefix ``EXPORT_WORKER_``) or a ``.env`` file.

Every setting is documented in ``config/.env.example``. Secrets live only here: tasks and Redis
carry a credential *name*, and the worker resolves it from ``credentials`` at call time.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.parsing.schema import ColumnType

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_SCHEME = re.compile(r"^([a-z][a-z0-9.+-]*)://", re.IGNORECASE)
_PASSWORD = re.compile(r"(?<=:)[^:@/]+(?=@)")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``: what messages and logs may show."""
    return _PASSWORD.sub("***", url)


def _scheme_problem(url: str, known: set[str], examples: str) -> str | None:
    """Why a broker or result-backend URL cannot be used, or None; the names come from kombu and Celery."""
    match = _SCHEME.match(url)
    if match is None:
        return f"{redact_url(url)!r} is not a URL: it must start with a scheme such as {examples}"
    scheme = match.group(1).lower().split("+", 1)[0]
    if scheme not in known:
        return f"{redact_url(url)!r} has an unknown scheme {scheme!r}: use one such as {examples}"
    return None


class Credential(BaseModel):
    """One named credential. Bearer providers use ``token``; Basic-auth providers use the pair."""

    token: SecretStr | None = None
    account_sid: str | None = None
    auth_token: SecretStr | None = None


class Database(BaseModel):
    """One named PostgreSQL database for the ``postgres`` sink; exports carry only the name."""

    url: SecretStr
    """``postgresql://user:password@host:5432/dbname`` (libpq URI; ``?sslmode=require`` etc. work)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="EXPORT_WORKER_",
        env_file=".env",
        env_nested_delimiter="__",
        extra="ignore",
        hide_input_in_errors=True,  # a refused value may hold a password
    )

    redis_url: str = Field("redis://127.0.0.1:6379/0", description="State store; rediss:// and user:password@ work.")
    broker_url: str | None = Field(
        None, description="Celery broker; defaults to redis_url. amqp://... is RabbitMQ with quorum queues."
    )
    result_backend: str | None = Field(None, description="Celery result backend; defaults to redis_url.")
    redis_sentinels: str | None = Field(
        None,
        description="Comma-separated host:port of the Redis Sentinels; with them the store, and the broker and result "
        "backend that default to redis_url, connect to the primary Sentinel names (redis_url keeps the db and password).",
    )
    redis_sentinel_master: str | None = Field(None, description="The service name the Sentinels monitor.")
    redis_sentinel_username: str | None = Field(None, description="ACL user on the Sentinels themselves.")
    redis_sentinel_password: SecretStr | None = Field(None, description="Password of the Sentinels themselves (secret).")
    redis_sentinel_tls: bool = Field(
        False, description="Talk TLS to the Sentinels, with the ssl_* options of a rediss:// redis_url."
    )
    redis_wait_replicas: int | None = Field(
        None,
        ge=0,
        description="Replicas that must confirm a write callers rely on (WAIT); default 1 with Sentinels, else 0 (off).",
    )
    redis_wait_timeout_ms: int = Field(1000, gt=0, description="How long such a write waits for its replicas.")
    redis_retry_seconds: float = Field(
        30.0, gt=0, description="How long a store call keeps retrying while Redis is away (a failover takes seconds)."
    )
    key_prefix: str = Field("aew", description="Prefix of every Redis key this project writes.")
    queue: str = Field("exports", description="Celery queue the tasks are routed to.")

    poll_initial_seconds: float = Field(2.0, gt=0, description="First poll delay after submit.")
    poll_max_seconds: float = Field(300.0, gt=0, description="Cap of the poll backoff.")
    poll_multiplier: float = Field(2.0, ge=1, description="Growth factor of the poll backoff.")
    poll_jitter: float = Field(0.2, ge=0, le=1, description="Random +/- fraction added to each delay.")
    slow_poll_seconds: float = Field(900.0, gt=0, description="Delay while a provider retries a job itself.")
    visibility_timeout_seconds: int = Field(
        3600, gt=0, description="Redis broker visibility timeout; must exceed every countdown (unused on RabbitMQ)."
    )

    unacked_restore_seconds: int = Field(
        60, gt=0, description="How often workers re-queue messages of dead workers older than the visibility timeout."
    )

    default_deadline_seconds: float = Field(6 * 3600, gt=0, description="Deadline when neither call nor provider sets one.")
    deadline_seconds: dict[str, float] = Field(default_factory=dict, description="Per-provider deadline overrides.")
    max_transient_retries: int = Field(8, ge=0, description="Transient provider errors tolerated per step.")
    http_timeout_seconds: float = Field(30.0, gt=0)

    output_dir: Path = Field(Path("exports"), description="Where the JSONL and Parquet sinks write, one folder per export.")
    credentials: dict[str, Credential] = Field(default_factory=dict, description="Named credentials (secret).")
    base_urls: dict[str, str] = Field(default_factory=dict, description="Per-provider API base URL overrides.")
    download_hosts: dict[str, list[str]] = Field(
        default_factory=dict, description="Per-provider allowlist overrides of download hosts."
    )
    allow_private_networks: bool = Field(False, description="Allow loopback/private download addresses (the simulator needs it).")
    max_download_bytes: int = Field(20 * 1024**3, gt=0, description="Largest file accepted.")
    max_field_bytes: int = Field(1024 * 1024, gt=0, description="Largest single CSV field accepted.")
    databases: dict[str, Database] = Field(
        default_factory=dict, description="Named PostgreSQL databases for the postgres sink (secret): DATABASES__<NAME>__URL."
    )
    redis_sink_max_rows: int = Field(100_000, gt=0, description="Most rows per file the redis_stream sink accepts.")
    redis_sink_ttl_seconds: int = Field(7 * 86400, gt=0, description="How long redis_stream sink streams are kept.")
    column_types: dict[str, dict[str, ColumnType]] = Field(
        default_factory=dict,
        description='Per-provider CSV column type overrides, e.g. {"samsara": {"distance_meters": "float"}}.',
    )
    split_min_vehicles: int = Field(1, ge=1, description="Smallest vehicle batch an auto-split produces.")

    watchdog_interval_seconds: float = Field(60.0, gt=0, description="How often beat runs the watchdog.")
    watchdog_page_size: int = Field(200, ge=1, description="Exports (or ids) the watchdog reads per Redis reply.")
    watchdog_max_exports: int = Field(
        10_000, ge=1, description="Most exports one watchdog run looks at per pass; the next run goes on from there."
    )
    stale_factor: float = Field(3.0, gt=1, description="A chain is dead after stale_factor x poll_max_seconds silent.")
    lease_seconds: float = Field(60.0, gt=0, description="Download lease; renewed while a file streams.")

    retention_seconds: int = Field(
        30 * 86400,
        gt=0,
        description="How long an ended export is kept in Redis; after it, its id is unknown and its idempotency key free.",
    )
    allow_evicting_store: bool = Field(
        False, description="Start on a Redis whose maxmemory-policy may evict keys (with a warning) instead of refusing."
    )

    schedule_file: Path | None = Field(None, description="JSON file of recurring exports for celery beat.")
    log_json: bool = Field(False, description="Emit JSON log lines.")
    log_level: str = "INFO"
    metrics_port: int | None = Field(None, description="Serve Prometheus metrics on this port.")

    @field_validator("redis_url")
    @classmethod
    def _redis_url_is_a_url(cls, value: str) -> str:
        """redis-py would fail on first use with a traceback; say what is wrong where the setting is read."""
        if not value.lower().startswith(REDIS_SCHEMES):
            raise ValueError(
                f"{redact_url(value)!r} is not a Redis URL: it must start with redis://, rediss:// (TLS) or "
                "unix://, e.g. redis://127.0.0.1:6379/0"
            )
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_url_is_a_url(cls, value: str | None) -> str | None:
        from kombu.transport import TRANSPORT_ALIASES

        examples = "redis://127.0.0.1:6379/0 or amqp://user:password@127.0.0.1:5672//"
        if value is not None and (problem := _scheme_problem(value, set(TRANSPORT_ALIASES), examples)):
            raise ValueError(problem)
        return value

    @field_validator("result_backend")
    @classmethod
    def _result_backend_is_a_url(cls, value: str | None) -> str | None:
        from celery.app.backends import BACKEND_ALIASES

        if value is not None and (problem := _scheme_problem(value, set(BACKEND_ALIASES), "redis://127.0.0.1:6379/0")):
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _countdowns_fit_the_visibility_timeout(self) -> Self:
        """On the Redis transport a countdown longer than the visibility timeout is redelivered early."""
        longest = max(self.poll_max_seconds, self.slow_poll_seconds * (1 + self.poll_jitter))
        if self.broker_transport == "redis" and self.visibility_timeout_seconds <= longest:
            raise ValueError(
                f"EXPORT_WORKER_VISIBILITY_TIMEOUT_SECONDS ({self.visibility_timeout_seconds}) must exceed the "
                f"longest countdown ({longest:.0f}s from poll_max_seconds/slow_poll_seconds) on a Redis broker"
            )
        return self

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels_are_host_port(cls, value: str | None) -> str | None:
        if not value:
            return None
        for item in value.split(","):
            host, _, port = item.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"EXPORT_WORKER_REDIS_SENTINELS entry {item.strip()!r} is not host:port")
        return value

    @model_validator(mode="after")
    def _sentinels_come_with_their_master(self) -> Self:
        if bool(self.redis_sentinels) != bool(self.redis_sentinel_master):
            raise ValueError(
                "EXPORT_WORKER_REDIS_SENTINELS and EXPORT_WORKER_REDIS_SENTINEL_MASTER go together: set both "
                "(the sentinels' host:port list and the service name they monitor) or neither"
            )
        return self

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``redis_sentinels`` as (host, port) pairs; empty without Sentinel."""
        items = self.redis_sentinels.split(",") if self.redis_sentinels else []
        return [(host.strip("[]"), int(port)) for host, _, port in (item.strip().rpartition(":") for item in items)]

    @property
    def effective_wait_replicas(self) -> int:
        """Replicas a write callers rely on waits for: 1 behind Sentinel unless set, else none."""
        if self.redis_wait_replicas is not None:
            return self.redis_wait_replicas
        return 1 if self.redis_sentinels else 0

    @model_validator(mode="after")
    def _ends_are_reported_before_they_are_forgotten(self) -> Self:
        """The watchdog reports an end whose worker died once it is stale; the record must still be there."""
        needed = self.stale_after_seconds + self.watchdog_interval_seconds
        if self.retention_seconds <= needed:
            raise ValueError(
                f"EXPORT_WORKER_RETENTION_SECONDS ({self.retention_seconds}) must exceed stale_factor x poll_max_seconds "
                f"+ watchdog_interval_seconds ({needed:.0f}s): the watchdog reports an end its worker did not live to "
                "report only after that long, and needs the export's record to do it"
            )
        return self

    @property
    def broker_transport(self) -> Literal["amqp", "redis"]:
        """RabbitMQ keeps countdowns in the broker (quorum queues); Redis (also through Sentinel) makes the worker hold them."""
        scheme = self.effective_broker_url.partition("://")[0].lower()
        return "amqp" if scheme in ("amqp", "amqps", "pyamqp") else "redis"

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self._redis_for_celery()

    @property
    def effective_result_backend(self) -> str:
        return self.result_backend or self._redis_for_celery()

    def _redis_for_celery(self) -> str:
        """``redis_url`` as Celery takes it: with Sentinels, ``sentinel://`` URLs that carry its user, password and db."""
        if not self.redis_sentinels:
            return self.redis_url
        parts = urlsplit(self.redis_url)
        auth = ""
        if parts.username or parts.password:
            auth = f"{parts.username or ''}{':' + parts.password if parts.password else ''}@"
        db = parts.path.strip("/") or "0"
        return ";".join(f"sentinel://{auth}{host}:{port}/{db}" for host, port in self.sentinel_addresses)

    @property
    def stale_after_seconds(self) -> float:
        return self.stale_factor * self.poll_max_seconds


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def settings_problems(exc: ValidationError) -> str:
    """Settings errors as ``EXPORT_WORKER_<NAME>: what is wrong``, one line (pydantic hides the refused values)."""
    problems = []
    for error in exc.errors():
        name = "__".join(str(part) for part in error["loc"]).upper()
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"EXPORT_WORKER_{name}: {message}" if name else message)
    return "invalid settings: " + "; ".join(problems)
