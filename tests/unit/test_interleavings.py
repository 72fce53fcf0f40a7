"""Every interleaving of two engine steps that may run at once, checked against the export invariants.

Each scenario stores the state two steps meet on, then :func:`every_schedule` runs one step inside
the other at each of its Redis round trips, in both orders. After each schedule every dispatched
task runs, the watchdog revives what lost its chain, and the invariants must hold: a COMPLETED
export has every file of every job DONE and exactly the provider's rows; no file is DONE twice; an
ended export never changes again (until a caller's retry); no temp file is left behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import make_settings
from tests.interleaving import Expected, Scenario, World, every_schedule, stored
from tests.scripted_samsara import PARAMS, csv_rows, job, remote_file
from worker.engine import commands
from worker.engine.context import Runtime
from worker.engine.download_step import run_download
from worker.engine.jobs import run_poll
from worker.engine.lifecycle import finish_if_complete
from worker.engine.watchdog import run_watchdog
from worker.errors import InvalidRequest
from worker.models import (
    ExportRecord,
    ExportStatus,
    FileRecord,
    FileStatus,
    FileTaskArgs,
    JobRecord,
    JobStatus,
    JobTaskArgs,
)
from worker.providers.base import Operation

EXPORT = "e1"
FILE_ROWS = {"a.csv": 3, "b.csv": 2, "c.csv": 4}
RECORD_COUNTS = {**FILE_ROWS, "b.csv": 3}
"""b.csv's recordCount is off by one, so its finish raises a warning that must land before the export ends."""
NOW = 1_800_000_000.0


def provider(request: httpx.Request) -> httpx.Response:
    """Job j0 completed with a.csv and b.csv; j01 (a split child) completed with c.csv."""
    path = request.url.path
    if request.url.host == "files.example":
        return httpx.Response(200, text=csv_rows(FILE_ROWS[path.lstrip("/")]))
    listing = {"j0": ["a.csv", "b.csv"], "j01": ["c.csv"]}
    if request.method == "POST" and path == "/ifta-detail/csv":  # a resubmitted job is created as j0
        return httpx.Response(201, json=job("j0", "Requested"))
    job_id = path.rsplit("/", 1)[-1]
    if path.startswith("/ifta-detail/csv/") and job_id in listing:
        files = [remote_file(name, f"https://files.example/{name}", RECORD_COUNTS[name]) for name in listing[job_id]]
        return httpx.Response(200, json=job(job_id, "Completed", files))
    return httpx.Response(404, json={"message": f"unscripted {request.method} {path}"})


@pytest.fixture
def world_factory(tmp_path: Path) -> Callable[[], World]:
    counter = iter(range(1_000_000))

    def make() -> World:
        out = tmp_path / f"w{next(counter)}"
        settings = make_settings(out, download_hosts={"samsara": ["files.example"]})
        return World(settings=settings, handler=provider)

    return make


def export(status: ExportStatus, jobs: list[JobRecord], files_total: int) -> ExportRecord:
    return ExportRecord(
        id=EXPORT,
        provider="samsara",
        params=dict(PARAMS),
        credential="default",
        status=status,
        jobs={item.key: item for item in jobs},
        created_at=NOW,
        updated_at=NOW,
        deadline_at=NOW + 10**9,
        files_total=files_total,
    )


def polling(key: str, provider_job_id: str, *, stale: bool = False) -> JobRecord:
    due = NOW - 10**6 if stale else NOW
    return JobRecord(
        key=key, params=dict(PARAMS), status=JobStatus.POLLING, provider_job_id=provider_job_id, token=5, next_action_at=due
    )


def succeeded(key: str, provider_job_id: str) -> JobRecord:
    return JobRecord(key=key, params=dict(PARAMS), status=JobStatus.SUCCEEDED, provider_job_id=provider_job_id, token=6)


def pending_file(key: str, job_key: str, name: str, *, stale: bool = False) -> FileRecord:
    return FileRecord(
        key=key,
        job_key=job_key,
        name=name,
        safe_name=f"{key}-{name}",
        url=f"https://files.example/{name}",
        record_count=RECORD_COUNTS[name],
        token=1,
        dispatched_at=NOW - 10**6 if stale else NOW,
    )


def done_file(world: World, key: str, job_key: str, name: str) -> FileRecord:
    """A file an earlier download wrote: its JSONL output exists with the provider's rows."""
    record = pending_file(key, job_key, name)
    path = Path(world.settings.output_dir) / EXPORT / f"{record.safe_name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps({"line": i}) + b"\n" for i in range(FILE_ROWS[name])))
    return record.model_copy(update={"status": FileStatus.DONE, "rows": FILE_ROWS[name], "path": str(path)})


def failed_file(key: str, job_key: str, name: str) -> FileRecord:
    return pending_file(key, job_key, name).model_copy(update={"status": FileStatus.FAILED, "error": "gave up"})


# -- states ---------------------------------------------------------------------------------------


def job_polling(world: World) -> str:
    return stored(world, export(ExportStatus.RUNNING, [polling("0", "j0")], 0), [])


def job_polling_stale(world: World) -> str:
    return stored(world, export(ExportStatus.RUNNING, [polling("0", "j0", stale=True)], 0), [])


def files_downloading(world: World) -> str:
    files = [pending_file("0-0000", "0", "a.csv"), pending_file("0-0001", "0", "b.csv")]
    return stored(world, export(ExportStatus.DOWNLOADING, [succeeded("0", "j0")], 2), files)


def file_downloading_stale(world: World) -> str:
    files = [pending_file("0-0000", "0", "a.csv", stale=True), done_file(world, "0-0001", "0", "b.csv")]
    return stored(world, export(ExportStatus.DOWNLOADING, [succeeded("0", "j0")], 2), files)


def split_half_downloaded(world: World) -> str:
    """Job 0 split into 0.0 (done, its one file downloading) and 0.1 (about to complete with a file)."""
    parent = JobRecord(key="0", params=dict(PARAMS), status=JobStatus.SPLIT, provider_job_id="j00", token=3)
    child_done = succeeded("0.0", "j00")
    child_polling = polling("0.1", "j01")
    jobs = [parent, child_done, child_polling]
    return stored(world, export(ExportStatus.RUNNING, jobs, 1), [pending_file("0.0-0000", "0.0", "a.csv")])


def all_files_done(world: World) -> str:
    files = [done_file(world, "0-0000", "0", "a.csv"), done_file(world, "0-0001", "0", "b.csv")]
    return stored(world, export(ExportStatus.DOWNLOADING, [succeeded("0", "j0")], 2), files)


def failed_with_a_failed_file(world: World) -> str:
    files = [failed_file("0-0000", "0", "a.csv"), done_file(world, "0-0001", "0", "b.csv")]
    record = export(ExportStatus.FAILED, [succeeded("0", "j0")], 2)
    record.finished_at = NOW
    return stored(world, record, files)


def failed_before_the_job(world: World) -> str:
    """The submit step refused the job before the provider created it (say, a sink not configured)."""
    refused = JobRecord(key="0", params=dict(PARAMS), status=JobStatus.FAILED, token=2, next_action_at=NOW)
    record = export(ExportStatus.FAILED, [refused], 0)
    record.finished_at, record.error = NOW, "refused before the samsara job was created: no database"
    return stored(world, record, [])


# -- steps ----------------------------------------------------------------------------------------


def poll(job_key: str, *, routed: bool = True) -> Callable[[Runtime], object]:
    """The poll task as the engine sends it (``routed``: naming the provider and credential whose budgets
    its read spends), or as a task sent by hand, which spends them in a round trip of its own."""
    route = {"provider": "samsara", "credential": "default"} if routed else {}
    return lambda rt: run_poll(rt, JobTaskArgs(export_id=EXPORT, job_key=job_key, token=5, **route))


def download(file_key: str, token: int = 1) -> Callable[[Runtime], object]:
    return lambda rt: run_download(rt, FileTaskArgs(export_id=EXPORT, file_key=file_key, token=token), owner="racer")


def completion_check(rt: Runtime) -> object:
    return finish_if_complete(rt, EXPORT)


def watchdog(rt: Runtime) -> object:
    return run_watchdog(rt)


def refusal_allowed(command: Callable[[Runtime, str], None]) -> Callable[[Runtime], object]:
    """A caller's command as a step: when the other step already ended or reopened the export, the
    command is refused with InvalidRequest, which is the right answer, not a failure of the schedule."""

    def step(rt: Runtime) -> object:
        with contextlib.suppress(InvalidRequest):
            command(rt, EXPORT)
        return None

    return step


cancel = refusal_allowed(commands.cancel)
retry = refusal_allowed(commands.retry)


BOTH_FILES = Expected(files=2, rows=5)
WITH_SPLIT = Expected(files=2, rows=7)

SCENARIOS = [
    Scenario("poll fans out vs completion check", job_polling, poll("0"), completion_check, BOTH_FILES),
    Scenario("poll fans out vs watchdog", job_polling_stale, poll("0"), watchdog, BOTH_FILES),
    Scenario("poll fans out vs cancel", job_polling, poll("0"), cancel, BOTH_FILES),
    Scenario("poll vs its duplicate", job_polling, poll("0"), poll("0"), BOTH_FILES),
    Scenario("unrouted poll vs completion check", job_polling, poll("0", routed=False), completion_check, BOTH_FILES),
    Scenario("split: last download of 0.0 vs poll of 0.1", split_half_downloaded, download("0.0-0000"), poll("0.1"), WITH_SPLIT),
    Scenario("download finishes a file vs completion check", files_downloading, download("0-0000"), completion_check, BOTH_FILES),
    Scenario("download vs cancel", files_downloading, download("0-0000"), cancel, BOTH_FILES),
    Scenario("download vs watchdog revive", file_downloading_stale, download("0-0000"), watchdog, BOTH_FILES),
    Scenario("two downloads of the two files", files_downloading, download("0-0000"), download("0-0001"), BOTH_FILES),
    Scenario("completion check vs cancel", all_files_done, completion_check, cancel, BOTH_FILES),
    Scenario("completion check vs watchdog", all_files_done, completion_check, watchdog, BOTH_FILES),
    Scenario("cancel vs watchdog revive", job_polling_stale, cancel, watchdog, BOTH_FILES),
    Scenario("retry vs retry", failed_with_a_failed_file, retry, retry, BOTH_FILES),
    Scenario("retry vs completion check", failed_with_a_failed_file, retry, completion_check, BOTH_FILES),
    Scenario("retry vs cancel", failed_with_a_failed_file, retry, cancel, BOTH_FILES),
    Scenario("retry vs watchdog", failed_with_a_failed_file, retry, watchdog, BOTH_FILES),
    Scenario("retry vs the retried file's download", failed_with_a_failed_file, retry, download("0-0000", 2), BOTH_FILES),
    Scenario("resubmit vs resubmit", failed_before_the_job, retry, retry, BOTH_FILES),
    Scenario("resubmit vs cancel", failed_before_the_job, retry, cancel, BOTH_FILES),
    Scenario("resubmit vs watchdog", failed_before_the_job, retry, watchdog, BOTH_FILES),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[scenario.name for scenario in SCENARIOS])
def test_every_interleaving_keeps_the_export_invariants(world_factory: Callable[[], World], scenario: Scenario) -> None:
    assert every_schedule(world_factory, scenario) >= 4


def test_the_harness_sees_the_steps_round_trips(world_factory: Callable[[], World]) -> None:
    """A warm poll is two round trips, its read (budgets spent in it) and its EXEC, and the schedules
    above pause it at each; a count below two would mean the hook missed a pipeline or a script call."""
    from tests.interleaving import RoundTrips

    counts = {}
    for routed in (True, False):
        world = world_factory()
        job_polling(world)
        trips = RoundTrips()
        rt = world.runtime(trips)
        route = {"provider": "samsara", "credential": "default"} if routed else {}
        run_poll(rt, JobTaskArgs(export_id=EXPORT, job_key="0", token=4, **route))  # stale: connects, loads scripts
        rt.store.spend(rt.gateway("samsara", "default").spend(Operation.POLL, None))
        trips.count = 0
        poll("0", routed=routed)(rt)
        counts[routed] = trips.count
    assert counts[True] == 2
    assert counts[False] >= 3, "a poll that does not name its route spends its budgets in a round trip of its own"


def test_a_resubmitted_job_runs_to_completion(world_factory: Callable[[], World]) -> None:
    """The resubmit scenarios above end COMPLETED when nothing cancels them, so their invariants bite."""
    world = world_factory()
    export_id = failed_before_the_job(world)
    commands.retry(world.runtime(), export_id)
    world.settle()
    record = world.runtime().store.get(export_id)
    assert (record.status, record.rows, record.files_total) == (ExportStatus.COMPLETED, BOTH_FILES.rows, BOTH_FILES.files)
