"""The clustering worker in-process against the real broker, database and cache, where a
test needs to step it batch by batch."""

from __future__ import annotations

from collections import defaultdict

from processors.config import EngineConfig
from state.db import BatchWrite, OffsetRow
from stream import metrics, records, synthetic
from stream.service import Service
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
        got = wait_until(lambda: step_until(expected), 90, f"{expected} memberships", 0)
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
