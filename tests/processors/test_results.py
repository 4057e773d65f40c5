"""The Stage 5 record of a cluster: granularity fields (seed 003 §3.1), exact under deletes,
ISO 8601 times, event-time metadata, and the average pairwise similarity."""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime
from typing import Any

import numpy as np

from processors import Batch, Engine, EngineConfig, ScopeKey
from processors.representatives import canonical_mention
from schemas.outputs import ClusterResult, iso_utc

CFG = EngineConfig(min_weight=2.0)
DIM = 16


def _near(direction: int, n: int, seed: int, spread: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros((n, DIM))
    x[:, direction] = 1.0
    x += spread * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _one_cluster(
    kind: str, metas: list[dict[str, Any]], times: list[float] | None = None
) -> tuple[Engine, ClusterResult]:
    eng = Engine(CFG)
    n = len(metas)
    t = np.asarray(times if times is not None else [1_765_670_400.0 + i for i in range(n)])
    eng.learn(
        Batch(
            _near(0, n, seed=1),
            [f"{kind}_emb_{i}" for i in range(n)],
            t,
            [f"doc_{i % 3}" for i in range(n)],
            list[dict[str, Any] | None](metas),
            [ScopeKey(kind, "all-mpnet-base-v2")] * n,
        )
    )
    (result,) = eng.results()
    assert result.cluster_size == n
    return eng, result


def test_entity_cluster_names_its_canonical_mention_and_every_variant() -> None:
    mentions = ["Joe Biden", "Biden", "President Biden", "Joe Biden", "Biden", "Joe Biden"]
    metas: list[dict[str, Any]] = [
        {"entity_text": m, "entity_type": "PER", "text": m} for m in mentions
    ]
    metas[1]["entity_type"] = "ORG"  # a tagger's slip: the dominant type still wins
    _, r = _one_cluster("entity", metas)
    assert r.cluster_type == "entity"
    assert r.canonical_entity == "Joe Biden"
    assert r.entity_type == "PER"
    assert r.entity_mentions == ["Joe Biden", "Biden", "President Biden"]


def test_entity_fields_stay_exact_when_members_are_deleted() -> None:
    mentions = ["Joe Biden", "Biden", "Biden", "President Biden", "Joe Biden", "Biden"]
    metas = [{"entity_text": m, "entity_type": "PER"} for m in mentions]
    eng, r = _one_cluster("entity", metas)
    assert r.canonical_entity == "Biden"
    eng.forget(["entity_emb_1", "entity_emb_2"])  # "Biden" now 1, "Joe Biden" 2
    eng.forget(["entity_emb_3"])  # the only "President Biden"
    (after,) = eng.results()
    assert after.cluster_size == 3
    assert after.canonical_entity == "Joe Biden"
    assert after.entity_mentions == ["Joe Biden", "Biden"]


def test_canonical_mention_ties_go_to_the_medoid_then_the_longest() -> None:
    tie = Counter({"Biden": 2, "Joe Biden": 2, "POTUS": 1})
    assert canonical_mention(tie, "Biden") == "Biden"
    assert canonical_mention(tie, "POTUS") == "Joe Biden"  # the medoid's is not among the tied
    assert canonical_mention(tie, None) == "Joe Biden"
    assert canonical_mention(Counter({"Ann": 1, "Bob": 1}), None) == "Ann"
    assert canonical_mention(Counter(), "x") is None


def test_storyline_cluster_lists_its_storylines_and_all_their_events() -> None:
    metas = [
        {
            "storyline_id": f"storyline_batch1_{i}",
            "event_ids": [f"ev{i}", f"ev{i + 1}"],
            "primary_entities": ["G7", "Japan"] if i % 2 else ["G7"],
            "domain": "diplomatic_relations",
            "text": "G7 summit talks",
        }
        for i in range(4)
    ]
    eng, r = _one_cluster("storyline", metas)
    assert r.storyline_ids == [f"storyline_batch1_{i}" for i in range(4)]
    assert r.event_ids == ["ev0", "ev1", "ev2", "ev3", "ev4"]
    assert r.primary_entities == ["G7", "Japan"]
    assert r.domain == "diplomatic_relations"
    eng.forget(["storyline_emb_3"])  # ev4 only came with it; ev3 stays with storyline 2
    (after,) = eng.results()
    assert after.storyline_ids == [f"storyline_batch1_{i}" for i in range(3)]
    assert after.event_ids == ["ev0", "ev1", "ev2", "ev3"]


def test_event_cluster_carries_type_domain_entities_and_event_ids() -> None:
    metas = [
        {
            "event_id": f"doc_{i}_event_0",
            "event_type": "contact_meet" if i != 2 else "conflict_attack",
            "domain": "diplomatic_relations",
            "entities": [{"text": "G7"}, "United States"] if i % 2 else ["G7"],
            "text": "leaders meet at the summit",
        }
        for i in range(5)
    ]
    _, r = _one_cluster("event", metas)
    assert r.event_type == "contact_meet"
    assert r.domain == "diplomatic_relations"
    assert r.primary_entities == ["G7", "United States"]
    assert r.event_ids == [f"doc_{i}_event_0" for i in range(5)]
    assert r.canonical_entity is None and r.entity_mentions == []


def test_document_cluster_has_dominant_categories_in_its_metadata() -> None:
    cats = [["politics", "technology"], ["politics"], ["technology", "ai"], ["politics"]]
    metas = [{"title": "AI regulation bill", "categories": c} for c in cats]
    _, r = _one_cluster("document", metas)
    assert r.metadata.dominant_categories == ["politics", "technology", "ai"]
    assert r.document_ids == ["doc_0", "doc_1", "doc_2"]
    _, bare = _one_cluster("document", [{"title": "x"}] * 3)
    assert bare.metadata.dominant_categories is None


def test_times_are_iso_8601_and_the_timestamp_is_the_event_time_watermark() -> None:
    times = [1_765_324_800.0, 1_765_346_400.5, 1_765_411_200.0]  # 10 Dec 0h and 6h, 11 Dec
    eng, r = _one_cluster("document", [{"title": "t"}] * 3, times)
    assert r.temporal_span == ["2025-12-10T00:00:00Z", "2025-12-11T00:00:00Z"]
    assert r.metadata.timestamp == "2025-12-11T00:00:00Z"
    assert iso_utc(1_765_411_200.5) == "2025-12-11T00:00:00.500Z"
    assert datetime.fromisoformat(iso_utc(1_765_411_200.5)).timestamp() == 1_765_411_200.5
    # a later item in another scope of the same engine does not move this scope's timestamp
    later = Batch(
        _near(1, 1, 3), ["other"], np.asarray([1_800_000_000.0]), scopes=[ScopeKey("x", "m")]
    )
    eng.learn(later)
    again = next(c for c in eng.results(include_candidates=True) if c.cluster_id == r.cluster_id)
    assert again.metadata.timestamp == "2025-12-11T00:00:00Z"
    assert r.metadata.algorithm and r.metadata.min_cluster_size == CFG.hdbscan_min_cluster_size


def test_intra_cluster_similarity_is_the_weighted_mean_over_distinct_pairs() -> None:
    n = 7
    x = _near(0, n, seed=5, spread=0.3)
    times = 1_765_670_400.0 + np.arange(n, dtype=np.float64) * 20_000.0  # member weights differ
    eng = Engine(EngineConfig(min_weight=2.0, assign_threshold=0.2))
    eng.learn(Batch(x, [f"i{i}" for i in range(n)], times))
    (r,) = eng.results()
    assert r.cluster_size == n
    age = times.max() - times
    w = np.exp(-math.log(2.0) * age / CFG.half_life_seconds)
    cos = x.astype(np.float64) @ x.astype(np.float64).T
    ww = np.outer(w, w)
    off = ~np.eye(n, dtype=bool)
    expected = float((ww * cos)[off].sum() / ww[off].sum())
    assert abs(r.intra_cluster_similarity - expected) < 1e-5
    # the plain mean of |centroid sum|^2 / W^2 (self pairs counted) is higher: not what we say
    assert r.intra_cluster_similarity < float((ww * cos).sum() / ww.sum()) - 1e-3
