"""``export-worker``: enqueue and follow exports from a shell; ``demo`` runs the whole thing locally."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from worker.api import ExportClient, ExportView
from worker.errors import ExportWorkerError
from worker.store import STORE_UNAVAILABLE
from worker.watch_view import follow, progress_table

app = typer.Typer(help="Pull large asynchronous exports out of provider APIs with Celery.", no_args_is_help=True)
console = Console()
err = Console(stderr=True, soft_wrap=True)


def _client() -> ExportClient:
    from worker.api import default_client

    return default_client()


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=2)


def _run(action: Any) -> Any:
    """Turn the errors a user can hit into one clear line and exit code 2, never a traceback."""
    try:
        return action()
    except ExportWorkerError as exc:
        raise _fail(str(exc)) from None
    except STORE_UNAVAILABLE as exc:
        from worker.settings import get_settings

        raise _fail(
            f"cannot reach Redis at {get_settings().redis_url} ({exc}); start it (docker compose up -d redis) "
            "or set EXPORT_WORKER_REDIS_URL"
        ) from None


def _parse_params(pairs: list[str], params_json: str | None, flag: str = "--param") -> dict[str, Any]:
    params: dict[str, Any] = {}
    if params_json:
        try:
            params.update(json.loads(params_json))
        except json.JSONDecodeError as exc:
            raise _fail(f"--params-json is not valid JSON: {exc}") from None
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise _fail(f"{flag} {pair!r} must look like key=value")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


@app.command()
def submit(
    provider: Annotated[str, typer.Argument(help="samsara or impact")],
    param: Annotated[list[str], typer.Option("--param", "-p", help="key=value (value parsed as JSON if it can be)")] = [],  # noqa: B006
    params_json: Annotated[str | None, typer.Option(help="all parameters as one JSON object")] = None,
    credential: Annotated[str, typer.Option(help="credential name the worker resolves")] = "default",
    idempotency_key: Annotated[str | None, typer.Option(help="same key, same export")] = None,
    deadline_seconds: Annotated[float | None, typer.Option(help="fail the export after this long")] = None,
    sink: Annotated[
        str, typer.Option(help="jsonl or parquet (files), postgres (a table), redis_stream (small exports)")
    ] = "jsonl",
    sink_option: Annotated[
        list[str], typer.Option("--sink-option", "-o", help="postgres: database=<name>, schema=<schema>, table=<table>")
    ] = [],  # noqa: B006
    wait: Annotated[bool, typer.Option(help="follow progress until the export ends")] = False,
) -> None:
    """Enqueue an export and print its id."""
    params = _parse_params(param, params_json)
    client = _client()
    export_id = _run(
        lambda: client.submit(
            provider,
            params,
            credential=credential,
            idempotency_key=idempotency_key,
            deadline_seconds=deadline_seconds,
            sink=sink,
            sink_options=_parse_params(sink_option, None, "--sink-option") or None,
        )
    )
    console.print(export_id)
    if wait:
        _watch(client, export_id)


@app.command()
def status(export_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show one export: state, jobs, files, rows."""
    view = _run(lambda: _client().get(export_id))
    if as_json:
        console.print_json(view.model_dump_json())
    else:
        console.print(progress_table(view))


def _watch(client: ExportClient, export_id: str) -> ExportView:
    return _run(lambda: follow(console, client, export_id))


@app.command()
def watch(export_id: str) -> None:
    """Live progress of one export until it ends (follows the event stream)."""
    view = _watch(_client(), export_id)
    raise typer.Exit(code=0 if view.record.status.value == "COMPLETED" else 1)


@app.command("list")
def list_(limit: Annotated[int, typer.Option(min=1, max=1000)] = 20) -> None:
    """The most recent exports."""
    records = _run(lambda: _client().recent(limit))
    table = Table("id", "provider", "status", "rows", "created", "error")
    for record in records:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.created_at))
        table.add_row(record.id, record.provider, record.status.value, str(record.rows), created, record.error or "")
    console.print(table)


@app.command()
def cancel(export_id: str) -> None:
    """Stop an export; downloads in flight stop at the next file boundary."""
    record = _run(lambda: _client().cancel(export_id))
    console.print(f"export {record.id} is {record.status.value}")


@app.command()
def retry(export_id: str) -> None:
    """Re-download failed files, or replay the provider job when the provider allows it."""
    record = _run(lambda: _client().retry(export_id))
    console.print(f"export {record.id} is {record.status.value} again")


@app.command("run-schedule")
def run_schedule(name: str) -> None:
    """Submit a beat schedule's export for the current period now (same period, same export)."""
    export_id = _run(lambda: _client().run_schedule(name))
    console.print(export_id)


@app.command()
def demo(
    vehicles: Annotated[int, typer.Option(min=1, max=1000)] = 4,
    files: Annotated[int, typer.Option(min=1, max=100)] = 3,
    rows: Annotated[int, typer.Option(min=1, max=10_000_000)] = 500,
    keep: Annotated[bool, typer.Option(help="leave the stack up (until Ctrl-C) and print how to use it")] = False,
) -> None:
    """Run a Samsara IFTA export end to end against the built-in simulator, on Redis or an embedded fake."""
    from worker.dev.demo import run_demo

    raise typer.Exit(code=run_demo(console, vehicles=vehicles, files=files, rows=rows, keep=keep))


@app.command()
def dashboard(
    host: Annotated[str, typer.Option(help="address to listen on; anything but loopback needs users")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8808,
    allow_actions: Annotated[bool, typer.Option(help="let operators retry and cancel exports from the pages")] = False,
    hash_password: Annotated[bool, typer.Option(help="print an Argon2id hash for DASHBOARD_USERS and exit")] = False,
) -> None:
    """Serve the exports dashboard: what needs attention, every export, one export's timeline, live."""
    from worker.dashboard.serve import hash_from_prompt, serve

    if hash_password:
        console.print(hash_from_prompt(), highlight=False, markup=False, soft_wrap=True)
        return
    _run(lambda: serve(_client(), host=host, port=port, allow_actions=allow_actions, say=console.print))


def main() -> None:
    app()
