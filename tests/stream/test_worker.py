"""The clustering worker in-process against the real broker, database and cache, where a
test needs to step it batch by batch."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace
from types import SimpleNamespace

from confluent_kafka import TopicPartition

from processors.config import EngineConfig
from schemas.outputs import SUMMARY_EXCLUDE, ClusterResult
from state.db import BatchWrite, OffsetRow
from stream import metrics, records, synthetic
from stream.service import Service
from stream.worker import Worker
from tests.conftest import wait_until
from tests.stream.conftest import Env


def _vector_events(env: Env, n: int, seed: int) -> list[tuple[bytes | None, bytes | None]]:
    model = f"{env.settings.prefix}-m"
    items = synthetic.stories(n, 32, n_stories=6, alive=3, seed=seed)
    return [
        (
            f"{it.document_id}-{seed}".encode(),
            synthetic.vector_event(it, model).replace(
                it.item_id.encode(), f"{it.item_id}-{seed}".encode()
            ),
        )
        for it in items
    ]


def _fenced() -> float:
    return metrics.REGISTRY.get_sample_value("clusterer_fenced_batches_total") or 0.0


def test_a_zombie_worker_is_fenced_and_reloads_from_postgres(env: Env) -> None:
    """Another worker took a partition over and committed past this worker's view of it
    (this one missed the rebalance). This worker's next commit is refused whole: nothing of
    the batch reaches Postgres, the records that the other worker owns are not written a
    second time, and the partitions of the batch reload from what Postgres holds."""
    s = env.settings
    svc = Service(s, EngineConfig(), role="all", serve_http=False)
    svc.start()
    assert svc.router is not None and svc.worker is not None
    router, worker = svc.router, svc.worker
    try:
        env.produce(_vector_events(env, 90, seed=1))

        def step_until(n: int) -> dict[str, str] | None:
            router.poll()
            worker.poll()
            m = env.memberships()
            return m if len(m) >= n else None

        wait_until(lambda: step_until(90), 90, "the first 90 items committed", 0)
        p = max(worker.runs, key=lambda q: worker.runs[q].offsets.stored or -1)
        before = worker.runs[p].offsets.stored
        assert before is not None and before > 0

        # the next events are routed, not yet clustered by this worker
        env.produce(_vector_events(env, 60, seed=2))
        wait_until(lambda: router.poll() == 0 and len(env.by_scope_records()) >= 150, 60,
                   "150 routed records")  # fmt: skip
        part: dict[int, list[str]] = defaultdict(list)
        last: dict[int, int] = {}
        for m in env.by_scope_records():
            rec = records.decode(m.value())
            if int(m.offset()) >= (worker.runs[m.partition()].offsets.stored or 0):
                assert isinstance(rec, records.Routed)
                part[m.partition()].append(rec.item_id)
                last[m.partition()] = int(m.offset())
        taken = part[p]
        assert taken, "the rival's partition has new records"

        # the rival: committed partition p up to its newest record (its rows are its own
        # business; what matters is that this worker does not write them again)
        rival = BatchWrite(
            s.group_id, offsets=[OffsetRow(s.by_scope_topic, p, last[p] + 1, 0, before)]
        )
        svc.loop.run_until_complete(worker.store.commit(rival))

        fenced_before = _fenced()
        expected = 150 - len(taken)

        def fenced_then_committed() -> dict[str, str] | None:
            # the fence is seen when the batch in flight is collected, at a later poll
            m = step_until(expected)
            return m if m is not None and _fenced() > fenced_before else None

        got = wait_until(fenced_then_committed, 90, f"fenced, then {expected} memberships", 0)
        assert _fenced() == fenced_before + 1
        assert not set(taken) & set(got), "records owned by the rival were written again"
        assert len(got) == expected
        assert worker.runs[p].offsets.stored == last[p] + 1
        assert worker.runs[p].offsets.processed == last[p] + 1
        # later commits of the reloaded partition go through again
        env.produce(_vector_events(env, 30, seed=3))
        wait_until(lambda: step_until(expected + 30), 90, "30 more memberships", 0)
        assert _fenced() == fenced_before + 1
    finally:
        svc.close()


def _two_waves_owing_snapshots(env: Env, svc: Service) -> set[str]:
    """Two waves of 90 events, committed batch by batch within a long snapshot interval:
    returns the clusters whose snapshots are owed (touched since their last one)."""
    assert svc.router is not None and svc.worker is not None
    router, worker = svc.router, svc.worker

    def step_until(n: int) -> bool:
        router.poll()
        worker.poll()
        return len(env.memberships()) >= n

    env.produce(_vector_events(env, 90, seed=1))
    wait_until(lambda: step_until(90), 90, "the first 90 items committed", 0)
    env.produce(_vector_events(env, 90, seed=2))
    wait_until(lambda: step_until(180), 90, "180 items committed", 0)
    owed = {cid for run in worker.runs.values() for cid in run.dirty}
    assert owed, "the second wave's clusters wait for the interval"
    return owed


def test_snapshots_are_owed_over_the_interval_then_published_with_their_summaries(
    env: Env,
) -> None:
    """Within the snapshot interval, clusters changed by later batches are owed, not
    rendered again; once it passes (here: when the input pauses) the owed snapshots go out,
    and the compacted topic's latest record of every active cluster agrees with the summary
    PostgreSQL holds for it."""
    s = replace(env.settings, snapshot_interval_ms=600_000, checkpoint_items=100_000)
    svc = Service(s, EngineConfig(), role="all", serve_http=False)
    svc.start()
    assert svc.router is not None and svc.worker is not None
    worker = svc.worker
    try:
        owed = _two_waves_owing_snapshots(env, svc)

        worker.s = replace(s, snapshot_interval_ms=0)
        wait_until(lambda: worker.poll() == 0 and not any(r.dirty for r in worker.runs.values()),
                   30, "the owed snapshots published")  # fmt: skip
        rows = env.sql(
            "SELECT id, summary::text AS summary FROM clusters"
            " WHERE status = 'active' AND summary IS NOT NULL"
        )
        assert owed & {r["id"] for r in rows}
        latest: dict[str, ClusterResult] = {}
        for m in env.consume_all(s.clusters_topic, len(rows)):
            if m.value() is not None:
                latest[m.key().decode()] = ClusterResult.model_validate_json(m.value())
        for r in rows:
            published = latest[r["id"]].model_dump(mode="json", exclude=set(SUMMARY_EXCLUDE))
            assert published == json.loads(r["summary"])
    finally:
        svc.close()


def test_a_graceful_close_publishes_the_snapshots_still_owed(env: Env) -> None:
    """Closing within the snapshot interval: the clusters changed since the last snapshots
    go out at close (topic and summaries), not only after the next owner's replay."""
    s = replace(env.settings, snapshot_interval_ms=600_000, checkpoint_items=100_000)
    svc = Service(s, EngineConfig(), role="all", serve_http=False)
    svc.start()
    assert svc.router is not None and svc.worker is not None
    closed = False
    try:
        owed = _two_waves_owing_snapshots(env, svc)
        published_before = len(env.consume_all(s.clusters_topic, 1))
        svc.close()
        closed = True
        rows = {
            r["id"]: json.loads(r["summary"])
            for r in env.sql(
                "SELECT id, summary::text AS summary FROM clusters"
                " WHERE status = 'active' AND summary IS NOT NULL"
            )
        }
        active_owed = owed & set(rows)
        assert active_owed, "some owed clusters are active"
        latest: dict[str, ClusterResult] = {}
        for m in env.consume_all(s.clusters_topic, published_before + len(active_owed)):
            if m.value() is not None:
                latest[m.key().decode()] = ClusterResult.model_validate_json(m.value())
        for cid in active_owed:
            published = latest[cid].model_dump(mode="json", exclude=set(SUMMARY_EXCLUDE))
            assert published == rows[cid], f"{cid}: the topic has its snapshot of close"
    finally:
        if not closed:
            svc.close()


class _Recorder:
    """Stands in for the worker's protocol and consumer: records the order of calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def collect(self) -> bool:
        self.calls.append("collect")
        return True

    def take_over(self, partition: int) -> int:
        self.calls.append(f"take_over {partition}")
        return 0

    def revoke(self, partition: int) -> None:
        self.calls.append(f"revoke {partition}")

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.calls.append("assign")

    def unassign(self) -> None:
        self.calls.append("unassign")


def test_a_rebalance_collects_the_batch_in_flight_first() -> None:
    """The batch in flight commits while its partitions are still this worker's (revoke),
    and before any partition is loaded from PostgreSQL (assign): a take-over must see the
    offsets that batch stores."""
    rec = _Recorder()
    me = SimpleNamespace(protocol=rec, topic="t", relay_outbox=lambda: None)
    parts = [TopicPartition("t", 1), TopicPartition("t", 4)]
    Worker._on_revoke(me, rec, parts)  # type: ignore[arg-type]
    assert rec.calls == ["collect", "revoke 1", "revoke 4", "unassign"]
    rec.calls.clear()
    Worker._on_assign(me, rec, parts)  # type: ignore[arg-type]
    assert rec.calls == ["collect", "take_over 1", "take_over 4", "assign"]
