"""Retention on the real Redis: a real worker and beat with a retention of a few seconds.

Right after an export ends every key of it expires within the retention; once it has, no key is
left, no index lists the id, ``get_export`` and ``export-worker status`` say it was forgotten and
where they looked, and the same idempotency key makes a new export. A retry that reopens an ended
export makes its keys persistent again, and the first watchdog run after an upgrade bounds records
written without a TTL, a page at a time.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_settings
from tests.integration.conftest import REQUIRE_REAL_REDIS, day_after, unique_hour, wait_done
from worker.dev.localstack import LocalStack
from worker.dev.simulator import SamsaraBehaviour, SimulatorConfig
from worker.dev.testing import RecordingDispatcher
from worker.engine import commands
from worker.engine import transitions as tr
from worker.engine.context import Runtime
from worker.engine.watchdog import run_watchdog
from worker.errors import UnknownExport
from worker.models import ExportRecord, ExportStatus, FileRecord, FileStatus, JobRecord, JobStatus, Writes
from worker.store import ExportStore

pytestmark = pytest.mark.integration

RETENTION = 5
CLI = str(Path(sys.executable).parent / "export-worker")
HOUR = unique_hour(400)
PARAMS = {"startHour": HOUR, "endHour": day_after(HOUR), "vehicleIds": [1, 2]}


@pytest.fixture(scope="module")
def short(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A worker and beat whose exports are forgotten 5 s after they end (stale after 3 s, watchdog every 1 s)."""
    config = SimulatorConfig(
        samsara_behaviours={HOUR: SamsaraBehaviour(requested_seconds=0, processing_seconds=0.5, files=2, rows_per_file=20)}
    )
    overrides = {
        "retention_seconds": RETENTION,
        "poll_initial_seconds": 0.3,
        "poll_max_seconds": 1.0,
        "watchdog_interval_seconds": 1.0,
        "output_dir": tmp_path_factory.mktemp("retention-out"),
    }
    with LocalStack(simulator_config=config, require_real_redis=REQUIRE_REAL_REDIS, settings_overrides=overrides) as stack:
        stack.start_worker(concurrency=2)
        stack.start_beat()
        stack.wait_ready()
        yield stack


def keys_of(store: ExportStore, export_id: str, idempotency_key: str | None = None) -> dict[str, int]:
    """Every key of the export (its idempotency key included), with its TTL in ms (-1: none)."""
    names = list(store.redis.scan_iter(match=store.key("export", export_id) + "*", count=1000))
    if idempotency_key is not None:
        names.append(store.key("idem", idempotency_key).encode())
    return {name.decode(): int(store.redis.pttl(name)) for name in names if store.redis.exists(name)}


def indexed(store: ExportStore, export_id: str) -> list[str]:
    """The indexes that still list the export."""
    found = [
        name
        for name in ("exports", "ended", "unannounced", "watch", "deadlines")
        if store.redis.zscore(store.key(name), export_id) is not None
    ]
    return found + (["active"] if store.redis.sismember(store.key("active"), export_id) else [])


def wait_until(condition, what: str, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.2)


def test_an_ended_export_is_bounded_then_forgotten_everywhere_and_its_key_makes_a_new_export(short: LocalStack) -> None:
    assert short.client is not None and short.settings is not None
    client, store = short.client, short.client.rt.store
    key = f"retention-{short.run_id}"
    export_id = client.submit("samsara", PARAMS, idempotency_key=key, sink="redis_stream")
    view = wait_done(client, export_id, short)
    assert view.record.status is ExportStatus.COMPLETED, view.record.error
    files = {file.key for file in view.files}

    ttls = keys_of(store, export_id, key)
    expected = {store.key("export", export_id), store.key("idem", key), store.key("export", export_id, "files")}
    expected |= {store.key("export", export_id, "file", file_key) for file_key in files}
    expected |= {store.key("export", export_id, "records", file_key) for file_key in files}
    assert set(ttls) >= expected, sorted(expected - set(ttls))
    for name, ttl in ttls.items():
        assert 0 < ttl <= RETENTION * 1000, f"{name} has TTL {ttl} ms right after the end"

    wait_until(lambda: not keys_of(store, export_id, key), "the export's keys never expired", RETENTION + 10)
    wait_until(lambda: not indexed(store, export_id), f"still indexed: {indexed(store, export_id)}", 10)
    assert export_id not in [record.id for record in client.recent(1000)]
    with pytest.raises(UnknownExport) as forgotten:
        client.get(export_id)
    message = str(forgotten.value)
    assert f"no export '{export_id}' in Redis at " in message and f"under key prefix '{short.settings.key_prefix}'" in message
    assert "forgotten" in message and f"EXPORT_WORKER_RETENTION_SECONDS={RETENTION}" in message

    status = subprocess.run(
        [CLI, "status", export_id],
        env={**short.env(), "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 2, status.stderr
    lines = status.stderr.strip().splitlines()
    assert len(lines) == 1 and "forgotten" in lines[0] and "EXPORT_WORKER_RETENTION_SECONDS" in lines[0], status.stderr
    listing = subprocess.run(
        [CLI, "list", "--limit", "1000"],
        env={**short.env(), "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0 and export_id not in listing.stdout

    again = client.submit("samsara", PARAMS, idempotency_key=key, sink="redis_stream")
    assert again != export_id, "after the retention the same idempotency key makes a new export"
    assert wait_done(client, again, short).record.status is ExportStatus.COMPLETED


def test_files_on_disk_stay_after_the_export_is_forgotten(short: LocalStack) -> None:
    assert short.client is not None
    client, store = short.client, short.client.rt.store
    export_id = client.submit("samsara", PARAMS)
    view = wait_done(client, export_id, short)
    paths = [Path(file.path or "") for file in view.files]
    assert len(paths) == 2 and all(path.is_file() for path in paths)
    wait_until(lambda: not keys_of(store, export_id), "the export's keys never expired", RETENTION + 10)
    assert all(path.is_file() for path in paths), "the user's files are never removed"


# -- the store on the real Redis, driven in-process ------------------------------------------------


@pytest.fixture
def rt(short: LocalStack, tmp_path: Path) -> Iterator[Runtime]:
    """The engine in this process on the stack's Redis, under a prefix of its own (removed afterwards)."""
    assert short.settings is not None
    prefix = f"aew-ret-{os.getpid()}-{random.randrange(10**9)}"
    store = ExportStore.from_url(short.settings.redis_url, prefix, retention_seconds=600)
    settings = make_settings(tmp_path, watchdog_page_size=50, retention_seconds=600)
    yield Runtime(settings=settings, store=store, dispatcher=RecordingDispatcher(), clock=time.time)
    for name in store.redis.scan_iter(match=f"{prefix}:*", count=1000):
        store.redis.delete(name)


def failed_with_a_failed_file(rt: Runtime) -> str:
    now = rt.clock()
    record = ExportRecord(
        id="reopened",
        provider="samsara",
        params={},
        credential="default",
        idempotency_key="reopen-me",
        jobs={"0": JobRecord(key="0", params={}, status=JobStatus.SUCCEEDED, provider_job_id="j", token=2)},
        created_at=now,
        updated_at=now,
        deadline_at=now + 3600,
    )
    rt.store.create(record)
    done = FileRecord(key="0-0", job_key="0", name="a", safe_name="a", url="u", status=FileStatus.DONE)
    failed = FileRecord(key="0-1", job_key="0", name="b", safe_name="b", url="u", status=FileStatus.FAILED, error="gave up")

    def fail(state: ExportRecord, files: list[FileRecord], writes: Writes) -> None:
        state.files_total = 2
        writes.put_file(done)
        writes.put_file(failed)
        tr.fail(state, writes, "1 of 2 file(s) failed", now)

    rt.store.transact_with_files(record.id, fail)
    return record.id


def test_a_retry_that_reopens_an_ended_export_makes_its_keys_persistent_again(rt: Runtime) -> None:
    store = rt.store
    export_id = failed_with_a_failed_file(rt)
    assert store.acquire_lease(export_id, "0-1", "late", 3600), "a lease taken after the end"
    ended = keys_of(store, export_id, "reopen-me")
    names = {store.key("export", export_id, *part) for part in [(), ("files",), ("finished",), ("lease", "0-1")]}
    names |= {store.key("export", export_id, "file", key) for key in ("0-0", "0-1")} | {store.key("idem", "reopen-me")}
    assert set(ended) >= names and all(0 < ttl <= 600_000 for ttl in ended.values()), ended
    assert sorted(indexed(store, export_id)) == ["ended", "exports", "unannounced"]

    commands.retry(rt, export_id)
    assert store.get(export_id).status is ExportStatus.DOWNLOADING
    reopened = keys_of(store, export_id, "reopen-me")
    lease = store.key("export", export_id, "lease", "0-1")
    assert {name for name, ttl in reopened.items() if ttl == -1} == set(reopened) - {lease}, reopened
    assert 0 < reopened[lease] <= 600_000, "a lease keeps its own bound"
    assert sorted(indexed(store, export_id)) == ["active", "deadlines", "exports", "unannounced", "watch"]
    [(kind, args, _countdown)] = rt.dispatcher.take()  # type: ignore[attr-defined]
    assert (kind, args.file_key) == ("download", "0-1")


def test_the_first_watchdog_runs_after_an_upgrade_bound_old_records_a_page_at_a_time(rt: Runtime) -> None:
    """300 ended exports and one live one as the version before retention left them: no TTL, no ended,
    watch or deadlines entries. Each run sweeps about a page (50) of them; after a pass all are bounded."""
    store, redis = rt.store, rt.store.redis
    now = rt.clock()
    with redis.pipeline(transaction=False) as pipe:
        for number in range(301):
            export_id = f"old-{number:03d}"
            live = number == 300
            record = ExportRecord(
                id=export_id,
                provider="samsara",
                params={},
                credential="default",
                status=ExportStatus.RUNNING if live else ExportStatus.COMPLETED,
                jobs={"0": JobRecord(key="0", params={}, status=JobStatus.POLLING, token=1, next_action_at=now)},
                created_at=now - 1000 + number,
                updated_at=now - 100,
                finished_at=None if live else now - 100,
                deadline_at=now + 3600,
            )
            pipe.set(store.key("export", export_id), record.model_dump_json())
            pipe.zadd(store.key("exports"), {export_id: record.created_at})
            if live:
                pipe.sadd(store.key("active"), export_id)
        pipe.execute()

    def bounded() -> int:
        return sum(1 for number in range(300) if redis.ttl(store.key("export", f"old-{number:03d}")) > 0)

    first = run_watchdog(rt).swept
    assert 0 < first == bounded() < 300, f"the first run bounded {first} of 300, not a page"
    for _ in range(30):
        if redis.get(store.key("sweep")) == b"0":
            break
        run_watchdog(rt)
    assert bounded() == 300
    assert all(0 < redis.ttl(store.key("export", f"old-{number:03d}")) <= 500 for number in range(300)), (
        "each keeps what is left of its retention, counted from its end 100 s ago"
    )
    assert redis.ttl(store.key("export", "old-300")) == -1 and redis.zscore(store.key("watch"), "old-300") is not None
    assert redis.zcard(store.key("ended")) == 300
