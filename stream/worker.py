"""Stage two of the worker: cluster the by-scope topic with the reliability protocol of
DESIGN.md.

Per micro-batch: run the engine of each partition; write memberships, cluster rows, the
outbox (change events, worker-side dead letters), reconsolidation runs and the next offset in
ONE Postgres transaction; after commit publish assignments, the outbox and cluster snapshots
with an idempotent producer, refresh Redis, commit offsets to Kafka for lag tools.

Restart and rebalance: a partition's engine is rebuilt from its last checkpoint in Postgres
and the partition is replayed from the checkpoint's offset. The engine is deterministic, so
the replay reproduces exactly the state Postgres holds at its stored offset; records below
that offset are not written again, and records below the published offset are not published
again. Checkpoints every `checkpoint_items` items bound the replay, hence the rebalance time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from processors import (
    Batch,
    BatchResult,
    CheckpointError,
    ClusterState,
    Engine,
    EngineConfig,
    Move,
    ScopeKey,
)
from schemas.validation import InputError
from state.cache import Cache
from state.db import DB_ERRORS, BatchWrite, ClusterRow, Fenced, ItemRow, PartitionState, Store
from stream import metrics, records
from stream.crash_loop import CrashLoopGuard, recorder
from stream.dead_letters import dead_letter
from stream.http import Health
from stream.settings import Settings

log = logging.getLogger(__name__)
_RESET_ERRORS: tuple[type[BaseException], ...] = (*DB_ERRORS, RuntimeError)
_DLQ_NS = uuid.UUID("7a1c2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d")

Header = list[tuple[str, str | bytes | None]]
Out = tuple[str, bytes | None, bytes | None, Header | None]


@dataclass
class PartitionRun:
    engine: Engine
    replay_until: int  # records below: their effects are already in Postgres
    published: int  # records below: their outputs are already published
    stored: int | None  # next offset in Postgres as this worker last saw it (None: no row)
    since_checkpoint: int = 0
    poisoned: set[int] = field(default_factory=set)  # offsets a replay must skip


@dataclass
class Pending:
    """What one committed batch still has to do after the commit."""

    out: list[Out] = field(default_factory=list)
    outbox_ids: list[str] = field(default_factory=list)
    cache_set: list[tuple[str, str, str]] = field(default_factory=list)
    cache_del: list[tuple[str, str]] = field(default_factory=list)
    cache_summaries: list[tuple[str, str | None]] = field(default_factory=list)
    next_offsets: dict[int, int] = field(default_factory=dict)


class Worker:
    DB_CALL_TIMEOUT = 120.0  # one batch commit (or load) never waits longer than this

    def __init__(
        self,
        s: Settings,
        engine_cfg: EngineConfig,
        store: Store,
        cache: Cache,
        loop: asyncio.AbstractEventLoop,
        health: Health | None = None,
    ) -> None:
        self.s = s
        self.cfg = engine_cfg
        self.store = store
        self.cache = cache
        self.loop = loop
        self.health = health or Health()
        self.topic = s.by_scope_topic
        self.runs: dict[int, PartitionRun] = {}
        self.guard = CrashLoopGuard(recorder(store, s.group_id, self._retry_db))
        self.sent_ids: list[str] = []  # published outbox rows, marked sent in the next commit
        self.postgres_ok = True
        self.newest_event_time = -np.inf
        self._lag_at = 0.0
        self._settled: dict[int, int] = {}  # published offset last written per partition
        self._db_since: float | None = None  # start of the database call in flight
        self._kafka_committed: dict[int, int] = {}  # position last committed to Kafka
        self.consumer = Consumer({**s.consumer_config(s.group_id), "max.poll.interval.ms": 300_000})
        self.producer = Producer(s.producer_config())
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def run_sync(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    # ------------------------------------------------------------------ rebalance
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        metrics.rebalances.labels("assigned").inc()
        for tp in partitions:
            tp.offset = self._take_over(tp.partition)
        consumer.assign(partitions)
        self.relay_outbox()

    def _take_over(self, partition: int) -> int:
        """Rebuild a partition's engine from Postgres; returns the offset to read from."""
        st: PartitionState = self._retry_db(
            functools.partial(self.store.load_partition, self.s.group_id, self.topic, partition)
        )
        engine, start = Engine(self.cfg), 0
        if st.checkpoint:
            try:
                engine = Engine.restore(st.checkpoint)
                start = st.checkpoint_offset if st.checkpoint_offset is not None else 0
            except CheckpointError as exc:
                # e.g. a pickle from before checkpoint format 1: rebuild from the start of
                # the partition instead (records below the stored offset are not written
                # again, below the published offset not published again)
                log.warning(
                    "partition %d: checkpoint not used (%s); reading from 0", partition, exc
                )
        stored = st.next_offset if st.next_offset is not None else start
        published = st.published_offset if st.published_offset is not None else start
        self.runs[partition] = PartitionRun(
            engine, stored, published, st.next_offset, poisoned=st.poisoned
        )
        log.info(
            "partition %d: checkpoint at %d, stored offset %d, published %d",
            partition,
            start,
            stored,
            published,
        )
        return start

    def _fenced(self, exc: Fenced, partitions: list[int]) -> None:
        """Another worker committed one of these partitions since this one loaded it (this
        one missed a rebalance: a zombie). The whole batch was rolled back, so every
        partition in it is reloaded from what Postgres holds and read again from there;
        nothing of the batch was published. If the partition really moved, the revocation
        follows at the next poll."""
        metrics.fenced.inc()
        log.warning("commit fenced (%s); reloading partitions %s", exc, partitions)
        for p in partitions:
            if p in self.runs:
                start = self._take_over(p)
                self.consumer.seek(TopicPartition(self.topic, p, start))
                self.guard.excuse(self.topic, p)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        metrics.rebalances.labels("revoked").inc()
        for tp in partitions:
            self.runs.pop(tp.partition, None)
            self.guard.forget(tp.topic, tp.partition)
            metrics.forget_partition(self.topic, tp.partition)
        consumer.unassign()

    # ------------------------------------------------------------------ the loop body
    def poll(self) -> int:
        msgs = self.consumer.consume(self.s.batch_max, self.s.batch_timeout_ms / 1000)
        self.health.beat()
        good: dict[int, list[Message]] = {}
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err)
                continue
            good.setdefault(int(m.partition() or 0), []).append(m)
        if self.cache.needs_rebuild and self.cache.available():
            self._rebuild_cache()
        poison: dict[int, list[Message]] = {}
        if good:
            # replayed records (below what PostgreSQL holds) were processed before: only the
            # records after them are attempts the crash-loop guard counts
            replayed: list[Message] = []
            fresh: list[Message] = []
            for p, ms in good.items():
                run = self.runs.get(p)
                until = run.replay_until if run is not None else 0
                for m in ms:
                    (replayed if int(m.offset() or 0) < until else fresh).append(m)
            admitted = self.guard.admit(fresh)
            for tp in admitted.rewind:
                self.consumer.seek(tp)
            good = {}
            for m in replayed + admitted.keep:
                good.setdefault(int(m.partition() or 0), []).append(m)
            for m in admitted.poison:
                poison.setdefault(int(m.partition() or 0), []).append(m)
        if not good and not poison:
            self._settle()
            self._gauges()
            return 0
        t0 = time.perf_counter()
        write = BatchWrite(self.s.group_id, sent_event_ids=self.sent_ids)
        pending = Pending()
        n = 0
        for p in sorted(set(good) | set(poison)):
            run = self.runs.get(p)
            if run is None:  # revoked inside this consume call
                continue
            self._process_partition(p, run, good.get(p, []), write, pending, poison.get(p, []))
            n += len(good.get(p, [])) + len(poison.get(p, []))
        t1 = time.perf_counter()
        metrics.batch_seconds.labels("engine").observe(t1 - t0)
        try:
            self._retry_db(lambda: self.store.commit(write))
        except Fenced as exc:
            self._fenced(exc, sorted(set(good) | set(poison)))
            return 0
        self._stored(write)
        t2 = time.perf_counter()
        metrics.batch_seconds.labels("postgres").observe(t2 - t1)
        self.sent_ids = []
        self._publish(pending)
        t3 = time.perf_counter()
        metrics.batch_seconds.labels("produce").observe(t3 - t2)
        for p, nxt in pending.next_offsets.items():
            run = self.runs.get(p)
            if run is not None:
                run.published = max(run.published, nxt)
        if pending.next_offsets:
            # positions, not last offset + 1: they step over transaction markers, so lag
            # tools read 0 when everything is processed
            tps = [TopicPartition(self.topic, p) for p in pending.next_offsets]
            done = [tp for tp in self.consumer.position(tps) if tp.offset >= 0]
            if done:
                self.consumer.commit(offsets=done, asynchronous=True)
                self._kafka_committed.update({tp.partition: tp.offset for tp in done})
        if self.cache.apply(pending.cache_set, pending.cache_del, pending.cache_summaries):
            metrics.redis_degraded.set(0)
        else:
            metrics.redis_degraded.set(1)
        metrics.batch_seconds.labels("total").observe(time.perf_counter() - t0)
        metrics.consumed.labels("worker").inc(n)
        self._gauges()
        return n

    def _process_partition(
        self,
        p: int,
        run: PartitionRun,
        ms: list[Message],
        write: BatchWrite,
        pending: Pending,
        poison: list[Message],
    ) -> None:
        ms = [m for m in ms if int(m.offset() or 0) not in run.poisoned]
        old = [m for m in ms if int(m.offset() or 0) < run.replay_until]
        new = [m for m in ms if int(m.offset() or 0) >= run.replay_until]
        for m in poison:  # crashed the worker twice: dead-lettered, skipped by every replay
            off = int(m.offset() or 0)
            if off < run.replay_until:
                continue
            self._dead(m, InputError("poison", "processing failed repeatedly at this offset"),
                       write, pending, _input_json(m))  # fmt: skip
            write.poisoned.append((self.topic, p, off))
            run.poisoned.add(off)
        if old:  # effects already in Postgres; outputs maybe not published yet
            res = self._run_engine(run, old, None, pending)
            self._outputs(run, res, None, pending)
        if new or any(int(m.offset() or 0) >= run.replay_until for m in poison):
            t0 = time.perf_counter()
            res = self._run_engine(run, new, write, pending)
            if any(r.reconsolidations for r, _ in res):
                # the engine reconsolidates inline at fixed item positions (determinism):
                # the engine time of such a batch is what a reconsolidation costs the stream
                metrics.reconsolidation_seconds.observe(time.perf_counter() - t0)
            self._outputs(run, res, write, pending)
            self._rows(run, res, write, pending)
            nxt = max(int(m.offset() or 0) for m in new + poison) + 1
            run.replay_until = nxt
            run.since_checkpoint += len(new)
            write.offsets.append((self.topic, p, nxt, run.published, run.stored))
            if run.since_checkpoint >= self.s.checkpoint_items:
                write.checkpoints.append((self.topic, p, nxt, run.engine.snapshot()))
                run.since_checkpoint = 0
        pending.next_offsets[p] = max(int(m.offset() or 0) for m in ms + poison) + 1

    def _run_engine(
        self, run: PartitionRun, ms: list[Message], write: BatchWrite | None, pending: Pending
    ) -> list[tuple[BatchResult, list[Message]]]:
        """Engine over the records in order; deletions cut the batch where they stand. Bad
        records (undecodable, wrong dimension for their scope) become dead letters."""
        eng = run.engine
        out: list[tuple[BatchResult, list[Message]]] = []
        seg: list[tuple[records.Routed, Message]] = []
        dims: dict[ScopeKey, int] = {}

        def flush() -> None:
            if not seg:
                return
            res = eng.learn(
                Batch(
                    np.vstack([r.vector for r, _ in seg]),
                    [r.item_id for r, _ in seg],
                    np.asarray([r.event_time for r, _ in seg]),
                    [r.document_id for r, _ in seg],
                    [r.metadata for r, _ in seg],
                    [
                        eng.scope_key(r.embedding_type, r.embedding_model, r.metadata)
                        for r, _ in seg
                    ],
                )
            )
            out.append((res, [m for _, m in seg]))
            seg.clear()

        for m in ms:
            try:
                rec = records.decode(m.value() or b"")
            except Exception as exc:
                err = InputError("bad_record", f"bad by-scope record: {exc}"[:500],
                                 type(exc).__name__)  # fmt: skip
                self._dead(m, err, write, pending)
                continue
            if isinstance(rec, records.Delete):
                flush()
                out.append((eng.forget([rec.item_id]), []))
                continue
            key = eng.scope_key(rec.embedding_type, rec.embedding_model, rec.metadata)
            dim = dims.setdefault(key, eng.dimension(key) or rec.vector.shape[0])
            if rec.vector.shape[0] != dim:
                got = rec.vector.shape[0]
                err = InputError(
                    "dimension_mismatch", f"scope {key.name} uses {dim} dimensions, got {got}"
                )
                self._dead(m, err, write, pending, records.as_input_json(rec))
                continue
            if seg and seg[0][0].vector.shape[0] != dim:
                flush()  # one matrix per engine call: scopes of another dimension wait
            seg.append((rec, m))
        flush()
        return out

    def _dead(
        self,
        m: Message,
        err: InputError,
        write: BatchWrite | None,
        pending: Pending,
        value: bytes | None = None,
    ) -> None:
        """Worker-side dead letters (e.g. a dimension the scope does not use) go through the
        outbox: they are decided by the engine state, so they commit with it."""
        if write is None:
            return
        metrics.dead_lettered.labels(err.reason).inc()
        eid = str(uuid.uuid5(_DLQ_NS, f"{m.topic()}|{m.partition()}|{m.offset()}"))
        key, body, headers = dead_letter(m, err, "worker", value)
        write.outbox.append((eid, self.s.dlq_topic, key, body, json.dumps(headers)))
        pending.outbox_ids.append(eid)
        pending.out.append((self.s.dlq_topic, key, body, headers))

    # ------------------------------------------------------------------ outputs
    def _outputs(
        self,
        run: PartitionRun,
        results: list[tuple[BatchResult, list[Message]]],
        write: BatchWrite | None,
        pending: Pending,
    ) -> None:
        eng = run.engine
        for res, msgs in results:
            for i, a in enumerate(res.assignments()):
                if int(msgs[i].offset() or 0) >= run.published:
                    pending.out.append(
                        (
                            self.s.assignments_topic,
                            a.item_id.encode(),
                            a.model_dump_json().encode(),
                            None,
                        )
                    )
                if a.event_time > self.newest_event_time:
                    self.newest_event_time = a.event_time
            metrics.assigned.inc(len(res.item_ids))
            if write is None:
                continue
            snap: set[str] = set()
            gone: set[str] = set()
            for ev in res.changes:
                metrics.changes.labels(ev.kind).inc()
                payload = ev.model_dump_json().encode()
                write.outbox.append(
                    (ev.event_id, self.s.changes_topic, ev.cluster_id.encode(), payload, "[]")
                )
                pending.outbox_ids.append(ev.event_id)
                pending.out.append((self.s.changes_topic, ev.cluster_id.encode(), payload, None))
                if ev.kind == "retired":
                    gone.add(ev.cluster_id)
                else:
                    snap.add(ev.cluster_id)
                if ev.kind == "merged":
                    gone.update(ev.related_ids)
                if ev.kind == "split":
                    snap.update(ev.related_ids)
            for cid in gone:
                snap.discard(cid)
                pending.out.append((self.s.clusters_topic, cid.encode(), None, None))
                pending.cache_summaries.append((cid, None))
            for result in eng.clusters(sorted(snap)):
                if result.status != "active":
                    continue
                cid = result.cluster_id
                pending.out.append(
                    (self.s.clusters_topic, cid.encode(), result.model_dump_json().encode(), None)
                )
                pending.cache_summaries.append((cid, _summary(result.model_dump())))

    def _rows(
        self,
        run: PartitionRun,
        results: list[tuple[BatchResult, list[Message]]],
        write: BatchWrite,
        pending: Pending,
    ) -> None:
        sims: dict[str, float] = {}
        moves: dict[tuple[str, str], Move] = {}  # the latest move of each item in the batch
        clusters: dict[str, ClusterState] = {}  # the latest state of each touched cluster
        warned: list[str] = []
        for res, _ in results:
            for i, item in enumerate(res.item_ids):
                sims[item] = float(res.similarity[i])
            write.runs.extend(res.reconsolidations)
            moves.update({(mv.scope, mv.item_id): mv for mv in res.moves})
            clusters.update({cs.cluster_id: cs for cs in res.clusters})
            warned += res.size_warnings
        summaries = dict(pending.cache_summaries)
        for mv in moves.values():
            if mv.cluster_id is None:
                write.removed.append((mv.scope, mv.embedding_type, mv.item_id))
                pending.cache_del.append((mv.scope, mv.item_id))
                continue
            row: ItemRow = (
                mv.cluster_id,
                mv.scope,
                mv.embedding_type,
                mv.item_id,
                mv.document_id,
                sims.get(mv.item_id),
                mv.event_time,
            )
            write.items.append(row)
            pending.cache_set.append((mv.scope, mv.item_id, mv.cluster_id))
        for cs in clusters.values():
            write.clusters.append(self._cluster_row(cs, summaries))
        if warned:
            metrics.size_warnings.inc(len(warned))
            log.warning(
                "%d cluster(s) passed the size warning: %s", len(warned), ", ".join(warned[:10])
            )

    @staticmethod
    def _cluster_row(cs: ClusterState, summaries: dict[str, str | None]) -> ClusterRow:
        cid = cs.cluster_id
        if cs.status in ("merged", "retired"):
            return (cid, cs.scope, cs.status, 0, 0.0, None, None, None, None, None)
        summary = summaries.get(cid)
        label = medoid = None
        if summary is not None:
            obj = json.loads(summary)
            label, medoid = obj.get("label"), obj.get("medoid_id")
        return (
            cid,
            cs.scope,
            cs.status,
            cs.size,
            cs.weight,
            label,
            medoid,
            summary,
            cs.first_event_time,
            cs.last_event_time,
        )

    def _publish(self, pending: Pending) -> None:
        for topic, key, value, headers in pending.out:
            while True:
                try:
                    self.producer.produce(topic, value, key=key, headers=headers)
                    break
                except BufferError:
                    self.producer.poll(0.1)
            metrics.produced.labels(topic).inc()
        left = self.producer.flush(60)
        if left:
            raise RuntimeError(f"{left} messages not delivered; restarting from Postgres")
        self.sent_ids.extend(pending.outbox_ids)

    def _settle(self) -> None:
        """When the input pauses, record what the last batch published (otherwise that
        waits for the next batch's commit), so a restart republishes nothing."""
        stale = [
            (self.topic, p, run.replay_until, run.published, run.stored)
            for p, run in self.runs.items()
            if run.published > self._settled.get(p, -1)
        ]
        self._commit_positions()
        if not stale and not self.sent_ids:
            return
        write = BatchWrite(self.s.group_id, offsets=stale, sent_event_ids=self.sent_ids)
        try:
            self._retry_db(lambda: self.store.commit(write))
        except Fenced as exc:
            self._fenced(exc, [p for _, p, *_ in stale])
            return
        self._stored(write)
        self.sent_ids = []
        for _, p, _, pub, _ in stale:
            self._settled[p] = pub

    def _stored(self, write: BatchWrite) -> None:
        """After a commit: what Postgres now holds is what the next fence compares with."""
        for _, p, nxt, _, _ in write.offsets:
            run = self.runs.get(p)
            if run is not None:
                run.stored = nxt

    def _commit_positions(self) -> None:
        """Idle: the consumer may have stepped over a trailing transaction marker since the
        last commit; committing its position lets lag tools read 0."""
        tps = [TopicPartition(self.topic, p) for p in self.runs]
        moved = [
            tp
            for tp in self.consumer.position(tps)
            if tp.offset >= 0 and tp.offset != self._kafka_committed.get(tp.partition)
        ]
        if moved:
            self.consumer.commit(offsets=moved, asynchronous=True)
            self._kafka_committed.update({tp.partition: tp.offset for tp in moved})

    # ------------------------------------------------------------------ outbox relay
    def relay_outbox(self) -> int:
        """Publish rows committed but not marked sent (a crash between commit and publish)."""
        rows = self._retry_db(lambda: self.store.unsent())
        if not rows:
            return 0
        for r in rows:
            headers: Header = [(k, v) for k, v in json.loads(r["headers"])]
            self.producer.produce(
                r["topic"], bytes(r["payload"]), key=r["key"], headers=headers or None
            )
        if self.producer.flush(60):
            raise RuntimeError("outbox relay: messages not delivered")
        ids = [r["event_id"] for r in rows]
        self._retry_db(lambda: self.store.mark_sent(ids))
        log.info("relayed %d unsent outbox rows", len(rows))
        return len(rows)

    # ------------------------------------------------------------------ helpers
    def _retry_db(self, make: Callable[[], Any], limit_seconds: float = 600.0) -> Any:
        """Run one database call, retrying with backoff while Postgres is unreachable."""
        delay, deadline = 0.2, time.monotonic() + limit_seconds
        while True:
            self._db_since = time.monotonic()
            try:
                out = self.run_sync(asyncio.wait_for(make(), self.DB_CALL_TIMEOUT))
                if not self.postgres_ok:
                    log.warning("postgres is reachable again")
                self.postgres_ok = True
                return out
            except DB_ERRORS as exc:
                self.postgres_ok = False
                metrics.postgres_retries.inc()
                self._reset_pool()
                if time.monotonic() > deadline:
                    raise
                log.warning("postgres call failed (%r); retrying in %.1fs", exc, delay)
                self.health.beat()
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                self._db_since = None

    def _reset_pool(self) -> None:
        """After a failure no pooled connection is trusted: the next call opens new ones."""
        with contextlib.suppress(*_RESET_ERRORS):
            self.run_sync(asyncio.wait_for(self.store.pool.expire_connections(), 10))

    def _rebuild_cache(self) -> None:
        n = self._retry_db(
            lambda: self.cache.rebuild(self.store.memberships, self.store.live_cluster_summaries)
        )
        if not self.cache.needs_rebuild:
            log.info("redis cache rebuilt from postgres: %d items", n)
            metrics.redis_degraded.set(0)

    def _gauges(self) -> None:
        now = time.time()
        if self.newest_event_time > -np.inf:
            metrics.event_time_lag.set(max(now - self.newest_event_time, 0.0))
        if now - self._lag_at < 5.0:
            return
        self._lag_at = now
        # readiness must notice a lost database even while no batch needs it
        was = self.postgres_ok
        try:
            self.postgres_ok = bool(self.run_sync(asyncio.wait_for(self.store.ping(), 10)))
        except DB_ERRORS:
            self.postgres_ok = False
        if not self.postgres_ok:
            self._reset_pool()
        if was and not self.postgres_ok:
            log.warning("postgres unreachable")
        for p in list(self.runs):
            tp = TopicPartition(self.topic, p)
            try:
                # the consumer's own view from its last fetch: no broker round trip (a
                # blocking query per partition cost up to its timeout on idle partitions)
                lo, hi = self.consumer.get_watermark_offsets(tp, cached=True)
                pos = self.consumer.position([tp])[0].offset
            except Exception:  # a gauge must never stop the loop
                continue
            if hi < 0:
                continue
            lag = hi - pos if pos is not None and pos >= 0 else hi - max(lo, 0)
            metrics.consumer_lag.labels(self.topic, str(p)).set(max(lag, 0))
        for run in self.runs.values():
            for scope, stats in run.engine.stats().items():
                metrics.active_clusters.labels(scope).set(stats["active"])
                metrics.candidate_clusters.labels(scope).set(stats["candidates"])

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Called from the HTTP thread: reads flags only. A database call in flight for more
        than a few seconds counts as unreachable (the loop is waiting on it)."""
        since = self._db_since
        stalled = since is not None and time.monotonic() - since > 5.0
        pg_ok = self.postgres_ok and not stalled
        detail = {
            "partitions": sorted(self.runs),
            "postgres": "ok" if pg_ok else "unreachable",
            "redis": "degraded" if self.cache.degraded else "ok",
        }
        return bool(self.runs) and pg_ok, detail

    def close(self) -> None:
        self.consumer.close()
        self.producer.flush(10)


def _input_json(m: Message) -> bytes | None:
    """The input JSON a routed record stands for (what its dead letter carries), or None to
    carry the raw record when even that cannot be rebuilt."""
    try:
        rec = records.decode(m.value() or b"")
        return records.as_input_json(rec) if isinstance(rec, records.Routed) else None
    except Exception:
        return None


def _summary(result: dict[str, Any]) -> str:
    """The small per-cluster record kept in Postgres and Redis (no member lists)."""
    keep = {
        "cluster_id": result["cluster_id"],
        "scope": result["scope"],
        "status": result["status"],
        "label": result["cluster_label"],
        "size": result["cluster_size"],
        "weight": result["weight"],
        "medoid_id": result["medoid_id"],
        "representative_ids": result["representative_ids"],
        "temporal_span": result["temporal_span"],
        "domain": result["domain"],
        "event_type": result["event_type"],
    }
    return json.dumps(keep, separators=(",", ":"))
