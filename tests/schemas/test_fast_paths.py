"""The router's fast paths decide exactly what the slow ones they skip would: the plain-type
reading of a per-vector event against pydantic's `VectorEvent`, the payload-size bound
against the metadata walk, the one-dot vector check against `np.linalg.norm`, pybase64
against the standard library's strict base64."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.inputs import VectorEvent
from schemas.messages import DecodedEvent, _fast_fields, _metadata_bounded, decoded_event
from schemas.validation import (
    InputError,
    ValidationLimits,
    _b64decode,
    check_metadata,
    check_vector,
    decode_vector,
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
field_values = st.one_of(
    scalars,
    st.lists(scalars, max_size=2),
    st.dictionaries(st.text(max_size=3), scalars, max_size=2),
)
times = st.one_of(
    field_values,
    st.floats(-7e10, 3e11),
    st.sampled_from(["2026-11-25T08:00:00Z", "2026-11-25", "not a date", "99999-01-01"]),
)


def near(*lengths: int) -> st.SearchStrategy[str]:
    """Text of exactly these lengths: the contract's bounds and one either side."""
    return st.sampled_from(lengths).flatmap(lambda n: st.text(min_size=n, max_size=n))


@st.composite
def event_objects(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly well-typed fields (each sometimes at a length bound), now and then a junk or a
    missing one, so that accepted objects are common and every field's edge gets tried."""
    good = {
        "item_id": near(0, 1, 5, 511, 512, 513),
        "document_id": st.one_of(st.none(), near(0, 3, 511, 512, 513)),
        "embedding_type": st.sampled_from(["document", "event", "entity", "storyline", "Event"]),
        "embedding_model": near(0, 1, 5, 255, 256, 257),
        "event_time": times,
        "metadata": st.dictionaries(st.text(max_size=4), scalars, max_size=3),
        "vector": st.just(""),
    }
    obj = {}
    for name, strategy in good.items():
        roll = draw(st.integers(0, 19))
        if roll == 0:
            continue  # missing
        obj[name] = draw(field_values if roll == 1 else strategy)
    if draw(st.booleans()):
        obj["extra"] = draw(field_values)
    return obj


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_objects())
def test_the_plain_type_reading_accepts_what_pydantic_accepts_with_the_same_values(
    obj: dict[str, Any],
) -> None:
    fast = _fast_fields(dict(obj))
    if fast is None:  # pydantic decides (and words the error): nothing to compare
        return
    try:
        ev = VectorEvent.model_validate(obj)
    except (ValidationError, ValueError) as exc:
        pytest.fail(f"fast path accepted what pydantic rejects: {exc}")
    slow = (
        ev.item_id,
        ev.document_id,
        ev.embedding_type,
        ev.embedding_model,
        ev.event_time,
        ev.metadata,
    )
    assert fast == slow
    assert [type(x) for x in fast] == [type(x) for x in slow]


def test_the_plain_type_reading_takes_an_ordinary_event() -> None:
    obj = {
        "item_id": "i",
        "embedding_type": "event",
        "embedding_model": "m",
        "event_time": "2026-11-25T08:00:00Z",
        "vector": "",
    }
    assert _fast_fields(obj) == ("i", None, "event", "m", 1795593600.0, {})


small = ValidationLimits(max_depth=4, max_metadata_values=60, max_string_length=60)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=70),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=30,
)


def bounded(payload: bytes, limits: ValidationLimits = small) -> bool:
    return _metadata_bounded(orjson.loads(payload), payload, limits)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=5), st.integers(1, 5))
def test_a_payload_the_size_bound_passes_never_fails_the_metadata_walk(
    obj: dict[str, Any], depth: int
) -> None:
    payload = orjson.dumps(obj)
    limits = ValidationLimits(max_depth=depth, max_metadata_values=60, max_string_length=60)
    if bounded(payload, limits):
        check_metadata(orjson.loads(payload), limits)  # must not raise


def test_the_size_bound_gives_way_near_each_limit() -> None:
    assert bounded(b'{"a":{"b":1},"c":"d"}')  # flat: two levels down
    assert bounded(b'{"a":[[1]]}')  # three brackets
    assert not bounded(b'{"a":[[[1]]]}')  # four brackets: walk it
    assert not bounded(b'{"a":"' + b"x" * 60 + b'"}')
    assert not bounded(b'{"a":{"b":1}}', ValidationLimits(max_depth=2))
    with pytest.raises(InputError):
        check_metadata(orjson.loads(b'{"a":[[[1]]]}'), small)
    with pytest.raises(InputError):
        check_metadata(orjson.loads(b'{"a":{"b":1}}'), ValidationLimits(max_depth=2))


@pytest.mark.parametrize("dim", [1, 3, 384, 768, 4096])
@pytest.mark.parametrize("scale", [1.0, 1.0004, 1.01, 7.5, 1e-20, 1e20])
def test_the_one_dot_vector_check_is_bit_for_bit_the_norm(dim: int, scale: float) -> None:
    rng = np.random.default_rng(dim)
    for _ in range(20):
        raw = rng.standard_normal(dim)
        v = (raw / np.linalg.norm(raw) * scale).astype(np.float32)
        norm = float(np.linalg.norm(v.astype(np.float64)))
        want = v if abs(norm - 1.0) <= 1e-3 else (v / norm).astype(np.float32)
        assert check_vector(v).tobytes() == want.tobytes()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_the_one_dot_vector_check_still_finds_each_non_finite_value(bad: float) -> None:
    for at in (0, 200, 383):
        v = np.full(384, 0.05, dtype=np.float32)
        v[at] = bad
        with pytest.raises(InputError) as exc:
            check_vector(v)
        assert exc.value.reason == "non_finite"
    huge = np.full(8192, 3.4e38, dtype=np.float32)  # finite: its squares must not overflow
    assert check_vector(huge).shape == (8192,)  # no non_finite rejection


def general_json_vector(values: list[float]) -> bytes | tuple[str, str]:
    """The vector (or the reject) the general JSON-array path makes of these numbers."""
    try:
        with np.errstate(over="ignore"):
            vec = np.asarray(values, dtype=np.float64).astype(np.float32)
        return check_vector(vec).tobytes()
    except InputError as exc:
        return exc.reason, exc.detail


@settings(max_examples=500, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=0, max_size=40))
def test_an_all_float_json_vector_decodes_as_the_general_path_does(values: list[float]) -> None:
    try:
        got: bytes | tuple[str, str] = decode_vector(values).tobytes()
    except InputError as exc:
        got = exc.reason, exc.detail
    assert got == general_json_vector(values)


def test_the_quick_event_constructor_makes_the_dataclass_its_constructor_makes() -> None:
    v = np.ones(3, np.float32)
    fields = ("i", None, "event", "m", 1.0, {"a": 1})
    quick, slow = decoded_event(*fields, v), DecodedEvent(*fields, v)
    assert quick == slow and repr(quick) == repr(slow) and type(quick) is DecodedEvent
    assert dataclasses.asdict(quick).keys() == dataclasses.asdict(slow).keys()
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.item_id = "other"  # type: ignore[misc]


def _stdlib_b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _ours_b64(text: str) -> bytes | None:
    try:
        return _b64decode(text)
    except InputError as exc:
        assert exc.reason == "bad_vector_encoding"
        return None


# padding past a complete quantum, which pybase64 alone refuses and the standard library takes
PADDING_CASES = ["AAAA=", "AAAA==", "AAAA====", "Zm9vYmFy=", "", "A", "AA=", "AA==", "AB=", "A==="]


@pytest.mark.parametrize("text", PADDING_CASES)
def test_base64_edge_cases_decode_as_the_standard_library_decides(text: str) -> None:
    assert _ours_b64(text) == _stdlib_b64(text)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= -_\né"))
def test_base64_decodes_as_the_standard_library_decides(text: str) -> None:
    assert _ours_b64(text) == _stdlib_b64(text)
