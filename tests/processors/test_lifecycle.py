import heapq

import numpy as np
import pytest

from processors import Batch, Engine, EngineConfig
from processors.lifecycle import merge_touched
from processors.scope import ScopeState
from tests.conftest import blobs


def every_pair_merge(scope: ScopeState) -> None:
    """The reference: average-link merging with every link computed exactly after each
    merge (the implementation before the float32 bound)."""
    thr = scope.cfg.merge_threshold
    touched = [s for s in sorted(scope.touched, key=lambda s: int(scope.cid[s]))]
    touched = [s for s in touched if scope.cid[s] >= 0]
    version: dict[int, int] = {}
    heap: list[tuple[float, int, int, int, int]] = []
    n, cid = scope.n_used, scope.cid
    inv_w = np.zeros(n)
    live = cid[:n] >= 0
    inv_w[live] = 1.0 / scope.w[:n][live]

    def push(slots: list[int]) -> None:
        sims = (scope.ls[slots] @ scope.ls[:n].T) * inv_w
        sims *= inv_w[slots][:, None]
        sims[np.arange(len(slots)), slots] = -np.inf
        for r, b in zip(*np.nonzero(sims >= thr), strict=True):
            a, b = slots[int(r)], int(b)
            lo, hi = (a, b) if cid[a] < cid[b] else (b, a)
            item = (-float(sims[r, b]), int(cid[lo]), int(cid[hi]))
            heapq.heappush(heap, (*item, version.get(lo, 0), version.get(hi, 0)))

    push(touched)
    while heap:
        _, ca, cb, va, vb = heapq.heappop(heap)
        a, b = scope.slot_of.get(ca), scope.slot_of.get(cb)
        if a is None or b is None or version.get(a, 0) != va or version.get(b, 0) != vb:
            continue
        absorber = scope.fold(a, b, reason="average_link")
        version[absorber] = version.get(absorber, 0) + 1
        inv_w[a + b - absorber] = 0.0
        inv_w[absorber] = 1.0 / scope.w[absorber]
        push([absorber])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merges_are_those_of_every_exact_average_link(seed: int) -> None:
    """The float32 bound only skips pairs that cannot reach the threshold: the merges (events,
    then the whole state) are those of computing every link exactly after each merge."""
    cfg = EngineConfig(tick_items=1_000_000, tick_seconds=1e12, merge_threshold=0.3)
    x, _ = blobs(600, 16, 40, seed=seed, spread=0.9)
    eng = Engine(cfg)
    eng.learn(Batch(x, [f"i{i}" for i in range(len(x))], np.zeros(len(x))))
    snap = eng.snapshot()
    ours, reference = Engine.restore(snap), Engine.restore(snap)
    (a,), (b,) = ours.scopes.values(), reference.scopes.values()
    merge_touched(a)
    every_pair_merge(b)
    assert len([e for e in a.events if e.kind == "merged"]) > 20
    assert a.events == b.events
    assert ours.snapshot() == reference.snapshot()
