"""Stage one of the worker: read the input topics, validate, and re-key every vector by its
scope onto the by-scope topic, so that one partition (hence one worker) owns each scope
whatever keys upstream used. Bad messages go to the DLQ with their reason and origin.

Exactly once: the routed records, the dead letters and the input offsets are committed in
one Kafka transaction (consume-transform-produce, fenced by the consumer group generation).

The commit is pipelined: adding the input offsets to the transaction and committing it wait
~10-30 ms on the broker (the group coordinator, markers on every partition written), and in
the one-loop worker that wait held up the clustering stage as well. Both run on a thread of
their own; until the next poll collects them the router consumes nothing (a producer has one
transaction at a time), and the loop goes on with the clustering stage. Collecting a failed
commit aborts the transaction and reads the batch again, as a failure in line did.
"""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from processors import Engine, EngineConfig
from schemas.messages import decode_message
from schemas.validation import InputError
from stream import metrics, records
from stream.crash_loop import CrashLoopGuard
from stream.dead_letters import dead_letter, origin_headers
from stream.settings import Settings
from stream.steps import StepClock

log = logging.getLogger(__name__)


@dataclass
class Committing:
    """A batch whose transaction commit runs on the commit thread."""

    done: Future[float]
    """the commit's wall seconds, or its KafkaException"""
    msgs: list[Message]
    """the input messages of the batch (read again if the commit fails)"""
    routed: int


class Router:
    def __init__(
        self, s: Settings, engine_cfg: EngineConfig, guard: CrashLoopGuard | None = None
    ) -> None:
        self.s = s
        self.guard = guard
        # only for scope keys: the router never clusters
        self.scoper = Engine(engine_cfg)
        self.consumer = Consumer(
            {
                **s.consumer_config(s.router_group),
                "partition.assignment.strategy": "cooperative-sticky",
            }
        )
        self.producer = Producer(
            s.producer_config(
                **{
                    "transactional.id": f"{s.router_group}-{uuid.uuid4()}",
                    # dead letters carry the original bytes, up to the broker's message limit
                    "message.max.bytes": 1_048_000,
                    # routed records are mostly raw float32 vectors, which lz4 does not
                    # shrink: compressing them cost the router, the broker (it validates
                    # compressed batches record by record) and the worker CPU for nothing
                    "compression.type": "none",
                }
            )
        )
        self.producer.init_transactions(30)
        self.consumer.subscribe(list(s.input_topics), on_revoke=self._on_revoke)
        self._partitions: int | None = None
        self._routed = 0  # records routed in this batch (one metrics update per batch)
        self.clock = StepClock()  # time per step (benchmarks/e2e_service.py reads it)
        self._commits = ThreadPoolExecutor(1, thread_name_prefix="router-commit")
        self.committing: Committing | None = None

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.guard is not None:
            for tp in partitions:
                self.guard.forget(tp.topic, tp.partition)

    def by_scope_partitions(self) -> int:
        if self._partitions is None:
            md = self.consumer.list_topics(self.s.by_scope_topic, timeout=10)
            self._partitions = len(md.topics[self.s.by_scope_topic].partitions)
        return self._partitions

    def poll(self, timeout: float | None = None) -> int:
        """One transaction over one micro-batch (what arrives within `timeout` seconds,
        default the batch timeout), its commit left running; returns the number of input
        messages taken. While the previous batch's commit runs (up to `timeout`), nothing
        is taken."""
        clock = self.clock
        clock.begin()
        wait = self.s.batch_timeout_ms / 1000 if timeout is None else timeout
        was_committing = self.committing is not None
        settled = self.collect(wait)
        clock.lap("router_commit_wait")
        if not settled:
            return 0
        msgs = self.consumer.consume(self.s.batch_max, 0.0 if was_committing else wait)
        msgs = [m for m in msgs if not self._is_error(m)]
        clock.lap("router_consume")
        if not msgs:
            return 0
        poison: list[Message] = []
        if self.guard is not None:
            admitted = self.guard.admit(msgs)
            for tp in admitted.rewind:
                self.consumer.seek(tp)
            msgs, poison = admitted.keep, admitted.poison
        self._routed = 0
        self.producer.begin_transaction()
        try:
            for m in poison:
                self._dead(m, InputError("poison", "processing failed repeatedly at this offset"))
            for m in msgs:
                self._route(m)
            clock.lap("router_route")
        except KafkaException as exc:
            self._abort(msgs + poison, exc)
            return 0
        metrics.batch_seconds.labels("router_route").observe(clock.batch["router_route"])
        offsets = self._next_offsets(msgs + poison)
        group = self.consumer.consumer_group_metadata()
        self.committing = Committing(
            self._commits.submit(self._commit, offsets, group), msgs + poison, self._routed
        )
        clock.lap("router_txn")
        return len(msgs) + len(poison)

    def _commit(self, offsets: list[TopicPartition], group: object) -> float:
        """On the commit thread: the input offsets join the transaction and it commits, two
        waits on the broker that librdkafka does without the GIL."""
        t0 = time.perf_counter()
        self.producer.send_offsets_to_transaction(offsets, group, 30)
        self.producer.commit_transaction(30)
        return time.perf_counter() - t0

    def collect(self, timeout: float | None = None) -> bool:
        """Settle the batch whose commit is running, waiting up to `timeout` seconds (None:
        until it ends); False while it still runs. A failed commit is aborted and its batch
        read again (the next poll takes it)."""
        c = self.committing
        if c is None:
            return True
        try:
            seconds = c.done.result(timeout)
        except TimeoutError:
            return False
        except KafkaException as exc:
            self.committing = None
            self._abort(c.msgs, exc)
            return True
        self.committing = None
        metrics.batch_seconds.labels("router_txn").observe(seconds)
        metrics.consumed.labels("router").inc(len(c.msgs))
        metrics.produced.labels(self.s.by_scope_topic).inc(c.routed)
        return True

    def _abort(self, msgs: list[Message], exc: KafkaException) -> None:
        """A transaction that failed (routing or committing): aborted, its batch read again."""
        log.warning("router transaction failed, retrying the batch: %s", exc)
        self.producer.abort_transaction(30)
        self._rewind(msgs)

    def _is_error(self, m: Message) -> bool:
        err = m.error()
        if err is None:
            return False
        if err.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error: %s", err)
        return True

    def _route(self, m: Message) -> None:
        value = m.value()
        if value is None:  # upstream tombstone: the key is the item id
            key = m.key()
            if not key:
                self._dead(m, InputError("missing_id", "tombstone without an item id key"))
                return
            item = key.decode("utf-8", "replace")
            for p in range(self.by_scope_partitions()):
                self._produce(
                    self.s.by_scope_topic, records.encode_delete(item), key=key, partition=p
                )
            return
        try:
            events = decode_message(value)
            scope_key = self.scoper.scope_key
            out = [
                (
                    records.encode_event(ev),
                    scope_key(ev.embedding_type, ev.embedding_model, ev.metadata).name.encode(),
                )
                for ev in events
            ]
        except InputError as err:
            self._dead(m, err)
            return
        except Exception as exc:
            self._dead(m, InputError("undecodable", str(exc)[:500], type(exc).__name__))
            return
        origin = origin_headers(m)
        try:
            for body, key in out:
                self._produce(self.s.by_scope_topic, body, key=key, headers=origin)
        except KafkaException as exc:  # e.g. a routed record over the broker's size limit
            self._dead(m, InputError("unroutable", str(exc)[:500], type(exc).__name__))
            return
        self._routed += len(out)

    def _produce(self, topic: str, value: bytes, **kw: Any) -> None:
        while True:
            try:
                self.producer.produce(topic, value, **kw)
                return
            except BufferError:  # the local queue is full: let it drain
                self.producer.poll(0.1)

    def _dead(self, m: Message, err: InputError) -> None:
        key, value, headers = dead_letter(m, err, "router")
        self._produce(self.s.dlq_topic, value, key=key, headers=headers)
        metrics.dead_lettered.labels(err.reason).inc()
        log.info("dead letter %s[%d]@%d: %s", m.topic(), m.partition(), m.offset(), err)

    @staticmethod
    def _next_offsets(msgs: list[Message]) -> list[TopicPartition]:
        nxt: dict[tuple[str, int], int] = {}
        for m in msgs:
            tp = (str(m.topic()), int(m.partition() or 0))
            nxt[tp] = max(nxt.get(tp, 0), int(m.offset() or 0) + 1)
        return [TopicPartition(t, p, o) for (t, p), o in nxt.items()]

    def _rewind(self, msgs: list[Message]) -> None:
        """Read the batch again after a failed transaction: a handled failure, not one the
        record caused, so the re-read is not counted as an attempt."""
        first: dict[tuple[str, int], int] = {}
        for m in msgs:
            tp = (str(m.topic()), int(m.partition() or 0))
            first[tp] = min(first.get(tp, int(m.offset() or 0)), int(m.offset() or 0))
        if self.guard is not None:
            self.guard.excuse(first)
        for (t, p), o in first.items():
            self.consumer.seek(TopicPartition(t, p, o))

    def close(self) -> None:
        """The commit that runs ends first, so that leaving the group hands over committed
        offsets."""
        self.collect()
        self._commits.shutdown()
        self.consumer.close()
        self.producer.flush(10)
