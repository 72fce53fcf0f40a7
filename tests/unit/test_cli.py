"""The CLI refuses bad input with one clear line and exit code 2, before touching Redis."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from worker.cli import app

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


def test_unreachable_redis_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.settings import get_settings
    from worker.wiring import _runtime_for_pid

    monkeypatch.setenv("EXPORT_WORKER_REDIS_URL", "redis://127.0.0.1:1/0")
    get_settings.cache_clear()
    _runtime_for_pid.cache_clear()
    try:
        result = runner.invoke(app, ["status", "abc"])
    finally:
        get_settings.cache_clear()
        _runtime_for_pid.cache_clear()
    assert result.exit_code == 2
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in result.output
