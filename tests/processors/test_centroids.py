import heapq

import numpy as np
import pytest

from processors import Batch, Engine, EngineConfig, lifecycle
from processors.centroids import LiveCentroids
from processors.scope import ScopeState
from stream.synthetic import blobs, drifting_stream
from tests.processors.test_reconsolidate import two_topic_cluster


def assert_rows_are_the_live_centroids(scope: ScopeState) -> None:
    c = scope.centroids
    live = scope.live_slots()
    assert c.n == live.size == len(scope.slot_of)
    assert sorted(c.slots.tolist()) == live.tolist()
    assert (c.row_of[c.slots] == np.arange(c.n)).all()
    assert (np.delete(c.row_of, c.slots) == -1).all()
    want = (scope.ls[live] / scope.norm[live, None]).astype(np.float32)
    np.testing.assert_array_equal(c.of_many(live), want)


def test_the_compact_rows_are_the_live_clusters_through_merges_and_retirements() -> None:
    """Assignment, merges, retirement and forgotten members keep the compact matrix equal to
    the live clusters' centroids (splits: the next test)."""
    cfg = EngineConfig(
        half_life_seconds=3_600,
        tick_items=128,
        reconsolidate_items=1_500,
        reconsolidate_delay_items=0,
        min_reconsolidation_clusters=3,
    )
    eng = Engine(cfg)
    kinds: set[str] = set()
    for x, t, ids in drifting_stream(6_000, 16, 250, alive=12, mean_life=600, spread=0.9):
        res = eng.learn(Batch(x, ids, t))
        kinds.update(e.kind for e in res.changes)
        res = eng.forget(ids[::50])
        kinds.update(e.kind for e in res.changes)
        (scope,) = eng.scopes.values()
        assert_rows_are_the_live_centroids(scope)
    res = eng.reconsolidate()
    kinds.update(e.kind for e in res.changes)
    assert_rows_are_the_live_centroids(scope)
    assert {"created", "merged", "retired"} <= kinds
    restored = Engine.restore(eng.snapshot())
    assert_rows_are_the_live_centroids(next(iter(restored.scopes.values())))


def test_the_compact_rows_follow_a_split() -> None:
    d = 32
    second = (0.2 * np.eye(d)[0] + np.eye(d)[1]) / np.hypot(0.2, 1.0)
    eng, _, _ = two_topic_cluster(second, 0.02, 0.9, seed=0)
    (scope,) = eng.scopes.values()
    assert scope.centroids.n == 1
    out = eng.reconsolidate()
    assert [e.kind for e in out.changes].count("split") == 1
    assert scope.centroids.n == 2
    assert_rows_are_the_live_centroids(scope)


def test_rows_keep_their_places_while_held() -> None:
    c = LiveCentroids(dim=1)
    c.grow(4)
    c.put_many(np.arange(4), np.arange(4.0)[:, None])
    with c.held():
        c.drop(0)
        with c.held():
            c.drop(2)
        assert c.slots.tolist() == [0, 1, 2, 3]
        c.put(1, np.array([9.0]))
        assert c.rows[1].tolist() == [9.0]
    assert sorted(c.slots.tolist()) == [1, 3]
    assert c.of(3).tolist() == [3.0] and c.of(1).tolist() == [9.0]
    with pytest.raises(KeyError):
        c.of(0)


def test_the_order_of_rows_does_not_change_what_the_engine_decides() -> None:
    """A restored engine's rows are in slot order, a running one's in the order clusters
    came and went: both go on alike."""
    cfg = EngineConfig(half_life_seconds=3_600, tick_items=128)
    chunks = list(drifting_stream(4_000, 16, 250, alive=12, mean_life=600, spread=0.9))
    eng = Engine(cfg)
    for x, t, ids in chunks[:8]:
        eng.learn(Batch(x, ids, t))
    restored = Engine.restore(eng.snapshot())
    (a,), (b,) = eng.scopes.values(), restored.scopes.values()
    assert a.centroids.slots.tolist() != b.centroids.slots.tolist()
    for x, t, ids in chunks[8:]:
        ra, rb = eng.learn(Batch(x, ids, t)), restored.learn(Batch(x, ids, t))
        assert ra.changes == rb.changes and ra.moves == rb.moves
        np.testing.assert_array_equal(ra.similarity, rb.similarity)
    assert eng.snapshot() == restored.snapshot()


@pytest.mark.parametrize("seed", [0, 1])
def test_exact_links_do_not_depend_on_the_order_of_rows(monkeypatch, seed: int) -> None:
    """A row's BLAS product depends on its place in the rows it is computed with, so the
    exact average links are computed over columns in slot order: the same links, to the
    bit, whatever order the compact rows are in."""
    cfg = EngineConfig(tick_items=1_000_000, tick_seconds=1e12, merge_threshold=0.3)
    x, _ = blobs(600, 48, 40, seed=seed, spread=0.9)
    eng = Engine(cfg)
    eng.learn(Batch(x, [f"i{i}" for i in range(len(x))], np.zeros(len(x))))
    snap = eng.snapshot()
    (a,), (b,) = Engine.restore(snap).scopes.values(), Engine.restore(snap).scopes.values()
    c = b.centroids
    perm = np.random.default_rng(seed).permutation(c.n)
    c.mat[: c.n], c.slot_at[: c.n] = c.mat[perm], c.slot_at[perm]
    c.row_of[c.slots] = np.arange(c.n)
    links: list[list[tuple[float, int, int]]] = []

    class Recording:
        @staticmethod
        def heappush(heap: list[tuple], entry: tuple) -> None:
            links[-1].append(entry[:3])
            heapq.heappush(heap, entry)

        @staticmethod
        def heapify(heap: list[tuple]) -> None:
            links[-1].extend(e[:3] for e in heap)
            heapq.heapify(heap)

        heappop = staticmethod(heapq.heappop)

    monkeypatch.setattr(lifecycle, "heapq", Recording)
    for scope in (a, b):
        links.append([])
        lifecycle.merge_touched(scope)
    assert len(links[0]) > 100
    assert sorted(links[0]) == sorted(links[1])
