"""impact.com report-export jobs, as described in ``providers.md``.

``GET /{Mediapartners|Advertisers}/{sid}/ReportExport/{report_id}`` queues a ``DownloadReport`` job;
``.../Jobs/{id}`` polls it, ``.../Jobs/{id}/Download`` streams its CSV once COMPLETED and
``PUT .../Jobs/{id}/Replay`` restarts it when ``Replayable``. Every call takes HTTP Basic
``AccountSID:AuthToken``.

Job objects always carry every field of the Job object; dates that are not set yet are the empty
string ``""`` (never null), and set dates use the provider's fixed ``-05:00`` offset.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worker.dev.simulator.config import ImpactBehaviour
from worker.dev.simulator.csvgen import CsvFile, csv_response
from worker.dev.simulator.jobs import Phase, SimJob, Step, Timeline
from worker.dev.simulator.state import SimState

QUEUED, RUNNING, COMPLETED = "QUEUED", "RUNNING", "COMPLETED"
ERROR, FAILED, CANCELLED = "ERROR", "FAILED", "CANCELLED"
MAX_RETRIES = 5
"""The provider retries an ERROR by itself this many times before giving up with FAILED."""
JOB_TYPE = "DownloadReport"
PREFIXES = ("Mediapartners", "Advertisers")
UNSET_DATE = ""
COLUMNS = ("ActionId", "CampaignId", "EventDate", "Payout", "Status")
PAYOUT_COLUMN = COLUMNS.index("Payout")
CAMPAIGNS = (10001, 10002, 10003, 10004, 10005, 10006, 10007, 10008)
ACTION_STATUSES = ("APPROVED", "PENDING", "REVERSED")
_OFFSET = timezone(timedelta(hours=-5))
_EVENTS_FROM = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())


def _date(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, _OFFSET).isoformat(timespec="seconds")


def _make_row(rng: random.Random) -> Sequence[str]:
    event = _EVENTS_FROM + rng.randrange(90 * 86400)
    return (
        f"{rng.randint(1000, 99999)}.{rng.randint(1000, 9999)}.{rng.randint(100000, 999999)}",
        str(rng.choice(CAMPAIGNS)),
        _date(event),
        f"{rng.uniform(0.5, 250.0):.2f}",
        rng.choice(ACTION_STATUSES),
    )


def _schedule(start: float, time_scale: float, behaviour: ImpactBehaviour) -> Timeline:
    """QUEUED, then RUNNING/ERROR rounds (one per ERROR episode, capped at ``MAX_RETRIES``), then a
    last RUNNING that ends FAILED (after ``MAX_RETRIES`` errors), CANCELLED or COMPLETED."""
    errors = min(behaviour.error_phases, MAX_RETRIES)
    steps = [Step(QUEUED, behaviour.queued_seconds)]
    for attempt in range(errors):
        steps += [
            Step(RUNNING, behaviour.running_seconds, attempt),
            Step(ERROR, behaviour.error_retry_seconds, attempt),
        ]
    steps.append(Step(RUNNING, behaviour.running_seconds, errors))
    ending = FAILED if errors == MAX_RETRIES else CANCELLED if behaviour.cancel else COMPLETED
    return Timeline(start, time_scale, steps, Step(ending, 0, errors))


_STATUS_MESSAGES = {
    QUEUED: "Job is queued",
    RUNNING: "Job is running",
    COMPLETED: "Job completed",
    CANCELLED: "Job was cancelled",
    FAILED: f"Job failed after {MAX_RETRIES} retries",
}


def _status_message(phase: Phase) -> str:
    if phase.status == ERROR:
        return (
            f"Attempt {phase.attempt + 1} failed: simulated provider error. "
            f"Retry {phase.attempt + 1} of {MAX_RETRIES} is scheduled"
        )
    if phase.status == RUNNING and phase.attempt:
        return f"Retry {phase.attempt} of {MAX_RETRIES} is running"
    return _STATUS_MESSAGES[phase.status]


@dataclass(kw_only=True)
class ImpactJob(SimJob):
    provider: ClassVar[str] = "impact"

    report_id: str
    params: dict[str, str]
    account_sid: str
    prefix: str
    behaviour: ImpactBehaviour
    time_scale: float
    replays: int = 0

    @classmethod
    def start(cls, state: SimState, report_id: str, params: dict[str, str], prefix: str = PREFIXES[0]) -> ImpactJob:
        config, now = state.config, state.clock()
        behaviour = config.impact_behaviour(report_id)
        job = cls(
            job_id=state.next_id(cls.provider),
            created=now,
            timeline=_schedule(now, config.time_scale, behaviour),
            report_id=report_id,
            params=params,
            account_sid=config.impact_account_sid,
            prefix=prefix,
            behaviour=behaviour,
            time_scale=config.time_scale,
        )
        state.add_job(job)
        return job

    @property
    def uri(self) -> str:
        return f"/{self.prefix}/{self.account_sid}/Jobs/{self.job_id}"

    @property
    def result_uri(self) -> str:
        return f"{self.uri}/Download"

    @property
    def file_name(self) -> str:
        return f"{self.report_id}-{self.job_id}.csv"

    def reference(self) -> dict[str, str]:
        return {"QueuedUri": self.uri, "ResultUri": self.result_uri}

    def replayable(self, now: float) -> bool:
        return self.behaviour.replayable and self.status(now) in (FAILED, CANCELLED)

    def replay(self, now: float) -> None:
        """Back to QUEUED from ``now``; the scripted failure is dropped unless it should recur."""
        self.replays += 1
        if self.behaviour.replay_succeeds:
            self.behaviour = self.behaviour.model_copy(update={"error_phases": 0, "cancel": False})
        self.timeline = _schedule(now, self.time_scale, self.behaviour)

    def csv(self) -> CsvFile:
        return CsvFile(
            COLUMNS,
            self.behaviour.rows,
            f"{self.job_id}:0",
            _make_row,
            numeric_column=PAYOUT_COLUMN,
            bad_rows_every=self.behaviour.bad_rows_every,
        )

    def wire(self, now: float) -> dict[str, Any]:
        phase = self.timeline.at(now)
        rows = self.behaviour.rows
        if phase.status == RUNNING:
            done = phase.fraction(now)
            percent, records = min(99, int(done * 100)), min(rows, int(done * rows))
        else:
            percent, records = (100, rows) if phase.status == COMPLETED else (0, 0)
        started = self.timeline.reached(RUNNING, now)

        def ended(status: str) -> str:
            return _date(phase.start) if phase.status == status else UNSET_DATE

        return {
            "Id": self.job_id,
            "Type": JOB_TYPE,
            "ProgramId": "",
            "CreatedBy": self.account_sid,
            "CreatedDate": _date(self.created),
            "StartedDate": _date(started.start) if started else UNSET_DATE,
            "CompletedDate": ended(COMPLETED),
            "AbandonedDate": UNSET_DATE,
            "CancelledDate": ended(CANCELLED),
            "FailedDate": ended(FAILED),
            "LastProgressUpdateDate": _date(now if phase.status == RUNNING else phase.start),
            "Status": phase.status,
            "StatusMessage": _status_message(phase),
            "RecordsProcessed": records,
            "PercentageComplete": percent,
            "Replayable": self.replayable(now),
            "ResultUri": self.result_uri,
            "Uri": self.uri,
        }

    def stats(self, now: float) -> dict[str, Any]:
        done = self.status(now) == COMPLETED
        return {
            "provider": self.provider,
            "status": self.status(now),
            "report_id": self.report_id,
            "params": self.params,
            "replays": self.replays,
            "files": [{"name": self.file_name, "recordCount": self.behaviour.rows}] if done else [],
            "downloads": self.downloads,
            "polls": self.polls,
        }


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"Status": "ERROR", "Message": message}, status)


def _strip_format(name: str) -> str:
    """impact.com accepts ``.json``/``.xml`` after a resource id to choose the response format."""
    for suffix in (".json", ".xml"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


class ImpactApi:
    def __init__(self, state: SimState) -> None:
        self.state = state

    @property
    def routes(self) -> list[Route]:
        routes = [Route("/_sim/impact/jobs", self.control_create, methods=["POST"])]
        for prefix in PREFIXES:
            base = f"/{prefix}/{{sid}}"
            routes += [
                Route(f"{base}/ReportExport/{{report_id}}", self.report_export, methods=["GET"]),
                Route(f"{base}/Jobs/{{job_id}}", self.get, methods=["GET"]),
                Route(f"{base}/Jobs/{{job_id}}/Download", self.download, methods=["GET"]),
                Route(f"{base}/Jobs/{{job_id}}/Replay", self.replay, methods=["PUT"]),
            ]
        return routes

    def _denied(self, request: Request) -> Response | None:
        """401 for bad credentials, 403 when the path names another account, else None."""
        config = self.state.config
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        try:
            credentials = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            credentials = ""
        expected = f"{config.impact_account_sid}:{config.impact_auth_token}"
        if scheme.lower() != "basic" or not hmac.compare_digest(credentials, expected):
            response = _error(401, "Invalid credentials")
            response.headers["WWW-Authenticate"] = 'Basic realm="impact.com"'
            return response
        if request.path_params["sid"] != config.impact_account_sid:
            return _error(403, "The AccountSID in the path does not match the credentials")
        return None

    def _job(self, request: Request) -> ImpactJob | Response:
        denied = self._denied(request)
        if denied is not None:
            return denied
        job = self.state.job(ImpactJob, _strip_format(request.path_params["job_id"]))
        return job if job is not None else _error(404, "Job not found")

    async def report_export(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        prefix = request.url.path.split("/")[1]
        job = ImpactJob.start(self.state, _strip_format(request.path_params["report_id"]), dict(request.query_params), prefix)
        self.state.count("creates", job.provider)
        return JSONResponse({"Status": QUEUED, **job.reference()})

    async def control_create(self, request: Request) -> Response:
        """Creates a job the way another client would, so tests can hand its id to the worker.

        Not counted in ``creates``: those count the creations made through the provider API.
        """
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("report_id"), str):
            return JSONResponse({"error": 'body must be {"report_id": "..."}'}, 422)
        job = ImpactJob.start(self.state, body["report_id"], {})
        return JSONResponse({"Id": job.job_id, **job.reference()})

    async def get(self, request: Request) -> Response:
        job = self._job(request)
        if isinstance(job, Response):
            return job
        self.state.count_poll(job)
        return JSONResponse(job.wire(self.state.clock()))

    async def download(self, request: Request) -> Response:
        job = self._job(request)
        if isinstance(job, Response):
            return job
        status = job.status(self.state.clock())
        if status != COMPLETED:
            return _error(409, f"Job {job.job_id} has no result: status is {status}")
        with self.state.lock:
            job.downloads += 1
        self.state.count("downloads", job.provider)
        return csv_response(job.csv(), job.file_name)

    async def replay(self, request: Request) -> Response:
        job = self._job(request)
        if isinstance(job, Response):
            return job
        now = self.state.clock()
        with self.state.lock:
            if not job.replayable(now):
                return _error(400, f"Job {job.job_id} is not replayable (status {job.status(now)})")
            job.replay(now)
        return JSONResponse(job.wire(now))
