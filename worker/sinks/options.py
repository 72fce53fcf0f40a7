"""Which sink an export uses and where it loads, validated at submit (before anything is stored)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError

from worker.errors import InvalidRequest
from worker.models import SinkName, SinkOptions
from worker.providers.base import Provider
from worker.sinks import SINKS

_NOT_SQL = re.compile(r"[^a-z0-9_]+")


def sql_name(text: str) -> str:
    """``text`` as a plain lower-case SQL name that fits ``SinkOptions``'s pattern (and ``_quarantine``)."""
    name = _NOT_SQL.sub("_", text.lower()).strip("_") or "export"
    return (name if not name[0].isdigit() else f"t_{name}")[:52]


def sink_options_for(
    sink: str, options: SinkOptions | dict[str, Any] | None, provider: Provider, params: BaseModel
) -> SinkOptions:
    """Validated options for ``sink``; a postgres export without a table gets the provider's report table."""
    if sink not in SINKS:
        raise InvalidRequest(f"unknown sink {sink!r}; choose one of {', '.join(SINKS)}")
    try:
        parsed = options if isinstance(options, SinkOptions) else SinkOptions.model_validate(options or {})
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "sink_options"
        raise InvalidRequest(f"invalid sink_options: {field}: {error['msg']}") from exc
    chosen: SinkName = sink  # type: ignore[assignment]  # checked against the registry above
    if chosen != "postgres":
        if parsed != SinkOptions():
            raise InvalidRequest(f"sink_options (database, schema, table) apply to sink='postgres' only, not {sink!r}")
        return parsed
    if parsed.table is None:
        parsed = parsed.model_copy(update={"table": sql_name(provider.table_name(params))})
    return parsed
