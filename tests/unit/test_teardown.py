"""The local stack's teardown: the watcher's protocol, the signal chain, what it removes and stops."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from types import FrameType

import fakeredis
import psutil
import pytest

from worker.dev.teardown import (
    DONE,
    Interrupted,
    SignalChain,
    TeardownPlan,
    forget_redis_keys,
    forget_redis_queues,
    stack_processes,
    stop_processes,
    watch,
)


def plan(**changes: object) -> TeardownPlan:
    values: dict[str, object] = {
        "key_prefix": "aew-run1",
        "redis_url": "redis://127.0.0.1:6379/0",
        "broker": "redis",
        "broker_url": "redis://127.0.0.1:6379/0",
        "queues": ["exports-run1"],
        "process_groups": {},
    }
    return TeardownPlan.model_validate({**values, **changes})


def lines(*plans_or_done: TeardownPlan | bytes) -> io.BytesIO:
    return io.BytesIO(
        b"".join(item if isinstance(item, bytes) else item.model_dump_json().encode() + b"\n" for item in plans_or_done)
    )


# -- the watcher's protocol ------------------------------------------------------------------------


def test_owner_gone_without_done_tears_down_its_last_plan() -> None:
    torn: list[TeardownPlan] = []
    first, last = plan(process_groups={11: 1.5}), plan(process_groups={11: 1.5, 12: 2.5}, queues=["exports-run1", "q2"])
    assert watch(lines(first, last), torn.append)
    assert torn == [last]


def test_owner_that_tore_down_itself_leaves_the_watcher_nothing_to_do() -> None:
    torn: list[TeardownPlan] = []
    assert not watch(lines(plan(), DONE), torn.append)
    assert not watch(lines(), torn.append)
    assert torn == []


def test_owner_killed_mid_write_keeps_the_plan_before() -> None:
    torn: list[TeardownPlan] = []
    whole = plan(process_groups={11: 1.5})
    assert watch(lines(whole, b'{"key_prefix": "aew-ru'), torn.append)
    assert torn == [whole]


def test_plan_process_groups_survive_the_pipe() -> None:
    sent = plan(process_groups={4242: 1764886400.25})
    assert TeardownPlan.model_validate_json(sent.model_dump_json()).process_groups == {4242: 1764886400.25}


# -- the signal chain ------------------------------------------------------------------------------


@pytest.fixture
def handlers() -> Iterator[None]:
    saved = {signum: signal.getsignal(signum) for signum in SignalChain.SIGNALS}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def deliver(signum: int) -> None:
    signal.raise_signal(signum)
    time.sleep(0.01)


@pytest.mark.usefixtures("handlers")
def test_default_sigterm_unwinds_as_an_interrupt_and_restore_brings_the_default_back() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    chain = SignalChain()
    with pytest.raises(Interrupted, match="SIGTERM"):
        deliver(signal.SIGTERM)
    chain.restore()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


@pytest.mark.usefixtures("handlers")
def test_a_handler_installed_before_is_chained_not_clobbered() -> None:
    seen: list[int] = []

    def own(signum: int, _frame: FrameType | None) -> None:
        seen.append(signum)

    signal.signal(signal.SIGTERM, own)
    chain = SignalChain()
    deliver(signal.SIGTERM)
    assert seen == [signal.SIGTERM]
    chain.restore()
    assert signal.getsignal(signal.SIGTERM) is own


@pytest.mark.usefixtures("handlers")
def test_ignored_signal_stays_ignored_and_ctrl_c_stays_a_keyboard_interrupt() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    chain = SignalChain()
    deliver(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt) as raised:
        deliver(signal.SIGINT)
    assert type(raised.value) is KeyboardInterrupt
    chain.restore()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN


@pytest.mark.usefixtures("handlers")
def test_restore_leaves_a_handler_installed_after_it_alone() -> None:
    """The demo's --keep installs its own SIGTERM handler on top and puts the chain's back itself."""
    chain = SignalChain()

    def later(_signum: int, _frame: FrameType | None) -> None:
        raise AssertionError("not delivered")

    signal.signal(signal.SIGTERM, later)
    chain.restore()
    assert signal.getsignal(signal.SIGTERM) is later


# -- what it removes -------------------------------------------------------------------------------


def test_keys_go_by_prefix_only() -> None:
    store = fakeredis.FakeRedis()
    store.set("aew-run1:export:1", "x")
    store.set("aew-run10:export:1", "other run")
    store.set("aew-run1", "no colon: not ours")
    forget_redis_keys(store, "aew-run1")
    assert sorted(store.keys()) == [b"aew-run1", b"aew-run10:export:1"]


def test_queues_bindings_and_unacked_entries_of_other_queues_stay() -> None:
    broker = fakeredis.FakeRedis()
    broker.rpush("exports-run1", "task")
    broker.rpush("exports-run1\x06\x163", "priority task")
    broker.sadd("_kombu.binding.exports-run1", "binding")
    broker.rpush("exports-other", "task")
    for tag, queue in (("ours", "exports-run1"), ("theirs", "exports-other")):
        broker.hset("unacked", tag, json.dumps([{"body": "…"}, "", queue]))
        broker.zadd("unacked_index", {tag: 1.0})
    broker.hset("unacked", "garbled", "not json")
    forget_redis_queues(broker, ["exports-run1"])
    assert sorted(broker.keys()) == [b"exports-other", b"unacked", b"unacked_index"]
    assert sorted(broker.hkeys("unacked")) == [b"garbled", b"theirs"]
    assert broker.zrange("unacked_index", 0, -1) == [b"theirs"]


# -- what it stops ---------------------------------------------------------------------------------


@pytest.fixture
def group() -> Iterator[subprocess.Popen[bytes]]:
    """A process group like a prefork worker's: a leader and a child, in a session of their own."""
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True)
    yield leader
    if leader.poll() is None:
        leader.kill()
    leader.wait(5)


def test_the_whole_group_is_stopped_children_too(group: subprocess.Popen[bytes]) -> None:
    started = psutil.Process(group.pid).create_time()
    deadline = time.monotonic() + 5
    while not psutil.Process(group.pid).children() and time.monotonic() < deadline:
        time.sleep(0.02)
    child = psutil.Process(group.pid).children()[0]
    found = stack_processes(plan(process_groups={group.pid: started}))
    assert {process.pid for process in found} == {group.pid, child.pid}
    stop_processes(found, grace=5)
    assert group.wait(5) is not None
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def test_a_group_id_now_naming_a_later_process_is_not_ours(group: subprocess.Popen[bytes]) -> None:
    started = psutil.Process(group.pid).create_time()
    assert stack_processes(plan(process_groups={group.pid: started - 3600})) == []
