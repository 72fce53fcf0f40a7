"""The sink registry and sink options: every sink name has a factory, options are checked at submit."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import get_args

import pytest

from tests.conftest import make_settings
from worker.errors import InvalidRequest, PermanentError
from worker.models import ExportRecord, SinkName, SinkOptions
from worker.providers import get_provider
from worker.sinks import SINKS, SinkContext, open_sink
from worker.sinks.jsonl import JsonlSink
from worker.sinks.options import sink_options_for, sql_name
from worker.sinks.parquet import ParquetSink
from worker.sinks.postgres import PostgresSink
from worker.sinks.redis_stream import RedisStreamSink
from worker.store import ExportStore


def test_every_sink_name_has_a_factory() -> None:
    assert list(SINKS) == list(get_args(SinkName))


DAY = {"START_DATE": "2026-11-01", "END_DATE": "2026-11-01"}


def record(sink: str, **options: str) -> ExportRecord:
    return ExportRecord.model_validate(
        {"id": "e1", "provider": "samsara", "params": {}, "credential": "default", "jobs": {}, "created_at": 0,
         "updated_at": 0, "deadline_at": 0, "sink": sink, "sink_options": options}
    )  # fmt: skip


def test_the_registry_builds_the_sink_the_export_names(tmp_path: Path, store: ExportStore) -> None:
    settings = make_settings(tmp_path, databases={"warehouse": {"url": "postgresql://u:pw@127.0.0.1:5432/dw"}})
    assert isinstance(open_sink(SinkContext(settings, store, record("jsonl"))), JsonlSink)
    sink = open_sink(SinkContext(settings, store, record("postgres", database="warehouse", schema="raw", table="t")))
    assert isinstance(sink, PostgresSink) and (sink.database, sink.schema, sink.table) == ("warehouse", "raw", "t")
    assert sink.url == "postgresql://u:pw@127.0.0.1:5432/dw"


def test_the_file_and_stream_sinks_take_their_settings(tmp_path: Path, store: ExportStore) -> None:
    settings = make_settings(tmp_path, redis_sink_max_rows=7, redis_sink_ttl_seconds=99)
    jsonl = open_sink(SinkContext(settings, store, record("jsonl")))
    assert isinstance(jsonl, JsonlSink) and jsonl.root == settings.output_dir
    stream = open_sink(SinkContext(settings, store, record("redis_stream")))
    assert isinstance(stream, RedisStreamSink) and (stream.store, stream.max_rows, stream.ttl_seconds) == (store, 7, 99)
    parquet = open_sink(SinkContext(settings, store, record("parquet")))
    assert isinstance(parquet, ParquetSink) and parquet.root == settings.output_dir


def test_a_database_missing_from_the_settings_fails_each_file_naming_the_setting(tmp_path: Path, store: ExportStore) -> None:
    sink = open_sink(SinkContext(make_settings(tmp_path), store, record("postgres", database="Warehouse", table="t")))
    assert isinstance(sink, PostgresSink) and sink.url is None
    with pytest.raises(PermanentError, match="set EXPORT_WORKER_DATABASES__WAREHOUSE__URL and retry"):
        sink.open_file("e1", "0-0", "f.csv")


def test_a_postgres_export_without_a_table_is_refused_before_connecting(tmp_path: Path, store: ExportStore) -> None:
    settings = make_settings(tmp_path, databases={"warehouse": {"url": "postgresql://u:pw@127.0.0.1:1/dw"}})
    sink = open_sink(SinkContext(settings, store, record("postgres", database="warehouse")))
    with pytest.raises(PermanentError, match="the export has no target table"):
        sink.open_file("e1", "0-0", "f.csv")


def test_without_pyarrow_a_parquet_export_still_sweeps_its_killed_attempts(
    tmp_path: Path, store: ExportStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path)
    JsonlSink(settings.output_dir).open_file("e1", "0-0", "f.csv").write_rows([{"id": 1}])  # killed: never committed
    monkeypatch.setitem(sys.modules, "worker.sinks.parquet", None)  # what an install without pyarrow sees
    sink = open_sink(SinkContext(settings, store, record("parquet")))
    assert sink.discard_attempts("e1") == 1 and list((settings.output_dir / "e1").iterdir()) == []


@pytest.mark.parametrize(
    ("provider", "params", "table"),
    [
        ("samsara", {"startHour": "2026-11-23T00:00:00Z", "endHour": "2026-11-24T00:00:00Z"}, "samsara_ifta_detail"),
        ("impact", {"report_id": "att_adv_performance_by_day", "report_params": DAY}, "impact_att_adv_performance_by_day"),
        ("impact", {"report_id": "Adv.Perf-2", "report_params": DAY}, "impact_adv_perf_2"),
        ("impact", {"job_id": "A1b2"}, "impact_jobs"),
    ],
)
def test_a_postgres_export_gets_its_reports_table_by_default(provider: str, params: dict, table: str) -> None:
    chosen = get_provider(provider)
    options = sink_options_for("postgres", None, chosen, chosen.validate(params))
    assert options == SinkOptions(database="default", schema="public", table=table)


@pytest.mark.parametrize(
    ("sink", "options", "message"),
    [
        ("postgres", {"table": "Robert'); DROP TABLE x;--"}, "invalid sink_options: table"),
        ("postgres", {"schema": "a" * 60}, "invalid sink_options: schema"),
        ("postgres", {"password": "x"}, "invalid sink_options: password"),
        ("jsonl", {"table": "t"}, "apply to sink='postgres' only"),
        ("s3", None, "unknown sink 's3'"),
        ("postgres", ["table"], "invalid sink_options: sink_options: Input should be a valid dictionary"),
    ],
)
def test_bad_sink_options_are_refused_naming_the_field(sink: str, options: dict | None, message: str) -> None:
    chosen = get_provider("impact")
    with pytest.raises(InvalidRequest, match=message):
        sink_options_for(sink, options, chosen, chosen.validate({"job_id": "A1"}))


def test_sql_names_are_plain_and_short() -> None:
    assert sql_name("9 Lives!") == "t_9_lives"
    assert sql_name("---") == "export"
    assert len(sql_name("x" * 100)) == 52
