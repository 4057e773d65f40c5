"""Service settings from environment variables (all documented in the README, with these
defaults). Secrets such as database passwords travel in the DSN variables, never in the repo."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from state.retention import RetentionPolicy

from schemas.errors import ClustererError


class SettingsError(ClustererError, ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:19092"
    input_topics: tuple[str, ...] = ("stage3.embeddings",)
    prefix: str = "stage4"
    group_id: str = "stage4-clusterer"
    partitions: int = 6
    replication: int = 1
    retention_ms: int = 7 * 24 * 3600 * 1000
    postgres_dsn: str = "postgresql://postgres@127.0.0.1:15432/clusterer"
    redis_url: str = "redis://127.0.0.1:16379/0"
    http_port: int = 8080
    batch_max: int = 2000
    batch_timeout_ms: int = 50
    fetch_wait_ms: int = 20
    """longest a consumer's fetch waits at the broker for data (librdkafka fetch.wait.max.ms,
    default 500). The by-scope topic is transactional: records become readable when the
    router commits, and a fetch already parked at the broker may sit out its full wait
    before it sees them, which showed as ~0.5 s of tail latency (docs/benchmarks.md)."""
    session_timeout_ms: int = 45_000
    """how long the group waits for a silent member (librdkafka session.timeout.ms): after a
    crash, its partitions move (or its restart gets them back) only after this."""
    checkpoint_items: int = 50_000
    snapshot_interval_ms: int = 1000
    """how often a partition publishes the Stage 5 snapshots (clusters topic, Redis and
    `clusters.summary`) of the clusters changed since the last ones; 0 = every batch"""
    blas_threads: int = 1
    """native threads of the worker's BLAS and OpenMP pools (stream.service.limit_threads);
    0 leaves the libraries' defaults (one per core)"""
    migrate_on_start: bool = True
    engine_config: Path | None = None
    shutdown_seconds: float = 20.0
    # retention (state/retention.py; README "Retention")
    retention_outbox_sent_hours: float = 24.0
    retention_ended_cluster_days: float = 30.0
    retention_reconsolidation_days: float = 30.0
    retention_interval_seconds: float = 300.0
    """how often the service runs retention in the background; 0 turns it off"""
    retention_batch_rows: int = 500
    retention_pause_seconds: float = 0.01
    retention_lock_timeout_ms: int = 200
    extra: dict[str, Any] = field(default_factory=dict)

    # topic names ------------------------------------------------------------------
    @property
    def by_scope_topic(self) -> str:
        return f"{self.prefix}.by-scope"

    @property
    def assignments_topic(self) -> str:
        return f"{self.prefix}.assignments"

    @property
    def changes_topic(self) -> str:
        return f"{self.prefix}.cluster-changes"

    @property
    def clusters_topic(self) -> str:
        return f"{self.prefix}.clusters"

    @property
    def dlq_topic(self) -> str:
        return f"{self.prefix}.dlq"

    @property
    def router_group(self) -> str:
        return f"{self.group_id}.router"

    def client_config(self) -> dict[str, Any]:
        """What every Kafka client of the service gets: the brokers, and a Python logger for
        librdkafka's own lines (without it they go raw to stderr, one per failed connect)."""
        from stream.logs import kafka_logger

        return {"bootstrap.servers": self.kafka_bootstrap, "logger": kafka_logger()}

    def producer_config(self, **overrides: Any) -> dict[str, Any]:
        """Every producer of the service: idempotent (a retried send is never duplicated),
        lz4, a short linger, keys hashed as the Java clients do (murmur2, so other tools
        partition alike). Callers add what is theirs (a transactional id, a size limit)."""
        return {
            **self.client_config(),
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": "lz4",
            "partitioner": "murmur2_random",
            **overrides,
        }

    def consumer_config(self, group: str) -> dict[str, Any]:
        """What the router's and the clustering worker's consumers share: manual offsets,
        read_committed (the by-scope topic is transactional) and the short fetch wait."""
        return {
            **self.client_config(),
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": self.fetch_wait_ms,
            "session.timeout.ms": self.session_timeout_ms,
        }

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """CLUSTERER_<FIELD> for every field (upper case); overrides win over the environment."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "extra":
                continue
            raw = os.environ.get(f"CLUSTERER_{f.name.upper()}")
            if raw is None:
                continue
            values[f.name] = _parse(f.name, raw, f.default)
        values.update({k: v for k, v in overrides.items() if v is not None})
        s = cls(**values)
        s.validate()
        return s

    def validate(self) -> None:
        for name in ("partitions", "replication", "batch_max", "checkpoint_items", "fetch_wait_ms"):
            if getattr(self, name) < 1:
                raise SettingsError(f"CLUSTERER_{name.upper()} must be at least 1")
        if self.session_timeout_ms < 3000:  # below the broker's group.min.session.timeout.ms
            raise SettingsError("CLUSTERER_SESSION_TIMEOUT_MS must be at least 3000")
        if not self.input_topics:
            raise SettingsError("CLUSTERER_INPUT_TOPICS must name at least one topic")
        if self.snapshot_interval_ms < 0:
            raise SettingsError("CLUSTERER_SNAPSHOT_INTERVAL_MS must be at least 0")
        if self.blas_threads < 0:
            raise SettingsError("CLUSTERER_BLAS_THREADS must be at least 0")
        if not 0.0 <= self.retention_interval_seconds < float("inf"):
            raise SettingsError("CLUSTERER_RETENTION_INTERVAL_SECONDS must be >= 0 and finite")
        self.retention_policy()

    def retention_policy(self) -> RetentionPolicy:
        from state.retention import PolicyError, RetentionPolicy

        try:
            return RetentionPolicy(
                outbox_sent_hours=self.retention_outbox_sent_hours,
                ended_cluster_days=self.retention_ended_cluster_days,
                reconsolidation_days=self.retention_reconsolidation_days,
                batch_rows=self.retention_batch_rows,
                pause_seconds=self.retention_pause_seconds,
                lock_timeout_ms=self.retention_lock_timeout_ms,
            )
        except PolicyError as exc:
            raise SettingsError(str(exc)) from exc


def _parse(name: str, raw: str, default: Any) -> Any:
    try:
        if name == "input_topics":
            return tuple(t.strip() for t in raw.split(",") if t.strip())
        if name == "engine_config":
            return Path(raw) if raw else None
        if isinstance(default, bool):
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        return raw
    except ValueError as exc:
        raise SettingsError(f"CLUSTERER_{name.upper()}={raw!r} is not valid") from exc
