"""Everything that touches Redis, behind :class:`ExportStore`; the only package that imports ``redis``.

One module per concern (exports, files, leases and rate limits, events, sink streams); this
docstring is the one place the key map lives.

Keys (all under ``<prefix>:``, default prefix ``aew``):

=====================================  ======  ================================================
key                                    type    content
=====================================  ======  ================================================
``export:<id>``                        string  :class:`ExportRecord` JSON (jobs included)
``export:<id>:files``                  set     file keys of the export
``export:<id>:file:<file_key>``        string  :class:`FileRecord` JSON
``export:<id>:finished``               set     file keys that reached DONE or FAILED
``export:<id>:lease:<file_key>``       string  owner of the download lease (expires)
``idem:<idempotency_key>``             string  export id created for that key
``exports``                            zset    every export id, scored by creation time
``active``                             set     export ids not yet terminal (watchdog scans it)
``unannounced``                        zset    ended exports whose end was not yet reported, by end time
``events``                             stream  one entry per state change
``rate:<provider>:<credential>:<op>``  string  GCRA theoretical arrival time (ms); ``<op>`` is the budget name
``hold:<provider>:<credential>``       string  set after a provider 429, expires when it asked us to wait
``cache:<provider>:<what>``            string  a provider answer kept for a while, expires (impact.com: a
                                               report's MetaData per account, 1 h)
``stats:status``                       hash    number of exports in each status (metrics)
``export:<id>:records:<file_key>``     stream  rows of one file (``redis_stream`` sink), expires
``export:<id>:quarantine:<file_key>``  stream  bad rows of one file (``redis_stream`` sink)
``staging:<attempt>:records|quarantine``  stream  an uncommitted redis_stream attempt
``write:<id>``                         string  attempt number of a transaction's EXEC (minutes):
                                               settles an EXEC whose reply a failover lost
=====================================  ======  ================================================

Every change to a record goes through :meth:`ExportStore.transact`: WATCH the key, let a pure
function mutate a fresh copy, then MULTI/EXEC. A concurrent change aborts the EXEC and the function
runs again on the new state, so two workers can never both advance an export. A lost connection,
a demoted primary or a Sentinel failover is ridden out there too, and the writes callers rely on
wait for a replica: :mod:`worker.store.transactions`.
"""

from __future__ import annotations

from worker.store.base import EVENTS_MAXLEN, STORE_UNAVAILABLE, CorruptRecord
from worker.store.connection import RedisTarget, StoreUnavailable
from worker.store.events import EventsMixin
from worker.store.exports import ExportsMixin
from worker.store.files import FilesMixin
from worker.store.limits import LimitsMixin
from worker.store.streams import StreamsMixin


class ExportStore(ExportsMixin, FilesMixin, LimitsMixin, EventsMixin, StreamsMixin):
    """The whole store: one Redis client, one key prefix, every concern's operations."""


__all__ = ["EVENTS_MAXLEN", "STORE_UNAVAILABLE", "CorruptRecord", "ExportStore", "RedisTarget", "StoreUnavailable"]
