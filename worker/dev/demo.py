"""``export-worker demo``: one Samsara IFTA export, end to end, on this machine.

Redis is the configured one when reachable, else an embedded fake; the provider is the simulator;
the worker is a real Celery worker process. It prints where the parsed rows are. The simulator
(and the embedded Redis) live in this process, so ``--keep`` keeps the process, and with it the
stack, up until Ctrl-C, and prints the environment that points the CLI or another worker at it.
"""

from __future__ import annotations

import shlex
import shutil
import signal
import tempfile
import time
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.table import Table
from rich.text import Text

from worker.dev.localstack import LocalStack
from worker.dev.simulator import SamsaraBehaviour, SimulatorConfig
from worker.settings import redact_url
from worker.watch_view import follow

DEMO_START_HOUR = "2026-11-23T00:00:00Z"
DEMO_END_HOUR = "2026-11-24T00:00:00Z"


def run_demo(console: Console, *, vehicles: int, files: int, rows: int, keep: bool = False) -> int:
    config = SimulatorConfig(
        samsara_fleet=list(range(1, vehicles + 1)),
        samsara_default=SamsaraBehaviour(requested_seconds=1, processing_seconds=3, files=files, rows_per_file=rows),
    )
    output = Path("exports").resolve()
    with LocalStack(simulator_config=config, output_dir=output) as stack:
        assert stack.client is not None and stack.simulator is not None
        tried = redact_url(stack.requested_redis_url)
        where = f"Redis at {tried}" if stack.using_real_redis else f"an embedded Redis (nothing answered at {tried})"
        console.print(Text.assemble(("demo", "bold"), f": using {where}; provider simulator at {stack.simulator.url}"))
        stack.start_worker(concurrency=2)
        stack.start_beat()
        export_id = stack.client.submit(
            "samsara",
            {"startHour": DEMO_START_HOUR, "endHour": DEMO_END_HOUR, "vehicleIds": list(range(1, vehicles + 1))},
            idempotency_key=f"demo-{stack.run_id}",
        )
        console.print(Text.assemble("submitted export ", (export_id, "bold"), "; following it (Ctrl-C to stop)"))
        view = follow(console, stack.client, export_id)
        console.print()
        table = Table("file", "rows", "quarantined", "recordCount", title="files")
        for file in view.files:
            table.add_row(Text(file.name), str(file.rows), str(file.quarantined), str(file.record_count))
        console.print(table)
        console.print(f"written to {output / export_id}", soft_wrap=True, markup=False)
        if view.record.status.value != "COMPLETED":
            console.print(Text(f"export ended {view.record.status.value}: {view.record.error}", style="red"))
            console.print(stack.logs(), markup=False, highlight=False)
            return 1
        console.print(
            f"[green]COMPLETED[/]: {view.record.rows} rows written, {view.record.quarantined} quarantined, "
            f"in {(view.record.finished_at or time.time()) - view.record.created_at:.1f}s"
        )
        if not keep:
            console.print("The demo stack stops now; `export-worker demo --keep` leaves it up to try the CLI on it.")
            return 0
        _keep_up(console, stack, export_id)
        return 0


SECRET_SETTINGS = ("EXPORT_WORKER_CREDENTIALS", "EXPORT_WORKER_DATABASES")
"""Settings that hold tokens or passwords as a whole; URL settings are shown with their password masked."""


def shown_setting(name: str, value: str) -> str:
    """One ``export`` line as the terminal may show it: no token, no password."""
    if name in SECRET_SETTINGS:
        return f"{name}=<secret, in the file>"
    return f"{name}={shlex.quote(redact_url(value))}"


def write_env_file(env: dict[str, str]) -> Path:
    """The stack's settings, secrets included, in a file only this user can read, to ``source`` elsewhere."""
    path = Path(tempfile.mkdtemp(prefix="aew-demo-")) / "demo.env"
    path.touch(mode=0o600)
    path.write_text("".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items()))
    return path


def _keep_up(console: Console, stack: LocalStack, export_id: str) -> None:
    """Block until Ctrl-C with the stack up, after printing how to reach it from another shell.

    SIGTERM is taken first, so one that comes while the lines are printed still stops the stack and
    removes the settings file, as Ctrl-C does.
    """
    assert stack.settings is not None
    previous = signal.signal(signal.SIGTERM, _interrupt)
    env_file: Path | None = None
    try:
        env = stack.settings_env()
        env_file = write_env_file(env)
        console.print(
            Text.assemble(
                "\n", ("The stack stays up until Ctrl-C.", "bold"), " In another shell, point the CLI or a worker at it:"
            )
        )
        console.print(f". {env_file}", soft_wrap=True, highlight=False, markup=False)
        console.print("which sets (secrets shown masked here):", markup=False)
        console.print(
            "\n".join(shown_setting(name, value) for name, value in env.items()), soft_wrap=True, highlight=False, markup=False
        )
        worker = f"celery -A worker.app worker -Q {stack.settings.queue} -l INFO"
        console.print(
            f"then: export-worker status {export_id}\nexport-worker list\n{worker}\n"
            "export-worker dashboard --allow-actions   # then open http://127.0.0.1:8808/",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
        while all(process.poll() is None for process in stack.workers):
            time.sleep(1)
        console.print(Text("the demo worker exited; stopping the stack", style="red"))
    except KeyboardInterrupt:
        console.print("stopping the demo stack")
    finally:
        signal.signal(signal.SIGTERM, previous)
        if env_file is not None:
            shutil.rmtree(env_file.parent, ignore_errors=True)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    """SIGTERM stops a kept stack as Ctrl-C does, so its worker and beat processes go with it."""
    raise KeyboardInterrupt
