"""The decode path never raises anything but InputError, and gives every hostile input a
reason (the poison-message issue's catalogue, then arbitrary inputs)."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.messages import DecodedEvent, decode_message
from schemas.validation import InputError

REASONS = {
    "not_json",
    "too_deep",
    "too_large",
    "oversize",
    "schema_violation",
    "non_finite",
    "zero_vector",
    "empty_vector",
    "dimension_too_large",
    "bad_vector_encoding",
    "undecodable",
}


def event(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "item_id": "v1",
        "document_id": "d1",
        "embedding_type": "event",
        "embedding_model": "m",
        "event_time": 1.7e9,
        "metadata": {"title": "a"},
        "vector": [0.6, 0.8],
    }
    base.update(over)
    return base


def reason_of(payload: bytes) -> str:
    with pytest.raises(InputError) as exc:
        decode_message(payload)
    assert exc.value.reason in REASONS
    assert exc.value.error_class
    return exc.value.reason


def nested(depth: int) -> bytes:
    return b'{"item_id":"x","metadata":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (json.dumps(event(vector=[True, False])).encode(), "schema_violation"),
        (json.dumps(event(vector=[0.6, True])).encode(), "schema_violation"),
        (json.dumps(event(vector=["0.6", "0.8"])).encode(), "schema_violation"),
        (json.dumps(event(vector=[None, 0.8])).encode(), "schema_violation"),
        (json.dumps(event(vector=[float("nan"), 1.0])).encode(), "non_finite"),
        (json.dumps(event(vector=[float("inf"), 1.0])).encode(), "non_finite"),
        (b'{"item_id":"v1","vector":[1e999,1]}', "non_finite"),
        (json.dumps(event(vector=[0.5] * 100_000)).encode(), "dimension_too_large"),
        (nested(20_000), "too_deep"),  # the message that killed the worker
        (nested(40), "too_deep"),  # under the parser's limit, over ours
        (json.dumps(event(item_id="x" * 5000)).encode(), "schema_violation"),
        (json.dumps(event(event_time=1e300)).encode(), "schema_violation"),
        (json.dumps(event(event_time=True)).encode(), "schema_violation"),
        (json.dumps(event(metadata={"t": "x" * 70_000})).encode(), "too_large"),
        (json.dumps(event(metadata={"l": list(range(20_000))})).encode(), "too_large"),
        (b"\xff\xfe\x00garbage", "not_json"),
        (b'"just a string"', "schema_violation"),
        (b"[1, 2]", "schema_violation"),
        (b'{"item_id":"v1","vector":[0.1,', "not_json"),
        (json.dumps(event(vector="abc")).encode(), "bad_vector_encoding"),
        (json.dumps({**event(), "vector": None}).encode(), "bad_vector_encoding"),
    ],
)
def test_catalogue_of_bad_messages(payload: bytes, expected: str) -> None:
    assert reason_of(payload) == expected


def test_a_document_with_too_many_vectors_is_refused() -> None:
    doc = {
        "document_id": "d",
        "embedded_at": "2025-01-01T00:00:00Z",
        "entity_embeddings": [
            {"entity_id": f"e{i}", "document_id": "d", "vector_id": f"v{i}", "vector": [1.0]}
            for i in range(1001)
        ],
    }
    assert reason_of(orjson.dumps(doc)) == "too_large"


def test_a_good_document_fans_out_with_decoded_vectors() -> None:
    b64 = base64.b64encode(np.array([0.0, 2.0], "<f4").tobytes()).decode()
    doc = {
        "document_id": "d",
        "embedded_at": "2025-01-01T00:00:00Z",
        "document_embedding": {"document_id": "d", "vector_id": "dv", "vector": [3, 4]},
        "event_embeddings": [
            {"event_id": "e", "document_id": "d", "vector_id": "ev", "vector": b64}
        ],
        "embedding_metadata": {"model_name": "m"},
    }
    out = decode_message(orjson.dumps(doc))
    assert [e.item_id for e in out] == ["dv", "ev"]
    assert np.allclose(out[0].vector, [0.6, 0.8]) and np.allclose(out[1].vector, [0.0, 1.0])
    assert all(isinstance(e, DecodedEvent) and e.vector.dtype == np.float32 for e in out)


def test_integers_are_numbers_and_booleans_are_not() -> None:
    assert np.allclose(decode_message(orjson.dumps(event(vector=[3, 4])))[0].vector, [0.6, 0.8])
    assert reason_of(orjson.dumps(event(vector=[1, True]))) == "schema_violation"


def assert_routes_or_dead_letters(payload: bytes) -> None:
    try:
        out = decode_message(payload)
    except InputError as exc:
        assert exc.reason in REASONS and exc.detail
        return
    for e in out:
        assert np.isfinite(e.vector).all() and abs(float(np.linalg.norm(e.vector)) - 1) < 1e-3


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_else(payload: bytes) -> None:
    assert_routes_or_dead_letters(payload)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=json_values,
    field=st.sampled_from(["vector", "metadata", "item_id", "event_time", "embedding_type"]),
)
def test_arbitrary_json_in_any_field_never_raises_anything_else(value: Any, field: str) -> None:
    assert_routes_or_dead_letters(json.dumps(event(**{field: value})).encode())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values, depth=st.integers(0, 3000))
def test_arbitrary_json_documents_and_deep_nesting(value: Any, depth: int) -> None:
    assert_routes_or_dead_letters(json.dumps(value).encode())
    assert_routes_or_dead_letters(b"[" * depth + json.dumps(value).encode() + b"]" * depth)


@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_categories=()), max_size=50))
def test_odd_unicode_ids_and_metadata(text: str) -> None:
    payload = json.dumps(event(item_id=text or "x", metadata={text: text})).encode()
    assert_routes_or_dead_letters(payload)
    assert_routes_or_dead_letters(payload.replace(b"\\u", b"\\x"))  # broken escapes


def test_a_document_with_a_bad_date_is_a_schema_violation() -> None:
    doc = {
        "document_id": "d",
        "embedded_at": "not a date",
        "document_embedding": {"document_id": "d", "vector_id": "dv", "vector": [3, 4]},
    }
    assert reason_of(orjson.dumps(doc)) == "schema_violation"
    doc["embedded_at"] = "99999-01-01T00:00:00Z"
    assert reason_of(orjson.dumps(doc)) == "schema_violation"


def test_an_unforeseen_exception_becomes_a_reason_with_its_class(monkeypatch) -> None:
    import schemas.messages as messages

    def boom(obj: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(messages, "_validate", boom)
    with pytest.raises(InputError) as exc:
        decode_message(orjson.dumps(event()))
    assert (exc.value.reason, exc.value.error_class) == ("undecodable", "RecursionError")
