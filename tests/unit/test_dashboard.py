"""The dashboard over fakeredis through Starlette's TestClient: pages, JSON, escaping, secrets, auth, actions.

Live updates (server-sent events) need a real server: they are tested with uvicorn and in the browser
(``tests/integration/test_dashboard_browser.py``).
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.conftest import make_settings
from worker.api import ExportClient
from worker.dashboard.app import create_app
from worker.dashboard.auth import hash_password
from worker.dashboard.serve import is_loopback, serve
from worker.dashboard.settings import DashboardSettings, DashboardUser
from worker.dev.testing import RecordingDispatcher
from worker.engine.context import Runtime
from worker.errors import InvalidRequest
from worker.models import ExportRecord, ExportStatus, FileRecord, FileStatus, JobRecord, JobStatus, Writes
from worker.settings import Database
from worker.store import ExportStore

NOW = 1_800_000_000.0
HOSTILE = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
SIGNED_URL = "https://bucket.s3.amazonaws.com/out.csv.gz?X-Amz-Signature=deadbeefsecret"
DB_PASSWORD = "dash-db-secret-pw"
PASSWORDS = {"olga": "operator-pass-1", "vic": "viewer-pass-22"}


@pytest.fixture
def client(tmp_path: Path, store: ExportStore) -> ExportClient:
    settings = make_settings(
        tmp_path, databases={"warehouse": Database(url=f"postgresql://loader:{DB_PASSWORD}@127.0.0.1:1/dw")}, poll_max_seconds=10
    )
    rt = Runtime(settings=settings, store=store, dispatcher=RecordingDispatcher(), clock=lambda: NOW)
    return ExportClient(rt)


def put(
    store: ExportStore, export_id: str, status: ExportStatus, *, error: str | None = None, quarantine: Path | None = None
) -> None:
    record = ExportRecord(
        id=export_id,
        provider="samsara",
        params={"startHour": "2026-11-23T00:00:00Z"},
        credential="default",
        jobs={"0": JobRecord(key="0", params={}, status=JobStatus.SUCCEEDED, provider_job_id="job-77")},
        created_at=NOW - 600,
        updated_at=NOW - 600,
        deadline_at=NOW + 3600,
    )
    store.create(record)

    def change(state: ExportRecord, writes: Writes) -> None:
        state.status, state.error = status, error
        state.finished_at = NOW - 300 if status.terminal else None  # the ended index is scored by it
        state.files_total = 1
        file = FileRecord(
            key="0-0000",
            job_key="0",
            name="out.csv.gz",
            safe_name="out.csv",
            url=SIGNED_URL,
            status=FileStatus.FAILED if status is ExportStatus.FAILED else FileStatus.DONE,
            error=error,
            error_stage="parse" if error else None,
            rows=7,
            quarantined=1 if quarantine else 0,
            quarantine_path=str(quarantine) if quarantine else None,
        )
        writes.put_file(file)
        writes.event("file_retry", file="0-0000", attempt=1, error="HTTP 503", stage="download", next_at=NOW)
        writes.event("status", status=status.value, error=error)

    store.transact(export_id, change)


def app(client: ExportClient, *, actions: bool = False, users: bool = False) -> TestClient:
    settings = DashboardSettings(
        _env_file=None,  # type: ignore[call-arg]
        users={
            "olga": DashboardUser(password_hash=hash_password(PASSWORDS["olga"]), role="operator"),
            "vic": DashboardUser(password_hash=hash_password(PASSWORDS["vic"]), role="viewer"),
        }
        if users
        else {},
    )
    return TestClient(create_app(client, settings, allow_actions=actions), base_url="http://127.0.0.1:8808")


def basic(user: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()}


def test_provider_text_is_escaped_on_every_page(client: ExportClient, store: ExportStore) -> None:
    put(store, "bad1", ExportStatus.FAILED, error=HOSTILE)
    web = app(client)
    for path in ("/", "/exports", "/exports?status=FAILED", "/exports/bad1"):
        body = web.get(path).text
        assert "<img src=x" not in body and "<script>alert" not in body, path
        assert "&lt;img src=x onerror=" in body, path


def test_pages_show_the_failure_its_stage_and_every_attempt(client: ExportClient, store: ExportStore, tmp_path: Path) -> None:
    quarantine = tmp_path / "out.csv.quarantine.jsonl"
    bad_row = {"file": "out.csv.gz", "line": 12, "reason": "distance is not a number", "raw": "1,x"}
    quarantine.write_text(json.dumps(bad_row) + "\n")
    put(store, "e1", ExportStatus.FAILED, error="CSV header is unreadable", quarantine=quarantine)
    web = app(client)
    home = web.get("/").text
    assert "CSV header is unreadable" in home and ">parse<" in home
    one = web.get("/exports/e1").text
    for expected in ("job-77", "attempt 1 (download): HTTP 503", "distance is not a number", "Timeline"):
        assert expected in one
    assert web.get("/exports/nope").status_code == 404


def test_the_api_carries_the_same_data_and_no_secret(client: ExportClient, store: ExportStore) -> None:
    put(store, "e1", ExportStatus.FAILED, error="boom")
    web = app(client)
    answers = [web.get(path) for path in ("/api/attention", "/api/exports", "/api/exports/e1", "/api/exports/e1/timeline")]
    assert all(answer.status_code == 200 and answer.headers["content-type"] == "application/json" for answer in answers)
    assert answers[0].json()["attention"]["items"][0]["export_id"] == "e1"
    assert answers[2].json()["files"][0]["error_stage"] == "parse"
    for answer in answers + [web.get(p) for p in ("/", "/exports", "/exports/e1")]:
        for secret in ("X-Amz-Signature", "deadbeefsecret", DB_PASSWORD, "unit-samsara-token", "unit-impact-token"):
            assert secret not in answer.text


def test_filters_live_in_the_url_and_bad_ones_are_explained(client: ExportClient, store: ExportStore) -> None:
    put(store, "f1", ExportStatus.FAILED, error="quota")
    put(store, "c1", ExportStatus.COMPLETED)
    web = app(client)
    page = web.get("/exports?status=FAILED&text=quota").text
    assert "row-f1" in page and "row-c1" not in page
    assert "is not a date-time" in web.get("/exports?since=yesterday").text
    assert "row-c1" in web.get("/exports?since=2020-01-01T00:00").text


def test_without_allow_actions_there_is_no_button_and_posts_are_refused(client: ExportClient, store: ExportStore) -> None:
    put(store, "f1", ExportStatus.FAILED, error="x")
    web = app(client)
    assert "Retry…" not in web.get("/").text and "read-only" in web.get("/").text
    refused = web.post("/actions/retry", data={"id": "f1", "confirm": "yes"})
    assert refused.status_code == 403 and store.get("f1").status is ExportStatus.FAILED


def test_users_must_log_in_and_viewers_see_no_button(client: ExportClient, store: ExportStore) -> None:
    put(store, "f1", ExportStatus.FAILED, error="x")
    web = app(client, actions=True, users=True)
    challenge = web.get("/")
    assert challenge.status_code == 401 and challenge.headers["www-authenticate"].startswith("Basic")
    wrong = {"Authorization": "Basic " + base64.b64encode(b"olga:nope").decode()}
    assert web.get("/", headers=wrong).status_code == 401
    assert "Retry…" not in web.get("/", headers=basic("vic")).text
    assert web.post("/actions/retry", data={"id": "f1", "confirm": "yes"}, headers=basic("vic")).status_code == 403
    assert "Retry…" in web.get("/", headers=basic("olga")).text


def test_a_confirmed_same_origin_retry_runs_and_records_who(client: ExportClient, store: ExportStore) -> None:
    put(store, "f1", ExportStatus.FAILED, error="x")
    web = app(client, actions=True, users=True)
    confirm = web.get("/actions/retry?id=f1", headers=basic("olga")).text
    assert "Retry 1 export(s)?" in confirm and store.get("f1").status is ExportStatus.FAILED
    headers = {**basic("olga"), "Origin": "http://127.0.0.1:8808", "Sec-Fetch-Site": "same-origin"}
    done = web.post("/actions/retry", data={"id": "f1", "confirm": "yes"}, headers=headers)
    assert done.status_code == 200 and "1 of 1 done" in done.text
    assert store.get("f1").status is ExportStatus.DOWNLOADING
    actions = [event for event in client.timeline("f1") if event["type"] == "action"]
    assert actions == [{**actions[0], "action": "retry", "actor": "olga"}]


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}, {"Sec-Fetch-Site": "same-site"}],
)
def test_a_cross_origin_post_is_refused(client: ExportClient, store: ExportStore, headers: dict[str, str]) -> None:
    put(store, "f1", ExportStatus.FAILED, error="x")
    web = app(client, actions=True)
    refused = web.post("/actions/retry", data={"id": "f1", "confirm": "yes"}, headers=headers)
    assert refused.status_code == 403 and "refused" in refused.text
    assert store.get("f1").status is ExportStatus.FAILED


def test_a_bulk_action_shows_how_many_before_confirming(client: ExportClient, store: ExportStore) -> None:
    for index in range(3):
        put(store, f"f{index}", ExportStatus.FAILED, error="quota spent")
    put(store, "c1", ExportStatus.COMPLETED)
    web = app(client, actions=True)
    page = web.get("/actions/retry?status=FAILED&text=quota").text
    assert "Retry 3 export(s)?" in page and "c1" not in page
    assert web.get("/actions/cancel").status_code == 400, "no id and no filter selects nothing"


def test_no_cors_and_strict_headers_on_every_answer(client: ExportClient, store: ExportStore) -> None:
    put(store, "f1", ExportStatus.FAILED, error="x")
    web = app(client)
    for answer in (web.get("/api/exports", headers={"Origin": "https://evil.example"}), web.options("/api/exports")):
        assert not any(name.lower().startswith("access-control-") for name in answer.headers)
    headers = web.get("/").headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"] and headers["x-content-type-options"] == "nosniff"


def test_listening_beyond_loopback_needs_users(client: ExportClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXPORT_WORKER_DASHBOARD_USERS", raising=False)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")
    with pytest.raises(InvalidRequest, match="without authentication"):
        serve(client, host="0.0.0.0", port=1, allow_actions=False)


def test_every_dashboard_setting_is_documented_in_env_example() -> None:
    documented = (Path(__file__).parents[2] / "config" / ".env.example").read_text()
    missing = [name for name in DashboardSettings.model_fields if f"EXPORT_WORKER_DASHBOARD_{name.upper()}=" not in documented]
    assert missing == []


def test_users_come_from_the_environment_and_bad_hashes_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    good = hash_password("a-long-password")
    monkeypatch.setenv("EXPORT_WORKER_DASHBOARD_USERS", json.dumps({"alice": {"password_hash": good, "role": "operator"}}))
    assert DashboardSettings(_env_file=None).users["alice"].role == "operator"  # type: ignore[call-arg]
    monkeypatch.setenv("EXPORT_WORKER_DASHBOARD_USERS", json.dumps({"bob": {"password_hash": "plain-text"}}))
    with pytest.raises(ValueError, match="argon2id"):
        DashboardSettings(_env_file=None)  # type: ignore[call-arg]


def test_hash_password_prints_a_hash_the_dashboard_accepts(client: ExportClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from worker.cli import app as cli

    answers = iter(["a-long-password", "a-long-password"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    result = CliRunner().invoke(cli, ["dashboard", "--hash-password"])
    assert result.exit_code == 0, result.output
    printed = result.output.strip()
    assert printed.startswith("$argon2id$") and "a-long-password" not in printed
    user = DashboardUser(password_hash=printed, role="viewer")
    web = TestClient(create_app(client, DashboardSettings(_env_file=None, users={"u": user})))  # type: ignore[call-arg]
    header = {"Authorization": "Basic " + base64.b64encode(b"u:a-long-password").decode()}
    assert web.get("/static/live.js", headers=header).status_code == 200
    assert web.get("/static/live.js").status_code == 401


def test_every_event_the_engine_writes_reads_as_a_sentence() -> None:
    from worker.dashboard.timeline import describe

    engine = Path(__file__).parents[2] / "worker" / "engine"
    written = {kind for path in engine.glob("*.py") for kind in re.findall(r'writes\.event\(\s*"(\w+)"', path.read_text())}
    written |= {"created", "status"}  # the store writes "created"; _set_status writes "status"
    assert {"polled", "file_retry", "file_failed", "action", "submitted", "split"} <= written
    unnamed = sorted(kind for kind in written if describe({"type": kind}) == kind)
    assert unnamed == [], f"add a sentence to worker/dashboard/timeline.py for {unnamed}"
