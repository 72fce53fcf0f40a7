"""The simulator ASGI app: both providers plus the ``/_sim`` control endpoints.

Control endpoints (never delayed, faulted or counted):

- ``GET /_sim/config`` / ``POST /_sim/config``: read or replace the whole :class:`SimulatorConfig`.
- ``POST /_sim/reset``: forget jobs, counters and pending faults.
- ``GET /_sim/stats``: creations, polls and downloads per provider, responses by status, and jobs.
- ``POST /_sim/faults`` (a :class:`FaultSpec`) / ``GET /_sim/faults``: queue or list scripted faults.
- ``POST /_sim/impact/jobs``: create an impact.com job as another client would.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worker.dev.simulator.config import SimulatorConfig
from worker.dev.simulator.faults import FaultMiddleware, FaultSpec
from worker.dev.simulator.impact import ImpactApi
from worker.dev.simulator.jobs import Clock
from worker.dev.simulator.samsara import SamsaraApi
from worker.dev.simulator.state import SimState

M = TypeVar("M", bound=BaseModel)


async def _parse(request: Request, model: type[M]) -> M | Response:
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as error:
        return JSONResponse({"errors": orjson.loads(error.json(include_url=False))}, 422)


def _control_routes(state: SimState) -> list[Route]:
    async def get_config(request: Request) -> Response:
        return JSONResponse(state.config.model_dump(mode="json"))

    async def set_config(request: Request) -> Response:
        config = await _parse(request, SimulatorConfig)
        if isinstance(config, Response):
            return config
        with state.lock:
            state.config = config
        return JSONResponse(config.model_dump(mode="json"))

    async def reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"reset": True})

    async def stats(request: Request) -> Response:
        return JSONResponse(state.stats())

    async def add_fault(request: Request) -> Response:
        spec = await _parse(request, FaultSpec)
        if isinstance(spec, Response):
            return spec
        state.faults.add(spec)
        return JSONResponse({"pending": state.faults.describe()}, 201)

    async def list_faults(request: Request) -> Response:
        return JSONResponse({"pending": state.faults.describe()})

    return [
        Route("/_sim/config", get_config, methods=["GET"]),
        Route("/_sim/config", set_config, methods=["POST"]),
        Route("/_sim/reset", reset, methods=["POST"]),
        Route("/_sim/stats", stats, methods=["GET"]),
        Route("/_sim/faults", add_fault, methods=["POST"]),
        Route("/_sim/faults", list_faults, methods=["GET"]),
    ]


def create_app(config: SimulatorConfig | None = None, *, clock: Clock = time.time) -> Starlette:
    """Build a simulator; ``clock`` lets tests move time without sleeping.

    The state is reachable as ``app.state.sim`` for in-process tests.
    """
    state = SimState(config or SimulatorConfig(), clock)

    def latency() -> float:
        return state.config.latency_seconds

    middleware: list[Any] = [Middleware(FaultMiddleware, faults=state.faults, latency=latency, on_status=state.count_status)]
    samsara = SamsaraApi(state)

    async def not_routed(request: Request, exc: Exception) -> Response:
        """Samsara's spec gives 404 and 405 the ``{message, requestId}`` body too."""
        status = getattr(exc, "status_code", 404)
        if request.url.path.startswith("/ifta-detail"):
            text = "Object not found." if status == 404 else f"{request.method} not allowed on {request.url.path}."
            return samsara.error(status, text)
        return Response(status_code=status)

    app = Starlette(
        routes=[*_control_routes(state), *samsara.routes, *ImpactApi(state).routes],
        middleware=middleware,
        exception_handlers={404: not_routed, 405: not_routed},
    )
    app.state.sim = state
    return app
