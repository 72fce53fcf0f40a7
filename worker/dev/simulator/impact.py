"""impact.com report-export jobs as the Partner v16 and Brand v14 Jobs/Reports specs describe them.

``GET /{Mediapartners|Advertisers}/{sid}/ReportExport/{report_id}`` queues a ``DownloadReport`` job
(identical parameters return the cached job); ``.../Jobs/{id}`` polls it; ``.../Jobs/{id}/Download``
answers 202 with the Job until it is COMPLETED, then 302 to a signed storage URL, or 200 with the
CSV when ``Mode=Stream``; ``PUT .../Jobs/{id}/Replay`` re-queues a COMPLETED, FAILED or CANCELLED
job of a ``Replayable`` type, else 403. Every call takes HTTP Basic ``AccountSID:AuthToken``.

"The default format is XML": answers are JSON only when ``Accept`` names ``application/json`` (or
the resource ends in ``.json``). Partner ReportExport needs ``START_DATE``/``END_DATE`` as
``YYYY-MM-DD``; invalid input answers 200 with ``Status: ERROR`` and no job. Each account
(``impact_account_sid`` and any ``impact_more_accounts``) sees only its own jobs. Quotas per account:
``impact_hourly_limit`` requests per hour, ``impact_report_export_daily_limit`` ReportExports per
day; over them, brand (``Advertisers``) 429s carry ``X-RateLimit-*`` and no ``Retry-After``,
partner 429s carry ``Retry-After``.

``GET /{root}/{sid}/Reports`` lists the account's report catalogue (``SimulatorConfig.impact_reports``)
and ``.../Reports/{id}/MetaData`` describes one report (its filters, and the CSV columns the simulator
writes); a report that is unknown, or runs in the web app only, answers 404 there and on ReportExport.

Job objects always carry every field of the Job object; dates that are not set yet are the empty
string ``""`` (never null), and set dates use the provider's fixed ``-05:00`` offset.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, ClassVar
from xml.sax.saxutils import escape

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from worker.dev.simulator.config import ImpactBehaviour, SimReport
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
COLUMN_TYPES = ("String", "Integer", "DateTime", "Decimal", "String")
COLUMN_DESCRIPTIONS = ("Unique value of the action", "Campaign (program) id", "When the action happened", "Payout", "State")
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
    def start(
        cls, state: SimState, report_id: str, params: dict[str, str], prefix: str = PREFIXES[0], account_sid: str | None = None
    ) -> ImpactJob:
        config, now = state.config, state.clock()
        behaviour = config.impact_behaviour(report_id)
        job = cls(
            job_id=state.next_id(cls.provider),
            created=now,
            timeline=_schedule(now, config.time_scale, behaviour),
            report_id=report_id,
            params=params,
            account_sid=account_sid or config.impact_account_sid,
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
        reference = {"QueuedUri": self.uri, "ResultUri": self.result_uri}
        if self.prefix == "Mediapartners":  # partner v16 adds ReplayUri; brand v14 has none
            reference["ReplayUri"] = f"{self.uri}/Replay"
        return reference

    def replayable(self, now: float) -> bool:
        return self.behaviour.replayable and self.status(now) in (COMPLETED, FAILED, CANCELLED)

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
            "Replayable": self.behaviour.replayable,
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


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "") or request.url.path.endswith(".json")


def _xml(name: str, value: Any) -> str:
    if isinstance(value, Mapping):
        inner = "".join(_xml(key, item) for key, item in value.items())
    elif isinstance(value, list):  # <Reports><Report>...</Report></Reports>
        inner = "".join(_xml(name.removesuffix("s"), item) for item in value)
    elif isinstance(value, bool):
        inner = "true" if value else "false"
    else:
        inner = escape(str(value))
    return f"<{name}>{inner}</{name}>"


def answer(request: Request, body: Mapping[str, Any], status: int = 200, root: str = "Result") -> Response:
    """JSON when asked for, XML otherwise ("the default format is XML")."""
    if _wants_json(request):
        return JSONResponse(dict(body), status)
    return Response(f'<?xml version="1.0" encoding="UTF-8"?>{_xml(root, body)}', status, media_type="application/xml")


def _error(request: Request, status: int, message: str) -> Response:
    return answer(request, {"Status": "ERROR", "Message": message}, status)


def _is_date(value: str | None) -> bool:
    try:
        return value is not None and len(value) == 10 and bool(date.fromisoformat(value))
    except ValueError:
        return False


def _is_datetime(value: str) -> bool:
    try:
        return "T" in value and datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None
    except ValueError:
        return False


def report_params_problem(prefix: str, params: Mapping[str, str]) -> str | None:
    """Why the specs' ReportExport would refuse these query parameters, or None."""
    if params.get("ResultFormat", "CSV") not in ("CSV", "JSON", "XML"):
        return f"ResultFormat must be CSV, JSON or XML, got {params['ResultFormat']!r}"
    if prefix == "Mediapartners":
        for name in ("START_DATE", "END_DATE"):
            if not _is_date(params.get(name)):
                return f"{name} is required as YYYY-MM-DD"
        return None
    for name in ("StartDate", "EndDate"):
        if name in params and not _is_datetime(params[name]):
            return f"{name} must be an ISO 8601 date-time"
    if "SUBAID" in params and not params["SUBAID"].isdigit():
        return "SUBAID must be an integer"
    return None


def _strip_format(name: str) -> str:
    """impact.com accepts ``.json``/``.xml`` after a resource id to choose the response format."""
    for suffix in (".json", ".xml"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _signature(key: str, job_id: str, expires: str) -> str:
    return hmac.new(key.encode(), f"impact/{job_id}?expires={expires}".encode(), hashlib.sha256).hexdigest()


STORAGE_URL_TTL_SECONDS = 300.0


class ImpactApi:
    def __init__(self, state: SimState) -> None:
        self.state = state
        self._cached: dict[tuple[str, str, str, tuple[tuple[str, str], ...]], str] = {}

    @property
    def routes(self) -> list[Route]:
        routes = [
            Route("/_sim/impact/jobs", self.control_create, methods=["POST"]),
            Route("/_files/impact/{job_id}", self.storage, methods=["GET"]),
        ]
        for prefix in PREFIXES:
            base = f"/{prefix}/{{sid}}"
            routes += [
                Route(f"{base}/ReportExport/{{report_id}}", self.report_export, methods=["GET"]),
                Route(f"{base}/Reports", self.list_reports, methods=["GET"]),
                Route(f"{base}/Reports/{{report_id}}/MetaData", self.metadata, methods=["GET"]),
                Route(f"{base}/Jobs/{{job_id}}", self.get, methods=["GET"]),
                Route(f"{base}/Jobs/{{job_id}}/Download", self.download, methods=["GET"]),
                Route(f"{base}/Jobs/{{job_id}}/Replay", self.replay, methods=["PUT"]),
            ]
        return routes

    def _denied(self, request: Request, *, report_export: bool = False) -> Response | None:
        """401 for bad credentials, 403 when the path names another account, 429 over a quota, else None."""
        config = self.state.config
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        try:
            credentials = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            credentials = ""
        account_sid, _, token = credentials.partition(":")
        expected = config.impact_token(account_sid)
        if scheme.lower() != "basic" or expected is None or not hmac.compare_digest(token, expected):
            response = _error(request, 401, "Invalid credentials")
            response.headers["WWW-Authenticate"] = 'Basic realm="impact.com"'
            return response
        if request.path_params["sid"] != account_sid:
            return _error(request, 403, "The AccountSID in the path does not match the credentials")
        quotas = [("requests", 3600.0, config.impact_hourly_limit)]
        if report_export:
            quotas.insert(0, ("ReportExport", 86400.0, config.impact_report_export_daily_limit))
        for name, window, limit in quotas:
            if (refused := self._spend(request, name, window, limit)) is not None:
                return refused
        return None

    def _spend(self, request: Request, name: str, window_seconds: float, limit: int) -> Response | None:
        """Fixed windows of simulated time; over the limit, a 429 with the API flavour's headers."""
        now, scale = self.state.clock(), self.state.config.time_scale
        window = window_seconds / scale
        index = int(now // window)
        key = (request.path_params["sid"], name, index)
        with self.state.lock:
            if self.state.quota_used[key] < limit:
                self.state.quota_used[key] += 1
                return None
        reset = (index + 1) * window
        response = _error(request, 429, f"{name} limit of {limit} per {window_seconds:g}s reached")
        if request.url.path.startswith("/Advertisers/"):
            response.headers.update(
                {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(math.ceil(reset))}
            )
        else:
            response.headers["Retry-After"] = str(max(1, math.ceil(reset - now)))
        return response

    def _job(self, request: Request) -> ImpactJob | Response:
        denied = self._denied(request)
        if denied is not None:
            return denied
        job = self.state.job(ImpactJob, _strip_format(request.path_params["job_id"]))
        if job is None or job.account_sid != request.path_params["sid"]:
            return _error(request, 404, "Job not found")
        return job

    def _report(self, request: Request) -> SimReport | Response:
        """The API-accessible report the path names, or the 404 of the specs (unknown, or web app only)."""
        prefix = request.url.path.split("/")[1]
        report = self.state.config.impact_report(prefix, _strip_format(request.path_params["report_id"]))
        if report is None or not report.api_accessible:
            return _error(request, 404, "No report exists with the supplied Id, or the report is not API accessible")
        return report

    async def list_reports(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        prefix = request.url.path.split("/")[1]
        base = f"/{prefix}/{request.path_params['sid']}"
        listed = []
        for report in self.state.config.impact_reports:
            if report.api_root != prefix:
                continue
            item: dict[str, Any] = {
                "Name": report.name,
                "Id": report.id,
                "Category": report.category,
                "Description": report.description,
                "ApiAccessible": report.api_accessible,
            }
            if report.api_accessible:
                item["ApiRunUri"] = f"{base}/Reports/{report.id}"
                item["DeferredApiRunUri"] = f"{base}/ReportExport/{report.id}"
                item["MetaDataUri"] = f"{base}/Reports/{report.id}/MetaData"
            else:
                item["RunUri"] = f"/secure/reports/run/{report.id}"
            listed.append(item)
        return answer(request, {"Reports": listed})

    async def metadata(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        report = self._report(request)
        if isinstance(report, Response):
            return report
        base = f"/{report.api_root}/{request.path_params['sid']}"
        return answer(
            request,
            {
                "Name": report.name,
                "Id": report.id,
                "Description": report.description,
                "Filters": [{"Name": f.name, "DataType": f.data_type, "Format": f.format} for f in report.filters],
                "Attributes": [
                    {"Name": name, "DataType": kind, "Description": text}
                    for name, kind, text in zip(COLUMNS, COLUMN_TYPES, COLUMN_DESCRIPTIONS, strict=True)
                ],
                "RunUri": f"{base}/Reports/{report.id}",
                "Uri": f"{base}/Reports/{report.id}/MetaData",
            },
            root="ReportMetadata",
        )

    async def report_export(self, request: Request) -> Response:
        if (denied := self._denied(request, report_export=True)) is not None:
            return denied
        prefix = request.url.path.split("/")[1]
        report = self._report(request)
        if isinstance(report, Response):
            return report
        report_id = report.id
        params = dict(request.query_params)
        if (problem := report_params_problem(prefix, params)) is not None:
            return answer(request, {"Status": "ERROR", "Message": problem})
        account_sid = request.path_params["sid"]
        key = (account_sid, prefix, report_id, tuple(sorted(params.items())))
        cached = self._cached.get(key)
        job = self.state.job(ImpactJob, cached) if cached else None
        if job is None:
            job = ImpactJob.start(self.state, report_id, params, prefix, account_sid)
            self._cached[key] = job.job_id
            self.state.count("creates", job.provider)
        return answer(request, {"Status": QUEUED, **job.reference()})

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
        job = ImpactJob.start(self.state, body["report_id"], {}, body.get("prefix", PREFIXES[0]))
        return JSONResponse({"Id": job.job_id, **job.reference()})

    async def get(self, request: Request) -> Response:
        job = self._job(request)
        if isinstance(job, Response):
            return job
        self.state.count_poll(job)
        return answer(request, job.wire(self.state.clock()), root="Job")

    async def download(self, request: Request) -> Response:
        job = self._job(request)
        if isinstance(job, Response):
            return job
        now = self.state.clock()
        if job.status(now) != COMPLETED:
            return answer(request, job.wire(now), 202, root="Job")
        if request.query_params.get("Mode") != "Stream":
            expires = f"{now + STORAGE_URL_TTL_SECONDS / job.time_scale:.3f}"
            signature = _signature(self.state.config.signing_key, job.job_id, expires)
            base = str(request.base_url).rstrip("/")
            return RedirectResponse(f"{base}/_files/impact/{job.job_id}?expires={expires}&signature={signature}", 302)
        return self._file(job)

    async def storage(self, request: Request) -> Response:
        """The signed storage URL of a 302: no credentials, refused once expired."""
        job_id, expires = request.path_params["job_id"], request.query_params.get("expires", "")
        expected = _signature(self.state.config.signing_key, job_id, expires)
        if not hmac.compare_digest(request.query_params.get("signature", ""), expected):
            return Response("signature does not match", 403)
        try:
            expired = self.state.clock() > float(expires)
        except ValueError:
            expired = True
        job = self.state.job(ImpactJob, job_id)
        if expired or job is None:
            return Response("expired or unknown", 403)
        return self._file(job)

    def _file(self, job: ImpactJob) -> Response:
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
                return Response(status_code=403)
            job.replay(now)
        return answer(request, job.wire(now), root="Job")
