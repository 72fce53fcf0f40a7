"""``export-worker``: enqueue and follow exports from a shell; ``demo`` runs the whole thing locally.

For scripts: every command exits 0 when it did what was asked, 1 when an export it followed did not
end COMPLETED, and 2 when the request was refused or the settings or Redis are unusable (one line on
stderr, never a traceback). Texts from users, providers and errors are printed as text, never as
Rich markup.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from worker.api import ExportClient, ExportView
from worker.errors import ExportWorkerError
from worker.settings import settings_problems
from worker.store import STORE_UNAVAILABLE
from worker.watch_view import follow, progress_table

app = typer.Typer(
    help="Pull large asynchronous exports out of provider APIs with Celery.\n\n"
    "Exit codes: 0 done; 1 a followed export ended FAILED or CANCELLED; 2 refused (bad input, settings, Redis).",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain click help: no type shown for flags, no markup read in help texts
)
console = Console(highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)
T = TypeVar("T")

EXIT_FAILED = 1
"""An export this command followed ended FAILED or CANCELLED."""
EXIT_REFUSED = 2
"""Bad input, unusable settings, Redis unreachable: nothing was done."""


def _fail(message: str) -> typer.Exit:
    err.print(Text.assemble(("error: ", "bold red"), message))
    return typer.Exit(code=EXIT_REFUSED)


def _run(action: Callable[[], T]) -> T:
    """Turn the errors a user can hit into one clear line and exit code 2, never a traceback."""
    try:
        return action()
    except ExportWorkerError as exc:
        raise _fail(str(exc)) from None
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        raise _fail(settings_problems(exc)) from None
    except STORE_UNAVAILABLE as exc:
        from worker.settings import get_settings
        from worker.wiring import redis_target

        target = redis_target(get_settings())
        remedy = (
            "check that the Sentinels answer and EXPORT_WORKER_REDIS_SENTINELS and EXPORT_WORKER_REDIS_SENTINEL_MASTER name them"
            if target.sentinels
            else "start it (docker compose up -d redis) or set EXPORT_WORKER_REDIS_URL"
        )
        raise _fail(f"cannot reach {target.describe()} ({exc}); {remedy}") from None


def _client() -> ExportClient:
    def build() -> ExportClient:
        from worker.api import default_client

        return default_client()

    return _run(build)


def _parse_params(pairs: list[str], params_json: str | None, flag: str = "--param") -> dict[str, Any]:
    params: dict[str, Any] = {}
    if params_json:
        try:
            parsed = json.loads(params_json)
        except json.JSONDecodeError as exc:
            raise _fail(f"--params-json is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise _fail('--params-json must be a JSON object, e.g. \'{"job_id": "A1b2C3"}\'')
        params.update(parsed)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise _fail(f"{flag} {pair!r} must look like key=value")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def _version(show: bool) -> None:
    if not show:
        return
    try:
        number = version("async-export-worker")
    except PackageNotFoundError:
        number = "unknown (not installed)"
    console.print(f"export-worker {number}", markup=False)
    raise typer.Exit()


@app.callback()
def main_options(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Options of the command itself (``--version``)."""


@app.command()
def submit(
    provider: Annotated[str, typer.Argument(help="samsara or impact", metavar="PROVIDER")],
    param: Annotated[
        list[str],
        typer.Option("--param", "-p", metavar="KEY=VALUE", help="one parameter; the value is parsed as JSON if it can be"),
    ] = [],  # noqa: B006
    params_json: Annotated[
        str | None, typer.Option(metavar="JSON", help="all parameters as one JSON object (-p adds to it)")
    ] = None,
    credential: Annotated[str, typer.Option(metavar="NAME", help="credential name the worker resolves")] = "default",
    idempotency_key: Annotated[
        str | None, typer.Option(metavar="KEY", help="same key and request, same export; a different request is refused")
    ] = None,
    deadline_seconds: Annotated[
        float | None, typer.Option(metavar="SECONDS", help="fail the export after this long (default: per provider)")
    ] = None,
    sink: Annotated[
        str,
        typer.Option(metavar="NAME", help="jsonl or parquet (files), postgres (a table), redis_stream (small exports)"),
    ] = "jsonl",
    sink_option: Annotated[
        list[str],
        typer.Option(
            "--sink-option", "-o", metavar="KEY=VALUE", help="postgres: database=<name>, schema=<schema>, table=<table>"
        ),
    ] = [],  # noqa: B006
    wait: Annotated[
        bool, typer.Option("--wait", help="follow progress until the export ends; exit 1 unless it COMPLETED")
    ] = False,
) -> None:
    """Enqueue an export and print its id."""
    params = _parse_params(param, params_json)
    options = _parse_params(sink_option, None, "--sink-option") or None
    client = _client()
    export_id = _run(
        lambda: client.submit(
            provider,
            params,
            credential=credential,
            idempotency_key=idempotency_key,
            deadline_seconds=deadline_seconds,
            sink=sink,
            sink_options=options,
        )
    )
    console.print(export_id, markup=False)
    if wait:
        _exit_with(_watch(client, export_id))


def _exit_with(view: ExportView) -> None:
    raise typer.Exit(code=0 if view.record.status.value == "COMPLETED" else EXIT_FAILED)


@app.command()
def status(
    export_id: Annotated[str, typer.Argument(metavar="EXPORT_ID")],
    as_json: Annotated[bool, typer.Option("--json", help="the whole export (record, files, progress) as JSON")] = False,
) -> None:
    """Show one export: state, jobs, files, rows."""
    client = _client()
    view = _run(lambda: client.get(export_id))
    if as_json:
        console.print_json(view.model_dump_json())
    else:
        console.print(progress_table(view))


def _watch(client: ExportClient, export_id: str) -> ExportView:
    return _run(lambda: follow(console, client, export_id))


@app.command()
def watch(export_id: Annotated[str, typer.Argument(metavar="EXPORT_ID")]) -> None:
    """Live progress of one export until it ends (follows the event stream); exit 1 unless it COMPLETED."""
    client = _client()
    _exit_with(_watch(client, export_id))


ID_WIDTH = 16
"""Export ids are 16 hex digits; the column never wraps or cuts them, so they can be copied."""


@app.command("list")
def list_(
    limit: Annotated[int, typer.Option(min=1, max=1000, metavar="N", help="how many of the newest exports")] = 20,
) -> None:
    """The most recent exports, newest first (the error's first line; `status <id>` shows it all)."""
    client = _client()
    records = _run(lambda: client.recent(limit))
    table = Table(
        Column("id", no_wrap=True, min_width=ID_WIDTH),
        Column("provider", no_wrap=True),
        Column("status", no_wrap=True),
        Column("rows", justify="right", no_wrap=True),
        Column("created (UTC)", no_wrap=True),
        Column("error", no_wrap=True, overflow="ellipsis", ratio=1),
        box=box.SIMPLE_HEAD,
    )
    for record in records:
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(record.created_at))
        error = (record.error or "").strip().split("\n", 1)[0]
        table.add_row(Text(record.id), Text(record.provider), record.status.value, str(record.rows), created, Text(error))
    console.print(table)


@app.command()
def cancel(export_id: Annotated[str, typer.Argument(metavar="EXPORT_ID")]) -> None:
    """Stop an export; downloads in flight stop at the next file boundary."""
    client = _client()
    record = _run(lambda: client.cancel(export_id))
    console.print(f"export {record.id} is {record.status.value}", markup=False)


@app.command()
def retry(export_id: Annotated[str, typer.Argument(metavar="EXPORT_ID")]) -> None:
    """Re-download failed files, or replay the provider job when the provider allows it."""
    client = _client()
    record = _run(lambda: client.retry(export_id))
    console.print(f"export {record.id} is {record.status.value} again", markup=False)


@app.command("run-schedule")
def run_schedule(name: Annotated[str, typer.Argument(metavar="NAME")]) -> None:
    """Submit a beat schedule's export for the current period now (same period, same export)."""
    client = _client()
    export_id = _run(lambda: client.run_schedule(name))
    console.print(export_id, markup=False)


@app.command()
def reports(
    provider: Annotated[str, typer.Argument(metavar="PROVIDER", help="impact")],
    report_id: Annotated[str | None, typer.Argument(metavar="REPORT_ID", help="show this report's parameters")] = None,
    credential: Annotated[
        str, typer.Option(metavar="NAME", help="credential name, configured in this shell's environment")
    ] = "default",
    api_root: Annotated[
        str | None, typer.Option(metavar="ROOT", help="impact: Mediapartners (partner, the default) or Advertisers (brand)")
    ] = None,
) -> None:
    """What can be exported: the reports an account can run, or one report's parameters and columns.

    Calls the provider from this shell, so the credential must be configured here (as on the worker)."""
    client = _client()
    if report_id is None:
        listed = _run(lambda: client.reports(provider, credential=credential, scope=api_root))
        table = Table(
            Column("report id", no_wrap=True),
            "name",
            "category",
            Column("export", no_wrap=True),
            box=box.SIMPLE_HEAD,
        )
        for item in listed:
            table.add_row(Text(item.id), Text(item.name), Text(item.category), "yes" if item.exportable else "UI only")
        console.print(table)
        console.print(f"`export-worker reports {provider} <report id>` shows a report's parameters.", markup=False)
        return
    detail = _run(lambda: client.report(provider, report_id, credential=credential, scope=api_root))
    console.print(Text.assemble((detail.id, "bold"), f"  {detail.name}".rstrip()))
    if detail.description:
        console.print(Text(detail.description))
    table = Table("parameter", "type", "format", "required", box=box.SIMPLE_HEAD, title="report_params")
    for parameter in detail.parameters:
        needed = "yes" if parameter.name in detail.required else ""
        table.add_row(Text(parameter.name), Text(parameter.data_type), Text(parameter.format), needed)
    console.print(table)
    if detail.columns:
        console.print(Text("columns: " + ", ".join(detail.columns)))
    formats = {parameter.name: parameter.format or parameter.data_type for parameter in detail.parameters}
    placeholders = {name: f"<{formats.get(name) or 'value'}>" for name in detail.required}
    example: dict[str, Any] = {"report_id": detail.id, "report_params": placeholders}
    if api_root:
        example["api_root"] = api_root
    console.print(
        Text(f"submit: export-worker submit {provider} --credential {credential} --params-json '{json.dumps(example)}'")
    )


@app.command()
def demo(
    vehicles: Annotated[int, typer.Option(min=1, max=1000, metavar="N", help="vehicles in the export")] = 4,
    files: Annotated[int, typer.Option(min=1, max=100, metavar="N", help="files the simulated job produces")] = 3,
    rows: Annotated[int, typer.Option(min=1, max=10_000_000, metavar="N", help="rows per file")] = 500,
    keep: Annotated[bool, typer.Option("--keep", help="leave the stack up (until Ctrl-C) and say how to use it")] = False,
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
