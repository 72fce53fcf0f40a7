"""Everything that touches Redis, behind :class:`ExportStore`; the only package that imports ``redis``.

One module per concern (connection and server checks, transactions through a failover, exports,
files, leases and rate limits, events, sink streams, retention, the watchdog's indexes); this
docstring is the one place the key map lives.

Keys (all under ``<prefix>:``, default prefix ``aew``). *Retention* is what bounds each key: ``R``
is ``EXPORT_WORKER_RETENTION_SECONDS``, set on every key of an export by the EXEC that ends it and
removed (PERSIST) by the EXEC that reopens it; ``≤ R`` keys carry a bound of their own that the end
only ever shortens to R (``EXPIRE … LT``).

=========================================  ======  =============================================  ===========================
key                                        type    content                                        retention
=========================================  ======  =============================================  ===========================
``export:<id>``                            string  :class:`ExportRecord` JSON (jobs included)     R after the end
``export:<id>:files``                      set     file keys of the export                        R after the end
``export:<id>:file:<file_key>``            string  :class:`FileRecord` JSON                       R after the end
``export:<id>:finished``                   set     file keys that reached DONE or FAILED          R after the end
``export:<id>:events``                     stream  the export's own events                        R after the end
``export:<id>:lease:<file_key>``           string  owner of the download lease                    lease seconds, ≤ R
``export:<id>:records:<file_key>``         stream  rows of one file (``redis_stream`` sink)        sink TTL, ≤ R
``export:<id>:quarantine:<file_key>``      stream  bad rows of one file (``redis_stream`` sink)    sink TTL, ≤ R
``idem:<idempotency_key>``                 string  export id created for that key                 R after the end
``exports``                                zset    export ids, scored by creation time            id dropped once forgotten
``ended``                                  zset    ended exports, scored by end time              id dropped once forgotten
``unannounced``                            zset    ended exports whose end was not yet reported,  id dropped when reported
                                                   by end time                                    or forgotten
``active``                                 set     export ids not yet terminal                    id dropped at the end
``watch``                                  zset    live exports, scored by when their earliest    id dropped at the end
                                                   chain was due (the watchdog's next look)
``deadlines``                              zset    live exports, scored by deadline               id dropped at the end
``sweep``                                  string  the retention sweep's ZSCAN cursor on          one key
                                                   ``exports``
``events``                                 stream  one entry per state change                     ≤ 100,000 entries, ≤ R
``rate:<provider>:<credential>:<op>``      string  GCRA theoretical arrival time (ms); ``<op>``   expires with the budget
                                                   is the budget name
``hold:<provider>:<credential>``           string  set after a provider 429                       expires when it asked us
                                                                                                  to wait
``cache:<provider>:<what>``                string  a provider answer kept for a while             expires (impact.com: a
                                                   (impact.com: a report's MetaData per account)  report's MetaData, 1 h)
``ended_status``                           hash    ended export id -> its status, so forgetting   id dropped once forgotten
                                                   it can uncount it from ``stats:status``
``stats:status``                           hash    number of exports in each status (metrics),    one field per status
                                                   ended ones while they are kept
``stats:schedule_success``                 hash    schedule name -> when its last export          one field per schedule
                                                   completed (metrics)
``staging:<attempt>:records|quarantine``   stream  an uncommitted ``redis_stream`` attempt        sink TTL, ≤ R
``write:<id>``                             string  attempt number of a transaction's EXEC: it     a few minutes
                                                   settles an EXEC whose reply a failover lost
=========================================  ======  =============================================  ===========================

Every change to a record goes through :meth:`ExportStore.transact`: WATCH the key, let a pure
function mutate a fresh copy, then MULTI/EXEC. A concurrent change aborts the EXEC and the function
runs again on the new state, so two workers can never both advance an export. A lost connection,
a demoted primary or a Sentinel failover is ridden out there too, and the writes callers rely on
wait for a replica: :mod:`worker.store.transactions`.
"""

from __future__ import annotations

from worker.store.base import DEFAULT_RETENTION_SECONDS, EVENTS_MAXLEN, STORE_UNAVAILABLE, CorruptRecord
from worker.store.connection import RedisTarget, StoreUnavailable
from worker.store.events import EventsMixin
from worker.store.exports import ExportsMixin
from worker.store.files import FilesMixin
from worker.store.limits import LimitsMixin
from worker.store.queries import QueriesMixin
from worker.store.retention import SweepReport
from worker.store.schedule_stats import ScheduleStatsMixin
from worker.store.streams import StreamsMixin
from worker.store.watch import WatchMixin


class ExportStore(ExportsMixin, FilesMixin, LimitsMixin, EventsMixin, StreamsMixin, QueriesMixin, WatchMixin, ScheduleStatsMixin):
    """The whole store: one Redis client, one key prefix, every concern's operations."""


__all__ = [
    "DEFAULT_RETENTION_SECONDS",
    "EVENTS_MAXLEN",
    "STORE_UNAVAILABLE",
    "CorruptRecord",
    "ExportStore",
    "RedisTarget",
    "StoreUnavailable",
    "SweepReport",
]
