"""Retention against the real PostgreSQL (dev/services.sh): exactly what the policy names goes,
nothing live, never the fence; dry runs change nothing; a kill mid-run loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

import asyncpg

from state.retention import RetentionPolicy, run, table_stats
from tests.conftest import ROOT, wait_until

DAY = 86400.0
POLICY = RetentionPolicy(outbox_sent_hours=24, ended_cluster_days=30, reconsolidation_days=30)


def sql(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            rows: list[asyncpg.Record] = await conn.fetch(query, *args)
            return rows
        finally:
            await conn.close()

    return asyncio.run(go())


def retention(dsn: str, policy: RetentionPolicy = POLICY, dry_run: bool = False) -> Any:
    async def go() -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            return await run(conn, policy, dry_run)
        finally:
            await conn.close()

    return asyncio.run(go())


async def _cluster(
    conn: Any,
    cid: str,
    scope: str,
    status: str,
    last: float | None,
    ended: float | None = None,
    members: int = 0,
) -> None:
    await conn.execute(
        "INSERT INTO clusters (id, cluster_type, status, size, weight, first_event_time,"
        " last_event_time, ended_event_time) VALUES ($1, $2, $3, $4, 1.0, $5, $5, $6)",
        cid,
        scope,
        status,
        members,
        last,
        ended,
    )
    for i in range(members):
        await conn.execute(
            "INSERT INTO cluster_items (cluster_id, cluster_type, item_type, item_id,"
            " document_id, event_time) VALUES ($1, $2, 'document', $3, $4, $5)",
            cid,
            scope,
            f"{cid}-i{i}",
            f"doc-{cid}-{i}",
            last,
        )
    await conn.execute(
        "INSERT INTO cluster_events (event_id, cluster_id, cluster_type, kind, event_time,"
        " sequence, payload) VALUES ($1, $2, $3, 'created', $4, 1, '{}')",
        f"ev-{cid}",
        cid,
        scope,
        last if last is not None else (ended or 0.0),
    )


async def _run_row(conn: Any, scope: str, seq: int, t: float, medoid: str | None) -> None:
    run_id = await conn.fetchval(
        "INSERT INTO reconsolidation_runs (cluster_type, sequence, trigger, event_time,"
        " parameters, input_clusters, input_points, clusters_found, outliers, transitions)"
        " VALUES ($1, $2, 'periodic', $3, '{}', 1, 1, 1, 0, '[]') RETURNING id",
        scope,
        seq,
        t,
    )
    await conn.execute(
        "INSERT INTO reconsolidation_clusters (run_id, label, size, medoid_item_id,"
        " medoid_item_ref, cluster_ids) VALUES ($1, 0, 1, $2,"
        " (SELECT id FROM cluster_items WHERE item_id = $2), '{}')",
        run_id,
        medoid,
    )


def seed(dsn: str) -> None:
    """Scope a is at day 1000; scope b is a historic backfill whose clock is at day 10."""

    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await _cluster(conn, "a-live", "a", "active", 1000 * DAY, members=3)
            await _cluster(conn, "a-old-live", "a", "candidate", 1 * DAY, members=2)  # stays
            await _cluster(conn, "a-ret-old", "a", "retired", None, 900 * DAY, members=1)
            await _cluster(conn, "a-mer-old", "a", "merged", None, 965 * DAY)
            await _cluster(conn, "a-ret-young", "a", "retired", None, 990 * DAY)
            await _cluster(conn, "a-ret-unstamped", "a", "retired", None, None)
            await _cluster(conn, "b-live", "b", "active", 10 * DAY, members=1)
            await _cluster(conn, "b-ret-young", "b", "retired", None, 5 * DAY)
            await _cluster(conn, "b-ret-old", "b", "merged", None, -30 * DAY)
            await _run_row(conn, "a", 1, 950 * DAY, "a-live-i0")
            await _run_row(conn, "a", 2, 990 * DAY, "a-live-i1")
            await _run_row(conn, "b", 1, 9 * DAY, "b-live-i0")
            await _run_row(conn, "b", 2, -25 * DAY, "a-ret-old-i0")
            await conn.execute(
                "INSERT INTO outbox (event_id, topic, payload, created_at, sent_at) VALUES"
                " ('o-sent-old', 't', 'x', now() - interval '3 days', now() - interval '2 days'),"
                " ('o-sent-new', 't', 'x', now() - interval '3 days', now() - interval '1 hour'),"
                " ('o-unsent-old', 't', 'x', now() - interval '10 days', NULL)"
            )
            await conn.execute(
                "INSERT INTO consumed_offsets VALUES ('g', 't', 0, 10, 10, now() - interval"
                " '400 days')"
            )
            await conn.execute(
                "INSERT INTO engine_checkpoints VALUES ('g', 't', 0, 5, 'state',"
                " now() - interval '400 days')"
            )
        finally:
            await conn.close()

    asyncio.run(go())


def dump(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for table, order in (
        ("clusters", "id"),
        ("cluster_items", "item_id"),
        ("cluster_events", "event_id"),
        ("outbox", "event_id"),
        ("reconsolidation_runs", "cluster_type, sequence"),
        ("reconsolidation_clusters", "run_id"),
        ("consumed_offsets", "partition"),
        ("engine_checkpoints", "partition"),
    ):
        out[table] = [tuple(r) for r in sql(dsn, f"SELECT * FROM {table} ORDER BY {order}")]
    return out


def ids(dsn: str, query: str) -> set[str]:
    return {r[0] for r in sql(dsn, query)}


def test_removes_exactly_what_the_policy_names(fresh_database: tuple[str, str]) -> None:
    _, dsn = fresh_database
    seed(dsn)
    fence = {t: dump(dsn)[t] for t in ("consumed_offsets", "engine_checkpoints")}
    report = retention(dsn)
    assert not report.skipped
    assert ids(dsn, "SELECT id FROM clusters") == {
        "a-live",
        "a-old-live",  # live, whatever its age
        "a-ret-young",
        "a-ret-unstamped",  # ended now: stamped with the scope's clock
        "b-live",
        "b-ret-young",  # 5 days old by its own (historic) clock
    }
    assert ids(dsn, "SELECT item_id FROM cluster_items") == {
        "a-live-i0",
        "a-live-i1",
        "a-live-i2",
        "a-old-live-i0",
        "a-old-live-i1",
        "b-live-i0",
    }
    assert ids(dsn, "SELECT cluster_id FROM cluster_events") == ids(dsn, "SELECT id FROM clusters")
    assert ids(dsn, "SELECT event_id FROM outbox") == {"o-sent-new", "o-unsent-old"}
    assert {
        (r[0], r[1]) for r in sql(dsn, "SELECT cluster_type, sequence FROM reconsolidation_runs")
    } == {("a", 2), ("b", 1)}
    groups = sql(
        dsn,
        "SELECT g.medoid_item_id, i.item_id FROM reconsolidation_clusters g"
        " LEFT JOIN cluster_items i ON i.id = g.medoid_item_ref ORDER BY 1",
    )
    assert [tuple(r) for r in groups] == [("a-live-i1", "a-live-i1"), ("b-live-i0", "b-live-i0")]
    stamped = sql(dsn, "SELECT ended_event_time FROM clusters WHERE id = 'a-ret-unstamped'")
    assert stamped[0][0] == 1000 * DAY
    assert {t: dump(dsn)[t] for t in fence} == fence
    assert report.removed == {
        "outbox": 1,
        "clusters": 3,
        "cluster_items": 1,
        "cluster_events": 3,
        "reconsolidation_runs": 2,
        "reconsolidation_clusters": 2,
    }
    assert report.stamped == 1
    # a second run finds nothing more
    assert not any(retention(dsn).removed.values())


def test_dry_run_counts_what_a_run_removes_and_changes_nothing(
    fresh_database: tuple[str, str],
) -> None:
    _, dsn = fresh_database
    seed(dsn)
    before = dump(dsn)
    dry = retention(dsn, dry_run=True)
    assert dump(dsn) == before
    assert dry.dry_run and dry.stamped == 0
    real = retention(dsn)
    assert dry.removed == real.removed


def test_zero_windows_remove_every_ended_cluster_at_once(fresh_database: tuple[str, str]) -> None:
    _, dsn = fresh_database
    seed(dsn)
    policy = RetentionPolicy(outbox_sent_hours=0, ended_cluster_days=0, reconsolidation_days=0)
    assert retention(dsn, policy, dry_run=True).removed["clusters"] == 6
    retention(dsn, policy)
    assert ids(dsn, "SELECT id FROM clusters") == {"a-live", "a-old-live", "b-live"}
    assert ids(dsn, "SELECT event_id FROM outbox") == {"o-unsent-old"}
    assert not sql(dsn, "SELECT 1 FROM reconsolidation_runs")


def test_one_run_at_a_time(fresh_database: tuple[str, str]) -> None:
    _, dsn = fresh_database
    seed(dsn)

    async def go() -> tuple[bool, bool]:
        holder = await asyncpg.connect(dsn)
        other = await asyncpg.connect(dsn)
        try:
            await holder.execute("SELECT pg_advisory_lock($1)", 0x5354_4735)
            busy = (await run(other, POLICY)).skipped
            await holder.execute("SELECT pg_advisory_unlock($1)", 0x5354_4735)
            free = (await run(other, POLICY)).skipped
            return busy, free
        finally:
            await holder.close()
            await other.close()

    assert asyncio.run(go()) == (True, False)


def test_rows_a_commit_holds_are_left_for_the_next_run(fresh_database: tuple[str, str]) -> None:
    """A batch commit in flight that holds an ended cluster's row and a sent outbox row
    (as an upsert and a mark-sent do): retention neither waits for it nor touches them."""
    _, dsn = fresh_database
    seed(dsn)
    policy = RetentionPolicy(outbox_sent_hours=0, ended_cluster_days=0, reconsolidation_days=0)

    async def go() -> tuple[float, set[str], set[str]]:
        commit = await asyncpg.connect(dsn)
        ret = await asyncpg.connect(dsn)
        try:
            tx = commit.transaction()
            await tx.start()
            await commit.execute("UPDATE clusters SET weight = 0 WHERE id = 'a-ret-young'")
            await commit.execute("UPDATE outbox SET sent_at = now() WHERE event_id = 'o-sent-old'")
            report = await asyncio.wait_for(run(ret, policy), 30)
            left = {r[0] for r in await ret.fetch("SELECT id FROM clusters")}
            out = {r[0] for r in await ret.fetch("SELECT event_id FROM outbox")}
            await tx.commit()
            return report.seconds, left, out
        finally:
            await commit.close()
            await ret.close()

    seconds, left, out = asyncio.run(go())
    assert seconds < 10
    assert left == {"a-live", "a-old-live", "b-live", "a-ret-young"}
    assert out == {"o-sent-old", "o-unsent-old"}
    retention(dsn, policy)
    assert ids(dsn, "SELECT id FROM clusters") == {"a-live", "a-old-live", "b-live"}


def test_table_stats_sizes_and_ages(fresh_database: tuple[str, str]) -> None:
    _, dsn = fresh_database
    seed(dsn)
    retention(dsn)

    async def go() -> Any:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
        assert pool is not None
        try:
            return await table_stats(pool)
        finally:
            await pool.close()

    stats = asyncio.run(go())
    assert stats["clusters"].rows == 6 and stats["clusters"].bytes > 0
    assert stats["outbox"].rows == 2
    assert 3000 < stats["outbox"].oldest_age_seconds < 2 * 3600  # sent an hour ago
    # scope a: a-ret-young ended at day 990 of its clock at day 1000
    assert stats["clusters"].oldest_age_seconds == 10 * DAY
    assert stats["reconsolidation_runs"].oldest_age_seconds == 10 * DAY
    assert stats["cluster_items"].oldest_age_seconds is None


def bulk(dsn: str, clusters: int, outbox: int) -> None:
    """Many ended clusters (each with a change event) and sent outbox rows, all due."""
    sql(
        dsn,
        "INSERT INTO clusters (id, cluster_type, status, size, weight, ended_event_time)"
        " SELECT 'x-' || g, 'x', 'retired', 0, 0, 0 FROM generate_series(1, $1) g",
        clusters,
    )
    sql(
        dsn,
        "INSERT INTO cluster_events (event_id, cluster_id, cluster_type, kind, event_time,"
        " sequence, payload) SELECT 'e-' || g, 'x-' || g, 'x', 'retired', 0, g, '{}'"
        " FROM generate_series(1, $1) g",
        clusters,
    )
    sql(
        dsn,
        "INSERT INTO outbox (event_id, topic, payload, sent_at) SELECT 'o-' || g, 't', 'x',"
        " now() - interval '2 days' FROM generate_series(1, $1) g",
        outbox,
    )
    sql(
        dsn,
        "INSERT INTO clusters (id, cluster_type, status, size, weight, last_event_time)"
        " VALUES ('x-live', 'x', 'active', 0, 1, $1)",
        100 * DAY,
    )


def test_kill_9_mid_run_loses_nothing_and_a_rerun_completes(
    fresh_database: tuple[str, str],
) -> None:
    _, dsn = fresh_database
    seed(dsn)
    n = 20_000
    bulk(dsn, n, 5_000)
    keep = {t: dump(dsn)[t] for t in ("consumed_offsets", "engine_checkpoints")}
    env = dict(
        os.environ,
        CLUSTERER_POSTGRES_DSN=dsn,
        CLUSTERER_RETENTION_BATCH_ROWS="50",
        CLUSTERER_RETENTION_PAUSE_SECONDS="0.002",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "retention"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        count = "SELECT count(*) FROM clusters WHERE cluster_type = 'x'"
        wait_until(lambda: sql(dsn, count)[0][0] < n - 500, 120, "retention under way", 0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    left = sql(dsn, count)[0][0]
    assert 1 < left < n, "the kill landed mid-way"
    # whole batches only: every remaining ended cluster still has its event, no event is
    # left without its cluster, nothing live or unexpired went
    orphans = sql(
        dsn,
        "SELECT count(*) FROM cluster_events e WHERE NOT EXISTS"
        " (SELECT 1 FROM clusters c WHERE c.id = e.cluster_id)",
    )
    assert orphans[0][0] == 0
    assert (
        sql(dsn, "SELECT count(*) FROM cluster_events WHERE cluster_type = 'x'")[0][0] == left - 1
    )
    assert ids(dsn, "SELECT id FROM clusters WHERE status IN ('active', 'candidate')") == {
        "a-live",
        "a-old-live",
        "b-live",
        "x-live",
    }
    assert "o-unsent-old" in ids(dsn, "SELECT event_id FROM outbox")
    # the killed run's lock went with its session: a rerun is not skipped and completes
    report = retention(dsn)
    assert not report.skipped
    assert sql(dsn, count)[0][0] == 1
    assert ids(dsn, "SELECT event_id FROM outbox") == {"o-sent-new", "o-unsent-old"}
    assert {t: dump(dsn)[t] for t in keep} == keep


def test_a_commit_waits_for_one_batch_never_for_the_run(fresh_database: tuple[str, str]) -> None:
    """A batch commit that needs a row a retention batch is deleting (removing a membership
    sets the medoid reference of an old reconsolidation group to NULL) waits for that one
    short batch: it is done while the run still has many batches to go."""
    from state.db import BatchWrite, Store

    _, dsn = fresh_database
    runs = 3000
    sql(
        dsn,
        "INSERT INTO clusters (id, cluster_type, status, size, weight, last_event_time)"
        " VALUES ('live', 'x', 'active', 1, 1, $1)",
        100 * DAY,
    )
    sql(
        dsn,
        "INSERT INTO cluster_items (cluster_id, cluster_type, item_type, item_id)"
        " VALUES ('live', 'x', 'document', 'member')",
    )
    sql(
        dsn,
        "INSERT INTO reconsolidation_runs (cluster_type, sequence, trigger, event_time,"
        " parameters, input_clusters, input_points, clusters_found, outliers, transitions)"
        " SELECT 'x', g, 'periodic', g, '{}', 1, 1, 1, 0, '[]'"
        " FROM generate_series(0, $1 - 1) g",
        runs,
    )
    # the oldest run (the first batch's) names the live member as its group's medoid
    sql(
        dsn,
        "INSERT INTO reconsolidation_clusters (run_id, label, size, medoid_item_id,"
        " medoid_item_ref, cluster_ids) SELECT r.id, 0, 1, 'member', i.id, '{}'"
        " FROM reconsolidation_runs r, cluster_items i WHERE r.sequence = 0",
    )
    policy = RetentionPolicy(reconsolidation_days=0, batch_rows=50, pause_seconds=0.05)

    async def go() -> tuple[bool, int]:
        conn = await asyncpg.connect(dsn)
        store = await Store.connect(dsn)
        first_batch = asyncio.Event()

        def on_batch(what: str, n: int) -> None:
            if what == "runs":
                first_batch.set()

        try:
            task = asyncio.create_task(run(conn, policy, on_batch=on_batch))
            await asyncio.wait_for(first_batch.wait(), 60)
            await asyncio.wait_for(
                store.commit(BatchWrite("g", removed=[("x", "document", "member")])), 60
            )
            run_going_on = not task.done()
            report = await asyncio.wait_for(task, 120)
            return run_going_on, report.removed["reconsolidation_runs"]
        finally:
            await store.close()
            await conn.close()

    run_going_on, removed = asyncio.run(go())
    assert removed == runs
    assert run_going_on, "the commit waited for the whole retention run"
    assert not sql(dsn, "SELECT 1 FROM cluster_items")
