"""Raw message bytes to per-vector events, with a reason for every rejection (dead letters).

No input may cost more than a bounded amount of work or stop the caller: the payload size is
checked before parsing, orjson refuses nesting past 1,024 levels by itself (no recursion into
Python's stack), the parsed object is then held to `ValidationLimits` (depth, number of
values, string lengths, vectors per document), and every exception raised on the way,
foreseen or not, comes out as an `InputError` naming its reason and the exception class.

Vectors are taken out of the parsed object and decoded by numpy before pydantic validates
the rest: pydantic would check a 768-float list element by element in its lax mode (which
also takes booleans for floats), numpy does it in C.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from annotated_types import MaxLen, MinLen
from pydantic import ValidationError

from schemas.inputs import EMBEDDING_TYPES, EmbeddedDocument, VectorEvent, to_epoch_seconds
from schemas.validation import (
    DEFAULT_LIMITS,
    InputError,
    ValidationLimits,
    check_metadata,
    decode_vector,
)

_EMBEDDING_LISTS = ("event_embeddings", "entity_embeddings", "storyline_embeddings")
# NaN / Infinity literals are not JSON (RFC 8259) but Python's json writes them; name them
_NON_FINITE_LITERAL = re.compile(rb"[\[,:]\s*-?(?:NaN|Infinity)\b")


@dataclass(frozen=True)
class DecodedEvent:
    """One validated per-vector event with its vector decoded (unit float32)."""

    item_id: str
    document_id: str | None
    embedding_type: str
    embedding_model: str
    event_time: float
    metadata: dict[str, Any]
    vector: npt.NDArray[np.float32]


_new = object.__new__
_set = object.__setattr__


def decoded_event(
    item_id: str,
    document_id: str | None,
    embedding_type: str,
    embedding_model: str,
    event_time: float,
    metadata: dict[str, Any],
    vector: npt.NDArray[np.float32],
) -> DecodedEvent:
    """`DecodedEvent(...)` in half the time: a frozen dataclass's `__init__` sets each of its
    seven fields through `object.__setattr__`, one call per field per event on the router's
    and the worker's hot paths; this sets the instance dictionary once (the class has no
    `__post_init__` and no slots: tests/schemas/test_fast_paths.py holds the two equal)."""
    ev = _new(DecodedEvent)
    _set(
        ev,
        "__dict__",
        {
            "item_id": item_id,
            "document_id": document_id,
            "embedding_type": embedding_type,
            "embedding_model": embedding_model,
            "event_time": event_time,
            "metadata": metadata,
            "vector": vector,
        },
    )
    return ev


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or "message"
    return f"{loc}: {err.get('msg', 'invalid')}"


def _parse(payload: bytes, limits: ValidationLimits) -> Any:
    if len(payload) > limits.max_payload_bytes:
        raise InputError(
            "oversize", f"message has {len(payload)} bytes, limit {limits.max_payload_bytes}"
        )
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        msg = str(exc)
        if "depth limit" in msg or "recursion" in msg:
            reason, detail = "too_deep", f"message nests too deeply: {msg}"
        elif "infinity" in msg or _NON_FINITE_LITERAL.search(payload):
            reason, detail = "non_finite", f"message holds NaN or infinite numbers: {msg}"
        else:
            reason, detail = "not_json", f"message is not JSON: {msg}"
        raise InputError(reason, detail, "JSONDecodeError") from exc


def _take_vector(obj: dict[str, Any], where: str, limits: ValidationLimits) -> Any:
    """Decode obj["vector"] and leave an empty placeholder that validates as the contract's
    string form; the decoded vector travels beside the event. A missing vector is left for
    the schema validation to report."""
    if "vector" not in obj:
        return None
    try:
        vec = decode_vector(obj["vector"], limits)
    except InputError as exc:
        raise InputError(exc.reason, f"{where}{exc.detail}", exc.error_class) from exc
    obj["vector"] = ""
    return vec


def _vectors(obj: dict[str, Any], limits: ValidationLimits) -> list[npt.NDArray[np.float32]]:
    """The vectors of a message in fan-out order (document, events, entities, storylines)."""
    if not ("embedded_at" in obj or "document_embedding" in obj):
        return [_take_vector(obj, "", limits)]
    out = []
    doc = obj.get("document_embedding")
    lists = [obj.get(k) for k in _EMBEDDING_LISTS]
    count = (doc is not None) + sum(len(x) for x in lists if isinstance(x, list))
    if count > limits.max_vectors_per_document:
        raise InputError(
            "too_large",
            f"document carries {count} embeddings, limit {limits.max_vectors_per_document}",
        )
    if isinstance(doc, dict):
        out.append(_take_vector(doc, "document_embedding.", limits))
    for name, items in zip(_EMBEDDING_LISTS, lists, strict=True):
        if isinstance(items, list):
            for i, e in enumerate(items):
                if isinstance(e, dict):
                    out.append(_take_vector(e, f"{name}.{i}.", limits))
    return out


def _metadata_bounded(obj: dict[str, Any], payload: bytes, limits: ValidationLimits) -> bool:
    """True when the payload's size alone proves that `check_metadata` cannot fail, so the
    walk over the parsed object can be skipped: every value it counts starts at its own byte
    of the payload and no string has more characters than the payload has bytes. Nesting is
    bounded by looking two levels down (the usual shape: flat metadata), else by the `{` and
    `[` bytes, each level opening with one (those inside strings only over-estimate)."""
    n = len(payload)
    if n > limits.max_metadata_values or n > limits.max_string_length:
        return False
    if limits.max_depth >= 3 and _shallow(obj):
        return True
    return payload.count(b"{") + payload.count(b"[") < limits.max_depth


def _shallow(obj: dict[str, Any]) -> bool:
    """No container below the second level (the message is level 1): nothing nests past 3."""
    for v in obj.values():
        kind = type(v)
        if kind is dict:
            for w in v.values():
                if type(w) in _CONTAINERS:
                    return False
        elif kind is list:
            return False
    return True


_CONTAINERS = (dict, list)


def _length_bounds(field: str) -> tuple[int, int]:
    """The contract's own string length bounds of a VectorEvent field (one place: the model)."""
    meta = VectorEvent.model_fields[field].metadata
    low = next((m.min_length for m in meta if isinstance(m, MinLen)), 0)
    high = next((m.max_length for m in meta if isinstance(m, MaxLen)), sys.maxsize)
    return low, high


_ITEM_ID_MIN, _ITEM_ID_MAX = _length_bounds("item_id")
_DOC_ID_MIN, _DOC_ID_MAX = _length_bounds("document_id")
_MODEL_MIN, _MODEL_MAX = _length_bounds("embedding_model")
_TYPES = frozenset(EMBEDDING_TYPES)
_NO_METADATA: Any = object()


_Fields = tuple[str, str | None, str, str, float, dict[str, Any]]
"""An event's fields but its vector, in `DecodedEvent`'s order."""


def _fast_fields(obj: dict[str, Any]) -> _Fields | None:
    """A per-vector event whose fields all have the plain JSON types the contract names,
    read without pydantic; None for anything else, which `VectorEvent` then validates (and
    words the error). It accepts exactly what `VectorEvent` accepts of such input, with the
    same values: the differential test in tests/schemas/test_messages.py holds it to that."""
    item_id = obj.get("item_id")
    document_id = obj.get("document_id")
    embedding_type = obj.get("embedding_type")
    embedding_model = obj.get("embedding_model")
    metadata = obj.get("metadata", _NO_METADATA)
    if not (
        type(item_id) is str
        and _ITEM_ID_MIN <= len(item_id) <= _ITEM_ID_MAX
        and (
            document_id is None
            or (type(document_id) is str and _DOC_ID_MIN <= len(document_id) <= _DOC_ID_MAX)
        )
        and type(embedding_type) is str
        and embedding_type in _TYPES
        and type(embedding_model) is str
        and _MODEL_MIN <= len(embedding_model) <= _MODEL_MAX
        and (metadata is _NO_METADATA or type(metadata) is dict)
        and type(obj.get("vector")) is str
        and "event_time" in obj
    ):
        return None
    try:
        event_time = to_epoch_seconds(obj["event_time"])
    except ValueError:
        return None
    meta: dict[str, Any] = {} if metadata is _NO_METADATA else metadata
    return item_id, document_id, embedding_type, embedding_model, event_time, meta


def _validate(obj: dict[str, Any]) -> list[_Fields]:
    if "embedded_at" in obj or "document_embedding" in obj:
        events = EmbeddedDocument.model_validate(obj).fan_out()
    else:
        fast = _fast_fields(obj)
        if fast is not None:
            return [fast]
        events = [VectorEvent.model_validate(obj)]
    return [
        (e.item_id, e.document_id, e.embedding_type, e.embedding_model, e.event_time, e.metadata)
        for e in events
    ]


def _decode(payload: bytes, limits: ValidationLimits) -> list[DecodedEvent]:
    obj = _parse(payload, limits)
    if not isinstance(obj, dict):
        raise InputError("schema_violation", "message is not a JSON object")
    vectors = _vectors(obj, limits)
    if not _metadata_bounded(obj, payload, limits):
        check_metadata(obj, limits)
    try:
        events = _validate(obj)
    except ValidationError as exc:
        raise InputError("schema_violation", _first_error(exc), "ValidationError") from exc
    if len(events) != len(vectors):  # a sub-object that was not a dict failed validation
        raise InputError("schema_violation", "embedding entries must be JSON objects")
    return [decoded_event(*e, v) for e, v in zip(events, vectors, strict=True)]


def decode_message(
    payload: bytes, limits: ValidationLimits = DEFAULT_LIMITS
) -> list[DecodedEvent]:
    """A message is either one VectorEvent or one EmbeddedDocument (told apart by its keys).
    Raises only InputError, whatever the bytes."""
    try:
        return _decode(payload, limits)
    except InputError:
        raise
    except ValueError as exc:  # validators' own errors (e.g. an event time out of range)
        raise InputError("schema_violation", str(exc)[:500], type(exc).__name__) from exc
    except Exception as exc:  # nothing one message holds may stop the stream
        raise InputError(
            "undecodable", f"{type(exc).__name__}: {str(exc)[:500]}", type(exc).__name__
        ) from exc
