"""PostgreSQL through asyncpg: migrations, the one-transaction batch commit, and the reads a
restart, a cache rebuild or a data-protection request needs."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from schemas.errors import ClustererError
from schemas.outputs import ReconsolidationRecord

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_LOCK_KEY = 0x5354_4734  # advisory lock: one migrator at a time

# what an unreachable or restarting database raises; callers retry on these
DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,  # a connection left mid-operation by an outage
    TimeoutError,
)


def migration_files() -> list[tuple[int, str, Path]]:
    out = []
    for path in sorted(MIGRATIONS.glob("*.sql")):
        number, _, name = path.stem.partition("_")
        out.append((int(number), name, path))
    return out


async def migrate(dsn: str) -> list[str]:
    """Apply the migrations not applied yet, each in its own transaction; returns their names.
    Safe to run from several processes at once (advisory lock)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for version, name, path in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            applied.append(f"{version:03d}_{name}")
            log.info("applied migration %03d_%s", version, name)
        return applied
    finally:
        await conn.close()


@dataclass
class PartitionState:
    """What a worker needs to take over one input partition."""

    checkpoint: bytes | None = None
    checkpoint_offset: int | None = None
    next_offset: int | None = None
    published_offset: int | None = None
    poisoned: set[int] = field(default_factory=set)
    """offsets dead-lettered as poison at or after the checkpoint: a replay skips them"""


ClusterRow = tuple[
    str,
    str,
    str,
    int,
    float,
    str | None,
    str | None,
    str | None,
    float | None,
    float | None,
    str | None,
    bytes | None,
]
"""id, scope, status, size, weight, label, medoid, summary (state.results.summary_json), first
and last event time, embedding type, centroid (float32 LE). For a cluster that ended, the
None fields keep what the row held: its last summary, span and centroid stay readable."""
EventRow = tuple[str, str, str, str, list[str], float, int, str]
"""cluster_events: event id, cluster id, scope, kind, related ids, event time, sequence,
the ChangeEvent JSON."""
ItemRow = tuple[str, str, str, str, str | None, float | None, float | None]
OutboxRow = tuple[str, str, bytes | None, bytes, str]


@dataclass(frozen=True)
class OffsetRow:
    """One partition's offsets as a batch commit writes them (`consumed_offsets`)."""

    topic: str
    partition: int
    next_offset: int
    """the first record whose effects are not in this commit"""
    published: int
    """records below it have their outputs published; the stored value never goes back"""
    expected: int | None
    """the next offset the writer believes is stored now (None: no row yet); the fence: the
    commit only goes through if that belief holds"""


class Fenced(ClustererError):
    """Another worker advanced a partition since this one loaded it: this worker's state for
    that partition is stale (a zombie after a rebalance it has not seen yet). Its batch is
    rolled back whole; it must reload the partition from Postgres, never retry the batch."""

    def __init__(self, topic: str, partition: int, expected: int | None) -> None:
        super().__init__(
            f"{topic}[{partition}]: stored offset is no longer {expected}; another worker"
            " committed this partition"
        )
        self.topic = topic
        self.partition = partition


@dataclass
class BatchWrite:
    """Everything one micro-batch changed, written in one transaction with its offsets."""

    group: str
    clusters: list[ClusterRow] = field(default_factory=list)
    items: list[ItemRow] = field(default_factory=list)
    removed: list[tuple[str, str, str]] = field(default_factory=list)
    outbox: list[OutboxRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    runs: list[ReconsolidationRecord] = field(default_factory=list)
    offsets: list[OffsetRow] = field(default_factory=list)
    checkpoints: list[tuple[str, int, int, bytes]] = field(default_factory=list)
    sent_event_ids: list[str] = field(default_factory=list)
    poisoned: list[tuple[str, int, int]] = field(default_factory=list)
    """(topic, partition, offset) of records dead-lettered as poison in this batch"""


class Store:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def connect(cls, dsn: str, min_size: int = 1, max_size: int = 4) -> Store:
        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size)
        assert pool is not None
        return cls(pool)

    async def close(self) -> None:
        await self.pool.close()

    async def ping(self) -> bool:
        try:
            async with self.pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1", timeout=2)
            return True
        except DB_ERRORS:
            return False

    # ------------------------------------------------------------------ takeover
    async def load_partition(self, group: str, topic: str, partition: int) -> PartitionState:
        async with self.pool.acquire() as conn:
            ck = await conn.fetchrow(
                "SELECT next_offset, state FROM engine_checkpoints"
                " WHERE consumer_group=$1 AND topic=$2 AND partition=$3",
                group,
                topic,
                partition,
            )
            off = await conn.fetchrow(
                "SELECT next_offset, published_offset FROM consumed_offsets"
                " WHERE consumer_group=$1 AND topic=$2 AND partition=$3",
                group,
                topic,
                partition,
            )
            poisoned = await conn.fetch(
                "SELECT record_offset FROM poisoned_records WHERE consumer_group=$1 AND"
                " topic=$2 AND partition=$3 AND record_offset >= $4",
                group,
                topic,
                partition,
                int(ck["next_offset"]) if ck is not None else 0,
            )
        st = PartitionState(poisoned={int(r["record_offset"]) for r in poisoned})
        if ck is not None:
            st.checkpoint, st.checkpoint_offset = bytes(ck["state"]), int(ck["next_offset"])
        if off is not None:
            st.next_offset = int(off["next_offset"])
            st.published_offset = int(off["published_offset"])
        return st

    # ------------------------------------------------------------------ the batch commit
    async def commit(self, b: BatchWrite) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            # first: the fence takes the partitions' row locks, so a rival writer waits here
            # and then finds the offset moved, before either writes anything else
            await self._advance_offsets(conn, b.group, b.offsets)
            if b.sent_event_ids:
                await conn.execute(
                    "UPDATE outbox SET sent_at = now() WHERE event_id = ANY($1::text[])"
                    " AND sent_at IS NULL",
                    b.sent_event_ids,
                )
            if b.clusters:
                await self._upsert_clusters(conn, b.clusters)
            if b.items:
                await self._upsert_items(conn, b.items)
            if b.removed:
                ct, it, ii = (list(c) for c in zip(*b.removed, strict=True))
                await conn.execute(
                    "DELETE FROM cluster_items c USING unnest($1::text[], $2::text[], $3::text[])"
                    " AS r(cluster_type, item_type, item_id) WHERE c.cluster_type = r.cluster_type"
                    " AND c.item_type = r.item_type AND c.item_id = r.item_id",
                    ct,
                    it,
                    ii,
                )
            if b.outbox:
                await conn.executemany(
                    "INSERT INTO outbox (event_id, topic, key, payload, headers)"
                    " VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (event_id) DO NOTHING",
                    b.outbox,
                )
            if b.poisoned:
                await conn.executemany(
                    "INSERT INTO poisoned_records (consumer_group, topic, partition,"
                    " record_offset) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    [(b.group, t, p, o) for t, p, o in b.poisoned],
                )
            if b.events:
                await conn.executemany(
                    "INSERT INTO cluster_events (event_id, cluster_id, cluster_type, kind,"
                    " related_ids, event_time, sequence, payload) VALUES ($1, $2, $3, $4, $5,"
                    " $6, $7, $8::jsonb) ON CONFLICT (event_id) DO NOTHING",
                    b.events,
                )
            for run in b.runs:
                await self._insert_run(conn, run)
            if b.checkpoints:
                await conn.executemany(
                    "INSERT INTO engine_checkpoints (consumer_group, topic, partition, next_offset,"
                    " state) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (consumer_group, topic,"
                    " partition) DO UPDATE SET next_offset = EXCLUDED.next_offset,"
                    " state = EXCLUDED.state, created_at = now()",
                    [(b.group, t, p, n, s) for t, p, n, s in b.checkpoints],
                )

    @staticmethod
    async def _advance_offsets(conn: Any, group: str, offsets: list[OffsetRow]) -> None:
        """Compare-and-set per partition (in partition order, so two writers lock in the same
        order): the stored next offset must still be the one this writer started from."""
        for o in sorted(offsets, key=lambda o: (o.topic, o.partition)):
            if o.expected is None:
                ok = await conn.fetchval(
                    "INSERT INTO consumed_offsets (consumer_group, topic, partition,"
                    " next_offset, published_offset) VALUES ($1, $2, $3, $4, $5)"
                    " ON CONFLICT (consumer_group, topic, partition) DO NOTHING RETURNING 1",
                    group,
                    o.topic,
                    o.partition,
                    o.next_offset,
                    o.published,
                )
            else:
                ok = await conn.fetchval(
                    "UPDATE consumed_offsets SET next_offset = $4,"
                    " published_offset = GREATEST(published_offset, $5), updated_at = now()"
                    " WHERE consumer_group = $1 AND topic = $2 AND partition = $3"
                    " AND next_offset = $6 RETURNING 1",
                    group,
                    o.topic,
                    o.partition,
                    o.next_offset,
                    o.published,
                    o.expected,
                )
            if ok is None:
                raise Fenced(o.topic, o.partition, o.expected)

    @staticmethod
    async def _upsert_clusters(conn: Any, rows: list[ClusterRow]) -> None:
        """One statement over column arrays (unnest): one round trip, where COPY into a
        staging table and the INSERT from it took three; in the small batches of a lightly
        loaded stream the round trips, not the rows, were the commit's cost."""
        cols = list(zip(*rows, strict=True))
        await conn.execute(
            "INSERT INTO clusters AS c (id, cluster_type, status, size, weight, label,"
            " medoid_item_id, summary, first_event_time, last_event_time, embedding_type,"
            " centroid)"
            " SELECT id, cluster_type, status, size, weight, label, medoid_item_id,"
            " summary::jsonb, first_event_time, last_event_time, embedding_type, centroid"
            " FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::float8[],"
            " $6::text[], $7::text[], $8::text[], $9::float8[], $10::float8[], $11::text[],"
            " $12::bytea[]) AS r(id, cluster_type, status, size, weight, label,"
            " medoid_item_id, summary, first_event_time, last_event_time, embedding_type,"
            " centroid)"
            " ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, size = EXCLUDED.size,"
            " weight = EXCLUDED.weight, label = COALESCE(EXCLUDED.label, c.label),"
            " medoid_item_id = COALESCE(EXCLUDED.medoid_item_id, c.medoid_item_id),"
            " summary = COALESCE(EXCLUDED.summary, c.summary),"
            " first_event_time = COALESCE(EXCLUDED.first_event_time, c.first_event_time),"
            " last_event_time = COALESCE(EXCLUDED.last_event_time, c.last_event_time),"
            " embedding_type = COALESCE(EXCLUDED.embedding_type, c.embedding_type),"
            " centroid = COALESCE(EXCLUDED.centroid, c.centroid), updated_at = now()",
            *(list(c) for c in cols),
        )

    @staticmethod
    async def _upsert_items(conn: Any, rows: list[ItemRow]) -> None:
        cols = list(zip(*rows, strict=True))
        await conn.execute(
            "INSERT INTO cluster_items AS c (cluster_id, cluster_type, item_type, item_id,"
            " document_id, similarity, event_time) SELECT * FROM unnest($1::text[],"
            " $2::text[], $3::text[], $4::text[], $5::text[], $6::float8[], $7::float8[])"
            " ON CONFLICT (cluster_type, item_type, item_id) DO UPDATE SET"
            " cluster_id = EXCLUDED.cluster_id, document_id = EXCLUDED.document_id,"
            " similarity = COALESCE(EXCLUDED.similarity, c.similarity),"
            " event_time = EXCLUDED.event_time",
            *(list(c) for c in cols),
        )

    async def _insert_run(self, conn: Any, run: ReconsolidationRecord) -> None:
        run_id = await conn.fetchval(
            "INSERT INTO reconsolidation_runs (cluster_type, sequence, trigger, event_time,"
            " parameters, input_clusters, input_points, clusters_found, outliers, skipped,"
            " transitions) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11::jsonb)"
            " ON CONFLICT (cluster_type, sequence, trigger) DO NOTHING RETURNING id",
            run.scope,
            run.sequence,
            run.trigger,
            run.event_time,
            json.dumps(run.parameters),
            run.input_clusters,
            run.input_points,
            run.clusters_found,
            run.outliers,
            run.skipped,
            json.dumps(run.transitions),
        )
        if run_id is None or not run.groups:
            return
        await conn.executemany(
            "INSERT INTO reconsolidation_clusters (run_id, label, size, medoid_item_id,"
            " medoid_item_ref, mean_similarity, cluster_ids) VALUES ($1, $2, $3, $4,"
            " (SELECT id FROM cluster_items WHERE cluster_type = $7 AND item_type = $8"
            " AND item_id = $4),"
            " $5, $6)",
            [
                (
                    run_id,
                    g.label,
                    g.size,
                    g.medoid_id,
                    g.mean_intra_similarity,
                    g.cluster_ids,
                    run.scope,
                    run.scope.split("/", 1)[0],  # the item type is the scope's embedding type
                )
                for g in run.groups
            ],
        )

    # ------------------------------------------------------------------ crash-loop guard
    async def record_attempts(
        self, group: str, spans: Sequence[tuple[str, int, int, int]]
    ) -> dict[tuple[str, int], tuple[int, int]]:
        """One attempt per (topic, partition, first offset, last offset): returns the
        attempts at that first offset and the highest offset ever attempted, per partition.
        Not fsynced (a lost count costs one more attempt, not correctness)."""
        topics, parts, firsts, lasts = (list(c) for c in zip(*spans, strict=True))
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit TO off")
            rows = await conn.fetch(
                "INSERT INTO input_attempts AS a (consumer_group, topic, partition,"
                " first_offset, attempts, suspect_until)"
                " SELECT $1, t, p, f, 1, l FROM unnest($2::text[], $3::int[], $4::bigint[],"
                " $5::bigint[]) AS r(t, p, f, l)"
                " ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET"
                " attempts = CASE WHEN a.first_offset = EXCLUDED.first_offset"
                " THEN a.attempts + 1 ELSE 1 END, first_offset = EXCLUDED.first_offset,"
                " suspect_until = GREATEST(a.suspect_until, EXCLUDED.suspect_until),"
                " updated_at = now() RETURNING topic, partition, attempts, suspect_until",
                group,
                topics,
                parts,
                firsts,
                lasts,
            )
        return {
            (r["topic"], r["partition"]): (int(r["attempts"]), int(r["suspect_until"]))
            for r in rows
        }

    async def withdraw_attempts(
        self, group: str, spans: Sequence[tuple[str, int, int]]
    ) -> None:
        """Take back one attempt per (topic, partition, first offset) where that is still the
        partition's attempt: a failure the process handled (an aborted transaction, a fenced
        commit) is not an attempt of those records, whoever reads them next."""
        topics, parts, firsts = (list(c) for c in zip(*spans, strict=True))
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit TO off")
            await conn.execute(
                "UPDATE input_attempts AS a SET attempts = a.attempts - 1, updated_at = now()"
                " FROM unnest($2::text[], $3::int[], $4::bigint[]) AS r(t, p, f)"
                " WHERE a.consumer_group = $1 AND a.topic = r.t AND a.partition = r.p"
                " AND a.first_offset = r.f AND a.attempts > 0",
                group,
                topics,
                parts,
                firsts,
            )

    # ------------------------------------------------------------------ outbox relay
    async def unsent(self, limit: int = 10_000) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(
                "SELECT event_id, topic, key, payload, headers FROM outbox"
                " WHERE sent_at IS NULL ORDER BY seq LIMIT $1",
                limit,
            )
            return rows

    async def mark_sent(self, event_ids: Sequence[str]) -> None:
        if not event_ids:
            return
        async with self.pool.acquire() as conn:
            await conn.execute(
                "UPDATE outbox SET sent_at = now() WHERE event_id = ANY($1::text[])",
                list(event_ids),
            )

    # ------------------------------------------------------------------ reads
    async def items_of_document(self, document_id: str) -> list[tuple[str, str, str]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT cluster_type, item_type, item_id FROM cluster_items"
                " WHERE document_id = $1 ORDER BY cluster_type, item_id",
                document_id,
            )
        return [(r["cluster_type"], r["item_type"], r["item_id"]) for r in rows]

    async def memberships(self, chunk: int = 50_000) -> AsyncIterator[list[tuple[str, str, str]]]:
        """(cluster_type, item_id, cluster_id) in chunks, for rebuilding the cache."""
        async with self.pool.acquire() as conn, conn.transaction():
            cur = conn.cursor("SELECT cluster_type, item_id, cluster_id FROM cluster_items")
            buf: list[tuple[str, str, str]] = []
            async for r in cur:
                buf.append((r["cluster_type"], r["item_id"], r["cluster_id"]))
                if len(buf) >= chunk:
                    yield buf
                    buf = []
            if buf:
                yield buf

    async def live_cluster_summaries(self) -> list[tuple[str, str]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id, summary::text AS s FROM clusters"
                " WHERE status IN ('candidate', 'active') AND summary IS NOT NULL"
            )
        return [(r["id"], r["s"]) for r in rows]
