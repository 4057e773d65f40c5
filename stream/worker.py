"""Stage two of the worker: cluster the by-scope topic.

The loop and the shaping of rows live here: per micro-batch, run the engine of each
partition and turn its results into memberships, cluster rows, the outbox (change events,
worker-side dead letters), reconsolidation runs and the messages to publish. What is
written, published, replayed or skipped, and in which order (the one PostgreSQL transaction
with the offset fence, the idempotent producer, take-over and replay, fenced batches, the
idle settle, the outbox relay), is the reliability protocol of `stream.protocol`; the
README's "The service" section describes it for operators.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from processors import (
    Batch,
    BatchResult,
    ClusterState,
    EngineConfig,
    Move,
    ScopeKey,
)
from schemas.outputs import ClusterResult
from schemas.validation import InputError, dimension_mismatch
from state.cache import Cache
from state.db import DB_ERRORS, BatchWrite, ClusterRow, ItemRow, Store
from state.results import cluster_row, event_row, summary_json
from stream import metrics, records
from stream.assignments import assignment_values
from stream.dead_letters import dead_letter
from stream.http import Health
from stream.protocol import BatchProtocol, PartitionRun, Pending
from stream.settings import Settings
from stream.steps import StepClock

log = logging.getLogger(__name__)
_DLQ_NS = uuid.UUID("7a1c2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d")


@dataclass
class _Segment:
    """The records of the next engine call, column by column: their vectors stay record
    bytes until the call makes one matrix of them (an array per record and a stack: ~9.5
    against ~4.4 µs per 384-d event of the worker's decoding, measured alone)."""

    msgs: list[Message] = field(default_factory=list)
    bodies: list[memoryview] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    docs: list[str | None] = field(default_factory=list)
    metas: list[dict[str, Any]] = field(default_factory=list)
    keys: list[ScopeKey] = field(default_factory=list)

    def add(self, m: Message, rec: records.Parts, key: ScopeKey) -> None:
        ev = rec.event
        self.msgs.append(m)
        self.bodies.append(rec.body)
        self.ids.append(ev.item_id)
        self.times.append(ev.event_time)
        self.docs.append(ev.document_id)
        self.metas.append(ev.metadata)
        self.keys.append(key)

    def batch(self) -> Batch:
        x = records.matrix(self.bodies)
        return Batch(x, self.ids, np.asarray(self.times), self.docs, self.metas, self.keys)


class Worker:
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
        self.newest_event_time = -np.inf
        self._lag_at = 0.0
        self.clock = StepClock()  # time per step (benchmarks/e2e_service.py reads it)
        self.consumer = Consumer({**s.consumer_config(s.group_id), "max.poll.interval.ms": 300_000})
        self.producer = Producer(s.producer_config())
        self.protocol = BatchProtocol(
            s.group_id,
            self.topic,
            engine_cfg,
            store,
            cache,
            self.consumer,
            self.producer,
            loop,
            self.health,
            lambda: Store.connect(s.postgres_dsn, min_size=0, max_size=1),  # connects when used
        )
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    @property
    def runs(self) -> dict[int, PartitionRun]:
        return self.protocol.runs

    def relay_outbox(self) -> int:
        return self.protocol.relay_outbox()

    def run_sync(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    # ------------------------------------------------------------------ rebalance
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        metrics.rebalances.labels("assigned").inc()
        self.protocol.collect()  # the batch in flight commits before any take-over
        for tp in partitions:
            tp.offset = self.protocol.take_over(tp.partition)
        consumer.assign(partitions)
        self.relay_outbox()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        metrics.rebalances.labels("revoked").inc()
        self.protocol.collect()  # the batch in flight commits while its partitions are ours
        for tp in partitions:
            self.protocol.revoke(tp.partition)
            metrics.forget_partition(self.topic, tp.partition)
        consumer.unassign()

    # ------------------------------------------------------------------ the loop body
    def poll(self, timeout: float | None = None) -> int:
        """One micro-batch: what arrives within `timeout` seconds (default the batch
        timeout), up to the batch size."""
        clock = self.clock
        clock.begin()
        wait = self.s.batch_timeout_ms / 1000 if timeout is None else timeout
        msgs = self.consumer.consume(self.s.batch_max, wait)
        self.health.beat()
        good: dict[int, list[Message]] = {}
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err)
                continue
            good.setdefault(int(m.partition() or 0), []).append(m)
        self.protocol.rebuild_cache_if_due()
        good, poison = self.protocol.admit(good)  # 2. crash-loop guard
        clock.lap("consume")
        if not good and not poison:
            if not self.protocol.collect():  # the input paused: the batch in flight first
                return 0
            self._idle_snapshots()
            self.protocol.settle()
            self._gauges()
            clock.lap("idle")
            return 0
        write = BatchWrite(self.s.group_id)
        pending = Pending()
        n = 0
        parts = sorted(set(good) | set(poison))
        for p in parts:
            run = self.runs.get(p)
            if run is None:  # revoked inside this consume call
                continue
            self._process_partition(p, run, good.get(p, []), write, pending, poison.get(p, []))
            n += len(good.get(p, [])) + len(poison.get(p, []))
        clock.lap("decode")  # what followed the last engine call
        # 4. and 5. in the committer thread, after the previous batch's 6. to 8. here
        if not self.protocol.submit(write, pending, parts):
            return 0
        clock.lap("commit_wait")
        steps = clock.batch
        engine = sum(steps.get(k, 0.0) for k in ("decode", "learn", "outputs", "rows"))
        metrics.batch_seconds.labels("engine").observe(engine)
        for step, spent in steps.items():
            if step != "consume":
                metrics.batch_seconds.labels(step).observe(spent)
        metrics.batch_seconds.labels("total").observe(sum(steps.values()) - steps["consume"])
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
        offsets = run.offsets
        ms = [m for m in ms if int(m.offset() or 0) not in run.poisoned]
        old = [m for m in ms if offsets.replayed(int(m.offset() or 0))]
        new = [m for m in ms if not offsets.replayed(int(m.offset() or 0))]
        for m in poison:  # crashed the worker twice: dead-lettered, skipped by every replay
            off = int(m.offset() or 0)
            if run.offsets.replayed(off):
                continue
            self._dead(m, InputError("poison", "processing failed repeatedly at this offset"),
                       write, pending, _input_json(m))  # fmt: skip
            write.poisoned.append((self.topic, p, off))
            run.poisoned.add(off)
        if old:  # effects already in Postgres; outputs maybe not published yet
            res = self._run_engine(run, old, None, pending)
            self.clock.lap("decode")
            self._outputs(run, res, None, pending)
            self.clock.lap("outputs")
        if new or any(not offsets.replayed(int(m.offset() or 0)) for m in poison):
            t0 = time.perf_counter()
            res = self._run_engine(run, new, write, pending)
            if any(r.reconsolidations for r, _ in res):
                # reconsolidation runs in the background; a batch that applied a finished
                # run waited for it: its engine time is what the run cost the stream
                metrics.reconsolidation_seconds.observe(time.perf_counter() - t0)
            self.clock.lap("decode")
            self._outputs(run, res, write, pending)
            run.since_checkpoint += len(new)
            checkpoint = run.since_checkpoint >= self.s.checkpoint_items
            # a checkpoint waits for every snapshot owed before it: a restart from it
            # replays (and marks owed again) only what comes after
            flushed = self._snapshots(run, pending) if self._snapshot_due(run, checkpoint) else []
            self.clock.lap("outputs")
            written = self._rows(run, res, write, pending)
            for cid in flushed:  # snapshots of clusters this batch did not touch
                if cid not in written:
                    write.clusters.append(_summary_row(pending.results[cid]))
            self.clock.lap("rows")
            nxt = max(int(m.offset() or 0) for m in new + poison) + 1
            write.offsets.append(self.protocol.offset_row(p, nxt))
            write.checkpoints.extend(self.protocol.due_checkpoints(p))
            if checkpoint:
                # held until this batch is published: a checkpoint ahead of the published
                # offset would let a restart skip republishing this batch's outputs
                run.held_checkpoint = (nxt, run.engine.snapshot())
                run.since_checkpoint = 0
        pending.next_offsets[p] = max(int(m.offset() or 0) for m in ms + poison) + 1

    def _run_engine(
        self, run: PartitionRun, ms: list[Message], write: BatchWrite | None, pending: Pending
    ) -> list[tuple[BatchResult, list[Message]]]:
        """Engine over the records in order; deletions cut the batch where they stand. Bad
        records (undecodable, wrong dimension for their scope) become dead letters."""
        eng = run.engine
        out: list[tuple[BatchResult, list[Message]]] = []
        seg = _Segment()
        dims: dict[ScopeKey, int] = {}

        def flush() -> None:
            nonlocal seg
            if not seg.msgs:
                return
            self.clock.lap("decode")
            res = eng.learn(seg.batch())
            self.clock.lap("learn")
            out.append((res, seg.msgs))
            seg = _Segment()

        for m in ms:
            try:
                rec = records.split(m.value() or b"")
            except Exception as exc:
                err = InputError("bad_record", f"bad by-scope record: {exc}"[:500],
                                 type(exc).__name__)  # fmt: skip
                self._dead(m, err, write, pending)
                continue
            if isinstance(rec, records.Delete):
                flush()
                out.append((eng.forget([rec.item_id]), []))
                continue
            ev = rec.event
            key = eng.scope_key(ev.embedding_type, ev.embedding_model, ev.metadata)
            dim = dims.setdefault(key, eng.dimension(key) or rec.dim)
            if rec.dim != dim:
                err = dimension_mismatch(key.name, dim, rec.dim)
                self._dead(m, err, write, pending, records.as_input_json(records.routed(rec)))
                continue
            if seg.bodies and len(seg.bodies[0]) != len(rec.body):
                flush()  # one matrix per engine call: scopes of another dimension wait
            seg.add(m, rec, key)
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
        topic, unpublished = self.s.assignments_topic, run.offsets.unpublished
        for res, msgs in results:
            values = assignment_values(res)
            for i, value in enumerate(values):
                if unpublished(int(msgs[i].offset() or 0)):
                    pending.out.append((topic, res.item_ids[i].encode(), value, None))
            if len(res.event_time):
                self.newest_event_time = max(self.newest_event_time, float(res.event_time.max()))
            metrics.assigned.inc(len(res.item_ids))
            snap: set[str] = set()
            gone: set[str] = set()
            kinds: dict[str, int] = {}
            for ev in res.changes:
                if write is not None:  # a replay's events are in the outbox already
                    kinds[ev.kind] = kinds.get(ev.kind, 0) + 1
                    text = ev.model_dump_json()
                    payload = text.encode()
                    write.outbox.append(
                        (ev.event_id, self.s.changes_topic, ev.cluster_id.encode(), payload, "[]")
                    )
                    pending.outbox_ids.append(ev.event_id)
                    write.events.append(event_row(ev, text))
                    pending.out.append(
                        (self.s.changes_topic, ev.cluster_id.encode(), payload, None)
                    )
                if ev.kind == "retired":
                    gone.add(ev.cluster_id)
                else:
                    snap.add(ev.cluster_id)
                if ev.kind == "merged":
                    gone.update(ev.related_ids)
                if ev.kind == "split":
                    snap.update(ev.related_ids)
            for kind, k in kinds.items():
                metrics.changes.labels(kind).inc(k)
            for cid in gone:
                snap.discard(cid)
                run.dirty.discard(cid)
                if write is not None:
                    pending.out.append((self.s.clusters_topic, cid.encode(), None, None))
                    pending.cache_summaries.append((cid, None))
            # a replay marks what it touched too: a snapshot owed when the process stopped
            # is owed again after the restart (the replay starts at the last checkpoint,
            # which waited for the snapshots owed before it)
            run.dirty.update(snap)

    def _snapshot_due(self, run: PartitionRun, checkpoint: bool) -> bool:
        if not run.dirty:
            return False
        interval = self.s.snapshot_interval_ms / 1000
        return checkpoint or time.monotonic() - run.snapshot_at >= interval

    def _snapshots(self, run: PartitionRun, pending: Pending) -> list[str]:
        """The Stage 5 snapshots owed by a partition, onto `pending` (the clusters topic,
        the Redis summaries, and `pending.results` for the rows' summaries). Coalesced over
        the snapshot interval: a cluster touched by every batch is rendered once per
        interval, not once per batch (its member list, centroid, label and JSON). Returns
        the ids rendered (active clusters; others are skipped as before)."""
        out: list[str] = []
        for result in run.engine.clusters(sorted(run.dirty)):
            if result.status != "active":
                continue
            cid = result.cluster_id
            pending.out.append(
                (self.s.clusters_topic, cid.encode(), result.model_dump_json().encode(), None)
            )
            pending.cache_summaries.append((cid, summary_json(result)))
            pending.results[cid] = result
            out.append(cid)
        run.dirty.clear()
        run.snapshot_at = time.monotonic()
        return out

    def _idle_snapshots(self, every: bool = False) -> None:
        """The input paused (or, with `every`, the worker is closing): the snapshots owed
        are published now, with their summaries in a fenced transaction of their own (the
        offsets unchanged)."""
        due = [p for p, run in self.runs.items() if self._snapshot_due(run, every)]
        if not due:
            return
        write = BatchWrite(self.s.group_id)
        pending = Pending()
        for p in due:
            run = self.runs[p]
            for cid in self._snapshots(run, pending):
                write.clusters.append(_summary_row(pending.results[cid]))
            write.offsets.append(self.protocol.offset_row(p, run.offsets.processed))
        if not self.protocol.commit(write, due):  # fenced: reloaded, the replay marks again
            return
        self.protocol.publish(pending)
        self.protocol.refresh_cache(pending)

    def _rows(
        self,
        run: PartitionRun,
        results: list[tuple[BatchResult, list[Message]]],
        write: BatchWrite,
        pending: Pending,
    ) -> set[str]:
        """The batch's rows; returns the ids of the clusters it wrote a row for."""
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
            write.clusters.append(self._cluster_row(cs, pending.results.get(cs.cluster_id)))
        if warned:
            metrics.size_warnings.inc(len(warned))
            log.warning(
                "%d cluster(s) passed the size warning: %s", len(warned), ", ".join(warned[:10])
            )
        return set(clusters)

    @staticmethod
    def _cluster_row(cs: ClusterState, result: ClusterResult | None) -> ClusterRow:
        """`result`: the cluster's ClusterResult when this batch published one (active
        clusters); it gives the row its summary, label and medoid."""
        span = None
        if cs.first_event_time is not None and cs.last_event_time is not None:
            span = (cs.first_event_time, cs.last_event_time)
        return cluster_row(
            cs.cluster_id,
            cs.scope,
            cs.embedding_type,
            cs.status,
            cs.size,
            cs.weight,
            span,
            cs.centroid,
            result,
        )

    # ------------------------------------------------------------------ helpers
    def _gauges(self) -> None:
        now = time.time()
        if self.newest_event_time > -np.inf:
            metrics.event_time_lag.set(max(now - self.newest_event_time, 0.0))
        if now - self._lag_at < 5.0:
            return
        self._lag_at = now
        # readiness must notice a lost database even while no batch needs it
        proto = self.protocol
        was = proto.postgres_ok
        try:
            proto.postgres_ok = bool(self.run_sync(asyncio.wait_for(self.store.ping(), 10)))
        except DB_ERRORS:
            proto.postgres_ok = False
        if not proto.postgres_ok:
            proto.reset_pool()
        if was and not proto.postgres_ok:
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
        since = self.protocol.db_since
        stalled = since is not None and time.monotonic() - since > 5.0
        pg_ok = self.protocol.postgres_ok and not stalled
        detail = {
            "partitions": sorted(self.runs),
            "postgres": "ok" if pg_ok else "unreachable",
            "redis": "degraded" if self.cache.degraded else "ok",
        }
        return bool(self.runs) and pg_ok, detail

    def close(self) -> None:
        """A graceful stop publishes the snapshots still owed, so that Stage 5 does not wait
        for the next owner's replay to see the last changes (if that fails, the replay
        still marks them owed again: nothing is lost, only later)."""
        try:
            if self.protocol.collect():
                self._idle_snapshots(every=True)
        except Exception as exc:  # closing goes on; the replay marks them owed again
            log.warning("owed snapshots not published at close (%r); the next owner will", exc)
        self.protocol.close()
        self.consumer.close()
        self.producer.flush(10)


def _summary_row(result: ClusterResult) -> ClusterRow:
    """The row of a snapshot whose cluster the batch did not touch: its summary, with the
    live columns as the engine has them now (span and centroid: kept from the last row)."""
    return cluster_row(
        result.cluster_id,
        result.scope,
        result.cluster_type,
        result.status,
        result.cluster_size,
        result.weight,
        result=result,
    )


def _input_json(m: Message) -> bytes | None:
    """The input JSON a routed record stands for (what its dead letter carries), or None to
    carry the raw record when even that cannot be rebuilt."""
    try:
        rec = records.decode(m.value() or b"")
        return records.as_input_json(rec) if isinstance(rec, records.Routed) else None
    except Exception:
        return None
