"""PostgreSQL sink: each file's rows go into ``<schema>.<table>`` with ``COPY ... FROM STDIN``.

Exactly once per file: one transaction per attempt deletes the rows an earlier attempt of the same
file committed (by ``(_export_id, _file_key)``), COPYs the new ones and commits. A worker killed
mid-COPY loses its connection and PostgreSQL rolls the attempt back; two live attempts of the same
file are serialised by a transaction-level advisory lock on that file, so the second one's DELETE
sees (and removes) the first one's rows. Bad rows go to ``<table>_quarantine`` in the same
transaction.

Good rows go as binary COPY (:mod:`worker.sinks.pg_binary` says why and how), which carries no
types: the server reads each field with its column's own binary input, so a column someone altered
to another type would refuse the rows at best and reinterpret their bytes at worst (an int64 read as
a double). The table's types are therefore checked inside the load's transaction, after the DELETE
has locked the table against ALTER, and a column of another type fails the file naming it. Bad rows
stay COPY text: their raw text is all they have.

The table grows with the files: columns are typed from the provider's row schema and every CSV
column is kept; a column first seen in a later file is added (``ADD COLUMN IF NOT EXISTS``) in a short
DDL transaction under an advisory lock, with a lock timeout so a long load elsewhere turns into a
retry instead of a stall.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import tempfile
from collections.abc import Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from worker.errors import PermanentError, TransientError
from worker.models import ExportRecord
from worker.parsing.columns import BadRow
from worker.parsing.schema import ColumnType
from worker.settings import Settings
from worker.sinks.base import Batch, Encoded, SinkResult
from worker.sinks.files import json_safe

if TYPE_CHECKING:
    from pgpq import ArrowToPostgresBinaryEncoder

PG_TYPES = {
    ColumnType.INT: "bigint",
    ColumnType.FLOAT: "double precision",
    ColumnType.DATETIME: "timestamp with time zone",
    ColumnType.STR: "text",
}
"""Each column type as PostgreSQL names it (``regtype`` output), for the DDL and for the check of a table's types."""
META_COLUMNS = ("_export_id", "_file_key", "_line", "_loaded_at")
META_TYPES = {"_export_id": "text", "_file_key": "text", "_line": "bigint"}
"""The COPY's own columns and their types (``_loaded_at`` takes its default)."""
QUARANTINE_COLUMNS = ("_export_id", "_file_key", "_file", "_line", "reason", "raw")
DDL_LOCK_TIMEOUT = "5s"
_MAX_IDENTIFIER_BYTES = 63
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\x00": "\\\\x00"})
"""COPY text escapes; NUL (never in a good row, possible in a quarantined one) is written as ``\\x00``."""


def lock_key(text: str) -> int:
    """A signed 64-bit advisory lock key for ``text``."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big", signed=True)


_DDL_LOCK = lock_key("async-export-worker:ddl")
"""One advisory lock for every CREATE/ALTER of this project: DDL is rare and short."""


class PostgresSink:
    def __init__(self, url: str | None, database: str, schema: str, table: str) -> None:
        self.url = url
        """None when the worker's settings lack the database: files then fail with the setting to add."""
        self.database = database
        """The database's *name* in the settings: what results and messages show, never the URL."""
        self.schema = schema
        self.table = table

    @classmethod
    def for_export(cls, settings: Settings, record: ExportRecord) -> PostgresSink:
        options = record.sink_options
        database = settings.databases.get(options.database.lower())
        url = database.url.get_secret_value() if database is not None else None
        return cls(url, options.database, options.schema_name, options.table or "")

    def open_file(self, export_id: str, file_key: str, safe_name: str) -> PostgresFileWriter:
        self._require_url()
        if not self.table:
            raise PermanentError("the export has no target table; submit it through submit_export, which names one")
        return PostgresFileWriter(self, export_id, file_key)

    def discard_attempts(self, export_id: str) -> int:
        """Nothing to remove: an attempt that never committed died with its connection."""
        return 0

    def _require_url(self) -> str:
        if self.url is None:
            raise PermanentError(
                f"database {self.database!r} is not configured on this worker; "
                f"set EXPORT_WORKER_DATABASES__{self.database.upper()}__URL and retry the export"
            )
        return self.url

    def check(self) -> None:
        """Before the provider is asked for anything: the database is configured here and takes the login.
        A refusal that cannot fix itself raises PermanentError, a server that is down TransientError."""
        self.connect().close()

    def connect(self) -> psycopg.Connection[Any]:
        url = self._require_url()
        try:
            conn = psycopg.connect(url, connect_timeout=10, application_name="async-export-worker")
        except psycopg.OperationalError as exc:
            raise _connect_error(self.database, exc) from None
        conn.execute("SET TIME ZONE 'UTC'")  # a datetime without offset is UTC, as in the other sinks
        return conn


class PostgresFileWriter:
    """One attempt at one file: one connection, one transaction, one COPY."""

    def __init__(self, sink: PostgresSink, export_id: str, file_key: str) -> None:
        self.sink = sink
        self.export_id = export_id
        self.file_key = file_key
        self.table = sql.Identifier(sink.schema, sink.table)
        self.quarantine = sql.Identifier(sink.schema, f"{sink.table}_quarantine")
        self._conn: psycopg.Connection[Any] | None = None
        self._copy: contextlib.ExitStack | None = None
        self._writer: psycopg.Copy | None = None
        self._encoder: ArrowToPostgresBinaryEncoder | None = None
        """Gives the COPY's header and trailer; the rows come from :meth:`encode`."""
        self._columns: tuple[tuple[str, ...], tuple[ColumnType, ...]] | None = None
        self._bad: IO[bytes] | None = None
        self._rows = self._quarantined = 0
        self._result: SinkResult | None = None
        self._closed = False

    # -- the attempt -------------------------------------------------------------------------------

    def write_batch(self, batch: Batch) -> None:
        self.write_encoded(batch, self.encode(batch))

    def encode(self, batch: Batch) -> Encoded:
        """The good rows as binary COPY tuples, either kind of batch through the same Arrow schema."""
        from worker.sinks.pg_binary import tuples  # pyarrow and pgpq load with the first file, not with the worker

        return tuples(self.export_id, self.file_key, batch)

    def write_encoded(self, batch: Batch, encoded: Encoded) -> None:
        if not batch.lines:
            return
        if self._writer is None:
            self._start(batch.names, batch.types)
        elif (tuple(batch.names), tuple(batch.types)) != self._columns:
            raise RuntimeError(f"a batch of {self.file_key} has other columns than the file's first: one COPY, one schema")
        assert self._writer is not None
        with _errors(self.sink):
            for data in encoded:
                self._writer.write(memoryview(data))  # type: ignore[arg-type]
        self._rows += len(batch.lines)

    def write_bad(self, bad: list[BadRow], source_name: str) -> None:
        """Spooled to a temp file: the connection is busy with the COPY until the file ends."""
        if not bad:
            return
        self._require_open()
        if self._bad is None:
            self._bad = tempfile.SpooledTemporaryFile(max_size=1 << 20)  # noqa: SIM115 - closed on commit/abort
        prefix = (self.export_id, self.file_key, json_safe(source_name))
        text = "".join(_copy_line((*prefix, str(row.line), json_safe(row.reason), json_safe(row.raw))) for row in bad)
        self._bad.write(text.encode("utf-8"))
        self._quarantined += len(bad)

    def commit(self) -> SinkResult:
        if self._result is not None:
            return self._result
        if self._conn is None:  # no good row at all: still replace an earlier attempt's rows
            self._start((), ())
        assert self._conn is not None and self._copy is not None
        with _errors(self.sink):
            assert self._writer is not None and self._encoder is not None
            self._writer.write(self._encoder.finish())  # the trailer alone: this encoder encoded no row
            self._copy.close()  # ends the COPY; PostgreSQL checks every value here at the latest
            if self._bad is not None:
                self._bad.seek(0)
                columns = sql.SQL(", ").join(map(sql.Identifier, QUARANTINE_COLUMNS))
                with self._conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(self.quarantine, columns)) as copy:
                    while block := self._bad.read(1 << 20):
                        copy.write(block)
            self._conn.commit()
        where = f"postgres://{self.sink.database}/{self.sink.schema}.{self.sink.table}"
        self._result = SinkResult(
            rows=self._rows,
            quarantined=self._quarantined,
            path=where,
            quarantine_path=f"{where}_quarantine" if self._quarantined else None,
        )
        self._close()
        return self._result

    def abort(self) -> None:
        """Roll back by closing the connection (what a killed worker does too)."""
        if self._result is None:
            self._close()

    # -- helpers -------------------------------------------------------------------------------------

    def _start(self, names: Sequence[str], types: Sequence[ColumnType]) -> None:
        self._require_open()
        _check_names(names)
        from worker.sinks.pg_binary import stream_encoder

        self._columns = (tuple(names), tuple(types))
        self._encoder = stream_encoder(names, types)
        conn = self._conn = self.sink.connect()
        with _errors(self.sink):
            ensure_tables(conn, self.sink.schema, self.sink.table, dict(zip(names, types, strict=True)))
            file_lock = lock_key(f"{self.sink.schema}.{self.sink.table}:{self.export_id}:{self.file_key}")
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (file_lock,))
            for table in (self.table, self.quarantine):
                conn.execute(
                    sql.SQL("DELETE FROM {} WHERE _export_id = %s AND _file_key = %s").format(table),
                    (self.export_id, self.file_key),
                )
            written = {**META_TYPES, **{name: PG_TYPES[kind] for name, kind in zip(names, types, strict=True)}}
            _check_types(conn, self.sink.schema, self.sink.table, written)
            columns = sql.SQL(", ").join(map(sql.Identifier, (*META_TYPES, *names)))
            copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(self.table, columns)
            stack = contextlib.ExitStack()
            self._writer = stack.enter_context(conn.cursor().copy(copy))
            self._copy = stack
            self._writer.write(self._encoder.write_header())  # also when no row follows: binary COPY needs it

    def _require_open(self) -> None:
        if self._closed:
            state = "committed" if self._result is not None else "aborted"
            raise RuntimeError(f"writer for {self.file_key} is already {state}")

    def _close(self) -> None:
        self._closed = True
        if self._bad is not None:
            self._bad.close()
            self._bad = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()  # an open transaction (and COPY) is rolled back by the server
            self._conn = None
        self._writer = None
        self._copy = None
        self._encoder = None


def ensure_tables(conn: psycopg.Connection[Any], schema: str, table: str, columns: dict[str, ColumnType]) -> None:
    """Create the table and its quarantine if needed and add missing columns; commits its own transaction."""
    if _missing_columns(conn, schema, table, columns) is None:
        conn.commit()
        return
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(DDL_LOCK_TIMEOUT)))
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
    target = sql.Identifier(schema, table)
    quarantine = sql.Identifier(schema, f"{table}_quarantine")
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (_export_id text NOT NULL, _file_key text NOT NULL, _line bigint NOT NULL, "
            "_loaded_at timestamptz NOT NULL DEFAULT now())"
        ).format(target)
    )
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (_export_id text NOT NULL, _file_key text NOT NULL, _file text NOT NULL, "
            "_line bigint NOT NULL, reason text NOT NULL, raw text NOT NULL, _loaded_at timestamptz NOT NULL DEFAULT now())"
        ).format(quarantine)
    )
    for name, index_of in ((table, target), (f"{table}_quarantine", quarantine)):
        conn.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (_export_id, _file_key)").format(
                sql.Identifier(f"{name}_file_idx"[:_MAX_IDENTIFIER_BYTES]), index_of
            )
        )
    for name in _missing_columns(conn, schema, table, columns) or ():
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                target, sql.Identifier(name), sql.SQL(PG_TYPES[columns[name]])
            )
        )
    conn.commit()


def _missing_columns(conn: psycopg.Connection[Any], schema: str, table: str, columns: dict[str, ColumnType]) -> list[str] | None:
    """Columns to add, or None when both tables exist and nothing is missing."""
    rows = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s AND table_name IN (%s, %s)",
        (schema, table, f"{table}_quarantine"),
    ).fetchall()
    tables = {name for name, _ in rows}
    existing = {column for name, column in rows if name == table}
    missing = [name for name in columns if name not in existing]
    return None if not missing and tables == {table, f"{table}_quarantine"} else missing


def _check_types(conn: psycopg.Connection[Any], schema: str, table: str, expected: dict[str, str]) -> None:
    """Every column the COPY fills has the type its binary rows are encoded for (see the module docstring).

    A missing column is left to the COPY, which names it; ``regtype`` compares the type alone, so a
    precision such as ``timestamptz(0)`` rounds as the server would round text."""
    rows = conn.execute(
        "SELECT attname, atttypid::regtype::text FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
        "AND NOT attisdropped",
        (sql.Identifier(schema, table).as_string(conn),),
    ).fetchall()
    wrong = [(name, actual, expected[name]) for name, actual in rows if name in expected and actual != expected[name]]
    if wrong:
        found = "; ".join(f"column {name!r} is {actual}, the sink writes {want}" for name, actual, want in wrong)
        name, _, want = wrong[0]
        alter = sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {}").format(
            sql.Identifier(schema, table), sql.Identifier(name), sql.SQL(want)
        )
        raise PermanentError(
            f"{schema}.{table} does not have the column types the sink writes ({found}); the sink loads by binary COPY, "
            f"which takes each column's exact type: change the column ({alter.as_string(conn)}) or point the export at "
            "another table (another table option), then retry the export"
        )


def _copy_line(fields: tuple[str, ...]) -> str:
    return "\t".join(field.translate(_ESCAPES) for field in fields) + "\n"


_USE_ANOTHER_SINK = "; load this export with another sink (jsonl or parquet)"


def _check_names(names: Sequence[str]) -> None:
    clash = sorted(set(names).intersection(META_COLUMNS))
    if clash:
        raise PermanentError(f"CSV column(s) {', '.join(clash)} clash with the postgres sink's own columns{_USE_ANOTHER_SINK}")
    long = [name for name in names if len(name.encode("utf-8")) > _MAX_IDENTIFIER_BYTES]
    if long:
        raise PermanentError(f"CSV column name {long[0][:80]!r} is longer than PostgreSQL's 63 bytes{_USE_ANOTHER_SINK}")


_MISSING_DATABASE = re.compile(r'FATAL:\s+database ".*" does not exist')
_REFUSED_LOGIN = re.compile(
    r'FATAL:\s+(role ".*" does not exist|role ".*" is not permitted to log in|password authentication failed|'
    r"no pg_hba\.conf entry)"
)


def _connect_error(database: str, exc: psycopg.OperationalError) -> PermanentError | TransientError:
    """A failed connection as the engine's kind: a database or login the server refuses cannot fix itself.

    libpq reports no SQLSTATE for a failed connection (``exc.sqlstate`` is None, checked on PostgreSQL 15
    with psycopg 3.3), so the server's FATAL message is read too; a server answering in another language
    than English is retried like a server that is down."""
    text = str(exc)
    fatal = text[text.find("FATAL:") :].strip().splitlines()[0] if "FATAL:" in text else _first_line(exc)
    setting = f"EXPORT_WORKER_DATABASES__{database.upper()}__URL"
    if exc.sqlstate == "3D000" or _MISSING_DATABASE.search(text):
        return PermanentError(
            f"database {database!r} does not exist on its server ({fatal}); create it, or point {setting} at one that "
            "exists, then retry the export"
        )
    if exc.sqlstate in ("28000", "28P01") or _REFUSED_LOGIN.search(text):
        return PermanentError(
            f"PostgreSQL refused the worker's login to database {database!r} ({fatal}); fix the user or password in "
            f"{setting}, or the role or pg_hba.conf on the server, then retry the export"
        )
    return TransientError(f"database {database!r} is unreachable: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


@contextlib.contextmanager
def _errors(sink: PostgresSink) -> Iterator[None]:
    """Database errors as the engine's kinds: refused data fails the file, a lost server is retried."""
    try:
        yield
    except psycopg.errors.LockNotAvailable:
        raise TransientError(f"table {sink.schema}.{sink.table} is busy (schema change waits for a load); retrying") from None
    except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
        raise PermanentError(f"PostgreSQL refused the rows for {sink.schema}.{sink.table}: {_first_line(exc)}") from None
    except psycopg.errors.InsufficientPrivilege as exc:
        raise PermanentError(
            f"PostgreSQL refused {sink.schema}.{sink.table} to the worker's role: {_first_line(exc)}; grant the role what "
            "that names (the sink needs USAGE and CREATE on the schema, or CREATE on the database while the schema is "
            "missing, and SELECT, INSERT and DELETE on the table and its quarantine), then retry the export"
        ) from None
    except psycopg.ProgrammingError as exc:  # SQLSTATE class 42 and the like: the table is not what the load expects
        raise PermanentError(
            f"PostgreSQL refused the load into {sink.schema}.{sink.table}: {_first_line(exc)}; point the export at a table "
            "this sink created (another table option) or fix the table, then retry the export"
        ) from None
    except psycopg.Error as exc:
        raise TransientError(f"database {sink.database!r} failed: {_first_line(exc)}") from None
