"""Samsara IFTA detail jobs as the Samsara Csv API spec (2024-11-18) describes them.

``POST /ifta-detail/csv`` creates a job (201), ``GET /ifta-detail/csv/{id}`` polls it, and completed
jobs list files ``output-001.csv.gz`` ... whose ``downloadUrl`` is an S3-style presigned URL back
into this simulator (``/_files/samsara/{jobId}/{index}?expires=<unix seconds>&signature=<hmac>``).
The URL takes no bearer token, expires ``url_ttl_seconds`` (simulated) after the poll that issued
it, and every poll issues fresh ones, so clients must re-poll after a 403 exactly as with the real
provider. "The contents will be gzipped": files are gzip without ``Content-Encoding``, with the
snake_case header third-party material shows.

It refuses what the spec refuses, with the spec's error body ``{"message", "requestId"}``: filters
that are not comma-separated strings, hours that are not RFC 3339, a range longer than one month,
more than 5000 vehicles, or more than 1000 vehicles over more than 24 hours (whether the real API
refuses those or only degrades is not documented; refusing makes a client that ignores them fail).
External vehicle ids (``samsara.vin:...``) resolve to stable numeric ids.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import itertools
import math
import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worker.dev.simulator.config import SamsaraBehaviour
from worker.dev.simulator.csvgen import CsvFile, csv_response, gzip_response
from worker.dev.simulator.jobs import SimJob, Step, Timeline
from worker.dev.simulator.state import SimState

REQUESTED, PROCESSING, COMPLETED, FAILED = "Requested", "Processing", "Completed", "Failed"
COLUMNS = (
    "device_id",
    "jurisdiction",
    "start_ms",
    "end_ms",
    "distance_meters",
    "start_odo_meters",
    "end_odo_meters",
    "start_lat",
    "start_lng",
    "end_lat",
    "end_lng",
    "toll",
    "leg_end",
)
DISTANCE_COLUMN = COLUMNS.index("distance_meters")
FILTERS = ("vehicleIds", "vehicleTagIds", "vehicleParentTagIds")
MAX_VEHICLES, MAX_VEHICLES_OVER_A_DAY = 5000, 1000
HOUR, DAY = 3600, 86400
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


def _parse_hour(value: object) -> datetime | None:
    """RFC 3339 with a time zone, truncated down to the hour as the spec says."""
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.replace(minute=0, second=0, microsecond=0)


def _one_month_after(moment: datetime) -> datetime:
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


def external_vehicle_id(external: str) -> int:
    """A stable numeric id for an external id such as ``samsara.vin:1HGBH41JXMN109186``."""
    return 2**40 + zlib.crc32(external.encode())


def _vehicles(text: str) -> list[int] | str:
    """The vehicle list of a ``vehicleIds`` filter, or the reason it is invalid."""
    vehicles: list[int] = []
    for item in (part.strip() for part in text.split(",")):
        if item.isdigit() and int(item) > 0:
            vehicles.append(int(item))
        elif ":" in item and item.split(":", 1)[0] and item.split(":", 1)[1]:
            vehicles.append(external_vehicle_id(item))
        else:
            return f"Invalid value for parameter vehicleIds: {item!r} is neither a vehicle ID nor an external ID"
    return list(dict.fromkeys(vehicles))


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
        return f"output-{index + 1:03d}.csv.gz" if self.behaviour.gzip else f"output-{index + 1:03d}.csv"

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
        odometer = rng.uniform(1e6, 9e8)
        lat, lng = rng.uniform(25.0, 49.0), rng.uniform(-124.0, -67.0)
        return (
            str(rng.choice(self.vehicle_ids)),
            rng.choice(JURISDICTIONS),
            str(begin * 1000),
            str((begin + seconds) * 1000),
            f"{distance:.3f}",
            f"{odometer:.1f}",
            f"{odometer + distance:.1f}",
            f"{lat:.6f}",
            f"{lng:.6f}",
            f"{lat + rng.uniform(-0.5, 0.5):.6f}",
            f"{lng + rng.uniform(-0.5, 0.5):.6f}",
            rng.choice(("true", "false")),
            rng.choice(("true", "false")),
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

    def error(self, status: int, message: str) -> JSONResponse:
        return JSONResponse({"message": message, "requestId": f"sim-{next(self._request_ids):08d}"}, status)

    def _authorized(self, request: Request) -> bool:
        expected = f"Bearer {self.state.config.samsara_token}"
        return hmac.compare_digest(request.headers.get("authorization", ""), expected)

    def _bad_request(self, message: str) -> JSONResponse:
        return self.error(400, message)

    async def create(self, request: Request) -> Response:
        if not self._authorized(request):
            return self.error(401, "Invalid token.")
        try:
            body = await request.json()
        except ValueError:
            return self._bad_request("Request body is not valid JSON")
        if not isinstance(body, dict):
            return self._bad_request("Request body must be a JSON object")
        start, end = _parse_hour(body.get("startHour")), _parse_hour(body.get("endHour"))
        if start is None or end is None:
            return self._bad_request("Invalid value for parameter: startHour and endHour are required RFC 3339 times")
        if end <= start:
            return self._bad_request("Invalid value for parameter: endHour must be after startHour")
        if end > _one_month_after(start):
            return self._bad_request("Invalid value for parameter: the maximum request duration is 1 month")
        for name in FILTERS:
            if name in body and not isinstance(body[name], str):
                return self._bad_request(f"Invalid value for parameter {name}: must be a comma-separated string")
        config = self.state.config
        # Tag filters are accepted but not modelled: without vehicleIds the job takes the fleet.
        vehicles = _vehicles(body["vehicleIds"]) if body.get("vehicleIds") else list(config.samsara_fleet)
        if isinstance(vehicles, str):
            return self._bad_request(vehicles)
        if len(vehicles) > MAX_VEHICLES:
            return self._bad_request(f"Invalid value for parameter vehicleIds: {len(vehicles)} vehicles, more than 5000")
        if (end - start).total_seconds() > DAY and len(vehicles) > MAX_VEHICLES_OVER_A_DAY:
            return self._bad_request(
                f"Invalid value for parameter vehicleIds: {len(vehicles)} vehicles over more than 24 hours, more than 1000"
            )

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
            span=(int(start.timestamp()), int(end.timestamp())),
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
            return self.error(401, "Invalid token.")
        job = self.state.job(SamsaraJob, request.path_params["job_id"])
        if job is None:
            return self.error(404, "Object not found.")
        self.state.count("polls", job.provider)
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
        file = job.csv(index)
        return gzip_response(file, job.file_name(index)) if job.behaviour.gzip else csv_response(file, job.file_name(index))
