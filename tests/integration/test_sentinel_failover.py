"""Losing the Redis primary mid-run: Sentinel promotes the replica and nothing is lost or doubled.

A primary, one replica and three sentinels (:class:`~worker.dev.sentinel_cluster.SentinelCluster`)
on free loopback ports, started and stopped by pid here; real worker processes and beat through
them; 32 Samsara exports of 3 files each from the simulator, submitted by a caller while the
primary is SIGKILLed. Every export completes, the sink holds exactly the provider's rows (none
doubled), every export id a caller was given exists at the end, and the time from the kill to the
first state change committed on the new primary is printed (``FAILOVER ...``).

It runs with the Redis broker through the same Sentinels and with RabbitMQ as broker (the state
store and result backend behind Sentinel). Workers that exit on the lost broker connection are
started again, as the restart policy README asks for does; how many is printed. The old primary
comes back as a replica once the new one is in place, as an orchestrator would bring it back.
``--chaos-long`` runs more and bigger exports.

Also here: the WAIT against a real replica: a create no replica confirms (the replica is paused)
is a retryable error and the retry returns the same export; a primary with no replica left
acknowledges at once.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.integration.conftest import REQUIRE_REAL_REDIS, count_lines, day_after, unique_hour
from worker.api import ExportClient
from worker.dev.localstack import Broker, LocalStack
from worker.dev.sentinel_cluster import REDIS_SERVER, SentinelCluster
from worker.dev.simulator import SamsaraBehaviour, SimulatorConfig
from worker.models import ExportStatus, FileStatus
from worker.settings import Settings
from worker.store import STORE_UNAVAILABLE
from worker.store.transactions import NotReplicated
from worker.wiring import make_store

pytestmark = pytest.mark.integration

SIZES = {
    "short": {"exports": 32, "files": 3, "rows": 1000, "kill_after": 3.0, "timeout": 150},
    "long": {"exports": 80, "files": 4, "rows": 20_000, "kill_after": 6.0, "timeout": 600},
}
DATA_PASSWORD = "aew-data-pw"
SENTINEL_PASSWORD = "aew-sentinel-pw"


@pytest.fixture
def cluster() -> Iterator[SentinelCluster]:
    if REDIS_SERVER is None:
        if REQUIRE_REAL_REDIS:
            pytest.fail("the failover test needs the redis-server binary in CI")
        pytest.skip("redis-server binary not installed")
    with SentinelCluster(password=DATA_PASSWORD, sentinel_password=SENTINEL_PASSWORD) as running:
        yield running


@dataclass
class Caller:
    """Submits exports one after another, through the failover, retrying what the API says to retry."""

    client: ExportClient
    run_id: str
    count: int
    pause: float
    ids: dict[int, str] = field(default_factory=dict)
    retried: list[str] = field(default_factory=list)
    failure: BaseException | None = None

    def submit_all(self) -> None:
        try:
            for number in range(self.count):
                self.ids[number] = self._submit(number)
                time.sleep(self.pause)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            self.failure = exc

    def _submit(self, number: int) -> str:
        hour = unique_hour(500 + number)
        params = {"startHour": hour, "endHour": day_after(hour), "vehicleIds": [1 + number % 5]}
        deadline = time.monotonic() + 60
        while True:
            try:
                return self.client.submit("samsara", params, idempotency_key=f"failover-{self.run_id}-{number}")
            except STORE_UNAVAILABLE as exc:
                self.retried.append(type(exc).__name__)
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def first_change_after(client: ExportClient, moment: float) -> float | None:
    """When the first state change after ``moment`` was committed, read from the events on the (new) primary."""
    times = [float(event["at"]) for _id, event in client.rt.store.read_events("0", count=1_000_000)]
    later = [at for at in times if at > moment]
    return min(later) if later else None


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_losing_the_primary_loses_and_doubles_nothing(
    request: pytest.FixtureRequest, cluster: SentinelCluster, broker: Broker
) -> None:
    size = SIZES["long" if request.config.getoption("--chaos-long") else "short"]
    config = SimulatorConfig(
        samsara_default=SamsaraBehaviour(
            requested_seconds=0.5, processing_seconds=2, files=size["files"], rows_per_file=size["rows"]
        )
    )
    with LocalStack(simulator_config=config, sentinel=cluster, broker=broker) as stack:
        assert stack.client is not None and stack.simulator is not None and stack.beat is None
        for _ in range(2):
            stack.start_worker(concurrency=2)
        beat = stack.start_beat()
        stack.wait_ready()
        caller = Caller(stack.client, stack.run_id, size["exports"], pause=2 * size["kill_after"] / size["exports"])
        submitter = threading.Thread(target=caller.submit_all, name="caller")
        started = time.monotonic()
        submitter.start()

        time.sleep(size["kill_after"])
        old = cluster.kill_primary()
        killed_at = time.time()
        cluster.wait_for_new_primary(old)
        promoted_s = time.time() - killed_at
        cluster.restart(old)

        deadline = time.monotonic() + size["timeout"]
        restarts = 0
        while time.monotonic() < deadline:
            restarts += stack.supervise()
            if not submitter.is_alive() and len(caller.ids) == size["exports"]:
                if all(stack.client.get(export_id).record.status.terminal for export_id in caller.ids.values()):
                    break
            time.sleep(0.5)
        submitter.join(timeout=5)
        if caller.failure is not None:
            print(stack.logs())
            raise caller.failure
        finished_s = time.time() - killed_at
        views = [stack.client.get(export_id) for export_id in caller.ids.values()]
        if not all(view.record.status.terminal for view in views):
            print(stack.logs())

        stats = httpx.get(f"{stack.simulator.url}/_sim/stats").json()
        record_counts = {f["name"]: f["recordCount"] for job in stats["jobs"].values() for f in job.get("files", [])}
        lost = doubled = 0
        for view in views:
            assert view.record.status is ExportStatus.COMPLETED, (view.record.id, view.record.status, view.record.error)
            assert len(view.files) == view.record.files_total == size["files"], view.record.id
            assert all(file.status is FileStatus.DONE for file in view.files), view.record.id
            for file in view.files:
                written = count_lines(file.path)
                lost += max(0, record_counts[file.name] - written)
                doubled += max(0, written - record_counts[file.name])
                assert file.rows == written == record_counts[file.name], file.name
        events = [event for _id, event in stack.client.rt.store.read_events("0", count=1_000_000)]
        revived = sum(1 for event in events if event["type"] == "revived" and float(event["at"]) > killed_at)
        ambiguous = sum(job.ambiguous_creates for view in views for job in view.record.jobs.values())
        recovery = first_change_after(stack.client, killed_at)
        assert recovery is not None, "nothing was committed on the new primary"
        print(
            f"\nFAILOVER broker={broker} exports={len(views)} files={sum(len(v.files) for v in views)} "
            f"rows={sum(v.record.rows for v in views)} promoted_after={promoted_s:.1f}s "
            f"first_step_on_new_primary_after={recovery - killed_at:.2f}s all_done_after={finished_s:.1f}s "
            f"worker_restarts={restarts} beat_alive={beat.poll() is None} chains_revived={revived} "
            f"caller_retries={len(caller.retried)} ({', '.join(sorted(set(caller.retried))) or 'none'}) "
            f"lost_rows={lost} doubled_rows={doubled} provider_creates={stats['creates']['samsara']} "
            f"ambiguous_creates={ambiguous} elapsed={time.monotonic() - started:.1f}s"
        )
        assert lost == doubled == 0
        assert len(views) <= stats["creates"]["samsara"] <= len(views) + ambiguous


def test_a_write_no_replica_confirms_is_refused_until_one_does(cluster: SentinelCluster) -> None:
    """With the replica paused, WAIT times out: the create is saved on the primary but the caller is told
    to retry; once the replica is back, the retry (same key) returns the same export."""
    with LocalStack(sentinel=cluster, settings_overrides={"redis_wait_timeout_ms": 300}) as stack:
        assert stack.client is not None
        replica = next(node for node in cluster.nodes if node is not cluster.primary())
        assert replica.process is not None
        hour = unique_hour(700)
        params = {"startHour": hour, "endHour": day_after(hour), "vehicleIds": [1]}
        os.kill(replica.process.pid, signal.SIGSTOP)
        try:
            began = time.monotonic()
            with pytest.raises(NotReplicated, match="0 of its 1 replica.* within 300 ms"):
                stack.client.submit("samsara", params, idempotency_key=f"paused-{stack.run_id}")
            assert time.monotonic() - began >= 0.3
        finally:
            os.kill(replica.process.pid, signal.SIGCONT)
        export_id = stack.client.submit("samsara", params, idempotency_key=f"paused-{stack.run_id}")
        assert stack.client.get(export_id).record.idempotency_key == f"paused-{stack.run_id}"
        assert len(stack.client.rt.store.list_ids()) == 1, "one export, not two"


def test_a_primary_left_without_replicas_acknowledges_at_once(cluster: SentinelCluster) -> None:
    with LocalStack(sentinel=cluster, settings_overrides={"redis_wait_timeout_ms": 5000}) as stack:
        assert stack.client is not None
        replica = next(node for node in cluster.nodes if node is not cluster.primary())
        assert replica.process is not None
        replica.process.kill()
        replica.process.wait(10)
        with cluster.client(cluster.primary()) as primary:
            deadline = time.monotonic() + 10
            while primary.info("replication")["connected_slaves"] and time.monotonic() < deadline:
                time.sleep(0.05)
        hour = unique_hour(701)
        began = time.monotonic()
        stack.client.submit("samsara", {"startHour": hour, "endHour": day_after(hour), "vehicleIds": [1]})
        assert time.monotonic() - began < 2, "no replica connected: nothing to wait for (the timeout is 5 s)"


def test_a_replica_a_stale_sentinel_still_names_is_not_read(cluster: SentinelCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """Right after a failover a Sentinel may still name the old primary, back as a replica and empty while it
    loads its first copy. The store must not read "no such export" there: it refuses the connection and asks
    again until it reaches the primary."""
    settings = Settings(**cluster.settings(), key_prefix=f"stale-{uuid.uuid4().hex[:8]}", redis_retry_seconds=10)
    store = make_store(settings)
    store.redis.set(store.key("probe"), "on the primary")
    store.redis.connection_pool.disconnect()
    replica = next(node for node in cluster.nodes if node is not cluster.primary())
    asked = store.redis.connection_pool.proxy  # what each new connection asks for the primary's address
    named: list[tuple[str, int]] = []
    true_primary = asked.get_master_address

    def stale_then_right() -> tuple[str, int]:
        named.append(replica.address if len(named) < 2 else true_primary())
        return named[-1]

    monkeypatch.setattr(asked, "get_master_address", stale_then_right)
    with cluster.client(replica) as direct:  # as empty as a replica still loading its first copy
        direct.config_set("replica-read-only", "no")
        direct.delete(store.key("probe"))
    assert store.redis.get(store.key("probe")) == b"on the primary"
    assert named[:2] == [replica.address, replica.address] and named[-1] != replica.address
