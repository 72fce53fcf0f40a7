"""Transactions that survive a lost connection and a failover, and writes that wait for a replica.

Every change goes through :meth:`TransactionsMixin._commit`. Its *body* WATCHes what it reads,
decides (a pure function mutating a fresh copy) and queues the writes after MULTI; the EXEC that
applies them also sets ``write:<id>`` to the number of the attempt (kept a few minutes). A
concurrent change aborts the EXEC and the body decides again on the new state.

When Redis goes away (connection lost, a demoted primary answering READONLY, a failover) the
transaction is tried again once it answers, with backoff, for up to ``retry_seconds``. An EXEC whose
reply was lost is the hard case: it may have applied on the old primary, and if so may or may not
have reached the replica that is primary now. So every attempt after that one first WATCHes and
reads the write key:

- present: this transaction applied, and it is on the current primary. The result its body decided
  then is returned as is. Deciding again would see the transaction's own change (the fencing token
  already moved) and call the step stale, stopping its chain until the watchdog revived it.
- absent: it never applied, or it was lost with the old primary; either way the current state lacks
  it, and deciding again on that state is right. An EXEC still in flight on the old connection that
  lands later changes the watched write key, so our EXEC aborts and the next attempt sees it.

Redis replicates asynchronously: a failover loses what the old primary acknowledged but had not
copied yet. The writes a caller or the next step relies on WAIT for replicas, on the connection that
ran the EXEC (WAIT covers that connection's writes; it does nothing inside MULTI): see
:class:`Confirm` for which, and what happens when no replica confirms in time. A primary with no
replica in sync (ROLE lists only those; one still loading its first copy is not among them) is not
waited on: no replica could be promoted with the write missing. Every other write
is one the design recovers from when it is lost: fencing tokens make a step that sees older state
act again (or exit as stale), the watchdog revives a chain whose next step is overdue, and each sink
replaces a file's rows when the file is loaded again.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar

import redis
from redis.client import Pipeline
from redis.connection import AbstractConnection

from worker.store.base import StoreBase, text
from worker.store.connection import FIRST_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS, UNREACHABLE, StoreUnavailable

T = TypeVar("T")

log = logging.getLogger("worker.store")

HEALTH_CHECK_MARGIN_SECONDS = 1.0
"""A watch whose connection's health check falls due within this long is read again, not trusted."""

WRITE_KEY_MIN_SECONDS = 120
"""A transaction's write key outlives every retry of it: this long, or four times the retry budget."""


class Confirm(Enum):
    """How sure a write must be before it is acknowledged, when replicas are waited for at all."""

    NONE = "none"
    """Lost in a failover, it is recovered: by fencing, the watchdog, a sink replacing the file's rows."""
    BEST_EFFORT = "best effort"
    """Wait for the replicas; if none confirms in time, log it and go on. An export's end: its callback
    goes out either way, and should the end be lost the export ends again with a second callback
    (callbacks are at least once)."""
    REQUIRED = "required"
    """Wait; if no replica confirms in time, raise :class:`NotReplicated` (retryable) instead of
    answering: an export id a caller was given, a cancel or a retry a caller was told happened."""


class NotReplicated(StoreUnavailable):
    """Saved on the primary, but no replica confirmed it in time: it may be lost in a failover. Retry the call."""


class ReplicationUnknown(redis.exceptions.RedisError):
    """The EXEC applied but the WAIT after it got no reply. Not a ConnectionError: redis-py must not
    send the transaction again by itself (it would apply twice); the store settles it with the write key."""


@dataclass(frozen=True)
class Decision(Generic[T]):
    """What a transaction body decided: its result, whether it queued writes, and how sure they must be."""

    result: T
    write: bool = True
    confirm: Confirm = Confirm.NONE
    then: Callable[[], None] | None = None
    """Run once the change is saved, before waiting for its replicas: the steps it implies are sent
    even when the caller then hears that no replica confirmed it (and retries). Run once per change."""


@dataclass(frozen=True)
class Replication:
    """What a WAIT found: replicas asked for, replicas that confirmed, replicas connected to the primary."""

    asked: int
    confirmed: int
    connected: int

    @property
    def enough(self) -> bool:
        return self.confirmed >= min(self.asked, self.connected)


def _ask(connection: AbstractConnection, *command: Any) -> Any:
    connection.send_command(*command)
    return connection.read_response()


def replication_of(connection: AbstractConnection, replicas: int, timeout_ms: int) -> Replication:
    """WAIT for ``replicas`` on ``connection``, but only for as many as are in sync (those ROLE lists)."""
    try:
        role = _ask(connection, "ROLE")
        connected = len(role[2]) if text(role[0]) == "master" else 0
    except redis.exceptions.ResponseError:  # ROLE refused (renamed, ACL): assume the replicas are there
        connected = replicas
    if connected == 0:
        return Replication(replicas, 0, 0)
    confirmed = int(_ask(connection, "WAIT", min(replicas, connected), timeout_ms))
    return Replication(replicas, confirmed, connected)


def _confirm_on(connection: AbstractConnection, replicas: int, timeout_ms: int) -> Replication:
    try:
        return replication_of(connection, replicas, timeout_ms)
    except UNREACHABLE as exc:
        connection.disconnect()
        raise ReplicationUnknown(f"no answer to WAIT after the EXEC: {exc}") from exc


class AcknowledgingPipeline(Pipeline):
    """A MULTI/EXEC pipeline that, after its EXEC applied, runs ``after_exec`` and then, when ``wait_for``
    is set, WAITs on the very connection that ran the EXEC.

    This runs inside redis-py's retry of the transaction: whatever ``after_exec`` raises is kept in
    ``after_exec_error`` for the store to raise afterwards (redis-py would send the transaction again
    on a ConnectionError), and a lost WAIT reply is :class:`ReplicationUnknown` for the same reason.
    """

    wait_for: tuple[int, int] | None = None
    replication: Replication | None = None
    after_exec: Callable[[], None] | None = None
    after_exec_error: Exception | None = None

    def _execute_transaction(self, connection: Any, commands: Any, raise_on_error: Any) -> Any:
        response = super()._execute_transaction(connection, commands, raise_on_error)
        then, self.after_exec = self.after_exec, None
        if then is not None:
            try:
                then()
            except Exception as exc:  # noqa: BLE001 - raised again by the store, outside redis-py's retry
                self.after_exec_error = exc
                return response
        if self.wait_for is not None:
            self.replication = _confirm_on(connection, *self.wait_for)
        return response

    def watch_holds(self) -> bool:
        """Whether the next send goes on the connection that sent the WATCH, still watching.

        redis-py connects again without a word where the connection was lost, and where the PING of its
        health check (an idle connection's, before the next send) fails; a new connection watches nothing
        and its EXEC would apply over any change made meanwhile. A watch kept across a provider call is
        trusted only while the health check is not due."""
        connection = self.connection
        if connection is None or not self.watching or not connection.is_connected:
            return False
        interval = connection.health_check_interval
        return not interval or time.monotonic() < connection.next_health_check - HEALTH_CHECK_MARGIN_SECONDS

    def watch_then(self, key: str, *command: Any) -> Any:
        """WATCH ``key`` and send ``command`` in the same round trip; the pipeline is left watching, as
        after :meth:`watch` and an immediate command. Gives the command's reply.

        redis-py sends a WATCH on its own; packing it with the read that follows is what makes a step's
        read one round trip."""
        if self.connection is None:
            self.connection = self.connection_pool.get_connection()
        connection = self.connection
        try:
            connection.send_packed_command(connection.pack_commands([("WATCH", key), command]))
            connection.read_response()
            self.watching = True
            return connection.read_response()
        except UNREACHABLE:
            connection.disconnect()
            raise


class TransactionsMixin(StoreBase):
    def _pipeline(self) -> AcknowledgingPipeline:
        return AcknowledgingPipeline(self.redis.connection_pool, self.redis.response_callbacks, True, None)

    def _commit(self, body: Callable[[AcknowledgingPipeline], Decision[T]], pipe: AcknowledgingPipeline | None = None) -> T:
        """Run ``body`` until its EXEC commits once; see this module's docstring for the failure cases.

        ``pipe`` may already watch what the body's first attempt decides on (read in the same round trip
        as its WATCH); every later attempt watches and reads again."""
        write_key = self.key("write", uuid.uuid4().hex)
        decided: dict[int, Decision[T]] = {}
        followed: set[int] = set()
        """Attempts whose ``then`` ran (it runs once, for the attempt that applied)."""
        unsure = False
        """Some EXEC of ours (or the WAIT after it) got no answer: read the write key before deciding again."""
        deadline: float | None = None
        delay = FIRST_BACKOFF_SECONDS
        attempt = 0
        pipe = self._pipeline() if pipe is None else pipe
        with pipe:
            while True:
                attempt += 1
                sent = False
                follow: Callable[[], None] | None = None
                pipe.after_exec_error = None
                try:
                    if unsure:
                        pipe.watch(write_key)
                        applied = pipe.get(write_key)
                        if applied is not None:
                            number = int(applied)
                            decision = decided[number]
                            if number not in followed:
                                follow = decision.then
                                followed.add(number)
                            replication = self._confirm_read(pipe, write_key, number, decision.confirm)
                            break
                    decision = body(pipe)
                    if not decision.write:
                        follow = decision.then
                        replication = self._confirm_read(pipe, f"{write_key}:read", 1, decision.confirm)
                        break
                    pipe.set(write_key, attempt, px=self._write_key_ms)
                    decided[attempt] = decision
                    pipe.wait_for = self._wait_for(decision.confirm)
                    pipe.replication = None
                    pipe.after_exec = decision.then
                    sent = True
                    try:
                        pipe.execute()
                    finally:
                        if pipe.after_exec is None:
                            followed.add(attempt)
                        pipe.after_exec = None
                    self._answered()
                    replication = pipe.replication
                    break
                except redis.WatchError as exc:
                    if not isinstance(exc.__context__, UNREACHABLE):
                        continue  # a concurrent change: decide again, now
                    error: Exception = exc
                except ReplicationUnknown as exc:
                    error = exc
                except redis.exceptions.ReadOnlyError as exc:
                    error = exc
                except UNREACHABLE as exc:
                    error = exc
                unsure = unsure or sent or isinstance(error, ReplicationUnknown)
                pipe.reset()
                if isinstance(error, redis.exceptions.ReadOnlyError):
                    # A demoted primary behind a name that now points elsewhere: reconnect, resolving it again.
                    self.redis.connection_pool.disconnect(inuse_connections=False)
                now = time.monotonic()
                deadline = deadline or now + self.retry_seconds
                if not self._has_answered() or now + delay > deadline:
                    raise self._gave_up(error, unsure) from error
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)
        # Outside the retry above, what the change implies raises to the caller as it is (even a
        # ConnectionError, of a Redis broker say): the change itself is saved.
        if pipe.after_exec_error is not None:
            raise pipe.after_exec_error
        if follow is not None:
            follow()
        return self._settled(decision, replication)

    @property
    def _write_key_ms(self) -> int:
        return int(max(WRITE_KEY_MIN_SECONDS, 4 * self.retry_seconds) * 1000)

    # -- replicas ----------------------------------------------------------------------------------

    def _wait_for(self, confirm: Confirm) -> tuple[int, int] | None:
        if confirm is Confirm.NONE or self.wait_replicas == 0:
            return None
        return (self.wait_replicas, self.wait_timeout_ms)

    def _confirm_read(self, pipe: AcknowledgingPipeline, key: str, value: Any, confirm: Confirm) -> Replication | None:
        """Make what this transaction read (or found applied) as sure as if it had just written it.

        WAIT covers the writes of its own connection only, so write ``key`` (again): a write on this
        primary that comes after the state read, and WAIT for that.
        """
        wait_for = self._wait_for(confirm)
        if wait_for is None:
            return None
        assert pipe.watching and pipe.connection is not None, "a body watches what it reads"
        pipe.set(key, value, px=self._write_key_ms)
        return _confirm_on(pipe.connection, *wait_for)

    def _settled(self, decision: Decision[T], replication: Replication | None) -> T:
        """The decision's result, once its replicas confirmed it (or the lack of them is logged or raised)."""
        if replication is None or replication.enough:
            return decision.result
        problem = (
            f"{self.where} saved the change, but {replication.confirmed} of its {replication.connected} "
            f"replica(s) confirmed it within {self.wait_timeout_ms} ms; if the primary fails before they catch up, "
            "the change is lost"
        )
        if decision.confirm is Confirm.REQUIRED:
            raise NotReplicated(f"{problem}. Retry the call: with the same idempotency key a submit returns the same export")
        log.warning("%s; going on (an export's end is reported again should it be lost)", problem)
        return decision.result

    # -- giving up ---------------------------------------------------------------------------------

    def _has_answered(self) -> bool:
        return bool(getattr(self.redis, "answered", True))

    def _answered(self) -> None:
        if hasattr(self.redis, "answered"):
            self.redis.answered = True

    def _gave_up(self, error: Exception, unsure: bool) -> StoreUnavailable:
        waited = f" for {self.retry_seconds:.0f}s" if self._has_answered() else ""
        outcome = "; the change may or may not have been saved" if unsure else ""
        return StoreUnavailable(f"no answer from {self.where}{waited}: {error}{outcome}")
