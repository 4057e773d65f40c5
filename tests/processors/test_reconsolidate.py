from __future__ import annotations

import numpy as np

from processors import Engine, EngineConfig
from processors.reconsolidate import reconsolidate
from tests.conftest import blobs


def test_skips_scope_with_too_few_clusters():
    x, _ = blobs(40, 16, 2, seed=1, spread=0.05)
    eng = Engine(EngineConfig(min_weight=2.0))
    eng.process(x, [f"i{i}" for i in range(40)], np.arange(40.0))
    rec = eng.reconsolidate_all().reconsolidations[0]
    assert rec.skipped and "below the minimum" in rec.skipped
    assert rec.clusters_found == 0


def test_run_records_groups_medoids_and_outliers():
    x, _ = blobs(900, 32, 12, seed=2, spread=0.2)
    eng = Engine(EngineConfig(min_weight=2.0, min_reconsolidation_clusters=3))
    eng.process(x, [f"i{i}" for i in range(900)], np.arange(900.0))
    rec = eng.reconsolidate_all().reconsolidations[0]
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
    res = eng.process(x[order], [f"i{i}" for i in range(16)], np.arange(16.0))
    return eng, res, order


def test_split_keeps_largest_part_id_and_moves_items():
    d = 32
    b = (0.2 * np.eye(d)[0] + np.eye(d)[1]) / np.hypot(0.2, 1.0)
    eng, res, order = two_topic_cluster(b, 0.02, 0.9, seed=0)
    assert len(set(res.cluster_no.tolist())) == 1
    st = next(iter(eng.scopes.values()))
    old_id = res.cluster_id(0)
    rec = reconsolidate(st, "manual")
    splits = [e for e in st.events if e.kind == "split"]
    assert rec.transitions["split"] == 1 and len(splits) == 1
    ev = splits[0]
    assert ev.cluster_id == old_id and ev.related_ids[0] != old_id
    topic_b = {f"i{i}" for i, o in enumerate(order) if o >= 10}
    assert set(ev.moved_item_ids) == topic_b
    new_slot = st.slot_of[int(ev.related_ids[0].rsplit("-", 1)[1])]
    assert set(st.members[new_slot]) == topic_b
    assert not (set(st.members[st.slot_of[int(old_id.rsplit("-", 1)[1])]]) & topic_b)


def test_split_guard_keeps_similar_parts_together():
    d = 32
    b = (np.eye(d)[0] + np.eye(d)[1]) / np.sqrt(2)
    eng, _, _ = two_topic_cluster(b, 0.01, 0.3, seed=1)
    st = next(iter(eng.scopes.values()))
    reconsolidate(st, "manual")
    assert not [e for e in st.events if e.kind == "split"]


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
        r = eng.process(
            x[s : s + 500], [f"i{i}" for i in range(s, s + 500)], np.arange(s, s + 500.0)
        )
        recs += r.reconsolidations
    assert any(r.trigger == "drift" for r in recs)
