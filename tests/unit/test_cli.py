"""The CLI as a person and a script see it: one clear line and exit code 2 for what it refuses, texts
printed as written, tables that fit, help without noise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from tests.engine_driver import Driver
from tests.scripted_samsara import FakeSamsara, script_happy_path, submit
from worker.api import ExportClient
from worker.cli import app
from worker.engine.context import Runtime
from worker.engine.lifecycle import fail_export
from worker.models import JobStatus

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit", "nope"], "unknown provider 'nope'"),
        (
            ["submit", "samsara", "-p", "startHour=2026-11-24T00:00:00Z", "-p", "endHour=2026-11-23T00:00:00Z"],
            "must be before endHour",
        ),
        (
            [
                "submit",
                "samsara",
                "-p",
                "startHour=2026-11-23T00:00:00Z",
                "-p",
                "endHour=2026-11-24T00:00:00Z",
                "-p",
                "vehicleIds=[]",
            ],
            "vehicleIds",
        ),
        (["submit", "samsara", "-p", "startHour"], "must look like key=value"),
        (["submit", "samsara", "--params-json", "{not json"], "not valid JSON"),
        (["submit", "impact", "-p", "job_id=a", "-p", "report_id=b"], "exactly one of job_id"),
        (["submit", "impact", "-p", "job_id=a", "--sink", "s3"], "unknown sink 's3'"),
        (["submit", "impact", "-p", "job_id=a", "--sink", "postgres", "-o", "table=Bad-Name"], "invalid sink_options: table"),
        (["submit", "impact", "-p", "job_id=a", "--sink", "postgres", "-o", "schema"], "--sink-option 'schema' must look like"),
        (["submit", "impact", "-p", "job_id=a", "-o", "table=t"], "apply to sink='postgres' only"),
    ],
)
def test_bad_submit_input_is_one_clear_error(args: list[str], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPORT_WORKER_REDIS_URL", "redis://127.0.0.1:1/0")
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def _status_under(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Result:
    """``status abc`` with ``env`` set, on settings and a runtime built fresh from it."""
    from worker.settings import get_settings
    from worker.wiring import _runtime_for_pid

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    _runtime_for_pid.cache_clear()
    try:
        return runner.invoke(app, ["status", "abc"])
    finally:
        get_settings.cache_clear()
        _runtime_for_pid.cache_clear()


def test_unreachable_redis_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _status_under({"EXPORT_WORKER_REDIS_URL": "redis://127.0.0.1:1/0"}, monkeypatch)
    assert result.exit_code == 2
    assert "cannot reach Redis at 127.0.0.1:1/0" in result.output
    assert "set EXPORT_WORKER_REDIS_URL" in result.output


def test_unreachable_sentinels_are_named_not_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "EXPORT_WORKER_REDIS_SENTINELS": "127.0.0.1:1",
        "EXPORT_WORKER_REDIS_SENTINEL_MASTER": "exports",
        "EXPORT_WORKER_REDIS_RETRY_SECONDS": "1",
    }
    result = _status_under(env, monkeypatch)
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert "cannot reach the Redis primary of 'exports', db 0 (Sentinels 127.0.0.1:1)" in output
    assert "EXPORT_WORKER_REDIS_SENTINELS" in output and "Traceback" not in output


# --- what a person sees, on an engine on fakeredis (rt: tests/unit/conftest.py) ------------------------


@pytest.fixture
def on_engine(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> ExportClient:
    """The CLI bound to the unit tests' engine (fakeredis, the scripted Samsara) instead of the settings'."""
    client = ExportClient(rt)
    monkeypatch.setattr("worker.cli._client", lambda: client)
    return client


def test_texts_in_brackets_are_printed_as_written_not_read_as_markup(on_engine: ExportClient, rt: Runtime) -> None:
    refused = runner.invoke(app, ["submit", "nope[parquet]"])
    assert refused.exit_code == 2 and "unknown provider 'nope[parquet]'" in refused.output
    export_id = submit(rt)
    reason = "sink 'parquet' needs pyarrow; install it with pip install 'async-export-worker[parquet]' and retry [bold]"
    fail_export(rt, export_id, reason)
    shown = runner.invoke(app, ["status", export_id], env={"COLUMNS": "300"})
    assert shown.exit_code == 0 and "pip install 'async-export-worker[parquet]' and retry [bold]" in shown.output
    listed = runner.invoke(app, ["list"], env={"COLUMNS": "300"})
    assert "'async-export-worker[parquet]'" in listed.output


def test_list_keeps_whole_ids_and_one_line_per_export_in_80_columns(on_engine: ExportClient, rt: Runtime) -> None:
    ids = [submit(rt) for _ in range(3)]
    fail_export(rt, ids[0], "a very long reason " * 20 + "\nsecond line of the reason")
    result = runner.invoke(app, ["list"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    lines = result.output.splitlines()
    for export_id in ids:
        [line] = [line for line in lines if export_id in line]  # the whole id, on one line
        assert len(line) <= 80
    assert "second line" not in result.output and "…" in result.output
    assert result.output.endswith("\n")


def test_status_table_counts_failed_files_as_failed_not_done(
    on_engine: ExportClient, rt: Runtime, driver: Driver, provider: FakeSamsara
) -> None:
    script_happy_path(provider)
    provider.answers[("GET", "/j1/0")] = [httpx.Response(404)]
    provider.answers[("GET", "/j1/1")] = [httpx.Response(404)]
    export_id = submit(rt)
    driver.run()
    result = runner.invoke(app, ["status", export_id], env={"COLUMNS": "200"})
    assert "0 of 2 written, 2 failed" in result.output
    assert "all 2 files failed" in result.output and "done" not in result.output.split("files", 1)[1].split("\n", 1)[0]


def test_an_export_failed_at_create_shows_its_job_failed(on_engine: ExportClient, rt: Runtime, driver: Driver) -> None:
    export_id = submit(rt, credential="fleet-b")
    driver.run()
    result = runner.invoke(app, ["status", export_id], env={"COLUMNS": "200"})
    assert "job 0" in result.output and "SUBMITTING" not in result.output
    assert rt.store.get(export_id).jobs["0"].status is JobStatus.FAILED


def test_run_schedule_names_the_unset_setting_and_the_known_schedules(
    on_engine: ExportClient, rt: Runtime, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["run-schedule", "nightly"])
    assert result.exit_code == 2 and "EXPORT_WORKER_SCHEDULE_FILE is not set" in result.output and "None" not in result.output
    schedules = tmp_path / "schedules.json"
    entry = {"provider": "samsara", "cron": {}, "params": {"vehicleIds": [1]}}
    schedules.write_text(json.dumps({"schedules": [{"name": "fleet-a", **entry}, {"name": "fleet-b", **entry}]}))
    rt.settings.schedule_file = schedules
    result = runner.invoke(app, ["run-schedule", "nightly"])
    assert result.exit_code == 2 and "no schedule named 'nightly'" in result.output
    assert "known schedules: fleet-a, fleet-b" in result.output


def test_waiting_on_an_export_no_worker_takes_says_so(
    on_engine: ExportClient, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No worker consumes the queue here (the dispatcher only records): after the notice delay the CLI says
    so, with the queue to start a worker on; the export is then cancelled from another thread, which ends
    the wait with exit code 1."""
    monkeypatch.setattr("worker.watch_view.NO_WORKER_NOTICE_SECONDS", 0.5)
    created: list[str] = []
    original = on_engine.submit

    def submit_and_remember(*args: Any, **kwargs: Any) -> str:
        created.append(original(*args, **kwargs))
        threading.Timer(2.0, lambda: on_engine.cancel(created[0])).start()
        return created[0]

    monkeypatch.setattr(on_engine, "submit", submit_and_remember)
    params = json.dumps({"startHour": "2026-11-23T00:00:00Z", "endHour": "2026-11-24T00:00:00Z", "vehicleIds": [1]})
    result = runner.invoke(app, ["submit", "samsara", "--params-json", params, "--wait"], env={"COLUMNS": "300"})
    assert result.exit_code == 1, result.output
    assert f"no worker has picked up export {created[0]}" in result.output
    assert f"queue {rt.settings.queue!r}" in result.output


def test_waiting_on_an_export_a_worker_took_prints_no_notice(
    on_engine: ExportClient, rt: Runtime, driver: Driver, provider: FakeSamsara, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("worker.watch_view.NO_WORKER_NOTICE_SECONDS", 0.0)
    script_happy_path(provider)
    export_id = submit(rt)
    driver.step()  # a worker took the submit
    threading.Timer(1.5, driver.run).start()
    result = runner.invoke(app, ["watch", export_id], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "no worker" not in result.output


def test_help_shows_no_type_on_flags_and_documents_every_option() -> None:
    for command in ([], ["submit"], ["status"], ["list"], ["demo"], ["reports"], ["watch"]):
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0 and "<bool>" not in result.output
    status_help = runner.invoke(app, ["status", "--help"], env={"COLUMNS": "200"}).output
    assert "--json" in status_help and "as JSON" in status_help
    top = runner.invoke(app, ["--help"]).output
    assert "Exit codes" in top and "reports" in top


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"export-worker {version('async-export-worker')}\n"


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("EXPORT_WORKER_REDIS_URL", "localhost:6379", "EXPORT_WORKER_REDIS_URL: 'localhost:6379' is not a Redis URL"),
        ("EXPORT_WORKER_REDIS_URL", "loader:s3cret@db:6379", "'loader:***@db:6379' is not a Redis URL"),
        ("EXPORT_WORKER_BROKER_URL", "localhost:5672", "EXPORT_WORKER_BROKER_URL: 'localhost:5672' is not a URL"),
        ("EXPORT_WORKER_BROKER_URL", "amqq://guest@h//", "unknown scheme 'amqq'"),
        ("EXPORT_WORKER_RESULT_BACKEND", "127.0.0.1:6379", "EXPORT_WORKER_RESULT_BACKEND: '127.0.0.1:6379' is not a URL"),
    ],
)
def test_a_malformed_url_setting_is_one_line_naming_the_setting(
    name: str, value: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _status_under({name: value}, monkeypatch)
    assert result.exit_code == 2, result.output
    assert says in result.output and "redis://127.0.0.1:6379/0" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "s3cret" not in result.output


def test_a_malformed_redis_url_exits_2_with_one_line_from_the_real_command() -> None:
    env = {**os.environ, "EXPORT_WORKER_REDIS_URL": "localhost:6379", "COLUMNS": "200"}
    done = subprocess.run(["export-worker", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1
    assert "EXPORT_WORKER_REDIS_URL: 'localhost:6379' is not a Redis URL" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("role", ["worker", "beat"])
def test_a_worker_or_beat_with_a_malformed_url_exits_2_with_one_line(role: str) -> None:
    env = {**os.environ, "EXPORT_WORKER_REDIS_URL": "loader:s3cret@db:6379"}
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker.app", role], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "EXPORT_WORKER_REDIS_URL: 'loader:***@db:6379' is not a Redis URL" in done.stderr
    assert "Traceback" not in done.stderr and "s3cret" not in done.stderr


def test_readme_s_cli_reference_names_every_command_and_option() -> None:
    import typer.main

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    reference = readme.split("## CLI reference", 1)[1].split("\n## ", 1)[0]
    group = typer.main.get_command(app)
    missing = []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        if f"export-worker {name}" not in reference:
            missing.append(name)
        missing += [
            f"{name} {opt}" for param in command.params for opt in param.opts if opt.startswith("-") and opt not in reference
        ]
    assert "--version" in reference and missing == []
