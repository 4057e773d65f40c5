"""The records of the by-scope repartition topic: validated per-vector events (a small JSON
header and the raw little-endian float32 vector, already checked and unit-norm) and item
deletions (JSON), which are broadcast to every partition because the router does not know an
item's scope."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
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


_NO_VECTOR = np.zeros(0, dtype=np.float32)
_NO_VECTOR.flags.writeable = False


class Parts(NamedTuple):
    """A routed event with its vector still as the record's bytes: the worker gathers a
    segment's bytes into one matrix (`matrix`) instead of an array per record and a stack.
    `event` has every field but the vector (an empty array until `routed`)."""

    event: Routed
    body: memoryview
    """little-endian float32, a whole number of values, at least one"""

    @property
    def dim(self) -> int:
        return len(self.body) // 4


def split(value: bytes) -> Parts | Delete:
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
    event = decoded_event(
        item_id=str(head["item_id"]),
        document_id=head.get("document_id"),
        embedding_type=str(head["embedding_type"]),
        embedding_model=str(head["embedding_model"]),
        event_time=float(head["event_time"]),
        metadata=dict(head.get("metadata") or {}),
        vector=_NO_VECTOR,
    )
    return Parts(event, body)


def routed(parts: Parts) -> Routed:
    """The event with its own vector (a dead letter's JSON is made from it)."""
    return replace(parts.event, vector=np.frombuffer(parts.body, dtype=_F4).astype(np.float32))


def decode(value: bytes) -> Routed | Delete:
    parts = split(value)
    return parts if isinstance(parts, Delete) else routed(parts)


def matrix(bodies: Sequence[memoryview]) -> npt.NDArray[np.float32]:
    """The vectors of records of one dimension (bodies of equal length) as one read-only
    matrix: one copy of their bytes (the engine reads its input, never writes it)."""
    return np.frombuffer(b"".join(bodies), dtype=_F4).reshape(len(bodies), -1)


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
