from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from schemas import InputError, ValidationLimits, decode_vector
from schemas.export import DIR, MODELS, render
from schemas.messages import decode_message
from schemas.validation import check_dimension, check_matrix


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


def test_dimension_mismatch():
    with pytest.raises(InputError) as exc:
        check_dimension(np.ones(3, np.float32), 768, "event/m")
    assert exc.value.reason == "dimension_mismatch"


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
