"""Forced interleavings for race tests: run the other actor exactly between our read and our EXEC.

Threads that hope to meet collide only sometimes; a hook fired right after a chosen read makes the
collision happen on every run. The hook runs on a second client of the same fake server, so the
store under test sees a real concurrent write and a real WATCH abort.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fakeredis


class InterleavingRedis(fakeredis.FakeRedis):
    """A fakeredis client that runs a hook once, right after the first read of a chosen key.

    Reads are caught on the client itself and on its pipelines (a WATCHed pipeline executes its
    reads immediately), so moving a read in or out of the transaction does not hide it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hooks: dict[str, Callable[[], None]] = {}
        self.fired: list[str] = []

    def after_read(self, key: str, hook: Callable[[], None]) -> None:
        self._hooks[key] = hook

    def _reads(self, args: tuple[Any, ...]) -> None:
        if str(args[0]).upper() not in ("GET", "MGET", "SMEMBERS", "SCARD"):
            return
        for key in args[1:]:
            hook = self._hooks.pop(key if isinstance(key, str) else bytes(key).decode(), None)
            if hook is not None:
                self.fired.append(str(key))
                hook()

    def execute_command(self, *args: Any, **options: Any) -> Any:
        result = super().execute_command(*args, **options)
        self._reads(args)
        return result

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        immediate = pipe.immediate_execute_command

        def hooked(*args: Any, **options: Any) -> Any:
            result = immediate(*args, **options)
            self._reads(args)
            return result

        pipe.immediate_execute_command = hooked
        return pipe
