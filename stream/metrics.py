"""Prometheus metrics of the service. Labels are bounded sets (topic, partition, scope,
reason, kind); cluster and item ids never become label values."""

from __future__ import annotations

import contextlib

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from stream.buildinfo import version

REGISTRY = CollectorRegistry()
# process_* (memory, CPU, open files), python_info and python_gc_*: what the default registry
# exports, on the service's own registry (the default one is not served)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

build = Info("clusterer_build", "Version of the running service", registry=REGISTRY)
build.info({"version": version()})

consumed = Counter(
    "clusterer_events_consumed_total", "Input messages read", ["stage"], registry=REGISTRY
)
produced = Counter(
    "clusterer_events_produced_total", "Messages published", ["topic"], registry=REGISTRY
)
dead_lettered = Counter(
    "clusterer_events_dead_lettered_total",
    "Messages sent to the DLQ",
    ["reason"],
    registry=REGISTRY,
)
assigned = Counter("clusterer_items_assigned_total", "Items clustered", registry=REGISTRY)
changes = Counter(
    "clusterer_cluster_changes_total", "Cluster-change events", ["kind"], registry=REGISTRY
)
batch_seconds = Histogram(
    "clusterer_batch_seconds",
    "Processing time of one micro-batch, by step",
    ["step"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
event_time_lag = Gauge(
    "clusterer_event_time_lag_seconds",
    "Wall clock minus the newest event time processed",
    registry=REGISTRY,
)
consumer_lag = Gauge(
    "clusterer_consumer_lag",
    "High watermark minus position",
    ["topic", "partition"],
    registry=REGISTRY,
)
active_clusters = Gauge(
    "clusterer_active_clusters", "Active clusters per scope", ["scope"], registry=REGISTRY
)
candidate_clusters = Gauge(
    "clusterer_candidate_clusters", "Candidate clusters per scope", ["scope"], registry=REGISTRY
)
reconsolidation_seconds = Histogram(
    "clusterer_reconsolidation_seconds",
    "Engine time of micro-batches that applied a reconsolidation (HDBSCAN itself computes"
    " in a background thread; this is what the stream waited)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
    registry=REGISTRY,
)
rebalances = Counter(
    "clusterer_rebalances_total",
    "Partition assignments and revocations",
    ["kind"],
    registry=REGISTRY,
)
ready = Gauge(
    "clusterer_ready",
    "1 when /readyz would answer 200 (partitions assigned, PostgreSQL reachable); set at"
    " every scrape",
    registry=REGISTRY,
)
redis_degraded = Gauge(
    "clusterer_redis_degraded",
    "1 while Redis is unreachable and the cache is stale",
    registry=REGISTRY,
)
size_warnings = Counter(
    "clusterer_cluster_size_warnings_total",
    "Clusters that passed the size warning",
    registry=REGISTRY,
)
postgres_retries = Counter(
    "clusterer_postgres_retries_total",
    "Batch commits retried after a database error",
    registry=REGISTRY,
)
fenced = Counter(
    "clusterer_fenced_batches_total",
    "Batch commits refused because another worker had committed the partition meanwhile"
    " (the batch is dropped and the partition reloaded)",
    registry=REGISTRY,
)


def forget_partition(topic: str, partition: int) -> None:
    """Drop a revoked partition's series: its owner reports it now, and a stale value here
    would add phantom lag to every sum over the group."""
    with contextlib.suppress(KeyError):
        consumer_lag.remove(topic, str(partition))


retention_removed = Counter(
    "clusterer_retention_rows_removed_total",
    "Rows removed by retention runs, by table",
    ["table"],
    registry=REGISTRY,
)
retention_table_rows = Gauge(
    "clusterer_retention_table_rows",
    "Rows in the tables retention bounds, after the last run",
    ["table"],
    registry=REGISTRY,
)
retention_table_bytes = Gauge(
    "clusterer_retention_table_bytes",
    "Size of those tables with their indexes and TOAST (pg_total_relation_size)",
    ["table"],
    registry=REGISTRY,
)
retention_oldest_age = Gauge(
    "clusterer_retention_oldest_age_seconds",
    "Age of the oldest row retention may remove (outbox: wall clock since sent; others: event"
    " time of the row's scope); 0 when none is held",
    ["table"],
    registry=REGISTRY,
)
retention_window = Gauge(
    "clusterer_retention_window_seconds",
    "The policy's window for the tables it ages (outbox: wall clock after sent; clusters:"
    " event time after the cluster ended; reconsolidation_runs: event time after the run):"
    " compare with clusterer_retention_oldest_age_seconds",
    ["table"],
    registry=REGISTRY,
)
retention_runs = Counter(
    "clusterer_retention_runs_total",
    "Retention runs: done, skipped (another run held the lock), failed",
    ["result"],
    registry=REGISTRY,
)
retention_run_seconds = Histogram(
    "clusterer_retention_run_seconds",
    "Duration of a retention run",
    buckets=(0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900),
    registry=REGISTRY,
)
