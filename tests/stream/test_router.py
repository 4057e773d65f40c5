"""The router's by-scope keys: the looked-up names are the engine's own (unit, no Kafka)."""

from __future__ import annotations

import numpy as np

from processors import Engine, EngineConfig
from schemas.messages import DecodedEvent
from stream.router import ScopeNames


def event(kind: str, model: str, **meta: object) -> DecodedEvent:
    return DecodedEvent("i", None, kind, model, 1.7e9, dict(meta), np.ones(3, np.float32))


def test_looked_up_names_are_the_engines_names_also_past_the_table_limit() -> None:
    engine = Engine(EngineConfig())
    names = ScopeNames(engine, limit=5)
    for round_ in range(3):
        for i in range(12):
            ev = event(("document", "event")[i % 2], f"model-{i}", domain=f"d{round_}")
            want = engine.scope_key(ev.embedding_type, ev.embedding_model, ev.metadata)
            assert names.of(ev) == want.name.encode()
            assert len(names.names) <= 5


def test_names_split_by_scope_fields_follow_each_events_metadata() -> None:
    engine = Engine(EngineConfig(scope_fields=("domain",)))
    names = ScopeNames(engine)
    assert names.of(event("event", "m", domain="a")) == b"event/m/domain=a"
    assert names.of(event("event", "m", domain="b")) == b"event/m/domain=b"
    assert names.of(event("event", "m")) == b"event/m/domain="
