"""Stage one of the worker: read the input topics, validate, and re-key every vector by its
scope onto the by-scope topic, so that one partition (hence one worker) owns each scope
whatever keys upstream used. Bad messages go to the DLQ with their reason and origin.

Exactly once: the routed records, the dead letters and the input offsets are committed in
one Kafka transaction (consume-transform-produce, fenced by the consumer group generation).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from processors import Engine, EngineConfig
from schemas.messages import decode_message
from schemas.validation import InputError, decode_vector
from stream import metrics, records
from stream.settings import Settings

log = logging.getLogger(__name__)


def source_headers(msg: Message) -> list[tuple[str, str | bytes | None]]:
    """Where a message came from; routed records carry their input's origin along."""
    return [
        ("source_topic", str(msg.topic())),
        ("source_partition", str(msg.partition())),
        ("source_offset", str(msg.offset())),
    ]


def dlq_headers(msg: Message, err: InputError) -> list[tuple[str, str | bytes | None]]:
    """Reason, detail and origin of a dead letter. For a routed record, the origin is the
    input message it was routed from (its headers), not the by-scope record."""
    raw = cast(list[tuple[str, bytes | None]], msg.headers() or [])
    carried: list[tuple[str, str | bytes | None]] = [
        (k, v.decode() if isinstance(v, bytes) else v) for k, v in raw if k.startswith("source_")
    ]
    origin = carried if len(carried) == 3 else source_headers(msg)
    return [("reason", err.reason), ("detail", err.detail[:1000]), *origin]


class Router:
    def __init__(self, s: Settings, engine_cfg: EngineConfig) -> None:
        self.s = s
        # only for scope keys: the router never clusters
        self.scoper = Engine(engine_cfg)
        common: dict[str, Any] = {"bootstrap.servers": s.kafka_bootstrap}
        self.consumer = Consumer(
            {
                **s.consumer_config(s.router_group),
                "partition.assignment.strategy": "cooperative-sticky",
            }
        )
        self.producer = Producer(
            {
                **common,
                "transactional.id": f"{s.router_group}-{uuid.uuid4()}",
                "enable.idempotence": True,
                "linger.ms": 5,
                "partitioner": "murmur2_random",
                # dead letters carry the original bytes, up to the broker's message limit
                "message.max.bytes": 1_048_000,
            }
        )
        self.producer.init_transactions(30)
        self.consumer.subscribe(list(s.input_topics))
        self._partitions: int | None = None

    def by_scope_partitions(self) -> int:
        if self._partitions is None:
            md = self.consumer.list_topics(self.s.by_scope_topic, timeout=10)
            self._partitions = len(md.topics[self.s.by_scope_topic].partitions)
        return self._partitions

    def poll(self) -> int:
        """One transaction over one micro-batch; returns the number of input messages."""
        msgs = self.consumer.consume(self.s.batch_max, self.s.batch_timeout_ms / 1000)
        msgs = [m for m in msgs if not self._is_error(m)]
        if not msgs:
            return 0
        self.producer.begin_transaction()
        try:
            for m in msgs:
                self._route(m)
            self.producer.send_offsets_to_transaction(
                self._next_offsets(msgs), self.consumer.consumer_group_metadata(), 30
            )
            self.producer.commit_transaction(30)
        except KafkaException as exc:
            log.warning("router transaction failed, retrying the batch: %s", exc)
            self.producer.abort_transaction(30)
            self._rewind(msgs)
            return 0
        metrics.consumed.labels("router").inc(len(msgs))
        return len(msgs)

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
                self.producer.produce(
                    self.s.by_scope_topic, records.encode_delete(item), key=key, partition=p
                )
            return
        try:
            events = decode_message(value)
            routed = [(ev, decode_vector(ev.vector)) for ev in events]
        except InputError as err:
            self._dead(m, err)
            return
        origin = source_headers(m)
        for ev, vec in routed:
            scope = self.scoper.scope_key(ev.embedding_type, ev.embedding_model, ev.metadata)
            self.producer.produce(
                self.s.by_scope_topic,
                records.encode_event(ev, vec),
                key=scope.name.encode(),
                headers=origin,
            )
        metrics.produced.labels(self.s.by_scope_topic).inc(len(routed))

    def _dead(self, m: Message, err: InputError) -> None:
        value = m.value() or b""
        headers = dlq_headers(m, err)
        if len(value) > 1_040_000:  # cannot travel whole: keep the reason and the origin
            headers.append(("truncated_from", str(len(value))))
            value = value[:1_000_000]
        self.producer.produce(self.s.dlq_topic, value, key=m.key(), headers=headers)
        metrics.dead_lettered.labels(err.reason).inc()
        log.info("dead letter %s[%d]@%d: %s", m.topic(), m.partition(), m.offset(), err)

    @staticmethod
    def _next_offsets(msgs: list[Message]) -> list[TopicPartition]:
        nxt: dict[tuple[str, int], int] = {}
        for m in msgs:
            nxt[(str(m.topic()), int(m.partition() or 0))] = int(m.offset() or 0) + 1
        return [TopicPartition(t, p, o) for (t, p), o in nxt.items()]

    def _rewind(self, msgs: list[Message]) -> None:
        first: dict[tuple[str, int], int] = {}
        for m in msgs:
            first.setdefault((str(m.topic()), int(m.partition() or 0)), int(m.offset() or 0))
        for (t, p), o in first.items():
            self.consumer.seek(TopicPartition(t, p, o))

    def close(self) -> None:
        self.consumer.close()
        self.producer.flush(10)
