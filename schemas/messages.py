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
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from pydantic import ValidationError

from schemas.inputs import EmbeddedDocument, VectorEvent
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


def _validate(obj: dict[str, Any]) -> list[VectorEvent]:
    if "embedded_at" in obj or "document_embedding" in obj:
        return EmbeddedDocument.model_validate(obj).fan_out()
    return [VectorEvent.model_validate(obj)]


def _decode(payload: bytes, limits: ValidationLimits) -> list[DecodedEvent]:
    obj = _parse(payload, limits)
    if not isinstance(obj, dict):
        raise InputError("schema_violation", "message is not a JSON object")
    vectors = _vectors(obj, limits)
    check_metadata(obj, limits)
    try:
        events = _validate(obj)
    except ValidationError as exc:
        raise InputError("schema_violation", _first_error(exc), "ValidationError") from exc
    if len(events) != len(vectors):  # a sub-object that was not a dict failed validation
        raise InputError("schema_violation", "embedding entries must be JSON objects")
    return [
        DecodedEvent(
            e.item_id,
            e.document_id,
            e.embedding_type,
            e.embedding_model,
            e.event_time,
            e.metadata,
            v,
        )
        for e, v in zip(events, vectors, strict=True)
    ]


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
