"""Bounded database on an endless stream: retention running beside the batch commits.

    dev/services.sh up
    .venv/bin/python -m benchmarks.retention --items 1000000
    .venv/bin/python -m benchmarks.retention --items 1000000 --no-retention   # the growth it stops

The drifting stream of benchmarks/scale.py (stream/synthetic.py: topics born and dying, 10 s
of event time per item) goes through a real engine, and each micro-batch is written with the real
`Store.commit` as the worker writes it: the worker's own row builders (Worker._outputs and
Worker._rows) make the memberships, cluster rows with summaries, outbox rows (marked sent by
the next commit, as the worker does) and reconsolidation runs; offsets and a checkpoint every
50,000 items go in the same transaction. No Kafka: the broker adds nothing to what this
measures. Retention runs in a background thread with its own connection and event loop, as
in the service, every `--interval` seconds, with event-time windows of a quarter of the
stream (a 30-day window at 1M items) and a wall-clock outbox window scaled to the run.

Prints one JSON line: database size at half and at the end of the stream (and their ratio),
table sizes (engine_checkpoints apart), the sizes at every tenth of the stream, batch commit
time (median, p99) of the commits that started while a retention run was in progress and of
those that did not (commits that carry a checkpoint or a reconsolidation run apart: they are
heavy for reasons of their own), and what retention removed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import threading
import time
import types
import uuid
from typing import Any

import asyncpg
import numpy as np

from processors import Batch, Engine, EngineConfig, ScopeKey
from state.db import DB_ERRORS, BatchWrite, Fenced, OffsetRow, Store
from state.retention import RetentionPolicy, run, table_stats
from stream.protocol import PartitionOffsets, PartitionRun, Pending
from stream.settings import Settings
from stream.synthetic import drifting_stream
from stream.worker import Worker
from tests.conftest import own_database


class _Msg:
    """What Worker._outputs reads of a Kafka message: its offset."""

    def __init__(self, offset: int) -> None:
        self._offset = offset

    def offset(self) -> int:
        return self._offset


class Retention(threading.Thread):
    def __init__(self, dsn: str, policy: RetentionPolicy, interval: float) -> None:
        super().__init__(daemon=True)
        self.dsn, self.policy, self.interval = dsn, policy, interval
        self.stopping = threading.Event()
        self.spans: list[tuple[float, float]] = []
        self.removed: dict[str, int] = {}
        self.active_since: float | None = None
        self.failed = 0

    def run(self) -> None:
        loop = asyncio.new_event_loop()

        async def once() -> None:
            conn = await asyncpg.connect(self.dsn)
            try:
                rep = await run(conn, self.policy)
            finally:
                await conn.close()
            for t, n in rep.removed.items():
                self.removed[t] = self.removed.get(t, 0) + n

        while not self.stopping.wait(self.interval):
            t0 = time.perf_counter()
            self.active_since = t0
            try:
                loop.run_until_complete(once())
            except DB_ERRORS:  # PostgreSQL restarted under us (other sessions' tests)
                self.failed += 1
            self.active_since = None
            self.spans.append((t0, time.perf_counter()))
        loop.close()


async def db_size(store: Store) -> dict[str, int]:
    async with store.pool.acquire() as conn:
        total = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
        stats = await table_stats(conn)
        # not retention's: one row per partition, but every checkpoint rewrites its TOAST
        # (tens of MB at 768-d) and the dead versions wait for autovacuum
        ck = int(await conn.fetchval("SELECT pg_total_relation_size('engine_checkpoints')"))
    return {"database": total, **{t: s.bytes for t, s in stats.items()}, "engine_checkpoints": ck}


def commit_through_outages(
    loop: asyncio.AbstractEventLoop, store: Store, write: BatchWrite, dsn: str, nxt: int
) -> int:
    """Store.commit, retried when PostgreSQL goes away mid-run (this shared machine's
    database is restarted by other sessions' tests now and then). Returns how many attempts
    failed: such a commit's time is not counted. A commit whose reply was lost may have gone
    in: the fence then refuses the retry, and the stored offset says it went in."""
    failures = 0
    while True:
        try:
            loop.run_until_complete(store.commit(write))
            return failures
        except Fenced:
            return failures + 1
        except DB_ERRORS:
            failures += 1
            if failures > 120:
                raise
            time.sleep(1.0)

            async def stored() -> int | None:
                conn = await asyncpg.connect(dsn)
                try:
                    v = await conn.fetchval("SELECT next_offset FROM consumed_offsets")
                    return None if v is None else int(v)
                finally:
                    await conn.close()

            try:
                if loop.run_until_complete(stored()) == nxt:
                    return failures
            except DB_ERRORS:
                continue


def pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)) * 1000, 2) if xs else None


def main() -> None:
    logging.disable(logging.WARNING)
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between runs")
    ap.add_argument("--outbox-seconds", type=float, default=30.0, help="wall-clock window")
    ap.add_argument("--no-retention", action="store_true")
    ap.add_argument("--keep-database", action="store_true")
    args = ap.parse_args()

    s = Settings.from_env()
    name = f"bench_retention_{uuid.uuid4().hex[:8]}"
    loop = asyncio.new_event_loop()
    try:
        with own_database(s.postgres_dsn, name, keep=args.keep_database) as dsn:
            out = stream(args, s, dsn, loop)
    finally:
        loop.close()
    print(json.dumps(out))


def stream(
    args: argparse.Namespace, s: Settings, dsn: str, loop: asyncio.AbstractEventLoop
) -> dict[str, Any]:
    store = loop.run_until_complete(Store.connect(dsn))
    stream_seconds = args.items * 10.0
    window_days = stream_seconds / 4 / 86400.0
    policy = RetentionPolicy(
        outbox_sent_hours=args.outbox_seconds / 3600.0,
        ended_cluster_days=window_days,
        reconsolidation_days=window_days,
    )
    ret = None if args.no_retention else Retention(dsn, policy, args.interval)
    if ret is not None:
        ret.start()
    eng = Engine(EngineConfig())
    key = ScopeKey("document", f"synthetic-{args.dim}")
    prun = PartitionRun(eng, PartitionOffsets(0, None, 0, 0))
    fake = types.SimpleNamespace(
        s=s, newest_event_time=-np.inf, _warned={}, _cluster_row=Worker._cluster_row
    )
    # (seconds, a retention run was in progress when the commit started, carried a checkpoint
    # or a reconsolidation run: the heavy commits, apart)
    commits: list[tuple[float, bool, bool]] = []
    sent: list[str] = []
    offset, since_ck, outages = 0, 0, 0
    size_half: dict[str, int] = {}
    curve: list[list[float]] = []
    t_start = time.perf_counter()
    for x, t, ids in drifting_stream(args.items, args.dim, args.batch):
        res = eng.learn(Batch(x, ids, t, [f"d{i}" for i in ids], scopes=[key] * len(ids)))
        write = BatchWrite("bench", sent_event_ids=sent)
        pending = Pending()
        results = [(res, [_Msg(offset + i) for i in range(len(ids))])]
        Worker._outputs(fake, prun, results, write, pending)  # type: ignore[arg-type]
        Worker._rows(fake, prun, results, write, pending)  # type: ignore[arg-type]
        pending.out.clear()
        nxt = offset + len(ids)
        write.offsets.append(OffsetRow("bench", 0, nxt, nxt, prun.offsets.stored))
        since_ck += len(ids)
        if since_ck >= s.checkpoint_items:
            write.checkpoints.append(("bench", 0, nxt, eng.snapshot()))
            since_ck = 0
        busy = ret is not None and ret.active_since is not None
        c0 = time.perf_counter()
        failed = commit_through_outages(loop, store, write, dsn, nxt)
        heavy = bool(write.checkpoints or write.runs)
        if failed:
            outages += 1
        else:
            commits.append((time.perf_counter() - c0, busy, heavy))
        prun.offsets.stored = prun.offsets.processed = offset = nxt
        sent = pending.outbox_ids
        if not size_half and nxt >= args.items // 2:
            size_half = loop.run_until_complete(db_size(store))
        if nxt >= (len(curve) + 1) * args.items // 10:
            # the database's growth along the stream (outside the timed commit)
            sz = loop.run_until_complete(db_size(store))
            bounded = sum(v for k, v in sz.items() if k not in ("database", "engine_checkpoints"))
            mb = 1e-6
            curve.append([nxt, round(sz["database"] * mb, 1), round(bounded * mb, 1),
                          round(sz["engine_checkpoints"] * mb, 1)])  # fmt: skip
    wall = time.perf_counter() - t_start
    if ret is not None:
        ret.stopping.set()
        ret.join()
    # autovacuum has had the run's own time to reuse the space; nothing is forced here
    size_end = loop.run_until_complete(db_size(store))
    loop.run_until_complete(store.close())

    spans = ret.spans if ret is not None else []

    # classified by the state at the start of the commit (by overlap, long commits would
    # count as "during" more often just for being long); heavy commits apart
    plain = [(d, busy) for d, busy, ck in commits if not ck]
    during = [d for d, busy in plain if busy]
    outside = [d for d, busy in plain if not busy]
    heavy_ones = [d for d, _, ck in commits if ck]
    heavy_during = [d for d, busy, ck in commits if ck and busy]

    def dist(xs: list[float]) -> dict[str, Any]:
        return {"n": len(xs), "median": pct(xs, 50), "p99": pct(xs, 99)}

    return {
        "items": args.items,
        "dim": args.dim,
        "batch": args.batch,
        "retention": ret is not None,
        "window_days_event_time": round(window_days, 2),
        "outbox_window_s_wall": args.outbox_seconds,
        "wall_s": round(wall, 1),
        "db_bytes_at_half": size_half.get("database"),
        "db_bytes_at_end": size_end["database"],
        "end_over_half": round(size_end["database"] / size_half["database"], 3),
        "tables_at_half": size_half,
        "tables_at_end": size_end,
        "size_mb_curve_items_database_tables_checkpoints": curve,
        "retention_runs": len(spans),
        "retention_busy_fraction": round(sum(b - a for a, b in spans) / wall, 3),
        "removed": ret.removed if ret is not None else {},
        "retention_runs_failed": ret.failed if ret is not None else 0,
        "commits_not_timed_db_outage": outages,
        "commit_ms_all": dist([d for d, _ in plain]),
        "commit_ms_during_retention": dist(during),
        "commit_ms_otherwise": dist(outside),
        "heavy_commit_ms": dist(heavy_ones),
        "heavy_commit_ms_during_retention": dist(heavy_during),
    }


if __name__ == "__main__":
    main()
