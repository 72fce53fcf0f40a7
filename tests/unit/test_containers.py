"""The container files promise what README says of `docker compose up`; no Docker engine is needed to check it.

Read as text (PyYAML is not in the test install): each compose service is the block under its two-space
indented name.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]


def services(compose: str) -> dict[str, str]:
    body = (ROOT / compose).read_text().split("\nservices:\n", 1)[1].split("\nvolumes:\n", 1)[0]
    blocks = re.split(r"^  (?=[a-z][a-z0-9_-]*:\n)", body, flags=re.MULTILINE)
    return {block.split(":", 1)[0]: block for block in blocks if block.strip()}


def test_the_image_installs_the_parquet_extra_and_its_worker_sends_task_events() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^RUN pip install [^\n]*"\.\[parquet\]"', dockerfile, flags=re.MULTILINE)
    assert re.search(r'^CMD \["celery", "-A", "worker.app", "worker", "-E"', dockerfile, flags=re.MULTILINE)


def test_compose_runs_a_worker_with_task_events_and_postgres_for_the_postgres_sink() -> None:
    stack = services("docker-compose.yml")
    assert {"redis", "postgres", "simulator", "worker", "beat", "flower", "cli"} <= set(stack)
    assert '"worker", "-E"' in stack["worker"]
    assert "postgres: {condition: service_healthy}" in stack["worker"]
    env = (ROOT / "docker-compose.yml").read_text().split("\nservices:\n", 1)[0]
    assert re.search(r"EXPORT_WORKER_DATABASES__DEFAULT__URL: postgresql://exporter:\S+@postgres:5432/exports", env)


def test_compose_publishes_no_service_on_the_ports_of_a_local_redis_postgres_or_rabbitmq() -> None:
    published = []
    for compose in ("docker-compose.yml", "docker-compose.rabbitmq.yml"):
        for block in services(compose).values():
            published += re.findall(r"127\.0\.0\.1:(\d+):\d+", block)
    assert published and not {"6379", "5432", "5672", "15672"} & set(published)
