from __future__ import annotations

import json

import numpy as np
import pytest

from processors import Batch, Engine, EngineConfig
from tests.conftest import blobs


def learn(eng: Engine, x: np.ndarray, start: int = 0):
    ids = [f"i{i}" for i in range(start, start + len(x))]
    return eng.learn(Batch(x, ids, np.arange(start, start + len(x), dtype=float)))


def test_skips_scope_with_too_few_clusters():
    x, _ = blobs(40, 16, 2, seed=1, spread=0.05)
    eng = Engine(EngineConfig(min_weight=2.0))
    learn(eng, x)
    rec = eng.reconsolidate().reconsolidations[0]
    assert rec.skipped and "below the minimum" in rec.skipped
    assert rec.clusters_found == 0


def test_run_records_groups_medoids_and_outliers():
    x, _ = blobs(900, 32, 12, seed=2, spread=0.2)
    eng = Engine(EngineConfig(min_weight=2.0, min_reconsolidation_clusters=3))
    learn(eng, x)
    rec = eng.reconsolidate().reconsolidations[0]
    assert rec.skipped is None and rec.input_clusters >= 10
    assert rec.clusters_found >= 10
    for g in rec.groups:
        if g.label < 0:
            assert g.medoid_id is None
        else:
            assert g.medoid_id is not None and g.mean_intra_similarity is not None
    assert sum(g.size for g in rec.groups) == rec.input_points
    assert rec.parameters["algorithm"] == "hdbscan"


def two_topic_cluster(second: np.ndarray, noise: float, merge_threshold: float, seed: int):
    """One cluster forced (join threshold 0.01) to hold 10 items of e0 and 6 of `second`."""
    rng = np.random.default_rng(seed)
    d = second.shape[0]
    a = np.eye(d)[0]
    pts = [a + noise * rng.standard_normal(d) for _ in range(10)] + [
        second + noise * rng.standard_normal(d) for _ in range(6)
    ]
    x = np.array(pts, dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    order = rng.permutation(len(x))
    cfg = EngineConfig(
        assign_threshold=0.01,
        min_weight=2.0,
        reservoir_size=16,
        min_reconsolidation_clusters=1,
        hdbscan_min_cluster_size=3,
        hdbscan_min_samples=2,
        merge_threshold=merge_threshold,
    )
    eng = Engine(cfg)
    res = learn(eng, x[order])
    return eng, res, order


def test_split_keeps_largest_part_id_and_moves_items():
    d = 32
    b = (0.2 * np.eye(d)[0] + np.eye(d)[1]) / np.hypot(0.2, 1.0)
    eng, res, order = two_topic_cluster(b, 0.02, 0.9, seed=0)
    assert len(set(res.cluster_ids)) == 1
    old_id = res.cluster_ids[0]
    out = eng.reconsolidate()
    [rec] = out.reconsolidations
    splits = [e for e in out.changes if e.kind == "split"]
    assert rec.transitions["split"] == 1 and len(splits) == 1
    ev = splits[0]
    assert ev.cluster_id == old_id and ev.related_ids[0] != old_id
    topic_b = {f"i{i}" for i, o in enumerate(order) if o >= 10}
    assert set(ev.moved_item_ids) == topic_b
    members = {c.cluster_id: set(c.member_ids) for c in eng.results(include_candidates=True)}
    assert members[ev.related_ids[0]] == topic_b
    assert not (members[old_id] & topic_b)
    # the adapters see every moved item and both clusters
    assert {m.item_id for m in out.moves} == topic_b
    assert {c.cluster_id for c in out.clusters} == {old_id, ev.related_ids[0]}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_split_guard_keeps_similar_parts_together(seed):
    """HDBSCAN proposes the split (MONIC maps the cluster onto two groups), the guard
    refuses it: the parts' mean similarity is above merge_threshold."""
    d = 32
    b = (np.eye(d)[0] + np.eye(d)[1]) / np.sqrt(2)
    eng, _, _ = two_topic_cluster(b, 0.01, 0.3, seed=seed)
    out = eng.reconsolidate()
    [rec] = out.reconsolidations
    assert rec.clusters_found == 2  # HDBSCAN saw the two topics ...
    assert rec.transitions["guarded"] == 1  # ... and the one cluster's split was refused
    assert rec.transitions["split"] == 0
    assert not [e for e in out.changes if e.kind == "split"]
    assert len(eng.results(include_candidates=True)) == 1


def test_drift_triggers_early_reconsolidation():
    # a quiet stream on few topics, then a burst of brand-new topics
    x1, _ = blobs(3000, 32, 4, seed=3, spread=0.1)
    rng = np.random.default_rng(4)
    x2 = rng.standard_normal((3000, 32)).astype(np.float32)
    x2 /= np.linalg.norm(x2, axis=1, keepdims=True)
    x = np.vstack([x1, x2])
    cfg = EngineConfig(min_weight=2.0, min_reconsolidation_clusters=3)
    eng = Engine(cfg)
    recs = []
    for s in range(0, 6000, 500):
        recs += learn(eng, x[s : s + 500], s).reconsolidations
    recs += eng.flush().reconsolidations
    drift = [r for r in recs if r.trigger == "drift"]
    assert drift
    assert drift[0].parameters["started_at_sequence"] < cfg.reconsolidate_items


def _drifting(n: int = 4000) -> np.ndarray:
    x1, _ = blobs(n // 2, 32, 4, seed=3, spread=0.1)
    x2, _ = blobs(n // 2, 32, 12, seed=8, spread=0.1)
    return np.vstack([x1, x2])


def _run(x: np.ndarray, cfg: EngineConfig, batch: int) -> tuple[Engine, list[str]]:
    """Change events in order, then run records in order (their interleaving in results
    follows the batching; each sequence on its own does not)."""
    eng = Engine(cfg)
    changes: list[str] = []
    runs: list[str] = []
    for s in range(0, len(x), batch):
        r = learn(eng, x[s : s + batch], s)
        changes += [c.model_dump_json() for c in r.changes]
        runs += [rec.model_dump_json() for rec in r.reconsolidations]
    f = eng.flush()
    changes += [c.model_dump_json() for c in f.changes]
    runs += [r.model_dump_json() for r in f.reconsolidations]
    return eng, changes + runs


def test_background_reconsolidation_lands_at_a_fixed_item_position():
    """The run computes in a thread; where its result lands depends on item counts only, so
    any batching gives the same bytes, and the record says where it started."""
    cfg = EngineConfig(
        min_weight=2.0,
        min_reconsolidation_clusters=3,
        reconsolidate_items=1024,
        reconsolidate_delay_items=512,
        tick_items=128,
    )
    x = _drifting()
    _, a = _run(x, cfg, 1000)
    _, b = _run(x, cfg, 77)
    assert a == b
    runs = [json.loads(line) for line in a if '"trigger"' in line]
    assert len(runs) >= 2
    started = [r["parameters"]["started_at_sequence"] for r in runs]
    assert all(s % 128 == 0 for s in started)


def test_checkpoint_with_a_pending_run_continues_identically():
    cfg = EngineConfig(
        min_weight=2.0,
        min_reconsolidation_clusters=3,
        reconsolidate_items=1024,
        reconsolidate_delay_items=1024,
        tick_items=128,
    )
    x = _drifting()
    _, out_whole = _run(x, cfg, 500)
    eng = Engine(cfg)
    out: list[str] = []
    cut = 1500
    first = learn(eng, x[:cut])
    assert any(st.pending_recon is not None for st in eng.scopes.values())
    data = eng.snapshot()
    eng = Engine.restore(data)
    assert eng.snapshot() == data
    assert any(st.pending_recon is not None for st in eng.scopes.values())
    second = learn(eng, x[cut:], cut)
    f = eng.flush()
    for r in (first, second, f):
        out += [c.model_dump_json() for c in r.changes]
    for r in (first, second, f):
        out += [rec.model_dump_json() for rec in r.reconsolidations]
    assert out == out_whole
