"""The read-ahead thread: items in order, the producer's exception after its items, an early exit joins the producer.

The producer and the consumer interleave: every test runs over every point where one side stops
(the producer failing after each item, the consumer leaving after each item) and at several
depths, so the queue is full, empty or in between when it happens.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from worker.read_ahead import ReadAhead

DEPTHS = (1, 2, 3)
LENGTH = 6


class Boom(Exception):
    pass


class Source:
    """Yields 0..length-1, raising after ``fail_after`` items; records what it did."""

    def __init__(self, length: int, fail_after: int | None = None) -> None:
        self.length = length
        self.fail_after = fail_after
        self.produced = 0
        self.closed = False
        self.thread: threading.Thread | None = None

    def __iter__(self) -> Iterator[int]:
        self.thread = threading.current_thread()
        try:
            for item in range(self.length):
                if item == self.fail_after:
                    raise Boom(f"after {item}")
                self.produced += 1
                yield item
        finally:
            self.closed = True


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("length", range(LENGTH + 1))
def test_every_item_arrives_in_order(depth: int, length: int) -> None:
    source = Source(length)
    with ReadAhead(source, depth) as ahead:
        seen = list(ahead)
    assert seen == list(range(length))
    assert source.closed and source.thread is not threading.current_thread()


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("fail_after", range(LENGTH))
def test_the_producers_exception_is_raised_on_the_consumers_thread_after_its_items(depth: int, fail_after: int) -> None:
    source = Source(LENGTH, fail_after)
    seen: list[object] = []
    with pytest.raises(Boom, match=f"after {fail_after}"), ReadAhead(source, depth) as ahead:
        for item in ahead:
            seen.append(item)
    assert seen == list(range(fail_after))
    assert source.closed


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("leave_after", range(LENGTH))
def test_a_consumer_that_leaves_stops_and_joins_the_producer(depth: int, leave_after: int) -> None:
    source = Source(1000)
    ahead = ReadAhead(source, depth)
    with pytest.raises(Boom), ahead:
        for item in ahead:
            if item == leave_after:
                raise Boom("consumer")
    assert source.thread is not None and not source.thread.is_alive()
    assert source.closed
    # what it produced: the items taken, the queue's depth, and the one it was blocked on
    assert leave_after + 1 <= source.produced <= leave_after + 1 + depth + 1


def test_a_producer_blocked_on_a_full_queue_is_released_when_the_consumer_leaves() -> None:
    source = Source(1000)
    ahead = ReadAhead(source, 1)
    with ahead:
        iterator = iter(ahead)
        assert next(iterator) == 0
        while ahead._queue.qsize() < 1:  # the producer holds the next item and waits for room
            threading.Event().wait(0.01)
    assert source.thread is not None and not source.thread.is_alive()
    assert source.produced <= 3
