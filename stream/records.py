"""The records of the by-scope repartition topic: validated per-vector events (a small JSON
header and the raw little-endian float32 vector, already checked and unit-norm) and item
deletions (JSON), which are broadcast to every partition because the router does not know an
item's scope."""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass

import numpy as np
import orjson

from schemas.messages import DecodedEvent, decoded_event

Routed = DecodedEvent
"""One event of the by-scope topic, vector ready for the engine: the router's output."""


@dataclass(frozen=True)
class Delete:
    item_id: str


_MAGIC = b"S4v1"
_LENGTH = struct.Struct("<I")
_F4 = np.dtype("<f4")


def encode_event(ev: Routed) -> bytes:
    """Binary: magic, 4-byte header length, JSON header (ids, type, model, time, metadata),
    then the raw little-endian float32 vector: no base64 and no float text on the hot path.
    Decoded vectors are little-endian float32 already, so their bytes are taken as they are
    (no copy through `astype`)."""
    header = orjson.dumps(
        {
            "item_id": ev.item_id,
            "document_id": ev.document_id,
            "embedding_type": ev.embedding_type,
            "embedding_model": ev.embedding_model,
            "event_time": ev.event_time,
            "metadata": ev.metadata,
        }
    )
    vec = ev.vector
    body = vec.tobytes() if vec.dtype is _F4 else vec.astype(_F4).tobytes()
    return _MAGIC + _LENGTH.pack(len(header)) + header + body


def encode_delete(item_id: str) -> bytes:
    return json.dumps({"op": "delete", "item_id": item_id}).encode()


def decode(value: bytes) -> Routed | Delete:
    """Records were written by the router after validation, so a failure here is a bug or a
    foreign writer; callers dead-letter it like any bad input (ValueError, KeyError)."""
    if value[:4] != _MAGIC:
        obj = orjson.loads(value)
        if not isinstance(obj, dict) or obj.get("op") != "delete":
            raise ValueError("not a by-scope record")
        return Delete(str(obj["item_id"]))
    n = int.from_bytes(value[4:8], "little")
    head = orjson.loads(value[8 : 8 + n])
    body = memoryview(value)[8 + n :]
    if len(body) % 4 or not len(body):
        raise ValueError("vector bytes are not whole float32 values")
    vec = np.frombuffer(body, dtype="<f4").astype(np.float32)
    return decoded_event(
        item_id=str(head["item_id"]),
        document_id=head.get("document_id"),
        embedding_type=str(head["embedding_type"]),
        embedding_model=str(head["embedding_model"]),
        event_time=float(head["event_time"]),
        metadata=dict(head.get("metadata") or {}),
        vector=vec,
    )


def as_input_json(rec: Routed) -> bytes:
    """A routed event as the per-vector input message it stands for (vector in base64):
    what a dead letter decided after routing carries, readable and re-playable."""
    return json.dumps(
        {
            "item_id": rec.item_id,
            "document_id": rec.document_id,
            "embedding_type": rec.embedding_type,
            "embedding_model": rec.embedding_model,
            "event_time": rec.event_time,
            "metadata": rec.metadata,
            "vector": base64.b64encode(rec.vector.astype("<f4").tobytes()).decode(),
        },
        separators=(",", ":"),
    ).encode()
