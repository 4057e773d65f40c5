"""Raw message bytes to per-vector events, with a reason for every rejection (dead letters)."""

from __future__ import annotations

import json

from pydantic import ValidationError

from schemas.inputs import EmbeddedDocument, VectorEvent
from schemas.validation import DEFAULT_LIMITS, InputError, ValidationLimits


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or "message"
    return f"{loc}: {err.get('msg', 'invalid')}"


def decode_message(payload: bytes, limits: ValidationLimits = DEFAULT_LIMITS) -> list[VectorEvent]:
    """A message is either one VectorEvent or one EmbeddedDocument (told apart by its keys)."""
    if len(payload) > limits.max_payload_bytes:
        raise InputError(
            "oversize", f"message has {len(payload)} bytes, limit {limits.max_payload_bytes}"
        )
    try:
        obj = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError("not_json", f"message is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise InputError("schema_violation", "message is not a JSON object")
    try:
        if "embedded_at" in obj or "document_embedding" in obj:
            return EmbeddedDocument.model_validate(obj).fan_out()
        return [VectorEvent.model_validate(obj)]
    except ValidationError as exc:
        raise InputError("schema_violation", _first_error(exc)) from exc
    except ValueError as exc:
        raise InputError("schema_violation", str(exc)) from exc
