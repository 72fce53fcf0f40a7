"""The tasks other applications send by name, with only ``celery`` installed: submit an export, read it.

The names and keyword arguments here are a public interface and stay stable. Arguments and
results are JSON. A bad request fails the task with the :class:`~worker.errors.InvalidRequest`
message, so ``AsyncResult.get()`` raises it in the caller, and nothing is stored.
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from worker.api import ExportClient
from worker.errors import InvalidRequest

SUBMIT_EXPORT_TASK = "worker.submit_export"
GET_EXPORT_TASK = "worker.get_export"


class SubmitExportRequest(BaseModel):
    """The keyword arguments of ``worker.submit_export``; the values are checked by :meth:`ExportClient.submit`."""

    model_config = ConfigDict(extra="forbid")

    provider: str
    params: dict[str, Any]
    credential: str = "default"
    idempotency_key: str | None = None
    callback: dict[str, Any] | None = None
    sink: str = "jsonl"
    sink_options: dict[str, Any] | None = None
    deadline_seconds: float | None = None

    @classmethod
    def parse(cls, kwargs: dict[str, Any]) -> Self:
        try:
            return cls.model_validate(kwargs)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'kwargs'}: {e['msg']}" for e in exc.errors())
            raise InvalidRequest(f"{SUBMIT_EXPORT_TASK} got invalid keyword arguments: {problems}") from None


def submit_export(client: ExportClient, kwargs: dict[str, Any], task_id: str | None) -> str:
    """Without a key of its own, the request's task id is the idempotency key: a redelivered message is one export."""
    request = SubmitExportRequest.parse(kwargs)
    return client.submit(
        request.provider,
        request.params,
        credential=request.credential,
        idempotency_key=request.idempotency_key or (f"task:{task_id}" if task_id else None),
        callback=request.callback,
        sink=request.sink,
        sink_options=request.sink_options,
        deadline_seconds=request.deadline_seconds,
    )
