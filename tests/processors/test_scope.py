import gc
from typing import Any

import numpy as np

from processors import Batch, Engine, EngineConfig
from processors.scope import FACETS, change_event
from schemas.outputs import ChangeEvent


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
