"""Listings and the Needs-attention list over a store: filters, keyset pages, stuck rules, the gauges."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import make_settings
from worker.attention import concern
from worker.listing import ExportFilter, attention, format_cursor, page, parse_cursor
from worker.models import ExportRecord, ExportStatus, FileRecord, FileStatus, JobRecord, JobStatus
from worker.observability import OperatorGauges
from worker.store import ExportStore

NOW = 1_800_000_000.0
STALE = 30.0


def put(
    store: ExportStore,
    export_id: str,
    *,
    age: float = 100,
    status: ExportStatus = ExportStatus.RUNNING,
    job: JobStatus = JobStatus.POLLING,
    due_in: float = 5,
    error: str | None = None,
    files: list[FileRecord] | None = None,
    ended_age: float | None = None,
    **fields: object,
) -> ExportRecord:
    created = NOW - age
    record = ExportRecord(
        id=export_id,
        provider=str(fields.pop("provider", "samsara")),
        params={},
        credential=str(fields.pop("credential", "default")),
        jobs={"0": JobRecord(key="0", params={}, status=job, token=2, next_action_at=NOW + due_in, provider_job_id="p1")},
        created_at=created,
        updated_at=created,
        deadline_at=created + 3600,
        **fields,  # type: ignore[arg-type]
    )
    store.create(record)

    def finish(state: ExportRecord, writes) -> None:  # type: ignore[no-untyped-def]
        state.status, state.error = status, error
        # the ended index is scored by the end
        state.finished_at = (NOW - ended_age if ended_age is not None else created + 10) if status.terminal else None
        for file in files or []:
            writes.put_file(file)

    store.transact(export_id, finish)
    return record


def failed_file(key: str, stage: str = "parse") -> FileRecord:
    return FileRecord(
        key=key, job_key="0", name=f"{key}.csv", safe_name=key, url="u", status=FileStatus.FAILED, error="bad", error_stage=stage
    )


def test_filters_select_by_status_provider_schedule_text_and_time(store: ExportStore) -> None:
    put(store, "a", age=50, status=ExportStatus.FAILED, error="HTTP 503 from Samsara", schedule="nightly")
    put(store, "b", age=40, status=ExportStatus.COMPLETED, job=JobStatus.SUCCEEDED)
    put(store, "c", age=30, provider="impact", status=ExportStatus.FAILED, error="quota spent")
    put(store, "d", age=10)

    def ids(**where: object) -> list[str]:
        return [row.id for row in page(store, ExportFilter.model_validate(where)).rows]

    assert ids() == ["d", "c", "b", "a"]
    assert ids(status="COMPLETED", since=NOW - 45) == ["b"]
    assert ids(status="FAILED") == ["c", "a"]
    assert ids(provider="impact") == ["c"]
    assert ids(schedule="nightly") == ["a"]
    assert ids(text="http 503") == ["a"]
    assert ids(text="HTTP 503 FROM") == ["a"], "case does not matter"
    put(store, "q", age=1, status=ExportStatus.FAILED, error='column "distance" is not a number')
    assert ids(text='"DISTANCE"') == ["q"], "text that JSON escapes is matched on the parsed record"
    assert ids(since=NOW - 35, until=NOW - 5) == ["d", "c"], "q (1 s old) is after the range"


def test_keyset_pages_visit_every_match_once(store: ExportStore) -> None:
    for index in range(23):
        put(store, f"e{index:02d}", age=1000 - index, status=ExportStatus.FAILED if index % 2 else ExportStatus.CANCELLED)
    seen: list[str] = []
    before = None
    while True:
        result = page(store, ExportFilter(status=ExportStatus.FAILED), before=parse_cursor(before), size=4)
        seen += [row.id for row in result.rows]
        if result.next_before is None:
            break
        before = result.next_before
    assert seen == [f"e{index:02d}" for index in range(21, 0, -2)]
    assert result.in_range == 23


def test_a_walk_stops_at_its_scan_limit_and_says_so(store: ExportStore) -> None:
    for index in range(30):
        put(store, f"e{index:02d}", age=1000 - index)
    result = page(store, ExportFilter(status=ExportStatus.FAILED), size=5, scan_limit=12)
    assert (result.rows, result.scanned, result.scan_limited) == ([], 12, True)


def test_a_cursor_survives_its_round_trip_through_a_url() -> None:
    cursor = (1_800_000_000.123456, "abc")
    assert parse_cursor(format_cursor(cursor)) == cursor
    assert parse_cursor("nonsense") is None and parse_cursor(None) is None


def test_a_failed_rows_stage_comes_from_its_files_or_its_job(store: ExportStore) -> None:
    put(store, "files", status=ExportStatus.FAILED, job=JobStatus.SUCCEEDED, error="1 of 2 failed", files=[failed_file("0-0")])
    put(store, "job", status=ExportStatus.FAILED, job=JobStatus.FAILED, error="provider job p1 failed: Internal error")
    stages = {row.id: row.stage for row in page(store, ExportFilter()).rows}
    assert stages == {"files": "parse", "job": "provider"}


def test_needs_attention_lists_failures_and_stuck_exports_with_why(store: ExportStore) -> None:
    put(store, "healthy", age=20, due_in=5)
    put(store, "silent", age=400, due_in=-(STALE + 60))
    put(store, "late", age=3300, due_in=5)
    put(store, "held", age=20, due_in=5, credential="fleet-b")
    store.hold("samsara:fleet-b", 45)
    broken_file = failed_file("0-0", "sink")
    put(store, "broken", age=50, status=ExportStatus.FAILED, job=JobStatus.SUCCEEDED, error="1 file failed", files=[broken_file])
    put(store, "old-failure", age=10 * 86400, status=ExportStatus.FAILED, error="long ago")
    put(store, "late-failure", age=5 * 86400, status=ExportStatus.FAILED, error="ended an hour ago", ended_age=3600)
    put(store, "downloading", age=60, status=ExportStatus.DOWNLOADING, job=JobStatus.SUCCEEDED)

    result = attention(store, now=NOW, stale_after=STALE, failed_since=NOW - 86400)
    found = {item.export_id: item for item in result.items}
    assert list(found) == ["late", "silent", "held", "broken", "late-failure"], (
        "stuck oldest first, then failures newest end first"
    )
    assert found["silent"].kinds == ["stuck"] and "was due 90s ago" in found["silent"].reasons[0]
    assert found["late"].kinds == ["deadline"] and found["late"].reasons == ["deadline in 5 min, still RUNNING"]
    assert found["held"].kinds == ["hold"] and "every worker waits 45s more" in found["held"].reasons[0]
    assert (found["broken"].kinds, found["broken"].stage, found["broken"].attempts) == (["failed"], "sink", 1)
    assert found["broken"].reasons == ["1 file failed"]
    assert result.active == 5


def test_a_download_nobody_holds_is_stuck_and_one_being_streamed_is_not(store: ExportStore) -> None:
    overdue = FileRecord(key="0-0", job_key="0", name="a.csv", safe_name="a", url="u", dispatched_at=NOW - STALE - 10)
    record = put(store, "d", status=ExportStatus.DOWNLOADING, job=JobStatus.SUCCEEDED, files=[overdue])
    record.status = ExportStatus.DOWNLOADING
    assert concern(record, [overdue], now=NOW, stale_after=STALE, leased={"0-0"}) is None
    alone = concern(record, [overdue], now=NOW, stale_after=STALE, leased=set())
    assert alone is not None and "no worker holds it" in alone.reasons[0]


def test_operator_gauges_read_the_same_rules(tmp_path: Path, store: ExportStore) -> None:
    put(store, "silent", age=400, due_in=-(STALE + 60))
    put(store, "fine", age=20)
    store.hold("samsara:default", 10)
    store.record_schedule_success("nightly", NOW - 3600)
    settings = make_settings(tmp_path, poll_max_seconds=10, stale_factor=3)
    families = {family.name: family for family in OperatorGauges(store, settings, clock=lambda: NOW).collect()}
    value = {name: [(sample.labels, sample.value) for sample in family.samples] for name, family in families.items()}
    assert value["aew_exports_stuck"] == [({}, 1)]
    assert value["aew_oldest_active_export_age_seconds"] == [({}, 400)]
    assert value["aew_provider_hold_seconds"][0][0] == {"provider": "samsara", "credential": "default"}
    assert 9 < value["aew_provider_hold_seconds"][0][1] <= 10
    assert value["aew_schedule_last_success_age_seconds"] == [({"schedule": "nightly"}, 3600)]


def test_a_retried_failure_leaves_needs_attention(store: ExportStore) -> None:
    put(
        store, "f", age=50, status=ExportStatus.FAILED, job=JobStatus.SUCCEEDED, error="1 file failed", files=[failed_file("0-0")]
    )
    assert [item.export_id for item in attention(store, now=NOW, stale_after=STALE, failed_since=NOW - 86400).items] == ["f"]

    def reopen(state: ExportRecord, _writes) -> None:  # type: ignore[no-untyped-def]
        state.status, state.finished_at = ExportStatus.DOWNLOADING, None

    store.transact("f", reopen)
    assert attention(store, now=NOW, stale_after=STALE, failed_since=NOW - 86400).items == []
