"""Leave no trace of a local stack: its worker and beat processes, Redis keys and broker queues.

A :class:`~worker.dev.localstack.LocalStack` runs it from ``stop()``; a SIGKILLed owner cannot, so
the stack also starts a watcher (``python -m worker.dev.teardown``) that reads the stack's
:class:`TeardownPlan` from a pipe and runs it when the pipe closes without a ``done`` line, which is
what happens when the owner dies however it dies.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from types import FrameType
from typing import IO, Literal

import psutil
import redis
from kombu import Connection
from pydantic import BaseModel

DONE = b"done\n"
"""The owner's last line when it tore the stack down itself: the watcher then has nothing to do."""
GRACE_SECONDS = 5.0


class TeardownPlan(BaseModel):
    key_prefix: str
    redis_url: str | None
    """None when the keys go with their server (the embedded fake, a private Sentinel cluster)."""
    broker: Literal["redis", "rabbitmq"]
    broker_url: str
    queues: list[str]
    process_groups: dict[int, float]
    """Each worker's and beat's process group (its leader's pid), with the leader's start time."""
    temp_dir: str | None = None


def stack_processes(plan: TeardownPlan) -> list[psutil.Process]:
    """The live processes in the plan's groups.

    A group id is not reused while any process is in the group, so a group is the stack's unless
    its leader's id now names a process started at another time (the group died and the id moved on).
    """
    groups = {pgid for pgid, started in plan.process_groups.items() if _same_or_gone(pgid, started)}
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(OSError):
            if os.getpgid(process.pid) in groups:
                found.append(process)
    return found


def _same_or_gone(pid: int, started: float) -> bool:
    try:
        return abs(psutil.Process(pid).create_time() - started) < 0.05
    except psutil.Error:
        return True


def stop_processes(processes: list[psutil.Process], grace: float = GRACE_SECONDS) -> None:
    """SIGTERM (a Celery worker's warm shutdown), then SIGKILL whatever is still up after ``grace``."""
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _gone, alive = psutil.wait_procs(processes, timeout=grace)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=grace)


def forget_redis_keys(store: redis.Redis, key_prefix: str) -> None:
    for key in store.scan_iter(match=f"{key_prefix}:*", count=1000):
        store.delete(key)


def forget_redis_queues(broker: redis.Redis, queues: Iterable[str]) -> None:
    """Drop the queues' lists and bindings, and their entries in kombu's shared ``unacked`` hash.

    Unacked entries go first: another stack's worker restoring them would bring a deleted queue back.
    """
    names = set(queues)
    for tag, raw in broker.hscan_iter("unacked", count=1000):
        try:
            _message, _exchange, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        if routing_key in names:
            broker.hdel("unacked", tag)
            broker.zrem("unacked_index", tag)
    for pattern in (pattern for queue in names for pattern in (f"{queue}*", f"_kombu.binding*{queue}*")):
        for key in broker.scan_iter(match=pattern, count=1000):
            broker.delete(key)


def forget_rabbitmq_queues(url: str, queues: Iterable[str]) -> None:
    """Delete the queues and their exchanges; Celery's shared delay queues stay (other apps use them)."""
    with Connection(url) as connection:
        channel = connection.default_channel
        for name in sorted(set(queues)):
            channel.queue_delete(name)
            channel.exchange_delete(name)


def tear_down(plan: TeardownPlan) -> None:
    """Processes first, so none recreates a key or a queue after it is deleted."""
    stop_processes(stack_processes(plan))
    if plan.redis_url is not None:
        with redis.Redis.from_url(plan.redis_url) as store:
            forget_redis_keys(store, plan.key_prefix)
    if plan.broker == "rabbitmq":
        forget_rabbitmq_queues(plan.broker_url, plan.queues)
    elif plan.redis_url is not None:
        with redis.Redis.from_url(plan.broker_url) as broker:
            forget_redis_queues(broker, plan.queues)
    if plan.temp_dir is not None:
        shutil.rmtree(plan.temp_dir, ignore_errors=True)


def watch(lines: IO[bytes], teardown: Callable[[TeardownPlan], None] = tear_down) -> bool:
    """Follow the owner's plan until the pipe closes; tear down unless its last line was ``done``.

    Returns whether it tore down.
    """
    plan: TeardownPlan | None = None
    done = False
    for line in lines:
        if not line.endswith(b"\n"):  # the owner died mid-write: the plan before it stands
            break
        done = line == DONE
        if not done:
            plan = TeardownPlan.model_validate_json(line)
    if done or plan is None:
        return False
    teardown(plan)
    return True


class Watcher:
    """The owner's end of the watcher: it sends each new plan, and ``done`` once it tore down itself."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker.dev.teardown"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )

    def send(self, plan: TeardownPlan) -> None:
        self._write(plan.model_dump_json().encode() + b"\n")

    def finish(self) -> None:
        """The owner tore down itself: the watcher exits without touching anything."""
        self._write(DONE)
        with contextlib.suppress(OSError):
            self.process.stdin.close()  # type: ignore[union-attr]
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def _write(self, data: bytes) -> None:
        """A watcher killed by hand only costs the SIGKILL case its cleanup; the stack goes on."""
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):
            self.process.stdin.write(data)
            self.process.stdin.flush()


class Interrupted(KeyboardInterrupt):
    """SIGTERM with no handler of its own: raised so ``with`` blocks and ``finally`` clauses stop
    the stack as they do on Ctrl-C (a KeyboardInterrupt, so pytest and the benchmarks stop too)."""


class SignalChain:
    """Makes SIGTERM and SIGINT unwind the owner, keeping whatever handler was there before.

    A Python handler installed before (Ctrl-C's KeyboardInterrupt, an application's own) is called
    as it would have been; an ignored signal stays ignored; a default one (SIGTERM's: die on the
    spot, skipping every ``finally``) raises :class:`Interrupted` instead. ``restore()`` puts the
    previous handlers back, unless someone replaced ours meanwhile. Off the main thread, where
    Python cannot install handlers, it does nothing: the watcher still cleans up.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.previous: dict[int, signal._HANDLER] = {}
        with contextlib.suppress(ValueError):
            for signum in self.SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        previous = self.previous.get(signum, signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise Interrupted(f"{signal.Signals(signum).name}: stopping the local stack")

    def restore(self) -> None:
        for signum, previous in self.previous.items():
            if signal.getsignal(signum) == self._handle:
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self.previous.clear()


def main() -> int:
    """The watcher process: its own session, so a Ctrl-C or a kill of the owner's group spares it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        watch(sys.stdin.buffer)
    except Exception as exc:  # the owner is gone: stderr is the only place left to say it
        print(
            f"export-worker: cleaning up after a local stack whose owner died failed: {exc}; "
            "find leftovers with `redis-cli --scan --pattern 'aew-*'` and `ps -eo pid,args | grep celery`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
