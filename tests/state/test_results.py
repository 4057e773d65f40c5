"""The stored form of a ClusterResult (summary + centroid bytes + members) and the one way
back to the full record."""

from __future__ import annotations

import json

import numpy as np

from processors import Batch, Engine, EngineConfig, ScopeKey
from state.results import assemble, centroid_bytes, summary_json
from tests.conftest import blobs


def _result():
    x, _ = blobs(40, 16, 1, seed=3, spread=0.05)
    eng = Engine(EngineConfig(min_weight=2.0))
    metas = [
        {"entity_text": ["Biden", "Joe Biden"][i % 2], "entity_type": "PER"} for i in range(40)
    ]
    eng.learn(
        Batch(
            x,
            [f"e{i}" for i in range(40)],
            1_765_670_400.0 + np.arange(40, dtype=np.float64),
            [f"d{i // 4}" for i in range(40)],
            list(metas),
            [ScopeKey("entity", "m")] * 40,
        )
    )
    (r,) = eng.results()
    return r


def _row(r, **over):
    row = {
        "id": r.cluster_id,
        "cluster_type": r.scope,
        "embedding_type": r.cluster_type,
        "status": r.status,
        "size": r.cluster_size,
        "weight": r.weight,
        "label": r.cluster_label,
        "medoid_item_id": r.medoid_id,
        "summary": summary_json(r),
        "first_event_time": 1_765_670_400.0,
        "last_event_time": 1_765_670_439.0,
        "centroid": centroid_bytes(r.centroid_vector),
    }
    row.update(over)
    return row


def test_summary_centroid_and_members_give_back_the_whole_result() -> None:
    r = _result()
    stored = json.loads(summary_json(r))
    assert not {"member_ids", "document_ids", "centroid_vector"} & set(stored)
    back = assemble(_row(r), [(m, f"d{int(m[1:]) // 4}") for m in r.member_ids])
    assert back is not None
    # float32 storage of the centroid is the only loss
    assert back.model_dump(exclude={"centroid_vector"}) == r.model_dump(exclude={"centroid_vector"})
    assert np.allclose(back.centroid_vector, r.centroid_vector, atol=1e-7)


def test_the_row_wins_over_an_older_summary() -> None:
    r = _result()
    gone = assemble(_row(r, status="merged", size=0, weight=0.0), [])
    assert gone is not None
    assert (gone.status, gone.cluster_size, gone.member_ids) == ("merged", 0, [])
    assert gone.canonical_entity == r.canonical_entity  # the last active state's facets
    assert assemble(_row(r, summary=None), []) is None  # a candidate never summarised
