"""The download step on fakeredis with a scripted provider behind httpx.MockTransport (no Celery, no network).

What a user and an operator rely on once a file is handed to a download task: what is written and
recorded, what the next task's countdown is, what the file's error says, which metrics move, and that
the lease keeps two workers off one file while a file streams for longer than the lease itself.
"""

from __future__ import annotations

import base64
import gzip
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from tests.conftest import FakeClock
from tests.engine_driver import Driver
from tests.scripted_samsara import FakeSamsara, csv_rows, job, remote_file, submit
from worker.api import ExportClient
from worker.engine.context import Runtime
from worker.engine.download_step import run_download
from worker.engine.watchdog import run_watchdog
from worker.models import ExportStatus, FileRecord, FileStatus, FileTaskArgs

JOB_PATH = "/ifta-detail/csv/j1"
FILE_PATH = "/f/0"
FILE_URL = f"https://files.example{FILE_PATH}"
CHUNK = 1 << 20
"""open_download's read size: httpx buffers a streamed body up to it, so each piece of this size reaches the parser
before the next one is asked for (and "time passing" between pieces happens mid-parse)."""


@dataclass
class ScriptedProvider(FakeSamsara):
    """FakeSamsara plus routes answered by a function, for answers that depend on the request or act mid-request."""

    routes: dict[tuple[str, str], Callable[[httpx.Request], httpx.Response]] = field(default_factory=dict)

    def route(self, method: str, path: str, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.routes[(method, path)] = answer

    def handler(self, request: httpx.Request) -> httpx.Response:
        answer = self.routes.get((request.method, request.url.path))
        if answer is None:
            return super().handler(request)
        self.requests.append(request)
        return answer(request)


@pytest.fixture
def provider() -> ScriptedProvider:
    return ScriptedProvider()


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def one_file_job(provider: FakeSamsara, *snapshots: list[dict]) -> None:
    """Samsara accepts the job and answers each poll with the next list of files (the last one repeats)."""
    provider.on("POST", "/ifta-detail/csv", httpx.Response(201, json=job("j1", "Requested")))
    provider.on("GET", JOB_PATH, *(httpx.Response(200, json=job("j1", "Completed", files)) for files in snapshots))


def the_file(url: str = FILE_URL, count: int = 3, expires: str = "2099-01-01T00:00:00Z") -> list[dict]:
    return [remote_file("part-0.csv", url, count, expires)]


def to_download(rt: Runtime, driver: Driver, **options: object) -> tuple[str, FileTaskArgs]:
    """Submit and poll once: the job is complete, its one download task is next (and not yet run)."""
    export_id = submit(rt, **options)
    driver.step()
    driver.step()
    [(kind, args, countdown)] = driver.dispatcher.take()
    assert (kind, countdown) == ("download", 0)
    return export_id, args


def file_of(rt: Runtime, export_id: str) -> FileRecord:
    [file] = ExportClient(rt).get(export_id).files
    return file


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def stale_downloads() -> float:
    return counter("aew_stale_tasks_total", step="download")


def lease_key(rt: Runtime, args: FileTaskArgs) -> str:
    """The lease's Redis key, as documented in worker/store/__init__.py."""
    return rt.store.key("export", args.export_id, "lease", args.file_key)


def streamed(
    body: bytes, between: Callable[[], None] = lambda: None, after: Callable[[], None] = lambda: None
) -> Iterator[bytes]:
    """The body in CHUNK pieces; ``between`` runs before every piece after the first (time passing mid-download),
    ``after`` once the last piece was taken."""
    for start in range(0, len(body), CHUNK):
        if start:
            between()
        yield body[start : start + CHUNK]
    after()


def exactly_one_chunk_of_csv() -> tuple[bytes, int]:
    """CSV of exactly CHUNK bytes ending in a line break, and its row count: the parser has every row before the
    download notices the end of the body."""
    text = csv_rows(14_000)
    last = "1,Truck {},CA,2026-11-23T01:00:00Z,2026-11-23T02:00:00Z,1.0,1.0\n"
    pad = CHUNK - len(text) - len(last.format(""))
    assert pad > 0
    body = (text + last.format("x" * pad)).encode()
    assert len(body) == CHUNK
    return body, 14_001


def serve(provider: ScriptedProvider, path: str, body: bytes) -> None:
    """Answer every GET of ``path`` with ``body`` as a stream, as a network transport delivers it (a body given
    whole to httpx.Response is pre-read, and then counts no bytes downloaded)."""
    provider.route("GET", path, lambda _request: httpx.Response(200, content=iter([body])))


def big_body() -> bytes:
    """A little over 3 MiB of CSV: four chunks on the wire."""
    body = csv_rows(48_000).encode()
    assert 3 * CHUNK < len(body) < 4 * CHUNK
    return body


# -- what a finished file records and counts -------------------------------------------------------------------------


def test_a_written_file_records_its_bytes_when_it_finished_and_no_quarantine(
    rt: Runtime, driver: Driver, provider: ScriptedProvider, clock: FakeClock
) -> None:
    """`status --json` shows these fields; a clean file has no quarantine file to point at."""
    body = csv_rows(3).encode()
    one_file_job(provider, the_file())
    serve(provider, FILE_PATH, body)
    export_id, args = to_download(rt, driver)
    clock.advance(42)
    written_before = counter("aew_rows_written_total", provider="samsara")
    bytes_before = counter("aew_bytes_downloaded_total", provider="samsara")
    run_download(rt, args, owner="w1")
    file = file_of(rt, export_id)
    assert (file.status, file.rows, file.finished_at) == (FileStatus.DONE, 3, clock.now)
    assert (file.bytes, file.bytes_downloaded) == (len(body), len(body))
    assert file.quarantine_path is None and Path(file.path or "").exists()
    assert counter("aew_rows_written_total", provider="samsara") == written_before + 3
    assert counter("aew_bytes_downloaded_total", provider="samsara") == bytes_before + len(body)
    assert rt.store.get(export_id).status is ExportStatus.COMPLETED


def test_a_gzip_file_counts_the_bytes_on_the_wire_apart_from_the_bytes_parsed(
    rt: Runtime, driver: Driver, provider: ScriptedProvider
) -> None:
    """README: aew_bytes_downloaded_total is bytes on the wire (compressed); the file keeps both sizes."""
    raw = csv_rows(50).encode()
    packed = gzip.compress(raw, mtime=0)
    one_file_job(provider, the_file(count=50))
    serve(provider, FILE_PATH, packed)
    export_id, args = to_download(rt, driver)
    bytes_before = counter("aew_bytes_downloaded_total", provider="samsara")
    run_download(rt, args, owner="w1")
    file = file_of(rt, export_id)
    assert (file.status, file.rows, file.bytes, file.bytes_downloaded) == (FileStatus.DONE, 50, len(raw), len(packed))
    assert counter("aew_bytes_downloaded_total", provider="samsara") == bytes_before + len(packed)


def test_quarantined_rows_are_counted_per_provider(rt: Runtime, driver: Driver, provider: ScriptedProvider) -> None:
    """Operators alert on aew_rows_quarantined_total{provider}: each bad row of a written file counts once."""
    body = csv_rows(3) + "2,Truck 2,CA,not-a-date,2026-11-23T02:00:00Z,1.0,1.0\n" + "3,short row\n"
    one_file_job(provider, the_file(count=5))
    provider.on("GET", FILE_PATH, httpx.Response(200, text=body))
    export_id, args = to_download(rt, driver)
    quarantined_before = counter("aew_rows_quarantined_total", provider="samsara")
    written_before = counter("aew_rows_written_total", provider="samsara")
    run_download(rt, args, owner="w1")
    file = file_of(rt, export_id)
    assert (file.status, file.rows, file.quarantined) == (FileStatus.DONE, 3, 2)
    assert file.quarantine_path is not None and Path(file.quarantine_path).exists()
    assert counter("aew_rows_quarantined_total", provider="samsara") == quarantined_before + 2
    assert counter("aew_rows_written_total", provider="samsara") == written_before + 3


def test_a_failed_file_counts_no_rows_or_bytes(rt: Runtime, driver: Driver, provider: ScriptedProvider) -> None:
    """Only committed files feed the row and byte counters; a file without a usable header wrote nothing."""
    one_file_job(provider, the_file())
    provider.on("GET", FILE_PATH, httpx.Response(200, text="foo,foo\n1,2\n"))
    export_id, args = to_download(rt, driver)
    written_before = counter("aew_rows_written_total", provider="samsara")
    bytes_before = counter("aew_bytes_downloaded_total", provider="samsara")
    run_download(rt, args, owner="w1")
    assert file_of(rt, export_id).status is FileStatus.FAILED
    assert counter("aew_rows_written_total", provider="samsara") == written_before
    assert counter("aew_bytes_downloaded_total", provider="samsara") == bytes_before


# -- duplicates, leases and cancels: exactly one writer per file ------------------------------------------------------


def test_a_superseded_download_task_exits_and_is_counted_stale(rt: Runtime, driver: Driver, provider: ScriptedProvider) -> None:
    """A redelivered task whose file was rescheduled since downloads nothing and shows up in aew_stale_tasks_total."""
    one_file_job(provider, the_file())
    provider.on("GET", FILE_PATH, httpx.Response(503, text="storage busy"))
    export_id, args = to_download(rt, driver)
    run_download(rt, args, owner="w1")
    [(kind, _rescheduled, _countdown)] = driver.dispatcher.sent
    assert kind == "download"
    before = stale_downloads()
    run_download(rt, args, owner="w2")
    assert stale_downloads() == before + 1
    assert provider.count("GET", FILE_PATH) == 1
    assert file_of(rt, export_id).attempts == 1


def test_a_download_task_for_a_file_record_that_is_gone_exits_counted_stale(
    rt: Runtime, driver: Driver, provider: ScriptedProvider
) -> None:
    """A failover can take back the poll that found a file after its download task was sent: the poll runs
    again (the watchdog) and sends its own task; this one downloads nothing and does not fail."""
    one_file_job(provider, the_file())
    serve(provider, FILE_PATH, csv_rows(3).encode())
    _export_id, args = to_download(rt, driver)
    rt.store.redis.delete(rt.store.key("export", args.export_id, "file", args.file_key))
    before = stale_downloads()
    run_download(rt, args, owner="w1")
    assert stale_downloads() == before + 1
    assert provider.count("GET", FILE_PATH) == 0


def test_a_file_leased_by_another_worker_is_left_to_it(rt: Runtime, driver: Driver, provider: ScriptedProvider) -> None:
    """Two deliveries of one task at once: the one that finds the lease taken exits without downloading."""
    one_file_job(provider, the_file())
    serve(provider, FILE_PATH, csv_rows(3).encode())
    export_id, args = to_download(rt, driver)
    assert rt.store.acquire_lease(args.export_id, args.file_key, "w1", rt.settings.lease_seconds)
    before = stale_downloads()
    run_download(rt, args, owner="w2")
    assert stale_downloads() == before + 1
    assert provider.count("GET", FILE_PATH) == 0
    assert file_of(rt, export_id).status is FileStatus.PENDING
    assert rt.store.redis.get(lease_key(rt, args)) == b"w1", "the holder keeps its lease"


def test_a_worker_whose_lease_lapsed_before_it_finished_has_its_finish_refused(
    rt: Runtime, driver: Driver, provider: ScriptedProvider, clock: FakeClock
) -> None:
    """The lease key vanished (evicted, or the worker froze) and the watchdog revived the file while the last bytes
    arrived: the late finish is refused and counted stale, and the revived task writes the file once."""
    body, rows = exactly_one_chunk_of_csv()
    one_file_job(provider, the_file(count=rows))
    export_id, args = to_download(rt, driver)
    revived: list[int] = []

    def lease_lost_and_file_revived() -> None:
        if revived:
            return
        rt.store.redis.delete(lease_key(rt, args))
        clock.advance(rt.settings.stale_after_seconds + 1)
        revived.append(run_watchdog(rt).files_revived)

    provider.route(
        "GET", FILE_PATH, lambda _request: httpx.Response(200, content=streamed(body, after=lease_lost_and_file_revived))
    )
    before = stale_downloads()
    run_download(rt, args, owner="w1")
    assert revived == [1]
    assert stale_downloads() == before + 1
    assert file_of(rt, export_id).status is FileStatus.PENDING, "the late worker did not mark the file done"
    driver.run()
    file = file_of(rt, export_id)
    assert (file.status, file.rows) == (FileStatus.DONE, rows)
    assert len(Path(file.path or "").read_text().splitlines()) == rows, "written once"


def test_a_worker_that_lost_its_lease_mid_file_stops_and_writes_nothing(
    rt: Runtime, driver: Driver, provider: ScriptedProvider, clock: FakeClock
) -> None:
    """The lease ran out during a long download and another worker took the file: this one must not commit it."""
    one_file_job(provider, the_file(count=48_000))
    export_id, args = to_download(rt, driver)

    def expire_and_take_over() -> None:
        clock.advance(rt.settings.lease_seconds / 2)
        rt.store.redis.set(lease_key(rt, args), "w2")

    body = big_body()
    provider.route("GET", FILE_PATH, lambda _request: httpx.Response(200, content=streamed(body, expire_and_take_over)))
    before = stale_downloads()
    run_download(rt, args, owner="w1")
    assert stale_downloads() == before + 1
    file = file_of(rt, export_id)
    assert (file.status, file.rows, file.path) == (FileStatus.PENDING, 0, None)
    export_dir = rt.settings.output_dir / export_id
    assert not export_dir.exists() or list(export_dir.iterdir()) == [], "no output, not even a temp file"
    assert rt.store.redis.get(lease_key(rt, args)) == b"w2", "the new holder keeps its lease"


def test_a_file_streaming_longer_than_the_lease_keeps_it_to_the_end(
    rt: Runtime, driver: Driver, provider: ScriptedProvider, clock: FakeClock
) -> None:
    """Renewed while it streams, the lease never lapses: no other worker can take the file at any point."""
    one_file_job(provider, the_file(count=48_000))
    export_id, args = to_download(rt, driver)
    lease = rt.settings.lease_seconds
    redis = rt.store.redis
    intruder_got_it: list[bool] = []

    def time_passes() -> None:
        """Half a lease goes by, on the worker's clock and on the lease's Redis TTL alike."""
        intruder_got_it.append(rt.store.acquire_lease(args.export_id, args.file_key, "intruder", lease))
        clock.advance(lease / 2)
        left_ms = int(redis.pttl(lease_key(rt, args))) - int(lease / 2 * 1000)
        if left_ms > 0:
            redis.pexpire(lease_key(rt, args), left_ms)
        else:
            redis.delete(lease_key(rt, args))

    body = big_body()
    provider.route("GET", FILE_PATH, lambda _request: httpx.Response(200, content=streamed(body, time_passes)))
    run_download(rt, args, owner="w1")
    assert intruder_got_it == [False, False, False], "1.5 leases of streaming, and the file was never up for grabs"
    file = file_of(rt, export_id)
    assert (file.status, file.rows) == (FileStatus.DONE, 48_000)
    assert redis.get(lease_key(rt, args)) is None, "released at the end"


# -- rescheduling: countdown, error text, metric and log ---------------------------------------------------------------


def test_a_storage_error_reschedules_the_file_with_backoff_and_says_why(
    rt: Runtime, driver: Driver, provider: ScriptedProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """A 5xx is retried after the backoff's first step; the file shows why it waits, operators see a counted,
    logged download retry; the next attempt writes the file."""
    one_file_job(provider, the_file())
    provider.on("GET", FILE_PATH, httpx.Response(503, text="storage busy"), httpx.Response(200, text=csv_rows(3)))
    export_id, args = to_download(rt, driver)
    labels = {"provider": "samsara", "step": "download", "reason": "transient"}
    before = counter("aew_retries_total", **labels)
    with caplog.at_level(logging.WARNING, logger="worker.engine"):
        run_download(rt, args, owner="w1")
    [(kind, _next, countdown)] = driver.dispatcher.sent
    assert kind == "download" and 0.8 <= countdown <= 1.2  # poll_initial_seconds=1, jitter 0.2
    waiting = file_of(rt, export_id)
    assert (waiting.status, waiting.attempts) == (FileStatus.PENDING, 1)
    assert waiting.error == "samsara answered HTTP 503 for /f/0"
    assert counter("aew_retries_total", **labels) == before + 1
    assert f"download of part-0.csv rescheduled in {countdown:.1f}s: samsara answered HTTP 503 for /f/0" in caplog.messages
    driver.run()
    assert (file_of(rt, export_id).status, rt.store.get(export_id).rows) == (FileStatus.DONE, 3)


def test_a_file_not_ready_yet_is_fetched_again_no_sooner_than_storage_asks(
    rt: Runtime, driver: Driver, provider: ScriptedProvider
) -> None:
    """HTTP 202 with Retry-After: the next attempt waits at least that long (plus at most the jitter), not the backoff."""
    one_file_job(provider, the_file())
    provider.on("GET", FILE_PATH, httpx.Response(202, headers={"Retry-After": "120"}), httpx.Response(200, text=csv_rows(3)))
    export_id, args = to_download(rt, driver)
    labels = {"provider": "samsara", "step": "download", "reason": "rate_limited"}
    before = counter("aew_retries_total", **labels)
    run_download(rt, args, owner="w1")
    [(kind, _next, countdown)] = driver.dispatcher.sent
    assert kind == "download" and 120 <= countdown <= 120 * 1.2
    assert counter("aew_retries_total", **labels) == before + 1
    assert "the file is not ready yet" in (file_of(rt, export_id).error or "")
    driver.run()
    assert file_of(rt, export_id).status is FileStatus.DONE


def test_a_file_that_keeps_failing_gives_up_saying_how_many_attempts_were_made(
    rt: Runtime, driver: Driver, provider: ScriptedProvider
) -> None:
    """With 2 retries allowed the file is tried 3 times; its error says so, with the last reason."""
    rt.settings.max_transient_retries = 2
    one_file_job(provider, the_file())
    provider.on("GET", FILE_PATH, httpx.Response(503, text="storage busy"))
    export_id = submit(rt)
    driver.run()
    file = file_of(rt, export_id)
    assert provider.count("GET", FILE_PATH) == 3
    assert (file.status, file.error) == (FileStatus.FAILED, "gave up after 3 attempts: samsara answered HTTP 503 for /f/0")
    assert rt.store.get(export_id).status is ExportStatus.FAILED


def test_a_download_that_fails_after_the_export_was_cancelled_exits_counted_as_stale(
    rt: Runtime, driver: Driver, provider: ScriptedProvider
) -> None:
    """Cancelling mid-download ends the file's chain: the failed attempt is not rescheduled, and is counted."""
    one_file_job(provider, the_file())
    export_id, args = to_download(rt, driver)

    def cancel_then_fail(_request: httpx.Request) -> httpx.Response:
        ExportClient(rt).cancel(export_id)
        return httpx.Response(503, text="storage busy")

    provider.route("GET", FILE_PATH, cancel_then_fail)
    before = stale_downloads()
    run_download(rt, args, owner="w1")
    assert stale_downloads() == before + 1
    assert driver.dispatcher.sent == [] and rt.store.get(export_id).status is ExportStatus.CANCELLED


def test_a_file_not_ready_for_longer_than_the_retries_still_arrives(
    rt: Runtime, driver: Driver, provider: ScriptedProvider
) -> None:
    """Waiting while storage prepares a file (202) or while it rate-limits us (429) is not a failed attempt,
    as for polls: only the deadline bounds it, so a slow file is not given up after a few answers."""
    rt.settings.max_transient_retries = 2
    one_file_job(provider, the_file())
    waits = [httpx.Response(202, headers={"Retry-After": "60"}), httpx.Response(429, headers={"Retry-After": "5"})] * 3
    provider.on("GET", FILE_PATH, *waits, httpx.Response(200, text=csv_rows(3)))
    export_id = submit(rt)
    driver.run()
    file = file_of(rt, export_id)
    assert provider.count("GET", FILE_PATH) == 7
    assert (file.status, file.attempts, file.rows) == (FileStatus.DONE, 0, 3)
    assert rt.store.get(export_id).status is ExportStatus.COMPLETED


# -- signed URLs: refreshed before they expire, and when storage refuses them ---------------------------------------


def test_a_url_about_to_expire_is_refreshed_before_it_is_used(
    rt: Runtime, driver: Driver, provider: ScriptedProvider, clock: FakeClock
) -> None:
    """A URL with less than the 30 s margin left is not tried: the job is polled for a fresh one first."""
    one_file_job(
        provider,
        the_file(url="https://files.example/old/0", expires=iso(clock.now + 10)),
        the_file(url=FILE_URL, expires=iso(clock.now + 3600)),
    )
    serve(provider, FILE_PATH, csv_rows(3).encode())
    export_id, args = to_download(rt, driver)
    run_download(rt, args, owner="w1")
    file = file_of(rt, export_id)
    assert (file.status, file.rows, file.url_refreshes, file.url) == (FileStatus.DONE, 3, 1, FILE_URL)
    assert provider.count("GET", "/old/0") == 0
    assert provider.count("GET", JOB_PATH) == 2


def test_a_url_storage_keeps_refusing_is_retried_later_after_three_refreshes(
    rt: Runtime, driver: Driver, provider: ScriptedProvider
) -> None:
    """Three fresh URLs refused in a row: the attempt ends as a transient error saying so, the file is rescheduled."""
    refused = httpx.Response(403, text="<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>")
    one_file_job(provider, *(the_file(url=f"https://files.example/u/{i}") for i in range(5)))
    for i in range(5):
        provider.on("GET", f"/u/{i}", refused)
    export_id, args = to_download(rt, driver)
    run_download(rt, args, owner="w1")
    file = file_of(rt, export_id)
    assert (file.status, file.url_refreshes, file.attempts) == (FileStatus.PENDING, 3, 1)
    assert file.error == "download URL of 'part-0.csv' was refused after 3 refreshes"
    assert [provider.count("GET", f"/u/{i}") for i in range(5)] == [1, 1, 1, 1, 0]
    assert [kind for kind, _, _ in driver.dispatcher.sent] == ["download"]


def test_a_file_the_provider_no_longer_lists_fails_naming_it(rt: Runtime, driver: Driver, provider: ScriptedProvider) -> None:
    """Re-polled for a fresh URL, the job lists no such file any more: retrying cannot help, the file fails saying so."""
    one_file_job(provider, the_file(url="https://files.example/old/0"), [])
    provider.on("GET", "/old/0", httpx.Response(403, text="AccessDenied"))
    export_id, args = to_download(rt, driver)
    run_download(rt, args, owner="w1")
    file = file_of(rt, export_id)
    assert (file.status, file.error) == (FileStatus.FAILED, "samsara job j1 no longer lists file 'part-0.csv'")
    assert rt.store.get(export_id).status is ExportStatus.FAILED


# -- impact.com: result files come from the API host, with the account's credential ----------------------------------

IMPACT_JOB = "/Mediapartners/IRunit/Jobs/J1"


def test_an_impact_result_is_downloaded_with_the_account_credential(
    rt: Runtime, driver: Driver, provider: ScriptedProvider
) -> None:
    """impact.com serves the file from its API (Mode=Stream), which only answers an authenticated request."""
    basic = "Basic " + base64.b64encode(b"IRunit:unit-impact-token").decode()

    def download(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") != basic:
            return httpx.Response(401, json={"Message": "unauthorized"})
        return httpx.Response(200, content=iter([b"Date,Clicks\n2024-03-01,7\n2024-03-02,9\n"]))

    done = {"Id": "J1", "Type": "ApiReport", "Status": "COMPLETED", "ResultUri": f"{IMPACT_JOB}/Download"}
    provider.on("GET", IMPACT_JOB, httpx.Response(200, json=done))
    provider.route("GET", f"{IMPACT_JOB}/Download", download)
    export_id = ExportClient(rt).submit("impact", {"job_id": "J1"}, credential="impact")
    driver.run()
    file = file_of(rt, export_id)
    assert (file.status, file.rows) == (FileStatus.DONE, 2), file.error
    [fetch] = [r for r in provider.requests if r.url.path == f"{IMPACT_JOB}/Download"]
    assert fetch.url.params.get("Mode") == "Stream"


def test_an_impact_download_refused_401_fails_the_file_naming_the_credential(
    rt: Runtime, driver: Driver, provider: ScriptedProvider
) -> None:
    """A credential the API refuses cannot get better by retrying: the file fails and says which setting to check."""
    done = {"Id": "J1", "Type": "ApiReport", "Status": "COMPLETED", "ResultUri": f"{IMPACT_JOB}/Download"}
    provider.on("GET", IMPACT_JOB, httpx.Response(200, json=done))
    provider.route("GET", f"{IMPACT_JOB}/Download", lambda _request: httpx.Response(401, json={"Message": "unauthorized"}))
    export_id = ExportClient(rt).submit("impact", {"job_id": "J1"}, credential="impact")
    driver.run()
    file = file_of(rt, export_id)
    assert file.status is FileStatus.FAILED
    assert (file.error or "").startswith("impact rejected credential 'impact' (HTTP 401)")
    assert "EXPORT_WORKER_CREDENTIALS__IMPACT__*" in (file.error or "")
