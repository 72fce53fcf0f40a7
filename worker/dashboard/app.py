"""The dashboard's routes: three pages, their live fragments, server-sent events, ``/api`` JSON and the actions.

Pages render once and then follow the events stream: each event makes the page fetch its own
fragment again (``?fragment=1``). Event ids are Redis stream ids, so a reconnecting browser's
``Last-Event-ID`` resumes exactly after the last event it saw.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import anyio
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from worker.api import ExportClient
from worker.dashboard import pages
from worker.dashboard.auth import BasicAuth, Viewer
from worker.dashboard.security import SecurityMiddleware, cross_origin_reason
from worker.dashboard.settings import DashboardSettings
from worker.errors import ExportWorkerError, UnknownExport
from worker.store import STORE_UNAVAILABLE, CorruptRecord

HERE = Path(__file__).parent
ACTIONS = ("retry", "cancel")
MAX_BULK = 500
"""Most exports one confirmed action may change."""
BLOCK_MS = 5000
"""How long one events read waits in Redis; a closed page's reader thread ends within this."""
EVENT_ID = re.compile(r"^(\$|0|\d+-\d+)$")
EXPORT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
NOT_LISTED = frozenset({"polled", "url_refreshed"})
"""Events that change nothing a listing shows: the all-exports stream skips them (one export's stream keeps them)."""


def _ts(value: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(value)) if value else "—"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _size(count: int | None) -> str:
    value = float(count or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters.update(ts=_ts, duration=_duration, size=_size)
    templates.env.globals["now"] = time.time
    return templates


class Dashboard:
    """The routes, bound to one client, its settings and whether actions are allowed."""

    def __init__(self, client: ExportClient, settings: DashboardSettings, *, allow_actions: bool) -> None:
        self.client = client
        self.settings = settings
        self.allow_actions = allow_actions
        self.templates = _templates()
        self.readers = anyio.CapacityLimiter(100)

    # -- helpers -----------------------------------------------------------------------------------

    def can_act(self, viewer: Viewer) -> bool:
        return self.allow_actions and viewer.role == "operator"

    def render(self, request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        viewer: Viewer = request.state.viewer
        fragment = request.query_params.get("fragment") == "1"
        template = f"_{name}" if fragment else name
        query = [(key, value) for key, value in request.query_params.multi_items() if key != "fragment"]
        fragment_url = f"{request.url.path}?{urlencode([*query, ('fragment', '1')])}"
        return self.templates.TemplateResponse(
            request,
            template,
            {"viewer": viewer, "can_act": self.can_act(viewer), "fragment_url": fragment_url, **context},
            status_code=status_code,
        )

    @staticmethod
    def wants_json(request: Request) -> bool:
        return "application/json" in request.headers.get("accept", "")

    # -- pages -------------------------------------------------------------------------------------

    def home(self, request: Request) -> Response:
        page = pages.home_page(self.client, self.settings.failed_window_hours)
        return self.render(request, "home.html", page=page, events_url=f"/events?last={page.last_event_id}")

    def exports(self, request: Request) -> Response:
        page = pages.list_page(self.client, dict(request.query_params))
        base = list(page.form.values.items())
        return self.render(
            request,
            "exports.html",
            page=page,
            events_url=f"/events?last={page.last_event_id}",
            filter_query=urlencode(base),
            older_url=f"/exports?{urlencode([*base, ('before', page.page.next_before)])}" if page.page.next_before else None,
            statuses=["PENDING", "RUNNING", "DOWNLOADING", "COMPLETED", "FAILED", "CANCELLED"],
        )

    def export(self, request: Request) -> Response:
        export_id = request.path_params["export_id"]
        page = pages.detail(self.client, export_id)
        return self.render(request, "export.html", page=page, events_url=f"/exports/{export_id}/events?last={page.last_event_id}")

    # -- JSON --------------------------------------------------------------------------------------

    @staticmethod
    def json(model: BaseModel) -> Response:
        return Response(model.model_dump_json(), media_type="application/json")

    def api_attention(self, request: Request) -> Response:
        return self.json(pages.home_page(self.client, self.settings.failed_window_hours))

    def api_exports(self, request: Request) -> Response:
        return self.json(pages.list_page(self.client, dict(request.query_params)))

    def api_export(self, request: Request) -> Response:
        return self.json(pages.detail(self.client, request.path_params["export_id"]))

    def api_timeline(self, request: Request) -> Response:
        after = request.query_params.get("after", "-")
        if after != "-" and not EVENT_ID.match(after):
            raise HTTPException(400, "after must be a stream entry id such as 1764000000000-0")
        return JSONResponse(self.client.timeline(request.path_params["export_id"], after))

    # -- live --------------------------------------------------------------------------------------

    def _start(self, request: Request, export_id: str | None) -> str:
        last = request.headers.get("last-event-id") or request.query_params.get("last") or ""
        if not EVENT_ID.match(last) or last == "$":
            return self.client.latest_event_id(export_id)
        return last

    def _stream(self, request: Request, read: Callable[[str], tuple[str, list[dict[str, Any]]]], start: str) -> Response:
        async def events() -> AsyncIterator[ServerSentEvent]:
            last = start
            while True:
                last, batch = await anyio.to_thread.run_sync(read, last, abandon_on_cancel=True, limiter=self.readers)
                for event in batch:
                    summary = {key: event.get(key) for key in ("export_id", "type", "status")}
                    yield ServerSentEvent(data=json.dumps(summary), id=event["id"], event="change")

        return EventSourceResponse(events(), ping=15, headers={"x-accel-buffering": "no"})

    async def events(self, request: Request) -> Response:
        start = await anyio.to_thread.run_sync(self._start, request, None)

        def read(last: str) -> tuple[str, list[dict[str, Any]]]:
            last, batch = self.client.read_events(None, since=last, block_ms=BLOCK_MS)
            return last, [event for event in batch if event.get("type") not in NOT_LISTED]

        return self._stream(request, read, start)

    async def export_events(self, request: Request) -> Response:
        export_id = request.path_params["export_id"]
        start = await anyio.to_thread.run_sync(self._start, request, export_id)

        def read(last: str) -> tuple[str, list[dict[str, Any]]]:
            batch = self.client.follow_export(export_id, last, block_ms=BLOCK_MS)
            return (batch[-1]["id"] if batch else last), batch

        return self._stream(request, read, start)

    # -- actions -----------------------------------------------------------------------------------

    def _refuse(self, request: Request, status: int, message: str) -> Response:
        if self.wants_json(request):
            return JSONResponse({"error": message}, status_code=status)
        return self.render(request, "error.html", status_code=status, message=message)

    @staticmethod
    def action_of(request: Request) -> str:
        return request.url.path.rsplit("/", 1)[-1]

    def confirm(self, request: Request) -> Response:
        action = self.action_of(request)
        if not self.can_act(request.state.viewer):
            return self._refuse(request, 403, "actions are off: start the dashboard with --allow-actions, as an operator")
        ids = [export_id for export_id in request.query_params.getlist("id") if EXPORT_ID.match(export_id)]
        form = pages.filter_form(dict(request.query_params))
        if not ids and not form.values:
            return self._refuse(request, 400, f"name the exports to {action}: an id, or a filter of All exports")
        if not ids:
            ids = self.client.matching_ids(form.where, limit=MAX_BULK)
        return self.render(request, "confirm.html", action=action, ids=ids, form=form, limit=MAX_BULK)

    async def act(self, request: Request) -> Response:
        action = self.action_of(request)
        viewer: Viewer = request.state.viewer
        if not self.can_act(viewer):
            return self._refuse(request, 403, "actions are off: start the dashboard with --allow-actions, as an operator")
        reason = cross_origin_reason(request, self.settings.public_origin)
        if reason is not None:
            return self._refuse(request, 403, f"refused: {reason}")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
            return self._refuse(request, 415, "send the form as application/x-www-form-urlencoded")
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        ids = [export_id for export_id in form.get("id", []) if EXPORT_ID.match(export_id)][:MAX_BULK]
        if form.get("confirm") != ["yes"] or not ids:
            return self._refuse(request, 400, "nothing confirmed: choose the exports and confirm")
        results = await anyio.to_thread.run_sync(self._apply, action, ids, viewer.name)
        if self.wants_json(request):
            return JSONResponse({"action": action, "results": results})
        return self.render(request, "done.html", action=action, results=results)

    def _apply(self, action: str, ids: list[str], actor: str) -> list[dict[str, str]]:
        results = []
        for export_id in ids:
            try:
                record = (self.client.retry if action == "retry" else self.client.cancel)(export_id, actor=actor)
                results.append({"id": export_id, "ok": "yes", "message": f"now {record.status.value}"})
            except ExportWorkerError as exc:
                results.append({"id": export_id, "ok": "", "message": str(exc)})
        return results

    # -- errors ------------------------------------------------------------------------------------

    async def unknown(self, request: Request, exc: Exception) -> Response:
        return self._refuse(request, 404, str(exc))

    async def corrupt(self, request: Request, exc: Exception) -> Response:
        return self._refuse(request, 500, str(exc))

    async def unavailable(self, request: Request, exc: Exception) -> Response:
        # The Redis URL may carry a password: the message names neither.
        return self._refuse(request, 503, "cannot reach Redis; is it running, and is EXPORT_WORKER_REDIS_URL right?")


def create_app(client: ExportClient, settings: DashboardSettings, *, allow_actions: bool = False) -> Starlette:
    board = Dashboard(client, settings, allow_actions=allow_actions)
    routes = [
        Route("/", board.home),
        Route("/exports", board.exports),
        Route("/exports/{export_id:str}", board.export),
        Route("/exports/{export_id:str}/events", board.export_events),
        Route("/events", board.events),
        Route("/api/attention", board.api_attention),
        Route("/api/exports", board.api_exports),
        Route("/api/exports/{export_id:str}", board.api_export),
        Route("/api/exports/{export_id:str}/timeline", board.api_timeline),
        *(Route(f"/actions/{name}", board.confirm, methods=["GET"]) for name in ACTIONS),
        *(Route(f"/actions/{name}", board.act, methods=["POST"]) for name in ACTIONS),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    handlers: dict[Any, Any] = {
        UnknownExport: board.unknown,
        CorruptRecord: board.corrupt,
        **{error: board.unavailable for error in STORE_UNAVAILABLE},
    }
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityMiddleware, auth=BasicAuth(settings.users))],
        exception_handlers=handlers,
    )
    return app
