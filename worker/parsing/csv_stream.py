"""Stream a CSV download into typed rows and quarantined bad rows, in constant memory and fast.

How it stays fast: Python code runs per *segment* (the complete lines of a 64 KiB slice of the
download) and per *batch*, never per byte and almost never per row.

1. :func:`_segments` decodes incrementally (strict UTF-8 first; ``surrogateescape`` for a slice that
   fails, so a bad byte spoils only its own row), strips a BOM, cuts each slice at its last line
   break and flags segments holding NUL bytes, invalid UTF-8 or very long lines.
2. A segment without any ``"`` is split with ``str.splitlines`` and one ``str.split(",")`` per
   batch: for such text that *is* what ``csv.reader`` does, and it is faster than ``csv.reader``.
   Any other segment goes through ``csv.reader`` over its lines plus a sentinel line; if the
   sentinel got swallowed, a quoted field runs past the segment, and that last record is parsed
   again together with the next segment.
3. A clean batch (one line per record, the header's column count, no flags) goes to the column
   converters (:mod:`worker.parsing.columns`) as columns; otherwise each record is checked on its
   own, with its exact line number. Batches stay columnar all the way to the sink.

Memory is bounded by the slice size, ``batch_rows`` and ``max_field_bytes``: a line longer than any
record of valid fields can be (:func:`worker.parsing.columns.line_limit`) is cut and quarantined.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import repeat
from typing import Any

from worker.errors import PermanentError
from worker.parsing.columns import (
    BAD_UTF8,
    CUT,
    HEADER_LINE_CHARS,
    LONG,
    NUL,
    RAW_LIMIT,
    SENTINEL,
    SURROGATE,
    BadRow,
    ParsedBatch,
    Plan,
    clip,
)
from worker.parsing.schema import RowSchema

__all__ = ["RAW_LIMIT", "SEGMENT_BYTES", "BadRow", "ExactStream", "ParsedBatch", "parse_csv", "pieces"]

SEGMENT_BYTES = 64 * 1024
"""Input is parsed in slices of this size; batches never span two slices."""
_SENTINEL_RECORD = [SENTINEL]
_ASCII_BREAKS = ("\x0b", "\x0c", "\x1c", "\x1d", "\x1e")
_OTHER_BREAKS = ("\x85", "\u2028", "\u2029")
"""Characters ``str.splitlines`` breaks at but ``csv`` (and universal newlines) do not."""


def parse_csv(
    chunks: Iterable[bytes], schema: RowSchema, *, max_field_bytes: int, batch_rows: int = 1000
) -> Iterator[ParsedBatch]:
    """Yield batches of typed rows and bad rows; raise :class:`PermanentError` for an unusable header.

    Bad records never stop the file. ``max_field_bytes`` bounds a single field (UTF-8 bytes); with
    the chunk size and ``batch_rows`` it also bounds memory.
    """
    stream = ExactStream(schema, max_field_bytes=max_field_bytes, batch_rows=batch_rows)
    for piece in pieces(chunks):
        yield from stream.push(piece)
    yield from stream.finish()


def _raise_field_size_limit(max_field_bytes: int) -> None:
    """``csv.field_size_limit`` is process-global: only ever raise it, and check exact sizes ourselves."""
    if csv.field_size_limit() < max_field_bytes:
        csv.field_size_limit(max_field_bytes)


class ExactStream:
    """The exact parser driven piece by piece, so another parser can take over between records.

    Feed it what :func:`pieces` yields, in order; :attr:`at_record_start` says whether everything fed
    so far is parsed and the next byte starts a record, which is when :meth:`skip_lines` may account
    for lines parsed elsewhere. Where the pieces end matters only for a quote that never closes (it
    is given up at a segment end), so a caller that splits a piece does so at its last line break
    (a line break not ending the piece), which leaves the segments as they were.
    """

    def __init__(self, schema: RowSchema, *, max_field_bytes: int, batch_rows: int) -> None:
        if max_field_bytes < 1 or batch_rows < 1:
            raise ValueError("max_field_bytes and batch_rows must be positive")
        _raise_field_size_limit(max_field_bytes)
        self.parser = _Parser(schema, max_field_bytes, batch_rows)
        self._segmenter = _Segmenter(max_field_bytes, self.parser)

    def push(self, piece: bytes) -> Iterator[ParsedBatch]:
        for text, flags, final in self._segmenter.push(piece):
            yield from self.parser.feed(text, flags, final=final)

    def finish(self) -> Iterator[ParsedBatch]:
        text, flags = self._segmenter.finish()
        yield from self.parser.feed(text, flags, final=True)
        if self.parser.plan is None:
            raise PermanentError("CSV header is missing: the file is empty")

    @property
    def plan(self) -> Plan | None:
        return self.parser.plan

    @property
    def next_line(self) -> int:
        return self.parser.next_line

    @property
    def at_record_start(self) -> bool:
        return self._segmenter.idle and not self.parser.pending

    def skip_lines(self, count: int) -> None:
        """``count`` physical lines, starting at a record start, were parsed elsewhere."""
        assert self.at_record_start
        self.parser.next_line += count


# --- bytes to segments of complete lines ----------------------------------------------------------


class _Segmenter:
    """Turns pieces into ``(text, flags, final)``: decoded text ending at a line break, the last one at EOF.

    A line longer than ``parser.max_line_chars`` is cut (rest dropped, NUL appended so the record is
    quarantined) and yielded alone: without the cut, one endless line would be held whole in memory.
    """

    def __init__(self, max_field_bytes: int, parser: _Parser) -> None:
        self.parser = parser
        self.undecoded = b""
        self.carry: list[str] = []  # text after the last line break, in pieces (joined once, when a break comes)
        self.carry_len = self.carry_flags = 0
        self.skipping = self.started = self.lone_cr = False
        self.quarter = max_field_bytes // 4  # a character is at most 4 bytes; 0 (limit under 4) checks every run

    @property
    def idle(self) -> bool:
        """Nothing held back: the text pushed so far ended at a line break."""
        return not (self.carry or self.undecoded or self.skipping or self.lone_cr)

    def push(self, chunk: bytes) -> Iterator[tuple[str, int, bool]]:
        quarter = self.quarter
        flags = NUL if b"\x00" in chunk else 0
        data = self.undecoded + chunk if self.undecoded else chunk
        try:
            text, used = codecs.utf_8_decode(data, "strict", False)
        except UnicodeDecodeError:
            text, used = codecs.utf_8_decode(data, "surrogateescape", False)
            flags |= BAD_UTF8
        self.undecoded = data[used:] if used < len(data) else b""
        if not self.started:
            if not text:
                return
            self.started = True
            if text[0] == "\ufeff":
                text = text[1:]
        if self.lone_cr and text:  # the cut line ended in "\r" at the end of a chunk: is it "\r\n"?
            self.lone_cr = False
            text = text[1:] if text[0] == "\n" else text
        if self.skipping:
            cut = _first_break(text)
            if cut < 0:
                return
            # The cut line goes on its own, as if the file ended there: a quote left open in it must not
            # swallow the lines after it, and its reason is the cut, not the open quote.
            yield self.carry[0] + "\n", self.carry_flags, True
            end = cut + 2 if text.startswith("\r\n", cut) else cut + 1
            self.lone_cr = end == len(text) and text[cut] == "\r"
            text = text[end:]
            self.carry, self.carry_len, self.carry_flags, self.skipping = [], 0, 0, False
        cut = _last_break(text)
        if cut == 0:
            if text:
                self.carry.append(text)
                self.carry_len += len(text)
                self.carry_flags |= flags
        else:
            carry = self.carry
            segment = "".join([*carry, text[:cut]]) if carry else text[:cut] if cut < len(text) else text
            segment_flags = flags | self.carry_flags
            rest = text[cut:]
            self.carry, self.carry_len, self.carry_flags = ([rest], len(rest), flags) if rest else ([], 0, 0)
            yield segment, segment_flags | _long_run(segment, quarter), False
        limit = self.parser.max_line_chars
        if self.carry_len > limit:
            line = "".join(self.carry)
            head = _last_break(line)  # just after a "\r" that waited for a "\n" that did not come
            if head:
                yield line[:head], self.carry_flags | _long_run(line[:head], quarter), False
                line = line[head:]
            self.carry, self.carry_len = [line], len(line)
            if self.carry_len > limit:
                self.carry = [line[:limit] + "\x00"]
                self.carry_len = len(self.carry[0])
                self.carry_flags |= CUT | NUL | LONG
                self.skipping = True

    def finish(self) -> tuple[str, int]:
        tail = ""
        if self.undecoded:  # an incomplete multi-byte sequence at EOF
            self.carry_flags |= BAD_UTF8
            if not self.skipping:
                tail = codecs.utf_8_decode(self.undecoded, "surrogateescape", True)[0]
        text = "".join([*self.carry, tail])
        return text, self.carry_flags | _long_run(text, self.quarter)


def pieces(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Non-empty slices of at most ``SEGMENT_BYTES``: the per-segment working set then stays in cache.

    Measured: 64 KiB segments parse ~1.5x faster than 1 MiB ones (lists of a thousand rows and a
    128 KiB+ buffer per batch cost far more than their size suggests).
    """
    for chunk in chunks:
        size = len(chunk)
        if size <= SEGMENT_BYTES:
            if size:
                yield bytes(chunk)
            continue
        for start in range(0, size, SEGMENT_BYTES):
            yield chunk[start : start + SEGMENT_BYTES]


def _first_break(text: str) -> int:
    lf = text.find("\n")
    cr = text.find("\r")
    return cr if lf < 0 else lf if cr < 0 else min(lf, cr)


def _last_break(text: str) -> int:
    """Index just after the last complete line; a final ``\\r`` may be half of ``\\r\\n``, so it waits."""
    return max(text.rfind("\n"), text.rfind("\r", 0, len(text) - 1)) + 1


def _long_run(text: str, limit: int) -> int:
    """``LONG`` if ``text`` may hold more than ``limit`` characters without a line break.

    Such a run contains a whole window of ``limit // 2`` characters on this grid, so a window
    without a break is a (conservative) hit; a couple of ``find`` calls per window, all in C.
    """
    if len(text) <= limit:
        return 0
    step = max(limit // 2, 1)
    for pos in range(0, len(text), step):
        if text.find("\n", pos, pos + step) < 0 and text.find("\r", pos, pos + step) < 0:
            return LONG
    return 0


def _has_odd_breaks(text: str) -> bool:
    if any(ch in text for ch in _ASCII_BREAKS):
        return True
    return not text.isascii() and any(ch in text for ch in _OTHER_BREAKS)


# --- segments to batches ------------------------------------------------------------------------------


class _Parser:
    """Turns segments into batches; remembers the header plan and a record cut by a segment end."""

    def __init__(self, schema: RowSchema, max_field_bytes: int, batch_rows: int) -> None:
        self.schema = schema
        self.max_field_bytes = max_field_bytes
        self.batch_rows = batch_rows
        self.max_line_chars = HEADER_LINE_CHARS
        self.plan: Plan | None = None
        self.next_line = 1
        self.pending = ""
        self.pending_flags = 0
        self.backlog: list[str] = []
        self.backlog_len = 0

    def feed(self, text: str, flags: int, *, final: bool) -> Iterator[ParsedBatch]:
        start = self.next_line
        if self.pending:
            # A record runs on from an earlier segment and is parsed again from its start. Wait until
            # the new text is at least as long as that record, so a huge record costs O(n), not O(n²).
            self.backlog.append(text)
            self.backlog_len += len(text)
            self.pending_flags |= flags
            if not final and self.backlog_len < len(self.pending):
                return
            text = "".join([self.pending, *self.backlog])
            flags = self.pending_flags
            self.pending, self.backlog, self.backlog_len, self.pending_flags = "", [], 0, 0
        if not text:
            return
        odd_breaks = _has_odd_breaks(text)
        if self.plan is not None and not odd_breaks and '"' not in text:
            yield from self._plain(text, flags, start)
        else:
            yield from self._quoted(text, flags, start, final=final, odd_breaks=odd_breaks)

    def _plain(self, text: str, flags: int, start: int) -> Iterator[ParsedBatch]:
        """No quotes and no odd line breaks: fields are exactly ``line.split(",")``."""
        plan = self.plan
        assert plan is not None
        lines = text.splitlines()
        self.next_line = start + len(lines)
        size = self.batch_rows
        ncols = plan.ncols
        width = ncols + 1
        for first in range(0, len(lines), size):
            part = lines[first : first + size]
            line = start + first
            count = len(part)
            if not flags and (ncols > 1 or "" not in part):
                # One split for the whole batch, with a "\n" field between lines: when every line has
                # ncols fields the markers sit exactly every width-th place, and the columns are
                # plain slices. No per-row lists, no transposition, far less for the GC to track.
                fields = ",\n,".join(part).split(",")
                if len(fields) == count * width - 1 and fields[ncols::width] == ["\n"] * (count - 1):
                    columns: list[Sequence[Any]] = [fields[i::width] for i in range(ncols)]
                    batch = plan.convert_columns(columns, count, range(line, line + count), part.__getitem__)
                    if batch.lines or batch.bad:
                        yield batch
                    continue
            records = [record if record != [""] else [] for record in map(str.split, part, repeat(","))]
            batch = plan.check(records, range(line, line + count), part.__getitem__, flags, None, [])
            if batch.lines or batch.bad:
                yield batch

    def _quoted(self, text: str, flags: int, start: int, *, final: bool, odd_breaks: bool) -> Iterator[ParsedBatch]:
        lines = io.StringIO(text, newline="").readlines() if odd_breaks else text.splitlines(True)
        count = len(lines)
        if not final:
            lines.append(SENTINEL)
        reader = csv.reader(lines)
        records: list[list[str]] = []
        errors: list[tuple[int, int, str]] = []
        while True:
            try:
                records.extend(reader)
                break
            except csv.Error as exc:  # the reader skips the rest of the line and goes on
                errors.append((len(records), reader.line_num, str(exc)))
        cut = False
        if not final and records:
            if records[-1] == _SENTINEL_RECORD:
                records.pop()
            else:
                cut = True  # the sentinel was swallowed: a quoted field runs on past this segment
        if errors or cut or len(records) != count:
            starts, spans, error_rows = _layout(records, errors, start, lines, self.max_field_bytes)
        else:
            starts, spans, error_rows = None, None, []
        if cut:  # parse the last record again, from its first line, together with the next segment
            assert starts is not None and spans is not None
            tail = starts.pop()
            spans.pop()
            records.pop()
            error_rows = [(index, bad) for index, bad in error_rows if bad.line < start + tail]
            self._keep_pending("".join(lines[tail:count]), flags, start + tail, count - tail, error_rows)
        else:
            self.next_line = start + count

        def raw(index: int) -> str:
            if starts is None:
                return lines[index]
            return "".join(lines[starts[index] : starts[index] + spans[index]])  # type: ignore[index]

        def line_of(index: int) -> int:
            return start + (index if starts is None else starts[index])

        offset = 0
        if self.plan is None:
            offset = self._read_header(records, errors, raw, flags)
            if self.plan is None:
                if error_rows:  # the header itself was given up on
                    raise PermanentError(f"CSV header is unreadable: {error_rows[0][1].reason}")
                return
        yield from self._batches(records, offset, flags, starts, spans, error_rows, raw, line_of)

    def _batches(
        self,
        records: list[list[str]],
        offset: int,
        flags: int,
        starts: list[int] | None,
        spans: list[int] | None,
        error_rows: list[tuple[int, BadRow]],
        raw: Callable[[int], str],
        line_of: Callable[[int], int],
    ) -> Iterator[ParsedBatch]:
        plan = self.plan
        assert plan is not None
        size = self.batch_rows
        total = len(records)
        for first in range(offset, max(total, offset + 1), size):
            last = min(first + size, total)
            part = records[first:last]
            bad_here = [bad for index, bad in error_rows if first <= index < last or (last == total and index >= total)]

            def raw_at(index: int, first: int = first) -> str:
                return raw(first + index)

            lines: Sequence[int] = (
                range(line_of(first), line_of(first) + len(part))
                if starts is None
                else [line_of(index) for index in range(first, last)]
            )
            # starts is None only where the segment parsed cleanly (no errors, one record a line): no bad rows
            if starts is None and not flags and _all_len(part, plan.ncols):
                batch = plan.convert(part, lines, raw_at)
            else:
                multiline = None if spans is None else [span > 1 for span in spans[first:last]]
                batch = plan.check(part, lines, raw_at, flags, multiline, bad_here)
            if batch.lines or batch.bad:
                yield batch

    def _keep_pending(self, text: str, flags: int, line: int, line_count: int, error_rows: list[tuple[int, BadRow]]) -> None:
        self.next_line = line
        if len(text) > self.max_line_chars:  # an unterminated quote: give up on this record
            error_rows.append(
                (
                    1 << 62,
                    BadRow(
                        line,
                        f"unterminated quoted field: record is longer than {self.max_line_chars} characters",
                        clip(text),
                    ),
                )
            )
            self.next_line = line + line_count
            return
        self.pending = text
        self.pending_flags = flags

    def _read_header(
        self,
        records: list[list[str]],
        errors: list[tuple[int, int, str]],
        raw: Callable[[int], str],
        flags: int,
    ) -> int:
        index = next((i for i, record in enumerate(records) if record), None)
        if errors and (index is None or errors[0][0] <= index):
            raise PermanentError(f"CSV header is unreadable: {errors[0][2]}")
        if index is None:
            return len(records)
        header = records[index]
        joined = "".join(header)
        if flags & CUT:  # a cut line is parsed alone, so a cut in the header's segment is in the header
            raise PermanentError(f"CSV header is longer than {self.max_line_chars} characters")
        if "\x00" in joined or SURROGATE.search(joined):
            raise PermanentError(f"CSV header contains NUL or invalid UTF-8: {clip(raw(index))[:200]!r}")
        missing = sorted(self.schema.required.difference(header))
        if missing:
            raise PermanentError(f"CSV header lacks required column(s) {', '.join(missing)}; got {', '.join(header)[:500]}")
        duplicates = sorted({name for name in header if header.count(name) > 1})
        if duplicates:
            raise PermanentError(f"CSV header repeats column(s) {', '.join(map(repr, duplicates))}")
        self.plan = Plan(header, self.schema, self.max_field_bytes)
        self.max_line_chars = self.plan.max_line_chars
        return index + 1


def _layout(
    records: list[list[str]], errors: list[tuple[int, int, str]], start: int, lines: list[str], max_field: int
) -> tuple[list[int], list[int], list[tuple[int, BadRow]]]:
    """Where each record starts (index into ``lines``) and how many lines it spans.

    A record spans one line plus the line breaks kept inside its quoted fields; a record that
    raised ``csv.Error`` ends at the reader's ``line_num`` at that moment (the reader then skips the
    rest of that line). Every line handed to the (non-strict) reader ends at its only line break,
    so the one error it can raise is a field over ``csv.field_size_limit()``, at least ``max_field``.
    """
    starts: list[int] = []
    spans: list[int] = []
    error_rows: list[tuple[int, BadRow]] = []
    reason = f"a field is larger than {max_field} bytes; raise EXPORT_WORKER_MAX_FIELD_BYTES if such fields are legitimate"
    position = 0
    pending = iter(errors)
    error = next(pending, None)
    for index in range(len(records) + 1):
        while error is not None and error[0] == index:
            line_num = error[1]
            text = "".join(lines[position:line_num])
            error_rows.append((index, BadRow(start + position, reason, clip(text))))
            position = line_num
            error = next(pending, None)
        if index < len(records):
            span = _line_span(records[index])
            starts.append(position)
            spans.append(span)
            position += span
    return starts, spans, error_rows


def _all_len(records: list[list[str]], ncols: int) -> bool:
    lengths = set(map(len, records))
    return len(lengths) == 1 and ncols in lengths


def _line_span(record: list[str]) -> int:
    """Physical lines a record covered: 1 + line breaks kept inside its quoted fields.

    Joined with a separator, so a field ending in ``\\r`` and the next starting with ``\\n`` count
    as the two line breaks they are, not as one ``\\r\\n``.
    """
    joined = ",".join(record)
    if "\n" not in joined and "\r" not in joined:
        return 1
    return 1 + joined.count("\n") + joined.count("\r") - joined.count("\r\n")
