"""A failed download attempt is put down to the part that raised: transfer, parser, sink or provider."""

from __future__ import annotations

import pytest

from worker.engine.stages import failure_stage
from worker.errors import PermanentError, TransientError
from worker.parsing.csv_stream import parse_csv
from worker.parsing.schema import RowSchema


def raised_in(module_globals: dict, error: Exception) -> Exception:
    """An exception whose innermost frame runs with ``module_globals`` (so its module is that module)."""
    code = compile("def boom(error):\n    raise error\n", "<stage-test>", "exec")
    namespace = dict(module_globals)
    exec(code, namespace)
    try:
        namespace["boom"](error)
    except Exception as exc:  # noqa: BLE001 - the point is to keep the traceback
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("module", "stage"),
    [
        ("worker.sinks.postgres", "sink"),
        ("worker.parsing.csv_stream", "parse"),
        ("worker.file_transfer", "parse"),
        ("worker.providers.samsara", "provider"),
        ("worker.http_download", "download"),
        ("worker.engine.download_step", "download"),
    ],
)
def test_the_innermost_project_frame_names_the_stage(module: str, stage: str) -> None:
    assert failure_stage(raised_in({"__name__": module}, PermanentError("x"))) == stage


def test_a_real_parser_error_is_a_parse_failure() -> None:
    with pytest.raises(PermanentError) as caught:
        list(parse_csv(iter([b""]), RowSchema(), max_field_bytes=1000))
    assert failure_stage(caught.value) == "parse"


def test_an_error_without_a_traceback_is_a_download_failure() -> None:
    assert failure_stage(TransientError("made, never raised")) == "download"
