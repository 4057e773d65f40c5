"""The service's Prometheus registry: what operators' dashboards and alerts read."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer
from prometheus_client import generate_latest

from processors.config import EngineConfig
from stream import metrics
from stream.buildinfo import version
from stream.service import Service
from tests.conftest import wait_until
from tests.stream.conftest import Env
from tests.stream.test_worker import _vector_events


def lag_partitions(topic: str) -> set[int]:
    """Partitions that have a consumer-lag series for this topic."""
    out: set[int] = set()
    for fam in metrics.REGISTRY.collect():
        if fam.name == "clusterer_consumer_lag":
            out |= {int(s.labels["partition"]) for s in fam.samples if s.labels["topic"] == topic}
    return out


def test_process_gc_and_build_info_are_exported() -> None:
    text = generate_latest(metrics.REGISTRY).decode()
    for name in (
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "python_gc_collections_total",
        "python_info",
    ):
        assert f"\n{name}" in text, name
    assert f'clusterer_build_info{{version="{version()}"}} 1.0' in text


def test_a_revoked_partition_loses_its_lag_series(env: Env) -> None:
    """A second member joins the group: the partitions this worker gives up must stop
    reporting lag here (a stale series would add phantom lag to every sum)."""
    s = env.settings
    svc = Service(s, EngineConfig(), role="all", serve_http=False)
    svc.start()
    assert svc.router is not None and svc.worker is not None
    router, worker = svc.router, svc.worker
    rival = Consumer({**s.consumer_config(s.group_id), "client.id": f"rival-{uuid.uuid4()}"})
    try:
        env.produce(_vector_events(env, 60, seed=1))

        def step() -> set[int]:
            router.poll()
            worker.poll()
            return lag_partitions(s.by_scope_topic)

        wait_until(lambda: step() == {0, 1, 2}, 90, "lag series of all 3 partitions", 0)
        rival.subscribe([s.by_scope_topic])

        def rebalanced() -> bool:
            rival.poll(0.1)
            worker.poll()
            return bool(rival.assignment()) and 0 < len(worker.runs) < 3

        wait_until(rebalanced, 90, "the rival to take partitions over", 0)
        assert lag_partitions(s.by_scope_topic) <= set(worker.runs)
    finally:
        rival.close()
        svc.close()
