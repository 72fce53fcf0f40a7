"""Connecting the postgres sink, against the real server at 127.0.0.1:5432: what cannot fix itself fails at once.

libpq reports no SQLSTATE for a failed connection (``OperationalError.sqlstate`` is None, checked here), so
the sink reads the server's FATAL message: a database that does not exist and a login the server refuses
fail the file (and, in the submit step, the export) at once with what to do; a server that does not
answer is retried.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.pg import TEST_DATABASE_URL
from worker.errors import PermanentError, TransientError
from worker.sinks.postgres import PostgresSink

pytestmark = pytest.mark.integration

SERVER = TEST_DATABASE_URL.rsplit("/", 1)[0]
"""``postgresql://postgres@127.0.0.1:5432``: the test server, without a database."""


def sink(url: str) -> PostgresSink:
    return PostgresSink(url, "warehouse", "public", "t")


def test_libpq_gives_no_sqlstate_for_a_database_that_does_not_exist() -> None:
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(f"{SERVER}/aew_no_such_database", connect_timeout=5)
    assert refused.value.sqlstate is None and 'database "aew_no_such_database" does not exist' in str(refused.value)


def test_a_database_that_does_not_exist_fails_at_once_saying_what_to_do() -> None:
    with pytest.raises(PermanentError) as refused:
        sink(f"{SERVER}/aew_no_such_database").check()
    message = str(refused.value)
    assert "database 'warehouse' does not exist on its server" in message
    assert 'FATAL:  database "aew_no_such_database" does not exist' in message
    assert "EXPORT_WORKER_DATABASES__WAREHOUSE__URL" in message


def test_loading_a_file_into_a_database_that_does_not_exist_fails_the_file_at_once() -> None:
    writer = sink(f"{SERVER}/aew_no_such_database").open_file("e1", "0-0", "a.csv")
    with pytest.raises(PermanentError, match="does not exist on its server"):
        writer.commit()


def test_a_role_the_server_does_not_know_is_a_refused_login() -> None:
    url = TEST_DATABASE_URL.replace("postgres@", "aew_no_such_role:pw-321@", 1)
    with pytest.raises(PermanentError) as refused:
        sink(url).check()
    assert "refused the worker's login to database 'warehouse'" in str(refused.value)
    assert 'role "aew_no_such_role" does not exist' in str(refused.value) and "pw-321" not in str(refused.value)


def test_a_server_that_does_not_answer_is_retried() -> None:
    with pytest.raises(TransientError, match="database 'warehouse' is unreachable"):
        sink("postgresql://postgres@127.0.0.1:1/test").check()


def test_the_configured_test_database_passes_the_check() -> None:
    sink(TEST_DATABASE_URL).check()
