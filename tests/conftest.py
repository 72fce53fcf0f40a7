"""Shared fixtures: fakeredis-backed stores and a dispatcher that records instead of sending."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from worker.dev.testing import RecordingDispatcher
from worker.settings import Credential, Settings
from worker.store import ExportStore

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_json(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


class FakeClock:
    """Unix time that moves only when a test says so (simulator and engine tests step through time)."""

    def __init__(self, now: float = 1_717_200_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "output_dir": tmp_path / "out",
        "credentials": {
            "default": Credential(token="unit-samsara-token"),
            "impact": Credential(account_sid="IRunit", auth_token="unit-impact-token"),
        },
        "poll_initial_seconds": 1,
        "poll_max_seconds": 10,
        "slow_poll_seconds": 60,
        "visibility_timeout_seconds": 600,
        "allow_private_networks": True,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
def fake_redis() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    yield client
    client.flushall()


@pytest.fixture
def store(fake_redis: fakeredis.FakeRedis) -> ExportStore:
    return ExportStore(fake_redis, prefix="unit")


@pytest.fixture
def dispatcher() -> RecordingDispatcher:
    return RecordingDispatcher()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--chaos-long", action="store_true", default=False, help="run the long chaos variant")
