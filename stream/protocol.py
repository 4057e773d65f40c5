"""The reliability protocol of the clustering worker, in one place.

`stream.worker.Worker` runs the loop and shapes the rows; every decision about what is
written, published, replayed or skipped is made here. Per micro-batch:

1. Consume a batch of the by-scope topic (the worker's `poll`).
2. Crash-loop guard (`admit`): records below a partition's `processed` offset are a replay
   (processed before, effects already in PostgreSQL) and are not attempts; the rest is one
   attempt, recorded in PostgreSQL before the engine sees it (`stream.crash_loop`). A
   partition the guard isolates waits for the batch in flight first: each of its records
   is committed before the next is attempted.
3. Engine (the worker): replayed records rebuild state and republish the outputs that were
   not published yet (`PartitionOffsets.unpublished`); fresh records produce the rows.
4. ONE PostgreSQL transaction (`commit`): the offset fence first (compare-and-set of every
   partition's stored next offset, row locks in partition order), then clusters,
   memberships, outbox, events, reconsolidation runs, poison records, checkpoints, and the
   outbox rows the previous batch published (step 6).
5. Publish (`publish`) the assignments, the outbox rows and the cluster snapshots with the
   idempotent producer, and wait for delivery. A failure raises: the process restarts and
   the take-over republishes (below), nothing is committed twice.

   Steps 4 and 5 of a batch run in the committer thread (`submit`) while the loop consumes
   and runs the engine over the next batch; before that batch is submitted, the loop
   collects the one in flight (`collect`: its outcome, then steps 6 to 8). So one batch at a
   time is in flight, batches commit in order, and the fence's expected offsets are taken
   when a batch is submitted, after its predecessor committed. A fenced batch in flight
   also drops the batch processed on top of it: the partitions of both are reloaded. Every
   synchronous commit (`settle`, idle snapshots) and every rebalance waits for the batch in
   flight first (`collect`).

   Snapshots are owed per
   partition (`PartitionRun.dirty`) and rendered at most once per snapshot interval, with
   every checkpoint, when the input pauses and at a graceful stop (their summaries commit
   with them, fenced); a replay marks what it touches as owed, so a restart from a
   checkpoint (which waited for the snapshots owed before it) owes again every snapshot
   a crash lost.
6. Mark the outbox rows sent: their ids ride with the next commit (or the idle settle).
7. Commit the consumer positions to Kafka (`after_publish`): only for lag tools; the truth
   is the offset in PostgreSQL.
8. Refresh the Redis cache (`refresh_cache`). Redis lost: clustering continues, the cache
   is marked for rebuild from PostgreSQL once Redis answers again.

Take-over and replay (`take_over`, on start, assignment and after a fence): the partition's
engine is restored from its last checkpoint and the partition is read again from the
checkpoint's offset. The engine is deterministic, so the replay reproduces the state that
PostgreSQL holds at its stored offset; records below `stored` are not written again, and
records below `published` are not published again. Unsent outbox rows are relayed
(`relay_outbox`).

Fenced batches (`fenced`): another worker committed a partition since this one loaded it
(this one is a zombie of a rebalance it has not seen yet). The whole transaction rolled back
and nothing of the batch was published; every partition of the batch is reloaded from
PostgreSQL and read again from there, and that re-read is excused from the crash-loop guard.

PostgreSQL lost mid-commit (`db`): the call is retried with backoff on fresh connections
while the batch waits; it is the same attempt for the crash-loop guard.

Settle when idle (`settle`): when the input pauses, what the last batch published and the
outbox rows it sent are written, so a restart republishes nothing; consumer positions that
stepped over a trailing transaction marker are committed to Kafka so lag tools read 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from processors import CheckpointError, Engine, EngineConfig
from schemas.outputs import ClusterResult
from state.cache import Cache
from state.db import DB_ERRORS, BatchWrite, Fenced, OffsetRow, PartitionState, Store
from stream import metrics
from stream.crash_loop import CrashLoopGuard, StoredAttempts
from stream.http import Health

log = logging.getLogger(__name__)
_RESET_ERRORS: tuple[type[BaseException], ...] = (*DB_ERRORS, RuntimeError)

Header = list[tuple[str, str | bytes | None]]
Out = tuple[str, bytes | None, bytes | None, Header | None]


@dataclass
class PartitionOffsets:
    """Every offset the protocol keeps for one input partition, each a "next offset" (the
    first record it does not cover)."""

    checkpoint: int
    """where the checkpoint the engine was restored from was taken: the take-over reads
    again from here"""
    stored: int | None
    """what PostgreSQL holds as this worker last saw it: the fence's expectation (None: no
    row yet)"""
    processed: int
    """records below: their effects are in PostgreSQL (or in the batch being committed);
    a record below is a replay, never written again nor counted by the crash-loop guard"""
    published: int
    """records below: their outputs are published; a replay does not publish them again"""
    settled: int = -1
    """the published offset last written to PostgreSQL by an idle settle"""
    kafka_committed: int | None = None
    """the consumer position last committed to Kafka (for lag tools only)"""

    def replayed(self, offset: int) -> bool:
        return offset < self.processed

    def unpublished(self, offset: int) -> bool:
        return offset >= self.published


@dataclass
class PartitionRun:
    """One owned partition: its engine and its offsets."""

    engine: Engine
    offsets: PartitionOffsets
    since_checkpoint: int = 0
    poisoned: set[int] = field(default_factory=set)  # offsets a replay must skip
    held_checkpoint: tuple[int, bytes] | None = None
    """(offset, engine snapshot) taken after a batch, written by the first commit after
    that batch is published (see `due_checkpoints`)."""
    dirty: set[str] = field(default_factory=set)
    """clusters whose Stage 5 snapshot is owed: touched since their last one (published
    at most every `CLUSTERER_SNAPSHOT_INTERVAL_MS`, and always with a checkpoint)"""
    snapshot_at: float = 0.0
    """monotonic time of the last snapshot flush"""


@dataclass
class Pending:
    """What one committed batch still has to do after the commit (steps 5 to 8)."""

    out: list[Out] = field(default_factory=list)
    outbox_ids: list[str] = field(default_factory=list)
    cache_set: list[tuple[str, str, str]] = field(default_factory=list)
    cache_del: list[tuple[str, str]] = field(default_factory=list)
    cache_summaries: list[tuple[str, str | None]] = field(default_factory=list)
    results: dict[str, ClusterResult] = field(default_factory=dict)  # stored with the batch
    next_offsets: dict[int, int] = field(default_factory=dict)


def _partition(m: Message) -> int:
    return int(m.partition() or 0)


def _offset(m: Message) -> int:
    return int(m.offset() or 0)


@dataclass
class InFlight:
    """The batch whose steps 4 and 5 run in the committer thread."""

    done: Future[None]
    write: BatchWrite
    pending: Pending
    partitions: list[int]


class BatchProtocol:
    DB_CALL_TIMEOUT = 120.0  # one batch commit (or load) never waits longer than this

    def __init__(
        self,
        group: str,
        topic: str,
        engine_cfg: EngineConfig,
        store: Store,
        cache: Cache,
        consumer: Consumer,
        producer: Producer,
        loop: asyncio.AbstractEventLoop,
        health: Health,
        committer_store: Callable[[], Awaitable[Store]],
    ) -> None:
        self.group = group
        self.topic = topic
        self.cfg = engine_cfg
        self.store = store
        self.cache = cache
        self.consumer = consumer
        self.producer = producer
        self.loop = loop
        self.health = health
        self.runs: dict[int, PartitionRun] = {}
        self.guard = CrashLoopGuard(StoredAttempts(store, group, self.db))
        self.sent_ids: list[str] = []  # published outbox rows, marked sent in the next commit
        self.postgres_ok = True
        self.db_since: float | None = None  # start of the database call in flight
        # the committer thread: its own event loop and pool (a loop serves one thread)
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="stage-commit")
        self._committer_store = committer_store
        self._side: tuple[asyncio.AbstractEventLoop, Store] | None = None
        self.in_flight: InFlight | None = None

    # ------------------------------------------------------------------ take-over and replay
    def take_over(self, partition: int) -> int:
        """Rebuild a partition's engine from PostgreSQL; returns the offset to read from."""
        st: PartitionState = self.db(
            functools.partial(self.store.load_partition, self.group, self.topic, partition)
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
        offsets = PartitionOffsets(
            checkpoint=start,
            stored=st.next_offset,
            processed=st.next_offset if st.next_offset is not None else start,
            published=st.published_offset if st.published_offset is not None else start,
        )
        old = self.runs.get(partition)
        if old is not None:  # a reload after a fence: what was settled and committed stays
            offsets.settled = old.offsets.settled
            offsets.kafka_committed = old.offsets.kafka_committed
        self.runs[partition] = PartitionRun(engine, offsets, poisoned=st.poisoned)
        log.info(
            "partition %d: checkpoint at %d, stored offset %d, published %d",
            partition,
            start,
            offsets.processed,
            offsets.published,
        )
        return start

    def revoke(self, partition: int) -> None:
        self.runs.pop(partition, None)
        self.guard.forget(self.topic, partition)

    # ------------------------------------------------------------------ 2. crash-loop guard
    def admit(
        self, good: dict[int, list[Message]]
    ) -> tuple[dict[int, list[Message]], dict[int, list[Message]]]:
        """The records to process and the poison to dead-letter, per partition. Replayed
        records (below what PostgreSQL holds) were processed before: only the records after
        them are attempts that the crash-loop guard counts.

        An isolated partition's record is attempted only once the one before it committed:
        with that commit still in flight, a crash on this record would lose it, and the
        restart would read the range from the earlier record again and start its count over
        (a poison record crashed the process 9 times instead of 3, under CPU load)."""
        if not good:
            return {}, {}
        isolated = self.guard.isolated()
        if any((self.topic, p) in isolated for p in good) and not self.collect(good):
            return {}, {}  # fenced: these partitions are reloaded, nothing was attempted
        replayed: list[Message] = []
        fresh: list[Message] = []
        for p, ms in good.items():
            run = self.runs.get(p)
            for m in ms:
                is_replay = run is not None and run.offsets.replayed(_offset(m))
                (replayed if is_replay else fresh).append(m)
        admitted = self.guard.admit(fresh)
        for tp in admitted.rewind:
            self.consumer.seek(tp)
        keep: dict[int, list[Message]] = {}
        for m in replayed + admitted.keep:
            keep.setdefault(_partition(m), []).append(m)
        poison: dict[int, list[Message]] = {}
        for m in admitted.poison:
            poison.setdefault(_partition(m), []).append(m)
        return keep, poison

    # ------------------------------------------------------------------ 4. the transaction
    def offset_row(self, partition: int, next_offset: int) -> OffsetRow:
        """The fenced offset write of a partition whose fresh records end at `next_offset`:
        they count as processed from now on."""
        off = self.runs[partition].offsets
        off.processed = next_offset
        return OffsetRow(self.topic, partition, next_offset, off.published, off.stored)

    def commit(self, write: BatchWrite, partitions: Iterable[int]) -> bool:
        """Step 4 in this thread (with step 6 of the previous batch: `sent_ids`), after the
        batch in flight. False: fenced, the batch is dropped and its partitions reloaded."""
        if not self.collect(partitions):
            return False
        self._fence(write)
        try:
            self._commit(write, self.db, self.store)
        except Fenced as exc:
            self.fenced(exc, sorted(partitions))
            return False
        self._stored(write)
        return True

    def _fence(self, write: BatchWrite) -> None:
        """The offsets as they stand now that the previous batch committed: what the fence
        expects stored, and what is published."""
        write.offsets = [
            replace(o, published=off.published, expected=off.stored)
            for o, off in ((o, self.runs[o.partition].offsets) for o in write.offsets)
        ]

    def _commit(
        self, write: BatchWrite, db: Callable[[Callable[[], Awaitable[Any]]], Any], store: Store
    ) -> None:
        write.sent_event_ids = self.sent_ids
        db(lambda: store.commit(write))
        self.sent_ids = []

    def _stored(self, write: BatchWrite) -> None:
        for o in write.offsets:
            run = self.runs.get(o.partition)
            if run is not None:  # what the next fence compares with
                run.offsets.stored = o.next_offset

    # ------------------------------------------------------------------ 4. and 5. in flight
    def submit(self, write: BatchWrite, pending: Pending, partitions: list[int]) -> bool:
        """Steps 4 and 5 of a batch in the committer thread, once the batch in flight is
        collected. False: that one was fenced, and this one (processed on top of it) is
        dropped with it."""
        if not self.collect(partitions):
            return False
        self._fence(write)
        done = self._committer.submit(self._commit_and_publish, write, pending)
        self.in_flight = InFlight(done, write, pending, partitions)
        return True

    def collect(self, also: Iterable[int] = ()) -> bool:
        """Wait for the batch in flight, then its steps 6 to 8 in this thread. False: it was
        fenced; its partitions and `also` (those of a batch processed on top of it) are
        reloaded. An error of its commit or publish is raised here (the process restarts)."""
        f, self.in_flight = self.in_flight, None
        if f is None:
            return True
        try:
            f.done.result()
        except Fenced as exc:
            self.fenced(exc, sorted(set(f.partitions) | set(also)))
            return False
        self._stored(f.write)
        self.after_publish(f.pending)
        self.refresh_cache(f.pending)
        return True

    def _commit_and_publish(self, write: BatchWrite, pending: Pending) -> None:
        """In the committer thread: its own event loop and connection pool."""
        if self._side is None:
            loop = asyncio.new_event_loop()
            self._side = (loop, loop.run_until_complete(self._committer_store()))
        loop, store = self._side
        t0 = time.perf_counter()
        self._commit(write, functools.partial(self._call, loop, store), store)
        t1 = time.perf_counter()
        self.publish(pending)
        metrics.batch_seconds.labels("postgres").observe(t1 - t0)
        metrics.batch_seconds.labels("produce").observe(time.perf_counter() - t1)

    def close(self) -> None:
        """After the last `collect`: the committer thread and its pool."""

        def close_side() -> None:
            if self._side is not None:
                loop, store = self._side
                with contextlib.suppress(*_RESET_ERRORS, asyncio.TimeoutError):
                    loop.run_until_complete(asyncio.wait_for(store.close(), 10))
                loop.close()

        self._committer.submit(close_side).result()
        self._committer.shutdown()

    def fenced(self, exc: Fenced, partitions: list[int]) -> None:
        """Another worker committed one of these partitions since this one loaded it (this
        one missed a rebalance: a zombie). The whole batch was rolled back, so every
        partition in it is reloaded from what PostgreSQL holds and read again from there;
        nothing of the batch was published. If the partition really moved, the revocation
        follows at the next poll."""
        metrics.fenced.inc()
        log.warning("commit fenced (%s); reloading partitions %s", exc, partitions)
        reloaded = [p for p in partitions if p in self.runs]
        for p in reloaded:
            start = self.take_over(p)
            self.consumer.seek(TopicPartition(self.topic, p, start))
        self.guard.excuse((self.topic, p) for p in reloaded)

    # ------------------------------------------------------------------ 5. publish
    def publish(self, pending: Pending) -> None:
        """Publish and wait for delivery; a failure raises (the restart republishes)."""
        counts: dict[str, int] = {}
        produce = self.producer.produce
        for topic, key, value, headers in pending.out:
            try:
                produce(topic, value, key=key, headers=headers)
            except BufferError:  # the local queue is full: let it drain
                while True:
                    self.producer.poll(0.1)
                    try:
                        produce(topic, value, key=key, headers=headers)
                        break
                    except BufferError:
                        continue
            counts[topic] = counts.get(topic, 0) + 1
        for topic, k in counts.items():
            metrics.produced.labels(topic).inc(k)
        left = self.producer.flush(60)
        if left:
            raise RuntimeError(f"{left} messages not delivered; restarting from Postgres")
        self.sent_ids.extend(pending.outbox_ids)  # 6: marked sent with the next commit

    # ------------------------------------------------------------------ 7. Kafka offsets
    def after_publish(self, pending: Pending) -> None:
        for p, nxt in pending.next_offsets.items():
            run = self.runs.get(p)
            if run is not None:
                run.offsets.published = max(run.offsets.published, nxt)
        if pending.next_offsets:
            # positions, not last offset + 1: they step over transaction markers, so lag
            # tools read 0 when everything is processed
            self._commit_positions(list(pending.next_offsets), only_moved=False)

    def _commit_positions(self, partitions: list[int], only_moved: bool) -> None:
        tps = [TopicPartition(self.topic, p) for p in partitions]
        done = [
            tp
            for tp in self.consumer.position(tps)
            if tp.offset >= 0
            and not (only_moved and tp.offset == self._kafka_committed(tp.partition))
        ]
        if done:
            self.consumer.commit(offsets=done, asynchronous=True)
            for tp in done:
                run = self.runs.get(tp.partition)
                if run is not None:
                    run.offsets.kafka_committed = tp.offset

    def _kafka_committed(self, partition: int) -> int | None:
        run = self.runs.get(partition)
        return run.offsets.kafka_committed if run is not None else None

    # ------------------------------------------------------------------ 8. cache
    def refresh_cache(self, pending: Pending) -> None:
        if self.cache.apply(pending.cache_set, pending.cache_del, pending.cache_summaries):
            metrics.redis_degraded.set(0)
        else:  # the cache marked itself for a rebuild; clustering goes on
            metrics.redis_degraded.set(1)

    def rebuild_cache_if_due(self) -> None:
        if not (self.cache.needs_rebuild and self.cache.available()):
            return
        n = self.db(
            lambda: self.cache.rebuild(self.store.memberships, self.store.live_cluster_summaries)
        )
        if not self.cache.needs_rebuild:
            log.info("redis cache rebuilt from postgres: %d items", n)
            metrics.redis_degraded.set(0)

    # ------------------------------------------------------------------ settle when idle
    def due_checkpoints(self, partition: int) -> list[tuple[str, int, int, bytes]]:
        """The held checkpoint of a partition once everything below its offset is published.
        Restarting from a checkpoint skips replaying what lies below it, and with it the
        republishing of outputs a crash between commit and publish lost; so a checkpoint
        is stored only with (or after) the published offset that covers it."""
        run = self.runs.get(partition)
        if run is None or run.held_checkpoint is None:
            return []
        at, state = run.held_checkpoint
        if at > run.offsets.published:
            return []
        run.held_checkpoint = None
        return [(self.topic, partition, at, state)]

    def settle(self) -> None:
        """When the input pauses, record what the last batch published (otherwise that
        waits for the next batch's commit), so a restart republishes nothing."""
        stale = [
            OffsetRow(self.topic, p, o.processed, o.published, o.stored)
            for p, o in ((p, run.offsets) for p, run in self.runs.items())
            if o.published > o.settled
        ]
        # idle: the consumer may have stepped over a trailing transaction marker since the
        # last commit; committing its position lets lag tools read 0
        self._commit_positions(list(self.runs), only_moved=True)
        if not stale and not self.sent_ids:
            return
        due = [c for o in stale for c in self.due_checkpoints(o.partition)]
        write = BatchWrite(self.group, offsets=stale, checkpoints=due)
        if not self.commit(write, [o.partition for o in stale]):
            return
        for o in stale:
            run = self.runs.get(o.partition)
            if run is not None:
                run.offsets.settled = o.published

    # ------------------------------------------------------------------ outbox relay
    def relay_outbox(self) -> int:
        """Publish rows committed but not marked sent (a crash between commit and publish)."""
        rows = self.db(lambda: self.store.unsent())
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
        self.db(lambda: self.store.mark_sent(ids))
        log.info("relayed %d unsent outbox rows", len(rows))
        return len(rows)

    # ------------------------------------------------------------------ PostgreSQL calls
    def db(self, make: Callable[[], Any], limit_seconds: float = 600.0) -> Any:
        """Run one database call, retrying with backoff while PostgreSQL is unreachable."""
        return self._call(self.loop, self.store, make, limit_seconds)

    def _call(
        self,
        loop: asyncio.AbstractEventLoop,
        store: Store,
        make: Callable[[], Any],
        limit_seconds: float = 600.0,
    ) -> Any:
        """`db` on an event loop and its store's pool (the committer thread has its own)."""
        delay, deadline = 0.2, time.monotonic() + limit_seconds
        while True:
            self.db_since = time.monotonic()
            try:
                out = loop.run_until_complete(asyncio.wait_for(make(), self.DB_CALL_TIMEOUT))
                if not self.postgres_ok:
                    log.warning("postgres is reachable again")
                self.postgres_ok = True
                return out
            except DB_ERRORS as exc:
                self.postgres_ok = False
                metrics.postgres_retries.inc()
                self._reset(loop, store)
                if time.monotonic() > deadline:
                    raise
                log.warning("postgres call failed (%r); retrying in %.1fs", exc, delay)
                self.health.beat()
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                self.db_since = None

    def reset_pool(self) -> None:
        """After a failure no pooled connection is trusted: the next call opens new ones."""
        self._reset(self.loop, self.store)

    @staticmethod
    def _reset(loop: asyncio.AbstractEventLoop, store: Store) -> None:
        """`reset_pool` for an event loop and its store (the committer thread has its own)."""
        with contextlib.suppress(*_RESET_ERRORS):
            loop.run_until_complete(asyncio.wait_for(store.pool.expire_connections(), 10))
