from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from processors import Batch, Engine, EngineConfig
from schemas.inputs import VectorEvent
from stream import records


def test_event_round_trip_keeps_every_field_and_the_exact_vector() -> None:
    v = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    ev = records.Routed("i1", "d1", "event", "m", 1.7e9, {"title": "é ∑", "domain": "x"}, v)
    rec = records.decode(records.encode_event(ev))
    assert isinstance(rec, records.Routed)
    assert (rec.item_id, rec.document_id, rec.embedding_type) == ("i1", "d1", "event")
    assert rec.metadata == {"title": "é ∑", "domain": "x"} and rec.event_time == 1.7e9
    assert np.array_equal(rec.vector, v)
    back = json.loads(records.as_input_json(rec))
    assert VectorEvent.model_validate(back).item_id == "i1"


def test_delete_round_trip() -> None:
    rec = records.decode(records.encode_delete("x"))
    assert rec == records.Delete("x")


@pytest.mark.parametrize("value", [b"", b"{}", b"[1]", b"S4v1\x05\x00\x00\x00{}", b"nonsense"])
def test_foreign_bytes_are_rejected(value: bytes) -> None:
    with pytest.raises(Exception):  # noqa: B017 - the worker dead-letters whatever it raises
        records.decode(value)


def test_event_bytes_are_the_same_whatever_the_vector_dtype_or_layout() -> None:
    """The encoder takes little-endian float32 bytes as they are: the same bytes as a copy."""
    v = np.random.default_rng(1).standard_normal(8).astype(np.float32)
    want = records.encode_event(records.Routed("i", None, "event", "m", 1.0, {}, v))
    others: list[Any] = [v.astype(">f4"), v.astype(np.float64), np.repeat(v, 2)[::2]]
    for same in others:
        ev = records.Routed("i", None, "event", "m", 1.0, {}, same)
        assert records.encode_event(ev) == want
    assert want[:4] == b"S4v1" and want[-32:] == v.astype("<f4").tobytes()


def test_a_segment_of_record_bytes_is_one_matrix_the_engine_clusters_as_it_reads_them() -> None:
    """The worker gathers a segment's vector bytes into one read-only matrix: the same
    vectors as decoding record by record, and the engine reads them without writing."""
    rng = np.random.default_rng(2)
    vs = rng.standard_normal((40, 16)).astype(np.float32)
    vs /= np.linalg.norm(vs, axis=1, keepdims=True)
    values = [
        records.encode_event(records.Routed(f"i{i}", None, "event", "m", float(i), {}, v))
        for i, v in enumerate(vs)
    ]
    parts = [records.split(v) for v in values]
    assert all(isinstance(p, records.Parts) and p.dim == 16 for p in parts)
    x = records.matrix([p.body for p in parts if isinstance(p, records.Parts)])
    assert not x.flags.writeable
    decoded = [records.decode(v) for v in values]
    assert np.array_equal(
        x, np.vstack([r.vector for r in decoded if isinstance(r, records.Routed)])
    )
    ids, t = [f"i{i}" for i in range(40)], np.arange(40.0)
    got = Engine(EngineConfig()).learn(Batch(x, ids, t))
    want = Engine(EngineConfig()).learn(Batch(vs.copy(), ids, t))
    assert got.cluster_ids == want.cluster_ids and np.array_equal(got.similarity, want.similarity)
