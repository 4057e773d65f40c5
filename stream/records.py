"""The records of the by-scope repartition topic: validated per-vector events (vector as
base64 little-endian float32, already checked and unit-norm) and item deletions, which are
broadcast to every partition because the router does not know an item's scope."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.inputs import VectorEvent


@dataclass(frozen=True)
class Routed:
    """One event decoded from the by-scope topic, vector ready for the engine."""

    item_id: str
    document_id: str | None
    embedding_type: str
    embedding_model: str
    event_time: float
    metadata: dict[str, Any]
    vector: npt.NDArray[np.float32]


@dataclass(frozen=True)
class Delete:
    item_id: str


def encode_event(ev: VectorEvent, vector: npt.NDArray[np.float32]) -> bytes:
    return json.dumps(
        {
            "item_id": ev.item_id,
            "document_id": ev.document_id,
            "embedding_type": ev.embedding_type,
            "embedding_model": ev.embedding_model,
            "event_time": ev.event_time,
            "metadata": ev.metadata,
            "vector": base64.b64encode(vector.astype("<f4").tobytes()).decode(),
        },
        separators=(",", ":"),
    ).encode()


def encode_delete(item_id: str) -> bytes:
    return json.dumps({"op": "delete", "item_id": item_id}).encode()


def decode(value: bytes) -> Routed | Delete:
    """Records were written by the router after validation, so a failure here is a bug or a
    foreign writer; callers dead-letter it like any bad input."""
    obj = json.loads(value)
    if obj.get("op") == "delete":
        return Delete(str(obj["item_id"]))
    vec = np.frombuffer(base64.b64decode(obj["vector"]), dtype="<f4").astype(np.float32)
    return Routed(
        item_id=str(obj["item_id"]),
        document_id=obj.get("document_id"),
        embedding_type=str(obj["embedding_type"]),
        embedding_model=str(obj["embedding_model"]),
        event_time=float(obj["event_time"]),
        metadata=dict(obj.get("metadata") or {}),
        vector=vec,
    )
