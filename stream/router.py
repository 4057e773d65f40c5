"""Stage one of the worker: read the input topics, validate, and re-key every vector by its
scope onto the by-scope topic, so that one partition (hence one worker) owns each scope
whatever keys upstream used. Bad messages go to the DLQ with their reason and origin.

Exactly once: the routed records, the dead letters and the input offsets are committed in
one Kafka transaction (consume-transform-produce, fenced by the consumer group generation).
"""

from __future__ import annotations

import logging
import uuid
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
        default the batch timeout); returns the number of input messages."""
        clock = self.clock
        clock.begin()
        wait = self.s.batch_timeout_ms / 1000 if timeout is None else timeout
        msgs = self.consumer.consume(self.s.batch_max, wait)
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
            self.producer.send_offsets_to_transaction(
                self._next_offsets(msgs + poison), self.consumer.consumer_group_metadata(), 30
            )
            self.producer.commit_transaction(30)
            clock.lap("router_txn")
            for step in ("router_route", "router_txn"):
                metrics.batch_seconds.labels(step).observe(clock.batch[step])
        except KafkaException as exc:
            log.warning("router transaction failed, retrying the batch: %s", exc)
            self.producer.abort_transaction(30)
            self._rewind(msgs + poison)
            return 0
        metrics.consumed.labels("router").inc(len(msgs) + len(poison))
        metrics.produced.labels(self.s.by_scope_topic).inc(self._routed)
        return len(msgs) + len(poison)

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
        for (t, p), o in first.items():
            if self.guard is not None:
                self.guard.excuse(t, p)
            self.consumer.seek(TopicPartition(t, p, o))

    def close(self) -> None:
        self.consumer.close()
        self.producer.flush(10)
