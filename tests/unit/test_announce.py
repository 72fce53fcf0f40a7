"""An export's end is reported (callback, metrics, temp sweep) even when the worker that ended it died."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import make_settings
from tests.interleaving import World
from worker.engine import transitions as tr
from worker.engine.lifecycle import cancel_export
from worker.engine.watchdog import run_watchdog
from worker.models import Callback, ExportRecord, JobRecord, Writes

NOW = 1_800_000_000.0


def world(tmp_path: Path) -> World:
    return World(settings=make_settings(tmp_path), handler=lambda request: httpx.Response(404))


def stored_export(w: World) -> str:
    record = ExportRecord(
        id="e1",
        provider="samsara",
        params={},
        credential="default",
        callback=Callback(task="app.done"),
        jobs={"0": JobRecord(key="0", params={}, token=1, next_action_at=NOW)},
        created_at=NOW,
        updated_at=NOW,
        deadline_at=NOW + 10**6,
    )
    w.runtime().store.create(record)
    return record.id


def test_an_end_whose_worker_died_before_the_callback_is_reported_by_the_watchdog(tmp_path: Path) -> None:
    w = world(tmp_path)
    export_id = stored_export(w)
    temp = Path(w.settings.output_dir) / export_id / ".part.csv.abc.tmp"
    temp.parent.mkdir(parents=True)
    temp.write_bytes(b"half a file")

    def die_after_exec(record: ExportRecord, writes: Writes) -> None:
        tr.cancel(record, writes, NOW)

    w.runtime().store.transact(export_id, die_after_exec)
    assert w.dispatcher.callbacks == []
    assert run_watchdog(w.runtime()).announced == 0, "too early: the ending worker may still be reporting"

    w.clock.now += 2 * w.settings.stale_after_seconds + 10**7
    assert run_watchdog(w.runtime()).announced == 1
    assert [(callback.task, status) for callback, status in w.dispatcher.callbacks] == [("app.done", "CANCELLED")]
    assert not temp.exists()
    assert run_watchdog(w.runtime()).announced == 0
    assert len(w.dispatcher.callbacks) == 1


def test_an_end_reported_by_its_own_worker_is_not_reported_again(tmp_path: Path) -> None:
    w = world(tmp_path)
    export_id = stored_export(w)
    assert cancel_export(w.runtime(), export_id)
    w.clock.now += 2 * w.settings.stale_after_seconds + 10**7
    assert run_watchdog(w.runtime()).announced == 0
    assert len(w.dispatcher.callbacks) == 1
