"""Creating the service's topics with the AdminClient (idempotent)."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from stream.settings import Settings

log = logging.getLogger(__name__)


def topic_specs(s: Settings) -> list[NewTopic]:
    retention = {"retention.ms": str(s.retention_ms)}
    compacted = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
    spec = [
        (s.by_scope_topic, retention),
        (s.assignments_topic, retention),
        (s.changes_topic, retention),
        (s.clusters_topic, compacted),
        (s.dlq_topic, retention),
    ]
    return [
        NewTopic(name, num_partitions=s.partitions, replication_factor=s.replication, config=cfg)
        for name, cfg in spec
    ]


def ensure_topics(s: Settings, include_inputs: bool = False, timeout: float = 30.0) -> list[str]:
    """Create missing topics; returns the names created. Inputs are normally owned upstream
    and only created here for the demo and the tests."""
    admin = AdminClient(s.client_config())
    specs = topic_specs(s)
    if include_inputs:
        specs += [
            NewTopic(t, num_partitions=s.partitions, replication_factor=s.replication)
            for t in s.input_topics
        ]
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
        todo = [t for t in specs if t.topic not in existing]
        if not todo:
            return []
        created = []
        for name, fut in admin.create_topics(todo, operation_timeout=timeout).items():
            try:
                fut.result(timeout)
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS: another worker won the race
                    raise
    finally:
        admin.poll(0)  # hands librdkafka's queued log lines to Python logging
    log.info("created topics %s", created)
    return created


def delete_topics(s: Settings, include_inputs: bool = False, timeout: float = 30.0) -> list[str]:
    """Delete this deployment's topics (and its inputs when asked); returns the names
    deleted. For test and benchmark runs that create a prefix each: left behind, their
    partitions pile up on the broker and slow it down."""
    admin = AdminClient(s.client_config())
    names = {t.topic for t in topic_specs(s)} | (set(s.input_topics) if include_inputs else set())
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
        todo = sorted(names & existing)
        if not todo:
            return []
        for fut in admin.delete_topics(todo, operation_timeout=timeout).values():
            fut.result(timeout)
    finally:
        admin.poll(0)
    return todo
