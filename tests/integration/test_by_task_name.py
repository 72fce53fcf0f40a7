"""Another application enqueues by task name with a bare Celery app: the README's example, run as written.

The example runs in a subprocess that never imports this package; the test checks that, and that
the export it started runs to completion in the worker.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ON_BOTH_BROKERS, wait_done
from worker.api import ExportClient
from worker.dev.localstack import LocalStack
from worker.models import ExportStatus

pytestmark = [pytest.mark.integration, ON_BOTH_BROKERS]

README = Path(__file__).parents[2] / "README.md"
MARKER = "<!-- example: bare-celery (run by tests/integration/test_by_task_name.py) -->"
CHECK = """
import json as _json, sys as _sys
print("RESULT " + _json.dumps({"export_id": export_id, "status": view["record"]["status"],
                               "worker_imported": "worker" in _sys.modules}))
"""


def readme_example() -> str:
    text = README.read_text()
    found = re.search(re.escape(MARKER) + r"\s*```python\n(.*?)```", text, re.S)
    assert found, f"README.md lost its example after {MARKER!r}"
    return found.group(1)


def test_bare_celery_app_submits_and_reads_an_export_by_task_name(
    client: ExportClient, stack: LocalStack, tmp_path: Path
) -> None:
    assert stack.settings is not None
    script = tmp_path / "caller.py"
    script.write_text(readme_example() + CHECK)
    env = {
        "PATH": "/usr/bin:/bin",
        "BROKER_URL": stack.settings.effective_broker_url,
        "RESULT_BACKEND": stack.settings.effective_result_backend,
        "EXPORTS_QUEUE": stack.settings.queue,
    }
    done = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr + stack.logs()
    result = json.loads(done.stdout.rsplit("RESULT ", 1)[1])
    assert result["worker_imported"] is False, "the caller must not need this package"
    assert "refused: InvalidRequest: unknown provider 'nope'" in done.stdout
    assert result["status"] in {status.value for status in ExportStatus}
    view = wait_done(client, result["export_id"], stack)
    assert view.record.status is ExportStatus.COMPLETED, view.record.error
    assert view.record.idempotency_key == "fleet-a-2026-11-23" and view.record.rows > 0
