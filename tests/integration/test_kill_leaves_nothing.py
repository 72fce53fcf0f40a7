"""A killed owner of a local stack leaves nothing behind: no worker or beat process, no key, no queue.

The owner is a real benchmark (SIGTERM, which runs ``stop()`` as the stack unwinds) or a small
script (SIGKILL, which only the stack's watcher process can clean up after), on both brokers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import redis
from kombu import Connection

from worker.dev.localstack import RABBITMQ_URL, Broker

REDIS_URL = os.environ.get("EXPORT_WORKER_REDIS_URL", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parents[2]
NODE = re.compile(r"-n w0-([0-9a-f]{8})@")
WATCHER = "worker.dev.teardown"


@dataclass
class Owner:
    process: subprocess.Popen[str]
    run_id: str
    spawned: list[psutil.Process]
    """Every descendant of the owner when it was killed: workers, their pool, beat, the watcher."""


def children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def run_id_of(processes: list[psutil.Process]) -> str | None:
    for process in processes:
        try:
            found = NODE.search(" ".join(process.cmdline()))
        except psutil.Error:
            continue
        if found:
            return found.group(1)
    return None


def wait_for(what: str, check: object, timeout: float, owner: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if owner.poll() is not None:
            raise AssertionError(f"the owner exited with {owner.returncode} before {what}: {owner.stdout.read()}")  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"no {what} after {timeout}s"
        time.sleep(0.2)


def kill_and_wait(owner: Owner, sig: int) -> None:
    owner.spawned = children(owner.process.pid)
    owner.process.send_signal(sig)
    owner.process.wait(30)
    _gone, alive = psutil.wait_procs([p for p in owner.spawned if WATCHER in " ".join(_cmdline(p))], timeout=30)
    assert not alive, "the watcher did not finish within 30s"


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def assert_nothing_left(owner: Owner, broker: Broker) -> None:
    alive = [p for p in owner.spawned if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes left running: {[(p.pid, ' '.join(_cmdline(p)).strip()[:100]) for p in alive]}"
    client = redis.Redis.from_url(REDIS_URL)
    keys = sorted(client.scan_iter(match=f"*{owner.run_id}*", count=1000))
    assert keys == [], f"keys left: {keys[:20]}"
    unacked = [raw for raw in client.hvals("unacked") if owner.run_id.encode() in raw]
    assert unacked == []
    if broker == "rabbitmq":
        with Connection(RABBITMQ_URL) as connection:
            with pytest.raises(connection.channel_errors):
                connection.channel().queue_declare(f"exports-{owner.run_id}", passive=True)


def test_sigterm_to_a_running_benchmark_leaves_nothing(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bench", "inflight", "--size", "smoke", "--json", str(tmp_path / "bench.json")]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for("worker", lambda: run_id_of(children(process.pid)), 30, process)
        run_id = run_id_of(children(process.pid))
        assert run_id is not None
        store = redis.Redis.from_url(REDIS_URL)
        wait_for("exports in flight", lambda: store.exists(f"aew-{run_id}:active"), 30, process)
        owner = Owner(process, run_id, [])
        kill_and_wait(owner, signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0
    assert_nothing_left(owner, "redis")
    written = json.loads((tmp_path / "bench.json").read_text())
    assert written["argv"][:2] == ["inflight", "--size"], "the JSON of what finished is written on the way out"


def test_sigterm_to_a_benchmark_outside_any_stack_stops_its_private_redis(tmp_path: Path) -> None:
    """The throughput benchmark runs no stack (whose handlers would unwind it): the bench's own must."""
    command = [sys.executable, "-m", "bench", "throughput", "--smoke", "--private-redis", "--json", str(tmp_path / "b.json")]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def measuring() -> bool:
        lines = [" ".join(_cmdline(child)) for child in children(process.pid)]
        return any("redis-server" in line for line in lines) and any("bench.throughput child" in line for line in lines)

    try:
        wait_for("a measurement beside the private redis-server", measuring, 60, process)
        spawned = children(process.pid)
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    _gone, alive = psutil.wait_procs(spawned, timeout=15)
    assert not alive, f"left running: {[' '.join(_cmdline(p))[:100] for p in alive]}"
    assert process.returncode != 0


@pytest.mark.parametrize(
    ("sig", "broker"), [(signal.SIGKILL, "redis"), (signal.SIGKILL, "rabbitmq"), (signal.SIGINT, "rabbitmq")]
)
def test_killed_stack_owner_leaves_nothing(sig: int, broker: Broker) -> None:
    command = [sys.executable, "-m", "tests.stack_owner", broker]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        announced = json.loads(line) if line.startswith("{") else pytest.fail(f"the owner said {line}{process.stdout.read()}")
        owner = Owner(process, announced["key_prefix"].removeprefix("aew-"), [])
        assert run_id_of(children(process.pid)) == owner.run_id
        kill_and_wait(owner, sig)
    finally:
        if process.poll() is None:
            process.kill()
    assert_nothing_left(owner, broker)
