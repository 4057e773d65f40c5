import gc
from typing import Any

import numpy as np
import pytest

from processors import Batch, Engine, EngineConfig, ScopeKey
from processors.scope import FACETS, ScopeState, change_event
from schemas.outputs import ChangeEvent
from tests.conftest import blobs


def test_change_event_is_what_model_construct_builds() -> None:
    values: dict[str, Any] = {
        "event_id": "e",
        "kind": "merged",
        "scope": "document/m",
        "cluster_id": "document-1-000002",
        "related_ids": ["document-1-000001"],
        "event_time": 12.5,
        "sequence": 3,
        "size": 4,
        "weight": 2.25,
        "moved_item_ids": [],
        "reason": "average_link",
    }
    fast = change_event(dict(values))
    slow = ChangeEvent.model_construct(**values)
    assert fast == slow
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.model_dump_json() == slow.model_dump_json()
    assert ChangeEvent.model_validate_json(fast.model_dump_json()) == slow


def test_held_members_leave_the_cyclic_collector() -> None:
    """Each full pass of the collector holds the GIL (the worker's loop and committer stall):
    the engine's members, their facets and the clusters' member tables must not stay in it."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    meta = [
        {"title": f"story {i % 7} words", "entity_text": f"E{i % 5}", "categories": ["c"]}
        for i in range(len(x))
    ]
    eng = Engine(EngineConfig(tick_items=50))
    times = np.arange(len(x), dtype=np.float64)
    eng.learn(Batch(x, [f"i{i}" for i in range(len(x))], times, None, meta))
    # a tuple leaves once its items have, and a pass may visit a tuple before its items: one
    # pass per level at worst (tag pair, tags, facets, member), then one for the member table
    for _ in range(5):
        gc.collect()
    (scope,) = eng.scopes.values()
    held = [(tables, m) for tables in scope.members for m in tables.values()]
    assert held
    assert not [m for _, m in held if gc.is_tracked(m) or gc.is_tracked(m[FACETS])]
    assert not [t for t, _ in held if gc.is_tracked(t)]


def newest_of_both_rings(
    scope: ScopeState, a: int, b: int
) -> tuple[list[float], list[str | None], np.ndarray]:
    """The definition: both rings' members newest first (ties by item), the reservoir's
    size of them, oldest first."""
    r = scope.cfg.reservoir_size
    entries = [
        (-float(scope.res_time[s, p]), item, scope.res_vec[s, p].copy())
        for s in (a, b)
        for p, item in enumerate(scope.res_ids[s])
        if item is not None
    ]
    entries.sort(key=lambda e: e[:2])
    keep = entries[:r][::-1]
    vecs = np.zeros((r, scope.dim), dtype=np.float32)
    for i, e in enumerate(keep):
        vecs[i] = e[2]
    times = [-e[0] for e in keep] + [0.0] * (r - len(keep))
    return times, [e[1] for e in keep] + [None] * (r - len(keep)), vecs


@pytest.mark.parametrize("ties", [False, True])
def test_a_fold_keeps_the_newest_members_of_both_rings(ties: bool) -> None:
    cfg = EngineConfig(reservoir_size=6)
    rng = np.random.default_rng(int(ties))
    r = cfg.reservoir_size
    for trial in range(200):
        scope = ScopeState(ScopeKey("document", "t"), 4, cfg)
        for s in (3, 5):
            scope.res_vec[s] = rng.standard_normal((r, 4))
            scope.res_time[s] = rng.integers(0, 3, r) if ties else rng.random(r)
            ids: list[str | None] = [f"{rng.integers(100)}-{s}-{p}" for p in range(r)]
            for p in rng.choice(r, int(rng.integers(0, r + 1)), replace=False):
                ids[p] = None
            scope.res_ids[s] = ids
        a, b = (3, 5) if trial % 2 else (5, 3)
        times, ids, vecs = newest_of_both_rings(scope, a, b)
        scope._fold_reservoirs(a, b)
        assert scope.res_time[a].tolist() == times
        assert scope.res_ids[a] == ids
        np.testing.assert_array_equal(scope.res_vec[a], vecs)
        assert scope.res_next[a] == sum(i is not None for i in ids)


def test_assignment_reads_no_scratch_it_did_not_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """A segment's scratch arrays are allocated unfilled where the kernel writes before it
    reads (the columns of clusters added during the segment): poisoned with +inf, which
    would win any comparison it took part in, every output is the same."""
    x, _ = blobs(900, 16, 30, seed=3, spread=0.7)
    cfg = EngineConfig(search_k=2, tick_items=300)

    def outputs() -> tuple[list[str], bytes]:
        eng = Engine(cfg)
        out: list[str] = []
        for lo in range(0, len(x), 300):
            ids = [f"i{i}" for i in range(lo, lo + 300)]
            res = eng.learn(Batch(x[lo : lo + 300], ids, np.arange(lo, lo + 300, dtype=float)))
            out += [a.model_dump_json() for a in res.assignments()]
            out += [e.model_dump_json() for e in res.changes]
        return out, eng.snapshot()

    clean = outputs()
    empty = np.empty

    def poisoned(shape: Any, dtype: Any = float, **kw: Any) -> np.ndarray:
        a = empty(shape, dtype=dtype, **kw)
        a.fill(np.inf if np.issubdtype(a.dtype, np.floating) else -7)
        return a

    monkeypatch.setattr(np, "empty", poisoned)
    assert outputs() == clean
