"""A harness that runs one engine step inside another, at every Redis round trip of the first.

Two runtimes share one fakeredis server but not a connection. The paused step's connection calls a
hook before each command (or pipeline) it sends; at round trip ``k`` the hook runs the other step to
its end, then lets the paused step go on. Trying every ``k`` (and both orders) enumerates every
point where one step can land inside the other: deterministic, no threads, no luck.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fakeredis
import httpx

from worker.dev.testing import RecordingDispatcher
from worker.engine.context import Runtime
from worker.engine.download_step import run_download
from worker.engine.jobs import run_poll, run_submit
from worker.engine.watchdog import run_watchdog
from worker.models import ExportRecord, ExportStatus, FileStatus, JobStatus
from worker.settings import Settings
from worker.store import ExportStore

Step = Callable[[Runtime], object]


class RoundTrips:
    """Counts the round trips of one client and runs ``insert`` just before round trip ``at``."""

    def __init__(self, at: int | None = None, insert: Callable[[], object] | None = None) -> None:
        self.at = at
        self.insert = insert
        self.count = 0

    def before_send(self) -> None:
        if self.count == self.at and self.insert is not None:
            insert, self.insert = self.insert, None
            insert()
        self.count += 1


def hooked_client(server: fakeredis.FakeServer, trips: RoundTrips) -> fakeredis.FakeRedis:
    client = fakeredis.FakeRedis(server=server)
    pool = client.connection_pool
    base: Any = pool.connection_class

    class Hooked(base):  # type: ignore[misc, valid-type]
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            trips.before_send()
            super().send_packed_command(command, check_health)

    pool.connection_class = Hooked
    return client


@dataclass
class Clock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    """One fake Redis, one provider, one output directory, one list of dispatched tasks."""

    settings: Settings
    handler: Callable[[httpx.Request], httpx.Response]
    server: fakeredis.FakeServer = field(default_factory=fakeredis.FakeServer)
    dispatcher: RecordingDispatcher = field(default_factory=RecordingDispatcher)
    clock: Clock = field(default_factory=Clock)

    def runtime(self, trips: RoundTrips | None = None) -> Runtime:
        client = hooked_client(self.server, trips) if trips else fakeredis.FakeRedis(server=self.server)
        return Runtime(
            settings=self.settings,
            store=ExportStore(client, prefix="il"),
            dispatcher=self.dispatcher,
            clock=self.clock,
            rng=random.Random(7),
            transport=httpx.MockTransport(self.handler),
        )

    def drain(self, limit: int = 200) -> None:
        """Run every dispatched task to its end, ignoring countdowns, as the workers eventually would."""
        rt = self.runtime()
        for number in range(limit):
            if not self.dispatcher.sent:
                return
            kind, args, _countdown = self.dispatcher.sent.pop(0)
            if kind == "submit":
                run_submit(rt, args)
            elif kind == "poll":
                run_poll(rt, args)
            else:
                run_download(rt, args, owner=f"drain-{number}")
        raise AssertionError(f"still dispatching after {limit} tasks")

    def settle(self) -> None:
        """Drain, then let the watchdog revive whatever lost its chain, and drain again."""
        self.drain()
        self.clock.now += 10 * self.settings.stale_after_seconds
        run_watchdog(self.runtime())
        self.drain()


@dataclass(frozen=True)
class Expected:
    """What the provider holds: the export must end with exactly these files and rows, or not complete."""

    files: int
    rows: int


def check_invariants(world: World, export_id: str, expected: Expected) -> None:
    store = world.runtime().store
    record = store.get(export_id)
    files = store.files(export_id)
    assert record.status.terminal, f"export still {record.status.value} after every task and the watchdog ran"
    events = [event for _id, event in store.read_events("0", count=100_000) if event.get("export_id") == export_id]

    done_events = Counter(event["file"] for event in events if event["type"] == "file_done")
    assert all(count == 1 for count in done_events.values()), f"a file was finished twice: {done_events}"
    _check_terminal_is_final(events)

    if record.status is ExportStatus.COMPLETED:
        assert all(job.status in (JobStatus.SUCCEEDED, JobStatus.SPLIT) for job in record.jobs.values())
        assert len(files) == record.files_total == expected.files, f"COMPLETED with {len(files)} file records of {expected.files}"
        assert all(file.status is FileStatus.DONE for file in files), "COMPLETED with a file not DONE"
        assert record.rows == sum(file.rows for file in files) == expected.rows, (
            f"COMPLETED with {record.rows} rows, provider holds {expected.rows}"
        )
    for file in files:
        if file.status is FileStatus.DONE:
            assert file.path is not None
            assert _lines(Path(file.path)) == file.rows, f"{file.key}: {file.rows} rows counted, output differs"
    output = Path(world.settings.output_dir) / export_id
    temps = sorted(path.name for path in output.glob(".*.tmp")) if output.exists() else []
    assert temps == [], f"temp files left behind after the export ended: {temps}"
    _check_retention(store, export_id)


def _check_retention(store: ExportStore, export_id: str) -> None:
    """An ended export: every key of it expires within the retention, and only the ended indexes list it."""
    client = store.redis
    for key in client.scan_iter(match=store.key("export", export_id) + "*"):
        assert 0 < client.ttl(key) <= store.retention_seconds, f"{key!r} of the ended export does not expire"
    assert client.zscore(store.key("ended"), export_id) is not None, "an ended export is missing from the ended index"
    assert not client.sismember(store.key("active"), export_id), "an ended export is still listed as active"
    for live_index in ("watch", "deadlines"):
        assert client.zscore(store.key(live_index), export_id) is None, f"an ended export is still in {live_index}"


def _check_terminal_is_final(events: list[dict[str, Any]]) -> None:
    """After a terminal status nothing happens to the export, until a caller's retry reopens it."""
    ended = False
    for event in events:
        reopened = event["type"] == "status" and ("retried_files" in event or "replayed_job" in event)
        if reopened:
            ended = False
            continue
        assert not ended, f"the export changed after it ended: {event}"
        if event["type"] == "status" and ExportStatus(event["status"]).terminal:
            ended = True


def _lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip() and json.loads(line) is not None)


@dataclass(frozen=True)
class Scenario:
    """A stored starting state and two steps that may run at the same time on it."""

    name: str
    setup: Callable[[World], str]
    first: Step
    second: Step
    expected: Expected


def round_trips_of(world_factory: Callable[[], World], scenario: Scenario, step: Step) -> int:
    world = world_factory()
    scenario.setup(world)
    trips = RoundTrips()
    step(world.runtime(trips))
    return trips.count


def run_schedule(world_factory: Callable[[], World], scenario: Scenario, paused: Step, inserted: Step, at: int) -> None:
    world = world_factory()
    export_id = scenario.setup(world)
    trips = RoundTrips(at, lambda: inserted(world.runtime()))
    paused(world.runtime(trips))
    world.settle()
    check_invariants(world, export_id, scenario.expected)


def every_schedule(world_factory: Callable[[], World], scenario: Scenario) -> int:
    """Run both steps with each one inserted at every round trip of the other; returns how many ran."""
    ran = 0
    for paused, inserted in ((scenario.first, scenario.second), (scenario.second, scenario.first)):
        total = round_trips_of(world_factory, scenario, paused)
        for at in range(total + 1):
            try:
                run_schedule(world_factory, scenario, paused, inserted, at)
            except AssertionError as exc:
                order = "first" if paused is scenario.first else "second"
                raise AssertionError(f"{scenario.name}: {order} step paused at round trip {at} of {total}: {exc}") from exc
            ran += 1
    return ran


def stored(world: World, record: ExportRecord, files: list[Any]) -> str:
    """Write a starting state straight into the store, as earlier steps would have left it: created PENDING,
    then brought to its status with its files in one transaction (so an ended one is bounded as an end is)."""
    store = world.runtime().store
    store.create(record.model_copy(update={"status": ExportStatus.PENDING}))

    def put(state: ExportRecord, writes: Any) -> None:
        state.status = record.status
        state.files_total = record.files_total
        for file in files:
            writes.put_file(file)

    store.transact(record.id, put)
    world.dispatcher.take()
    return record.id
