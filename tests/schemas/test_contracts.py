from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

import numpy as np
import pytest

from processors import Batch, BatchResult, Engine, EngineConfig
from schemas import InputError, ValidationLimits, decode_vector
from schemas.export import DIR, MODELS, render
from schemas.messages import decode_message
from schemas.validation import check_matrix


def event(**over):
    base = {
        "item_id": "v1",
        "document_id": "d1",
        "embedding_type": "event",
        "embedding_model": "all-mpnet-base-v2",
        "event_time": "2025-12-14T00:00:00Z",
        "metadata": {"domain": "economic_activity"},
        "vector": [0.6, 0.8],
    }
    base.update(over)
    return json.dumps(base).encode()


def reason(payload: bytes, limits: ValidationLimits | None = None) -> str:
    with pytest.raises(InputError) as exc:
        evs = decode_message(payload, limits or ValidationLimits())
        for e in evs:
            decode_vector(e.vector)
    return exc.value.reason


def test_json_schema_files_match_models():
    for name, model in MODELS.items():
        path = DIR / f"{name}.schema.json"
        assert path.exists(), f"missing {path}; run `clusterer schemas`"
        assert path.read_text() == render(model), f"{path} drifted; run `clusterer schemas`"


def test_good_event_json_and_base64_agree():
    ev = decode_message(event())[0]
    assert ev.event_time == 1765670400.0
    b64 = base64.b64encode(np.array([0.6, 0.8], "<f4").tobytes()).decode()
    ev2 = decode_message(event(vector=b64))[0]
    assert np.allclose(decode_vector(ev.vector), decode_vector(ev2.vector))


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"{not json", "not_json"),
        (b"[1, 2]", "schema_violation"),
        (event(item_id=""), "schema_violation"),
        (json.dumps({"embedding_type": "event"}).encode(), "schema_violation"),
        (event(embedding_type="paragraph"), "schema_violation"),
        (event(event_time="yesterday"), "schema_violation"),
        (event(vector=[0.0, 0.0]), "zero_vector"),
        (event(vector=[]), "empty_vector"),
        (event(vector="!!notbase64"), "bad_vector_encoding"),
        (event(vector=base64.b64encode(b"abc").decode()), "bad_vector_encoding"),
    ],
)
def test_bad_messages_have_reasons(payload, expected):
    assert reason(payload) == expected


def test_non_finite_vector_rejected():
    b64 = base64.b64encode(np.array([np.nan, 1.0], "<f4").tobytes()).decode()
    assert reason(event(vector=b64)) == "non_finite"
    with pytest.raises(InputError) as exc:
        decode_vector([float("inf"), 1.0])
    assert exc.value.reason == "non_finite"


def test_oversize_payload_rejected():
    assert reason(event(), ValidationLimits(max_payload_bytes=50)) == "oversize"


def test_off_norm_vectors_are_renormalised():
    v = decode_vector([3.0, 4.0])
    assert np.isclose(np.linalg.norm(v), 1.0) and np.allclose(v, [0.6, 0.8])
    m = check_matrix(np.array([[3.0, 4.0], [0.0, 2.0]]))
    assert np.allclose(np.linalg.norm(m, axis=1), 1.0)


def test_embedded_document_fans_out():
    doc = {
        "document_id": "doc_001",
        "job_id": "j",
        "embedded_at": "2025-12-15T10:00:00Z",
        "source_processed_document": {"title": "G7 summit opens"},
        "document_embedding": {
            "document_id": "doc_001",
            "vector_id": "doc_emb_doc_001",
            "vector": [1.0, 0.0],
            "text_source": "title",
            "normalized_date": "2025-12-14T00:00:00Z",
            "metadata": {},
        },
        "event_embeddings": [
            {
                "event_id": "e1",
                "document_id": "doc_001",
                "vector_id": "event_emb_e1",
                "vector": [0.0, 1.0],
                "event_type": "contact_meet",
                "domain": "diplomatic_relations",
                "event_description": "leaders meet",
                "metadata": {},
            }
        ],
        "entity_embeddings": [
            {
                "entity_id": "n1",
                "document_id": "doc_001",
                "vector_id": "entity_emb_n1",
                "vector": [0.6, 0.8],
                "entity_text": "G7",
                "entity_type": "ORG",
                "context": "",
                "metadata": {},
            }
        ],
        "storyline_embeddings": [
            {
                "storyline_id": "s1",
                "vector_id": "storyline_emb_s1",
                "vector": [0.8, 0.6],
                "primary_entities": ["G7"],
                "domain": "diplomatic_relations",
                "metadata": {},
            }
        ],
        "embedding_metadata": {"model_name": "all-mpnet-base-v2", "dimension": 2},
    }
    evs = decode_message(json.dumps(doc).encode())
    assert [e.embedding_type for e in evs] == ["document", "event", "entity", "storyline"]
    assert {e.document_id for e in evs} == {"doc_001"}
    assert {e.embedding_model for e in evs} == {"all-mpnet-base-v2"}
    assert evs[1].metadata["domain"] == "diplomatic_relations"
    assert all(e.event_time == 1765670400.0 for e in evs)


def test_embedded_document_missing_field_is_schema_violation():
    assert (
        reason(json.dumps({"embedded_at": "2025-01-01T00:00:00Z"}).encode()) == "schema_violation"
    )


# --------------------------------------------------------------------------- Stage 5 output
# seed 003 §3.5, verbatim but for the elided list tails
SEED_CLUSTER_RESULT = {
    "cluster_id": "event_cluster_001",
    "cluster_type": "event",
    "cluster_label": "G7 Summit Diplomatic Meetings",
    "cluster_size": 45,
    "member_ids": ["doc_001_event_0", "doc_002_event_3"],
    "document_ids": ["doc_001", "doc_002"],
    "centroid_vector": [0.1, 0.2, 0.3],
    "temporal_span": ["2025-12-10T00:00:00Z", "2025-12-15T00:00:00Z"],
    "primary_entities": ["G7", "Japan", "United States"],
    "domain": "diplomatic_relations",
    "event_type": "contact_meet",
    "intra_cluster_similarity": 0.87,
    "metadata": {
        "algorithm": "hdbscan",
        "min_cluster_size": 5,
        "timestamp": "2025-12-24T10:00:00Z",
    },
}
# seed 003 §3.1: the keys each granularity's cluster model adds, with the type of its values
GRANULARITY_KEYS: dict[str, dict[str, type]] = {
    "document": {},
    "event": {"event_ids": list, "event_type": str, "domain": str, "primary_entities": list},
    "entity": {"canonical_entity": str, "entity_type": str, "entity_mentions": list},
    "storyline": {
        "storyline_ids": list,
        "event_ids": list,
        "primary_entities": list,
        "domain": str,
    },
}
# what a level's members carry no metadata for (seed 003 §2.3): null or empty there
NULLABLE: dict[str, tuple[str, ...]] = {
    "document": ("domain", "event_type", "primary_entities"),
    "event": (),
    "entity": ("domain", "event_type"),
    "storyline": ("event_type",),
}
_STORIES = [
    ("G7 summit opens in Japan", "diplomatic_relations", "contact_meet", ["G7", "Japan"]),
    ("Central bank raises rates", "economic_activity", "policy_change", ["Federal Reserve"]),
    ("Floods hit the coast", "environmental", "natural_disaster", ["Red Cross"]),
]
_VARIANTS = ["Joe Biden", "Biden", "President Biden"]


def _iso_z(value: str) -> float:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _stage3_documents(dim: int = 32, per_story: int = 5) -> list[bytes]:
    """Stage 3 `EmbeddedDocument` messages (seed 003 §2.4) with all four levels: per story a
    direction per level, per document two events, three entity mentions and a storyline."""
    rng = np.random.default_rng(11)
    base = rng.standard_normal((len(_STORIES), 4, dim))

    def vec(story: int, level: int) -> list[float]:
        v = base[story, level] + 0.08 * rng.standard_normal(dim)
        return (v / np.linalg.norm(v)).round(6).tolist()

    out = []
    for i in range(per_story * len(_STORIES)):
        s = i % len(_STORIES)
        title, domain, etype, ents = _STORIES[s]
        doc_id = f"doc_{i:03d}"
        day = f"2025-12-{10 + i // 8:02d}T{(i % 8) * 3:02d}:00:00Z"  # 3 hours apart
        events = [f"{doc_id}_event_{k}" for k in range(2)]
        doc = {
            "document_id": doc_id,
            "job_id": "batch123",
            "embedded_at": "2025-12-24T10:00:00Z",
            "source_processed_document": {"title": title},
            "document_embedding": {
                "document_id": doc_id,
                "vector_id": f"doc_emb_{doc_id}",
                "vector": vec(s, 0),
                "text_source": title,
                "normalized_date": day,
                "metadata": {"title": title, "categories": ["world", domain.split("_")[0]]},
            },
            "event_embeddings": [
                {
                    "event_id": e,
                    "document_id": doc_id,
                    "vector_id": f"event_emb_{e}",
                    "vector": vec(s, 1),
                    "event_type": etype,
                    "domain": domain,
                    "storyline_id": f"storyline_batch123_{i}",
                    "event_description": title,
                    "metadata": {"entities": ents, "temporal_reference": day},
                }
                for e in events
            ],
            "entity_embeddings": [
                {
                    "entity_id": f"{doc_id}_entity_{k}",
                    "document_id": doc_id,
                    "vector_id": f"entity_emb_{doc_id}_{k}",
                    "vector": vec(s, 2),
                    "entity_text": _VARIANTS[(i + k) % 3] if s == 0 else f"{ents[0]} {k % 2}",
                    "entity_type": "PER" if s == 0 else "ORG",
                    "context": title,
                    "metadata": {},
                }
                for k in range(3)
            ],
            "storyline_embeddings": [
                {
                    "storyline_id": f"storyline_batch123_{i}",
                    "vector_id": f"storyline_emb_{i}",
                    "vector": vec(s, 3),
                    "event_ids": events,
                    "primary_entities": ents,
                    "domain": domain,
                    "temporal_span": [day, day],
                    "storyline_summary": title,
                    "metadata": {},
                }
            ],
            "embedding_metadata": {"model_name": "all-mpnet-base-v2", "dimension": dim},
        }
        out.append(json.dumps(doc).encode())
    return out


def _assert_shape(example: Any, real: Any, where: str) -> None:
    """`real` has every key of `example`, values of the same JSON type, ISO times that parse."""
    if isinstance(example, dict):
        assert isinstance(real, dict), where
        for k, v in example.items():
            assert k in real, f"{where}.{k} missing"
            _assert_shape(v, real[k], f"{where}.{k}")
    elif isinstance(example, list):
        assert isinstance(real, list) and real, f"{where}: {real!r}"
        for item in real:
            _assert_shape(example[0], item, f"{where}[]")
    elif isinstance(example, bool) or example is None:
        assert real is example, where
    elif isinstance(example, int):
        assert isinstance(real, int) and not isinstance(real, bool), f"{where}: {real!r}"
    elif isinstance(example, float):
        assert isinstance(real, int | float) and not isinstance(real, bool), f"{where}: {real!r}"
    else:
        assert isinstance(real, str), f"{where}: {real!r}"
        if example.endswith("Z") and example[:4].isdigit():
            _iso_z(real)


def engine_on_stage3_documents() -> tuple[Engine, BatchResult]:
    """The seed's Stage 3 documents through the real decode path, learnt in one call as the
    worker calls the engine (scope keys from the engine)."""
    events = [e for raw in _stage3_documents() for e in decode_message(raw)]
    eng = Engine(EngineConfig())
    res = eng.learn(
        Batch(
            np.vstack([e.vector for e in events]),
            [e.item_id for e in events],
            np.asarray([e.event_time for e in events]),
            [e.document_id for e in events],
            [e.metadata for e in events],
            [eng.scope_key(e.embedding_type, e.embedding_model, e.metadata) for e in events],
        )
    )
    return eng, res


def test_a_real_output_line_has_the_seed_cluster_result_shape() -> None:
    """Stage 3 documents through the real decode path and engine; every snapshot line, of
    each of the four granularities, against seed 003 §3.5's example, §3.1's per-level keys
    and the generated JSON Schema file."""
    import jsonschema_rs

    eng, _ = engine_on_stage3_documents()
    lines = [c.model_dump_json() for c in eng.results()]
    validator = jsonschema_rs.validator_for(
        json.loads((DIR / "cluster_result.schema.json").read_text())
    )
    by_type: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        obj = json.loads(line)
        validator.validate(obj)
        by_type.setdefault(obj["cluster_type"], []).append(obj)
    assert sorted(by_type) == ["document", "entity", "event", "storyline"]
    for kind, objs in by_type.items():
        for obj in objs:
            example = dict(SEED_CLUSTER_RESULT)
            for k in NULLABLE[kind]:  # present, null or empty where the level has none
                assert k in obj
                example.pop(k)
            _assert_shape(example, obj, kind)
            for k, t in GRANULARITY_KEYS[kind].items():
                assert isinstance(obj[k], t) and obj[k], f"{kind}.{k}: {obj[k]!r}"
                if t is list:
                    assert all(isinstance(v, str) for v in obj[k]), f"{kind}.{k}"
            first, last = (_iso_z(t) for t in obj["temporal_span"])
            assert first <= last <= _iso_z(obj["metadata"]["timestamp"])
            assert len(obj["centroid_vector"]) == 32
            assert obj["cluster_size"] == len(obj["member_ids"])
            assert 0.0 < obj["intra_cluster_similarity"] <= 1.0
    biden = next(o for o in by_type["entity"] if o["entity_type"] == "PER")
    assert sorted(biden["entity_mentions"]) == sorted(_VARIANTS)
    assert biden["canonical_entity"] in _VARIANTS
    g7 = next(o for o in by_type["storyline"] if o["domain"] == "diplomatic_relations")
    assert all(e.startswith("doc_") and "_event_" in e for e in g7["event_ids"])
    docs = next(
        o for o in by_type["document"] if "diplomatic" in o["metadata"]["dominant_categories"]
    )
    assert docs["metadata"]["dominant_categories"][0] in ("diplomatic", "world")


def test_vectors_whose_norm_passes_float32_range_are_renormalised_not_zeroed():
    """384 values of 3e38 are finite, but their norm (~5.9e39) is not a float32: divided in
    float32 it became inf and the vector all zeros, which the engine then took."""
    v = decode_vector([3e38] * 384)
    assert np.isclose(np.linalg.norm(v.astype(np.float64)), 1.0)
    assert np.allclose(v, 1 / np.sqrt(384))
