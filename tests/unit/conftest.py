"""Fixtures of the engine tests: the engine on fakeredis with a scripted Samsara, time on a fake clock."""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import FakeClock, make_settings
from tests.engine_driver import Driver
from tests.scripted_samsara import FakeSamsara
from worker.dev.testing import RecordingDispatcher
from worker.engine.context import Runtime
from worker.store import ExportStore


@pytest.fixture
def provider() -> FakeSamsara:
    return FakeSamsara()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_800_000_000.0)


@pytest.fixture
def rt(tmp_path: Path, store: ExportStore, dispatcher: RecordingDispatcher, provider: FakeSamsara, clock: FakeClock) -> Runtime:
    settings = make_settings(tmp_path, download_hosts={"samsara": ["files.example"]})
    return Runtime(
        settings=settings,
        store=store,
        dispatcher=dispatcher,
        clock=clock,
        rng=random.Random(3),
        transport=httpx.MockTransport(provider.handler),
    )


@pytest.fixture
def driver(rt: Runtime, dispatcher: RecordingDispatcher) -> Driver:
    return Driver(rt, dispatcher)


@pytest.fixture
def small_csv_field_limit() -> Iterator[None]:
    """``csv.field_size_limit`` is process-global and the parser only ever raises it: lower it for a test."""
    saved = csv.field_size_limit()
    csv.field_size_limit(1000)
    yield
    csv.field_size_limit(saved)
