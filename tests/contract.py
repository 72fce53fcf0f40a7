"""Checks HTTP exchanges against the providers' published contracts (facts in ``tests/contract_data``).

Every request is matched to one spec operation by method and path template; its query parameters
and JSON body are validated against the operation's parameter and request-body schemas, and the
response against the schema the spec gives for its status (``default`` when the status is not
listed). Validation is JSON Schema 2020-12 with formats asserted (``date``, ``date-time``).

One documented exception, recorded in ``documented.json``: impact.com sends unset Job dates as
empty strings, so an empty string passes a ``date-time`` in an impact.com *response*.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import httpx
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

DATA = Path(__file__).parent / "contract_data"
SPEC_FILES = ("samsara", "impact-brand-jobs", "impact-brand-reports", "impact-partner-jobs", "impact-partner-reports")
FREE_QUERY_OPERATIONS = {"exportReport", "exportReports"}
"""ReportExport takes each report's own filters (from its MetaData) besides the listed parameters."""


class ContractViolation(AssertionError):
    pass


@dataclass(frozen=True)
class Operation:
    spec: str
    version: str
    method: str
    path: str
    operation_id: str
    parameters: tuple[dict[str, Any], ...]
    request_body: dict[str, Any] | None
    responses: dict[str, dict[str, Any]]
    components: dict[str, Any]
    pattern: re.Pattern[str]

    @property
    def label(self) -> str:
        return f"{self.operation_id} ({self.spec} {self.version})"


def facts(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


@cache
def operations() -> tuple[Operation, ...]:
    found = []
    for name in SPEC_FILES:
        spec = facts(name)
        for op in spec["operations"]:
            segments = ("[^/]+" if part.startswith("{") else re.escape(part) for part in op["path"].split("/"))
            pattern = re.compile("^" + "/".join(segments) + "$")
            found.append(
                Operation(
                    spec=spec["source"]["file"],
                    version=spec["source"]["version"],
                    method=op["method"],
                    path=op["path"],
                    operation_id=op["operationId"],
                    parameters=tuple(op["parameters"]),
                    request_body=op["request_body"],
                    responses=op["responses"],
                    components=spec["components"],
                    pattern=pattern,
                )
            )
    return tuple(found)


def operation_for(method: str, path: str, *, any_method: bool = False) -> Operation:
    matches = [op for op in operations() if (any_method or op.method == method) and op.pattern.match(path)]
    if any_method:
        matches = matches[:1]
    if len(matches) != 1:
        raise ContractViolation(f"{method} {path} is not an operation of any provider spec (matches: {matches})")
    return matches[0]


def _format_checker(empty_dates: bool) -> FormatChecker:
    checker = FormatChecker()
    if empty_dates:
        strict = checker.checkers["date-time"][0]

        @checker.checks("date-time", raises=ValueError)
        def date_time_or_empty(value: object) -> bool:
            return value == "" or bool(strict(value))

    return checker


def validate(instance: Any, schema: dict[str, Any], components: dict[str, Any], where: str, *, empty_dates: bool = False) -> None:
    validator = Draft202012Validator({**schema, "components": components}, format_checker=_format_checker(empty_dates))
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        first: ValidationError = errors[0]
        field = "/".join(map(str, first.absolute_path)) or "<root>"
        raise ContractViolation(f"{where}: field {field!r}: {first.message} ({len(errors)} error(s))")


def _typed(value: str, schema: dict[str, Any]) -> Any:
    """Query values are text; give them the parameter's declared type before validating."""
    kind = schema.get("type")
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
    except ValueError:
        return value
    if kind == "boolean" and value in ("true", "false"):
        return value == "true"
    return value


def check_request(request: httpx.Request) -> Operation:
    op = operation_for(request.method, request.url.path)
    query = dict(request.url.params)
    for param in op.parameters:
        if param["in"] != "query":
            continue
        name = param["name"]
        if name not in query:
            if param["required"]:
                raise ContractViolation(f"{op.label}: required query parameter {name!r} is missing")
            continue
        validate(_typed(query[name], param["schema"]), param["schema"], op.components, f"{op.label} query {name}")
    known = {p["name"] for p in op.parameters if p["in"] == "query"}
    unknown = sorted(set(query) - known)
    if unknown and op.operation_id not in FREE_QUERY_OPERATIONS:
        raise ContractViolation(f"{op.label}: query parameter(s) {unknown} are not in the spec")
    if op.request_body is not None:
        try:
            body = json.loads(request.content or b"null")
        except ValueError:
            raise ContractViolation(f"{op.label}: request body is not JSON") from None
        validate(body, op.request_body, op.components, f"{op.label} request body")
    elif request.content:
        raise ContractViolation(f"{op.label}: sends a body the spec does not define")
    return op


def check_response(request: httpx.Request, response: httpx.Response) -> Operation:
    """A 405 answers a method the path does not have: it is checked against the path's operations."""
    status = str(response.status_code)
    op = operation_for(request.method, request.url.path, any_method=status == "405")
    declared = op.responses.get(status) or op.responses.get("default")
    if declared is None:
        raise ContractViolation(f"{op.label}: HTTP {status} is not a response the spec lists ({sorted(op.responses)})")
    media = declared["content_type"]
    if media is None:
        return op
    received = response.headers.get("content-type", "").split(";")[0].strip()
    if media == "application/json":
        if received != "application/json":
            raise ContractViolation(f"{op.label}: HTTP {status} answered {received!r}, the spec says {media}")
        validate(
            response.json(),
            declared["schema"],
            op.components,
            f"{op.label} HTTP {status} body",
            empty_dates=op.spec.startswith("impact"),
        )
    return op


class RecordingTransport(httpx.BaseTransport):
    """Sends through a real transport and keeps every (request, response) for checking afterwards."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.exchanges: list[tuple[httpx.Request, httpx.Response]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if response.headers.get("content-type", "").startswith("application/json"):
            response.read()  # small; kept so the body can be checked after the client is done with it
        self.exchanges.append((request, response))
        return response

    def api_exchanges(self) -> list[tuple[httpx.Request, httpx.Response]]:
        """Exchanges with the provider APIs (not with signed storage URLs, which no spec describes)."""
        return [(q, r) for q, r in self.exchanges if not q.url.path.startswith("/_files/")]
