"""A whole local deployment in one object: Redis, the provider simulator, worker and beat processes.

The demo, the integration and chaos tests and the benchmarks all run the real thing through it:
real Celery worker processes talking to Redis (the real one when reachable, otherwise the embedded
fake) and to the simulator over loopback HTTP. The broker is that Redis or, with
``broker="rabbitmq"``, the RabbitMQ at ``EXPORT_WORKER_TEST_RABBITMQ_URL`` (no fallback: a missing
RabbitMQ is an error). Each run has its own key prefix and queue name, and ``stop()`` removes the
keys, queues and exchanges it created, so runs can share one Redis and one RabbitMQ. SIGTERM and
SIGINT unwind the owner so its ``with`` block or ``finally`` runs ``stop()``; if the owner dies
without stopping (SIGKILL), a watcher process does the same teardown (:mod:`worker.dev.teardown`). With
``sentinel=SentinelCluster()`` the stack runs on a private primary, replica and three Sentinels
instead (started here unless already running, stopped here if started here): the store, the broker
(when Redis) and the result backend all go through the Sentinels.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import psutil
from celery import Celery
from kombu import Connection, Message, Queue
from pydantic import SecretStr

from worker.api import ExportClient
from worker.app import create_app
from worker.dev.embedded import EmbeddedRedis, redis_reachable
from worker.dev.sentinel_cluster import SentinelCluster
from worker.dev.simulator import SimulatorConfig, SimulatorThread
from worker.dev.teardown import SignalChain, TeardownPlan, Watcher, tear_down
from worker.settings import Credential, Settings
from worker.wiring import build_runtime

SIM_IMPACT_CREDENTIAL = "impact"
"""The simulator's first impact.com account; each of its ``impact_more_accounts`` is a credential named by its AccountSID."""
RABBITMQ_URL = os.environ.get("EXPORT_WORKER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
Broker = Literal["redis", "rabbitmq"]


def _reveal(value: Any) -> Any:
    """Secrets (credentials, database URLs) as plain text, for a child process's environment."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {key: _reveal(item) for key, item in value.items() if item is not None}
    return value


def settings_to_env(settings: Settings) -> dict[str, str]:
    """The environment a worker process needs to load exactly these settings."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump(mode="python").items():
        if value is None:
            continue
        key = f"EXPORT_WORKER_{name.upper()}"
        value = _reveal(value)
        env[key] = json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
    return env


class LocalStack:
    def __init__(
        self,
        *,
        simulator_config: SimulatorConfig | None = None,
        redis_url: str | None = None,
        require_real_redis: bool = False,
        output_dir: Path | None = None,
        settings_overrides: dict[str, Any] | None = None,
        broker: Broker = "redis",
        rabbitmq_url: str = RABBITMQ_URL,
        sentinel: SentinelCluster | None = None,
    ) -> None:
        self.broker = broker
        self.sentinel = sentinel
        self._owns_sentinel = False
        self.rabbitmq_url = rabbitmq_url
        self.simulator_config = simulator_config or SimulatorConfig()
        self.requested_redis_url = redis_url or os.environ.get("EXPORT_WORKER_REDIS_URL", "redis://127.0.0.1:6379/0")
        self.require_real_redis = require_real_redis
        self.output_dir = output_dir
        self.settings_overrides = settings_overrides or {}
        self.embedded: EmbeddedRedis | None = None
        self.simulator: SimulatorThread | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.beat: subprocess.Popen[bytes] | None = None
        self.run_id = uuid.uuid4().hex[:8]
        self._tmp = tempfile.TemporaryDirectory(prefix="aew-stack-")
        self.settings: Settings | None = None
        self.app: Celery | None = None
        self.client: ExportClient | None = None
        self._queues: set[str] = set()
        self.nodes: dict[int, str] = {}
        """Celery node name of each worker process, by pid."""
        self._process_groups: dict[int, float] = {}
        self._watcher: Watcher | None = None
        self._signals: SignalChain | None = None

    @property
    def using_real_redis(self) -> bool:
        return self.embedded is None

    def start(self) -> LocalStack:
        redis_url = self.requested_redis_url
        if self.sentinel is not None:
            if not self.sentinel.nodes:
                self.sentinel.start()
                self._owns_sentinel = True
            redis_url = self.sentinel.data_url()
        elif not redis_reachable(redis_url):
            if self.require_real_redis:
                raise RuntimeError(
                    f"no Redis reachable at {redis_url}; start one (docker compose up redis) or unset CI/require_real_redis"
                )
            self.embedded = EmbeddedRedis()
            redis_url = self.embedded.start()
        if self.broker == "rabbitmq":
            _require_rabbitmq(self.rabbitmq_url)
        self.simulator = SimulatorThread(self.simulator_config).start()
        sim = self.simulator_config
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "broker_url": self.rabbitmq_url if self.broker == "rabbitmq" else None,
            "key_prefix": f"aew-{self.run_id}",
            "queue": f"exports-{self.run_id}",
            "base_urls": {"samsara": self.simulator.url, "impact": self.simulator.url},
            "credentials": {
                "default": Credential(token=sim.samsara_token),
                SIM_IMPACT_CREDENTIAL: Credential(account_sid=sim.impact_account_sid, auth_token=sim.impact_auth_token),
                **{sid: Credential(account_sid=sid, auth_token=token) for sid, token in sim.impact_more_accounts.items()},
            },
            "allow_private_networks": True,
            "output_dir": self.output_dir or Path(self._tmp.name) / "out",
            "poll_initial_seconds": 0.5,
            "poll_max_seconds": 3.0,
            "slow_poll_seconds": 3.0,
            "visibility_timeout_seconds": 30,
            "unacked_restore_seconds": 2,
            "watchdog_interval_seconds": 2.0,
            "stale_factor": 3.0,
            "lease_seconds": 10.0,
            **(self.sentinel.settings() if self.sentinel is not None else {}),
        }
        values.update(self.settings_overrides)
        self.settings = Settings(_env_file=None, **values)
        self._queues.add(self.settings.queue)
        self._signals = SignalChain()
        self._watcher = Watcher()
        self._tell_watcher()
        self.app = create_app(self.settings)
        self.client = ExportClient(build_runtime(self.settings, self.app))
        return self

    def settings_env(self) -> dict[str, str]:
        """Only the settings this stack chose: what another shell exports to use it."""
        assert self.settings is not None, "start() first"
        chosen = {f"EXPORT_WORKER_{name.upper()}" for name in self.settings.model_fields_set}
        return {key: value for key, value in settings_to_env(self.settings).items() if key in chosen}

    def env(self) -> dict[str, str]:
        assert self.settings is not None, "start() first"
        base = {k: v for k, v in os.environ.items() if not k.startswith("EXPORT_WORKER_")}
        return {**base, **settings_to_env(self.settings), "PYTHONUNBUFFERED": "1"}

    def _spawn(self, log_name: str, *celery_args: str) -> subprocess.Popen[bytes]:
        """Run ``celery -A worker.app ...`` in its own session, logging to this stack's temp folder."""
        log = open(Path(self._tmp.name) / log_name, "ab")  # noqa: SIM115 - the child keeps it open
        command = [sys.executable, "-m", "celery", "-A", "worker.app", *celery_args]
        process = subprocess.Popen(command, env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._process_groups[process.pid] = psutil.Process(process.pid).create_time()
        self._tell_watcher()
        return process

    def start_worker(
        self, concurrency: int = 2, pool: str = "prefork", name: str | None = None, extra_args: tuple[str, ...] = ()
    ) -> subprocess.Popen[bytes]:
        assert self.settings is not None, "start() first"
        node = f"{name or 'w' + str(len(self.workers))}-{self.run_id}@%h"
        process = self._spawn(
            f"worker-{len(self.workers)}.log",
            "worker", "-P", pool, "-c", str(concurrency), "-Q", self.settings.queue, "-n", node,
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING", *extra_args,
        )  # fmt: skip
        self.nodes[process.pid] = node.replace("%h", socket.gethostname())
        self.workers.append(process)
        return process

    def wait_ready(self, timeout: float = 60) -> None:
        """Block until every worker started so far answers a ping: its queues are declared and consumed."""
        assert self.app is not None, "start() first"
        waiting = {self.nodes[process.pid] for process in self.workers}
        deadline = time.monotonic() + timeout
        while waiting:
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers {sorted(waiting)} not ready after {timeout}s:\n{self.logs()}")
            for reply in self.app.control.ping(destination=sorted(waiting), timeout=0.5) or []:
                waiting -= set(reply)

    def start_beat(self) -> subprocess.Popen[bytes]:
        schedule = str(Path(self._tmp.name) / "celerybeat-schedule")
        self.beat = self._spawn("beat.log", "beat", "-l", "WARNING", "--schedule", schedule)
        return self.beat

    @staticmethod
    def kill(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        """Kill the whole process group: a prefork worker's children die with it, as on a lost host."""
        if process.poll() is None:
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def replace_worker(self, index: int, concurrency: int = 2) -> subprocess.Popen[bytes]:
        """SIGKILL worker ``index`` (parent and pool children, as when a host dies) and start a fresh one."""
        self.kill(self.workers[index])
        replacement = self.start_worker(concurrency=concurrency, name=f"w{index}r{len(self.workers)}")
        self.workers[index] = self.workers.pop()
        return replacement

    def supervise(self, concurrency: int = 2) -> int:
        """Restart workers that exited, as systemd or a container restart policy would; returns how many."""
        restarted = 0
        for index, process in enumerate(list(self.workers)):
            if process.poll() is not None:
                replacement = self.start_worker(concurrency=concurrency, name=f"w{index}s{len(self.workers)}")
                self.workers[index] = self.workers.pop()
                assert self.workers[index] is replacement
                restarted += 1
        return restarted

    def stop_workers(self, sig: int = signal.SIGTERM) -> None:
        for process in self.workers:
            self.kill(process, sig)
        self.workers.clear()

    def logs(self) -> str:
        return "\n".join(
            f"== {path.name}\n{path.read_text(errors='replace')[-6000:]}" for path in sorted(Path(self._tmp.name).glob("*.log"))
        )

    def take_message(self, queue: str) -> Message | None:
        """One message off ``queue`` on this stack's broker, without declaring it; the queue goes at ``stop()``."""
        assert self.settings is not None, "start() first"
        self._queues.add(queue)
        self._tell_watcher()
        with Connection(self.settings.effective_broker_url) as connection:
            return Queue(queue, channel=connection.default_channel).get(no_ack=True)

    def teardown_plan(self) -> TeardownPlan:
        """What to remove if this process dies: its keys only on a shared server (the others go with theirs)."""
        assert self.settings is not None, "start() first"
        shared = self.using_real_redis and self.sentinel is None
        return TeardownPlan(
            key_prefix=self.settings.key_prefix,
            redis_url=self.settings.redis_url if shared else None,
            broker=self.broker,
            broker_url=self.settings.effective_broker_url,
            queues=sorted(self._queues),
            process_groups=self._process_groups,
            temp_dir=self._tmp.name,
        )

    def _tell_watcher(self) -> None:
        if self._watcher is not None:
            self._watcher.send(self.teardown_plan())

    def stop(self) -> None:
        """Stop and remove everything; handlers go back first, so a second Ctrl-C kills at once (the watcher finishes)."""
        if self._signals is not None:
            self._signals.restore()
        self.stop_workers()
        if self.beat is not None:
            self.kill(self.beat, signal.SIGTERM)
        if self.settings is not None:
            tear_down(self.teardown_plan())
        if self._watcher is not None:
            self._watcher.finish()
            self._watcher = None
        if self.simulator is not None:
            self.simulator.stop()
        if self.embedded is not None:
            self.embedded.stop()
        if self.sentinel is not None and self._owns_sentinel:
            self.sentinel.stop()
        self._tmp.cleanup()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _require_rabbitmq(url: str) -> None:
    try:
        with Connection(url, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:  # kombu raises transport-specific errors; all mean the same here
        raise RuntimeError(
            f"no RabbitMQ reachable at {url} ({exc}); start one (docker compose --profile rabbitmq up -d rabbitmq) "
            "or set EXPORT_WORKER_TEST_RABBITMQ_URL"
        ) from None
