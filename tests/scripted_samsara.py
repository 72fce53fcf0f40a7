"""A Samsara scripted answer by answer behind httpx.MockTransport, and the payloads it answers with."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from worker.api import ExportClient
from worker.engine.context import Runtime

HEADER = "vehicleId,vehicleName,jurisdiction,startTime,endTime,distanceMeters,taxableDistanceMeters\n"
PARAMS = {"startHour": "2026-11-23T00:00:00Z", "endHour": "2026-11-24T00:00:00Z", "vehicleIds": [1, 2, 3, 4]}


def csv_rows(count: int, vehicle: int = 1) -> str:
    return HEADER + "".join(
        f"{vehicle},Truck {vehicle},CA,2026-11-23T01:00:00Z,2026-11-23T02:00:00Z,{1000.5 + i},{900.25 + i}\n"
        for i in range(count)
    )


def job(job_id: str, status: str, files: list[dict] | None = None, details: str | None = None, vehicles=(1, 2, 3, 4)) -> dict:
    data = {
        "args": {"startHour": "2026-11-23T00:00:00Z", "endHour": "2026-11-24T00:00:00Z", "vehicleIds": list(vehicles)},
        "jobId": job_id,
        "jobStatus": status,
        "requestedAtTime": "2026-11-24T02:00:00Z",
    }
    if files is not None:
        data["files"] = files
    if details is not None:
        data["details"] = details
    return {"data": data}


def remote_file(name: str, url: str, count: int, expires: str = "2099-01-01T00:00:00Z") -> dict:
    return {
        "createdAtTime": "2026-11-24T02:00:00Z",
        "downloadUrl": url,
        "downloadUrlExpirationTime": expires,
        "name": name,
        "recordCount": count,
    }


@dataclass
class FakeSamsara:
    """Scripted provider: a queue of answers per (method, path); the last answer repeats."""

    answers: dict[tuple[str, str], list[httpx.Response]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def on(self, method: str, path: str, *responses: httpx.Response) -> None:
        self.answers.setdefault((method, path), []).extend(responses)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        queue = self.answers.get((request.method, request.url.path))
        if not queue:
            return httpx.Response(404, json={"message": f"unscripted {request.method} {request.url.path}"})
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if r.method == method and r.url.path == path)


def submit(rt: Runtime, **options) -> str:
    return ExportClient(rt).submit("samsara", dict(PARAMS), **options)


def script_happy_path(provider: FakeSamsara, rows: tuple[int, ...] = (3, 2)) -> None:
    files = [remote_file(f"part-{i}.csv", f"https://files.example/j1/{i}", count) for i, count in enumerate(rows)]
    provider.on("POST", "/ifta-detail/csv", httpx.Response(201, json=job("j1", "Requested")))
    provider.on(
        "GET",
        "/ifta-detail/csv/j1",
        httpx.Response(200, json=job("j1", "Processing")),
        httpx.Response(200, json=job("j1", "Completed", files)),
    )
    for i, count in enumerate(rows):
        provider.on("GET", f"/j1/{i}", httpx.Response(200, text=csv_rows(count)))


TOO_BIG = "Try limiting the number of vehicles requested per job. Requested 4 vehicles; limit is 2."


def script_split(provider: FakeSamsara) -> None:
    """Job 0 is refused as too big and split into 0.0 (job a) and 0.1 (job b), one file of 2 rows each."""
    provider.on(
        "POST",
        "/ifta-detail/csv",
        httpx.Response(201, json=job("big", "Requested")),
        httpx.Response(201, json=job("a", "Requested", vehicles=(1, 2))),
        httpx.Response(201, json=job("b", "Requested", vehicles=(3, 4))),
    )
    provider.on("GET", "/ifta-detail/csv/big", httpx.Response(200, json=job("big", "Failed", details=TOO_BIG)))
    for name in ("a", "b"):
        files = [remote_file(f"{name}.csv", f"https://files.example/{name}", 2)]
        provider.on(
            "GET",
            f"/ifta-detail/csv/{name}",
            httpx.Response(200, json=job(name, "Processing")),
            httpx.Response(200, json=job(name, "Completed", files)),
        )
        provider.on("GET", f"/{name}", httpx.Response(200, text=csv_rows(2)))
