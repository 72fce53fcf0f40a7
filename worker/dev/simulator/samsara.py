"""Samsara IFTA detail jobs, as described in ``providers.md``.

``POST /ifta-detail/csv`` creates a job, ``GET /ifta-detail/csv/{id}`` polls it, and completed jobs
list files whose ``downloadUrl`` is an S3-style presigned URL back into this simulator
(``/_files/samsara/{jobId}/{index}?expires=<unix seconds>&signature=<hmac>``). The URL takes no
bearer token, expires ``url_ttl_seconds`` (simulated) after the poll that issued it, and every poll
issues fresh ones, so clients must re-poll after a 403 exactly as with the real provider.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worker.dev.simulator.config import SamsaraBehaviour
from worker.dev.simulator.csvgen import CsvFile, csv_response
from worker.dev.simulator.jobs import SimJob, Step, Timeline
from worker.dev.simulator.state import SimState

REQUESTED, PROCESSING, COMPLETED, FAILED = "Requested", "Processing", "Completed", "Failed"
COLUMNS = (
    "vehicleId",
    "vehicleName",
    "jurisdiction",
    "startTime",
    "endTime",
    "distanceMeters",
    "taxableDistanceMeters",
)
DISTANCE_COLUMN = COLUMNS.index("distanceMeters")
TOO_MANY_VEHICLES = "Try limiting the number of vehicles requested per job. Requested {requested} vehicles; limit is {limit}."
JURISDICTIONS = (
    *"AL AZ AR CA CO CT DE FL GA ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC".split(),
    *"ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY AB BC MB NB NL NS ON PE QC SK".split(),
)


def _iso_ms(epoch_ms: int) -> str:
    """ISO 8601 UTC with ``Z``; milliseconds because scaled-down jobs live for fractions of a second."""
    moment = datetime.fromtimestamp(epoch_ms // 1000, UTC) + timedelta(milliseconds=epoch_ms % 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso(epoch: float) -> str:
    return _iso_ms(round(epoch * 1000))


def _iso_seconds(epoch: int) -> str:
    """Row timestamps: whole seconds, as segment boundaries are."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_hour(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _signature(key: str, job_id: str, index: int, expires: str) -> str:
    return hmac.new(key.encode(), f"{job_id}/{index}?expires={expires}".encode(), hashlib.sha256).hexdigest()


@dataclass(kw_only=True)
class SamsaraJob(SimJob):
    provider: ClassVar[str] = "samsara"

    start_hour: str
    end_hour: str
    span: tuple[int, int]
    """[startHour, endHour] as Unix seconds: the window every generated segment falls into."""
    vehicle_ids: list[int]
    behaviour: SamsaraBehaviour
    time_scale: float
    details: str | None
    """Why the job will fail, or None when it will complete."""

    def file_name(self, index: int) -> str:
        return f"ifta-detail-{self.job_id}-{index}.csv"

    def file_count(self, now: float) -> int:
        """Files the job exposes right now: only a Completed job has any."""
        return self.behaviour.files if self.status(now) == COMPLETED else 0

    def csv(self, index: int) -> CsvFile:
        return CsvFile(
            COLUMNS,
            self.behaviour.rows_per_file,
            f"{self.job_id}:{index}",
            self._make_row,
            numeric_column=DISTANCE_COLUMN,
            bad_rows_every=self.behaviour.bad_rows_every,
        )

    def _make_row(self, rng: random.Random) -> Sequence[str]:
        start, end = self.span
        seconds = min(rng.randint(60, 3600), end - start)
        begin = rng.randint(start, end - seconds)
        distance = rng.uniform(50.0, 120_000.0)
        taxable = distance if rng.random() < 0.9 else distance * rng.random()
        vehicle = rng.choice(self.vehicle_ids)
        return (
            str(vehicle),
            f"Truck {vehicle}",
            rng.choice(JURISDICTIONS),
            _iso_seconds(begin),
            _iso_seconds(begin + seconds),
            f"{distance:.3f}",
            f"{taxable:.3f}",
        )

    def wire(self, now: float, base_url: str, signing_key: str) -> dict[str, Any]:
        """The ``data`` object of the job, with download URLs freshly signed at ``now``."""
        phase = self.timeline.at(now)
        data: dict[str, Any] = {
            "args": {"endHour": self.end_hour, "startHour": self.start_hour, "vehicleIds": self.vehicle_ids},
            "jobId": self.job_id,
            "jobStatus": phase.status,
            "requestedAtTime": _iso(self.created),
        }
        if started := self.timeline.reached(PROCESSING, now):
            data["startedAtTime"] = _iso(started.start)
        if phase.status == FAILED:
            data["failedAtTime"] = _iso(phase.start)
            data["details"] = self.details
        elif phase.status == COMPLETED:
            data["completedAtTime"] = _iso(phase.start)
            expires_ms = math.ceil((now + self.behaviour.url_ttl_seconds / self.time_scale) * 1000)
            expires = f"{expires_ms / 1000:.3f}"
            files = [
                {
                    "createdAtTime": _iso(phase.start),
                    "downloadUrl": f"{base_url}/_files/samsara/{self.job_id}/{index}?expires={expires}"
                    f"&signature={_signature(signing_key, self.job_id, index, expires)}",
                    "downloadUrlExpirationTime": _iso_ms(expires_ms),
                    "name": self.file_name(index),
                    "recordCount": self.behaviour.rows_per_file,
                }
                for index in range(self.file_count(now))
            ]
            if files:
                data["files"] = files
        return data

    def stats(self, now: float) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "status": self.status(now),
            "vehicleIds": self.vehicle_ids,
            "files": [
                {"name": self.file_name(i), "recordCount": self.behaviour.rows_per_file} for i in range(self.file_count(now))
            ],
            "downloads": self.downloads,
            "polls": self.polls,
        }


def _s3_error(status: int, code: str, message: str, **extra: str) -> Response:
    fields = "".join(f"<{name}>{value}</{name}>" for name, value in extra.items())
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>{fields}</Error>'
    return Response(body, status_code=status, media_type="application/xml")


class SamsaraApi:
    def __init__(self, state: SimState) -> None:
        self.state = state
        self._request_ids = itertools.count(1)

    @property
    def routes(self) -> list[Route]:
        return [
            Route("/ifta-detail/csv", self.create, methods=["POST"]),
            Route("/ifta-detail/csv/{job_id}", self.get, methods=["GET"]),
            Route("/_files/samsara/{job_id}/{index:int}", self.download, methods=["GET"]),
        ]

    def _error(self, status: int, message: str) -> JSONResponse:
        return JSONResponse({"message": message, "requestId": f"sim-{next(self._request_ids):08d}"}, status)

    def _authorized(self, request: Request) -> bool:
        expected = f"Bearer {self.state.config.samsara_token}"
        return hmac.compare_digest(request.headers.get("authorization", ""), expected)

    async def create(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._error(401, "Unauthorized: missing or invalid bearer token")
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "Request body is not valid JSON")
        if not isinstance(body, dict):
            return self._error(400, "Request body must be a JSON object")
        start, end = _parse_hour(body.get("startHour")), _parse_hour(body.get("endHour"))
        if start is None or end is None:
            return self._error(400, "startHour and endHour are required ISO 8601 timestamps")
        if end <= start:
            return self._error(400, "endHour must be after startHour")
        requested = body.get("vehicleIds")
        if requested is not None and not isinstance(requested, list):
            return self._error(400, "vehicleIds must be a list")
        config = self.state.config
        try:
            # Tag filters are accepted but not modelled: without vehicleIds the job takes the fleet.
            vehicles = [int(v) for v in requested] if requested else list(config.samsara_fleet)
        except (TypeError, ValueError):
            return self._error(400, "vehicleIds must be integers")

        behaviour = config.samsara_behaviour(body["startHour"])
        details = None
        if behaviour.max_vehicles is not None and len(vehicles) > behaviour.max_vehicles:
            details = TOO_MANY_VEHICLES.format(requested=len(vehicles), limit=behaviour.max_vehicles)
        elif behaviour.outcome == FAILED:
            details = behaviour.failure_details
        now = self.state.clock()
        timeline = Timeline(
            now,
            config.time_scale,
            [Step(REQUESTED, behaviour.requested_seconds), Step(PROCESSING, behaviour.processing_seconds)],
            Step(FAILED if details else COMPLETED, 0),
        )
        job = SamsaraJob(
            job_id=self.state.next_id(SamsaraJob.provider),
            created=now,
            timeline=timeline,
            start_hour=body["startHour"],
            end_hour=body["endHour"],
            span=(math.ceil(start), max(math.ceil(start), math.floor(end))),
            vehicle_ids=vehicles,
            behaviour=behaviour,
            time_scale=config.time_scale,
            details=details,
        )
        self.state.add_job(job)
        self.state.count("creates", job.provider)
        return JSONResponse({"data": self._wire(job, request, now)}, 201)

    async def get(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._error(401, "Unauthorized: missing or invalid bearer token")
        job = self.state.job(SamsaraJob, request.path_params["job_id"])
        if job is None:
            return self._error(404, "Job not found")
        self.state.count_poll(job)
        return JSONResponse({"data": self._wire(job, request, self.state.clock())})

    def _wire(self, job: SamsaraJob, request: Request, now: float) -> dict[str, Any]:
        return job.wire(now, str(request.base_url).rstrip("/"), self.state.config.signing_key)

    async def download(self, request: Request) -> Response:
        job_id, index = request.path_params["job_id"], request.path_params["index"]
        expires = request.query_params.get("expires", "")
        expected = _signature(self.state.config.signing_key, job_id, index, expires)
        if not hmac.compare_digest(request.query_params.get("signature", ""), expected):
            return _s3_error(403, "AccessDenied", "Request signature does not match")
        now = self.state.clock()
        try:
            expired = now > float(expires)
        except ValueError:
            expired = True
        if expired:
            return _s3_error(403, "AccessDenied", "Request has expired", Expires=expires, ServerTime=_iso(now))
        job = self.state.job(SamsaraJob, job_id)
        if job is None or not 0 <= index < job.file_count(now):
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        with self.state.lock:
            job.downloads += 1
        self.state.count("downloads", job.provider)
        return csv_response(job.csv(index), job.file_name(index))
