"""Retention: bounded PostgreSQL state on an endless stream.

What goes (everything else stays, whatever its age):

- sent outbox rows, `outbox_sent_hours` of wall clock after `sent_at` (the outbox is a
  delivery queue; the durable history is cluster_events). Unsent rows are never touched.
- retired and merged clusters, with their memberships (normally none: the engine removes
  members when a cluster ends) and their change events (cluster_events), once their scope's
  event time has moved `ended_cluster_days` past the point where the cluster ended.
- reconsolidation runs with their groups, `reconsolidation_days` of their scope's event time
  after the run.

Ages are in event time where users reason in it, against the scope's own clock (the newest
event time it holds: live clusters' last events, ended-cluster stamps, runs), so a replayed or
backfilled historic stream is pruned by its own clock, not the wall clock, and a scope that
receives nothing keeps what it has. A row written as a cluster ends carries no event time (the
engine has already forgotten the cluster), so each run first stamps newly ended clusters with
their scope's clock (`clusters.ended_event_time`): a cluster's end is known to within one run,
and it is kept at most that much longer, never shorter.

Live (candidate, active) clusters and their members are never selected. consumed_offsets,
engine_checkpoints, input_attempts and poisoned_records (the fence and the restart state) are
never touched; nothing a restart reads back is deleted (it reads only those tables), so a
checkpoint plus replay rebuilds exactly the same state after any retention run.

How it stays off the hot path: one run at a time (a session advisory lock taken with
pg_try_advisory_lock: a second worker's run, or a `clusterer retention` beside the service,
skips instead of waiting); every batch is its own short transaction over at most
`batch_rows` rows picked with FOR UPDATE SKIP LOCKED, so rows a batch commit holds are left
for the next run; lock_timeout keeps a batch from queueing behind a commit, and a batch that
times out ends that table's pass for this run (retried on the next) instead of becoming a
lock a commit could queue behind. A kill at any point leaves whole batches done and the rest
untouched: a rerun completes it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

LOCK_KEY = 0x5354_4735  # advisory lock: one retention run at a time (migrations use ...34)
TABLES = (
    "outbox",
    "clusters",
    "cluster_items",
    "cluster_events",
    "reconsolidation_runs",
    "reconsolidation_clusters",
)
ENDED = "('retired', 'merged')"
_GIVE_UP: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.QueryCanceledError,
)


class PolicyError(ValueError):
    pass


@dataclass(frozen=True)
class RetentionPolicy:
    outbox_sent_hours: float = 24.0
    ended_cluster_days: float = 30.0
    reconsolidation_days: float = 30.0
    batch_rows: int = 500
    pause_seconds: float = 0.01
    """between batches: leaves the database to the batch commits"""
    lock_timeout_ms: int = 200

    def __post_init__(self) -> None:
        for name in ("outbox_sent_hours", "ended_cluster_days", "reconsolidation_days"):
            v = getattr(self, name)
            if not v >= 0.0 or v == float("inf"):
                raise PolicyError(f"CLUSTERER_RETENTION_{name.upper()} must be >= 0 and finite")
        if not 1 <= self.batch_rows <= 100_000:
            raise PolicyError("CLUSTERER_RETENTION_BATCH_ROWS must be between 1 and 100000")
        if not 0.0 <= self.pause_seconds <= 60.0:
            raise PolicyError("CLUSTERER_RETENTION_PAUSE_SECONDS must be between 0 and 60")
        if not 1 <= self.lock_timeout_ms <= 60_000:
            raise PolicyError("CLUSTERER_RETENTION_LOCK_TIMEOUT_MS must be between 1 and 60000")

    @property
    def ended_cluster_seconds(self) -> float:
        return self.ended_cluster_days * 86400.0

    @property
    def reconsolidation_seconds(self) -> float:
        return self.reconsolidation_days * 86400.0


@dataclass
class RetentionReport:
    """One run: rows removed (or, dry run, that would be) per table."""

    dry_run: bool = False
    skipped: bool = False
    """another run held the lock; this one did nothing"""
    removed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    stamped: int = 0
    """ended clusters given their end time in this run"""
    interrupted: int = 0
    """batches given up on a lock (their rows wait for the next run)"""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "skipped": self.skipped,
            "removed": dict(self.removed),
            "stamped": self.stamped,
            "interrupted": self.interrupted,
            "seconds": round(self.seconds, 3),
        }


async def scope_clocks(conn: Any) -> dict[str, float]:
    """The newest event time each scope holds. Small scans: live clusters are bounded by the
    engine, ended clusters and runs by retention itself."""
    rows = await conn.fetch(
        "SELECT cluster_type, max(t) AS clock FROM ("
        " SELECT cluster_type, max(last_event_time) AS t FROM clusters"
        "  WHERE status IN ('candidate', 'active') GROUP BY cluster_type"
        f" UNION ALL SELECT cluster_type, max(ended_event_time) FROM clusters"
        f"  WHERE status IN {ENDED} GROUP BY cluster_type"
        " UNION ALL SELECT cluster_type, max(event_time) FROM reconsolidation_runs"
        "  GROUP BY cluster_type"
        ") s GROUP BY cluster_type"
    )
    return {r["cluster_type"]: float(r["clock"]) for r in rows if r["clock"] is not None}


async def run(
    conn: Any,
    policy: RetentionPolicy,
    dry_run: bool = False,
    on_batch: Callable[[str, int], None] | None = None,
) -> RetentionReport:
    """One retention run on this connection (it must not be inside a transaction). Returns
    at once with `skipped` when another run holds the lock."""
    t0 = time.perf_counter()
    report = RetentionReport(dry_run=dry_run)
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
        report.skipped = True
        return report
    try:
        clocks = await scope_clocks(conn)
        if dry_run:
            await _count(conn, policy, clocks, report)
        else:
            await _Pass(conn, policy, report, on_batch).all(clocks)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    report.seconds = time.perf_counter() - t0
    return report


class _Pass:
    def __init__(
        self,
        conn: Any,
        policy: RetentionPolicy,
        report: RetentionReport,
        on_batch: Callable[[str, int], None] | None,
    ) -> None:
        self.conn = conn
        self.p = policy
        self.report = report
        self.on_batch = on_batch

    async def all(self, clocks: dict[str, float]) -> None:
        for scope, clock in sorted(clocks.items()):
            await self._loop("stamp", functools.partial(self._stamp, scope, clock))
        await self._loop("outbox", self._outbox)
        for scope, clock in sorted(clocks.items()):
            cut = clock - self.p.ended_cluster_seconds
            await self._loop("clusters", functools.partial(self._clusters, scope, cut))
            cut = clock - self.p.reconsolidation_seconds
            await self._loop("runs", functools.partial(self._runs, scope, cut))

    async def _loop(self, what: str, batch: Callable[[], Awaitable[int]]) -> None:
        """Batches until one comes back short; a batch that meets a lock ends the pass."""
        while True:
            try:
                async with self.conn.transaction():
                    # synchronous_commit off: no WAL flush per batch to compete with the
                    # batch commits' own; a crash may forget the last batches, which the next
                    # run simply deletes again (each batch is still atomic)
                    await self.conn.execute(
                        f"SET LOCAL lock_timeout = {int(self.p.lock_timeout_ms)};"
                        " SET LOCAL statement_timeout = 60000; SET LOCAL synchronous_commit = off"
                    )
                    n = int(await batch())
            except _GIVE_UP as exc:
                self.report.interrupted += 1
                log.info("retention: %s batch gave way to a lock (%s); next run", what, exc)
                return
            if self.on_batch is not None:
                self.on_batch(what, n)
            if n < self.p.batch_rows:
                return
            if self.p.pause_seconds:
                await asyncio.sleep(self.p.pause_seconds)

    def _add(self, table: str, status: str) -> int:
        # asyncpg returns the command tag: "DELETE 12"
        n = int(status.rsplit(" ", 1)[-1])
        self.report.removed[table] += n
        return n

    async def _stamp(self, scope: str, clock: float) -> int:
        status = await self.conn.execute(
            "UPDATE clusters SET ended_event_time = $2 WHERE id IN (SELECT id FROM clusters"
            f" WHERE cluster_type = $1 AND status IN {ENDED} AND ended_event_time IS NULL"
            " LIMIT $3 FOR UPDATE SKIP LOCKED)",
            scope,
            clock,
            self.p.batch_rows,
        )
        n = int(status.rsplit(" ", 1)[-1])
        self.report.stamped += n
        return n

    async def _outbox(self) -> int:
        status = await self.conn.execute(
            "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE sent_at IS NOT NULL"
            " AND sent_at <= now() - make_interval(secs => $1) ORDER BY sent_at LIMIT $2"
            " FOR UPDATE SKIP LOCKED)",
            self.p.outbox_sent_hours * 3600.0,
            self.p.batch_rows,
        )
        return self._add("outbox", status)

    async def _batch_ids(self, query: str, scope: str, cutoff: float) -> list[Any]:
        """The ids of the next batch (`query` selects id by scope $1 and cutoff $2, oldest
        first), locked; rows another transaction holds are skipped, left for the next run."""
        rows = await self.conn.fetch(
            f"{query} LIMIT $3 FOR UPDATE SKIP LOCKED", scope, cutoff, self.p.batch_rows
        )
        return [r["id"] for r in rows]

    async def _clusters(self, scope: str, cutoff: float) -> int:
        ids = await self._batch_ids(
            "SELECT id FROM clusters WHERE cluster_type = $1"
            f" AND status IN {ENDED} AND ended_event_time <= $2 ORDER BY ended_event_time",
            scope,
            cutoff,
        )
        if not ids:
            return 0
        self._add(
            "cluster_events",
            await self.conn.execute(
                "DELETE FROM cluster_events WHERE cluster_id = ANY($1::text[])", ids
            ),
        )
        # the FK would cascade these; deleted here so they are counted (normally none: the
        # engine removes a cluster's members as it ends)
        self._add(
            "cluster_items",
            await self.conn.execute(
                "DELETE FROM cluster_items WHERE cluster_id = ANY($1::text[])"
                " AND cluster_type = $2",
                ids,
                scope,
            ),
        )
        # the status is checked again under the row lock
        return self._add(
            "clusters",
            await self.conn.execute(
                f"DELETE FROM clusters WHERE id = ANY($1::text[]) AND status IN {ENDED}", ids
            ),
        )

    async def _runs(self, scope: str, cutoff: float) -> int:
        ids = await self._batch_ids(
            "SELECT id FROM reconsolidation_runs WHERE cluster_type = $1 AND event_time <= $2"
            " ORDER BY event_time",
            scope,
            cutoff,
        )
        if not ids:
            return 0
        self._add(
            "reconsolidation_clusters",
            await self.conn.execute(
                "DELETE FROM reconsolidation_clusters WHERE run_id = ANY($1::bigint[])", ids
            ),
        )
        return self._add(
            "reconsolidation_runs",
            await self.conn.execute(
                "DELETE FROM reconsolidation_runs WHERE id = ANY($1::bigint[])", ids
            ),
        )


async def _count(
    conn: Any, policy: RetentionPolicy, clocks: dict[str, float], report: RetentionReport
) -> None:
    """What a run would remove now, changing nothing (unstamped ended clusters count as ended
    at the scope's clock, as the run would stamp them)."""
    r = report.removed
    r["outbox"] = int(
        await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL"
            " AND sent_at <= now() - make_interval(secs => $1)",
            policy.outbox_sent_hours * 3600.0,
        )
    )
    for scope, clock in sorted(clocks.items()):
        row = await conn.fetchrow(
            "WITH doomed AS (SELECT id FROM clusters WHERE cluster_type = $1"
            f" AND status IN {ENDED} AND coalesce(ended_event_time, $2) <= $3)"
            " SELECT (SELECT count(*) FROM doomed) AS clusters,"
            " (SELECT count(*) FROM cluster_events e JOIN doomed d ON e.cluster_id = d.id)"
            " AS events, (SELECT count(*) FROM cluster_items i JOIN doomed d"
            " ON i.cluster_id = d.id AND i.cluster_type = $1) AS items",
            scope,
            clock,
            clock - policy.ended_cluster_seconds,
        )
        r["clusters"] += int(row["clusters"])
        r["cluster_events"] += int(row["events"])
        r["cluster_items"] += int(row["items"])
        row = await conn.fetchrow(
            "WITH doomed AS (SELECT id FROM reconsolidation_runs WHERE cluster_type = $1"
            " AND event_time <= $2) SELECT (SELECT count(*) FROM doomed) AS runs,"
            " (SELECT count(*) FROM reconsolidation_clusters g JOIN doomed d"
            " ON g.run_id = d.id) AS groups",
            scope,
            clock - policy.reconsolidation_seconds,
        )
        r["reconsolidation_runs"] += int(row["runs"])
        r["reconsolidation_clusters"] += int(row["groups"])
    report.stamped = 0


@dataclass(frozen=True)
class TableStats:
    rows: int
    bytes: int
    """table, indexes and TOAST (pg_total_relation_size)"""
    oldest_age_seconds: float | None
    """age of the oldest row retention may remove (None: nothing such is held, or the table
    is not aged): wall clock since sent_at for the outbox, event time of the row's scope for
    the others"""


async def table_stats(db: Any) -> dict[str, TableStats]:
    """Sizes and ages of the tables retention bounds, for metrics and GET /statistics. `db`:
    an asyncpg Pool or Connection. Counts are exact (the tables are bounded by retention)."""
    clocks = await scope_clocks(db)
    sizes = await db.fetch(
        "SELECT c.relname, pg_total_relation_size(c.oid) AS bytes FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relname = ANY($1::text[])",
        list(TABLES),
    )
    by_name = {r["relname"]: int(r["bytes"]) for r in sizes}
    counts = await db.fetchrow(
        "SELECT " + ", ".join(f"(SELECT count(*) FROM {t}) AS {t}" for t in TABLES)
    )

    async def oldest_by_scope(query: str) -> float | None:
        ages = [
            clocks[r["cluster_type"]] - float(r["t"])
            for r in await db.fetch(query)
            if r["t"] is not None and r["cluster_type"] in clocks
        ]
        return max(ages) if ages else None

    outbox_age = await db.fetchval(
        "SELECT extract(epoch FROM now() - min(sent_at))::float8 FROM outbox"
        " WHERE sent_at IS NOT NULL"
    )
    ages: dict[str, float | None] = {
        "outbox": None if outbox_age is None else max(float(outbox_age), 0.0),
        "clusters": await oldest_by_scope(
            "SELECT cluster_type, min(ended_event_time) AS t FROM clusters"
            f" WHERE status IN {ENDED} GROUP BY cluster_type"
        ),
        "cluster_events": await oldest_by_scope(
            "SELECT cluster_type, min(event_time) AS t FROM cluster_events GROUP BY cluster_type"
        ),
        "reconsolidation_runs": await oldest_by_scope(
            "SELECT cluster_type, min(event_time) AS t FROM reconsolidation_runs"
            " GROUP BY cluster_type"
        ),
    }
    return {t: TableStats(int(counts[t]), by_name.get(t, 0), ages.get(t)) for t in TABLES}
