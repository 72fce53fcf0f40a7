"""Which part of a download attempt broke, read off the exception's traceback.

Transfer, parser and sink run interleaved in one streaming loop, so the step that catches an error
cannot tell from where it stands which of them raised it; the innermost project frame of the
traceback can, without every raise site having to label itself.
"""

from __future__ import annotations

from worker.models import FailureStage

_BY_MODULE: tuple[tuple[str, FailureStage], ...] = (
    ("worker.sinks", "sink"),
    ("worker.parsing", "parse"),
    ("worker.file_transfer", "parse"),
    ("worker.providers", "provider"),
)


def failure_stage(exc: BaseException) -> FailureStage:
    """``sink``, ``parse`` or ``provider`` when the innermost project frame is there; ``download`` otherwise
    (HTTP, gzip, the URL guard, and errors the step raises itself about the transfer)."""
    innermost = ""
    tb = exc.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if module.startswith("worker."):
            innermost = module
        tb = tb.tb_next
    for prefix, stage in _BY_MODULE:
        if innermost.startswith(prefix):
            return stage
    return "download"
