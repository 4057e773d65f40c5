"""The checkpoint format: what `Engine.snapshot` writes and `Engine.restore` reads.

Not pickle: a checkpoint is data, not code, so loading one cannot run anything, and the
format is versioned so that a reader recognises what it cannot read instead of guessing.

Layout (all integers little-endian):

    magic     8 bytes   b"STG4CKPT"
    version   uint32    FORMAT_VERSION
    length    uint64    length of the header
    header    JSON      {"config": {...}, "scopes": [{"fields": {...}, "arrays": {...}}, ...]}
    padding   to a multiple of 8 bytes
    arrays    raw little-endian numpy data, each at the offset its header entry names

Each array entry is {"dtype": "<f8", "shape": [...], "offset": n} (offset from the start of
the array section). Only live state is written (`ScopeState.export`): live cluster rows,
filled reservoir positions, members, facet tallies, the drift detector and a started
reconsolidation's inputs. A change of any of these layouts takes a new FORMAT_VERSION.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.errors import CheckpointError

MAGIC = b"STG4CKPT"
FORMAT_VERSION = 2
"""2: facet tallies and members' facets carry their granularity tags (mentions, entity
types, categories, storylines, events), which format 1 left out: a restored engine lost
them from its Stage 5 outputs. Format 1 still loads, with those tags empty."""
READS = (1, 2)
_PREFIX = struct.Struct("<8sIQ")

Arrays = dict[str, npt.NDArray[Any]]
Part = tuple[dict[str, Any], Arrays]


def dump(config: dict[str, Any], scopes: list[Part]) -> bytes:
    """One checkpoint of a config and a list of parts (JSON-able fields plus arrays)."""
    blobs: list[bytes] = []
    offset = 0

    def table(arrays: Arrays) -> dict[str, Any]:
        nonlocal offset
        out: dict[str, Any] = {}
        for name, arr in arrays.items():
            a = np.ascontiguousarray(arr)
            a = a.astype(a.dtype.newbyteorder("<"), copy=False)
            raw = a.tobytes()
            out[name] = {"dtype": a.dtype.str, "shape": list(a.shape), "offset": offset}
            blobs.append(raw)
            pad = -len(raw) % 8
            if pad:
                blobs.append(b"\0" * pad)
            offset += len(raw) + pad
        return out

    parts = [{"fields": f, "arrays": table(a)} for f, a in scopes]
    try:
        header = json.dumps(
            {"config": config, "scopes": parts}, separators=(",", ":"), allow_nan=False
        ).encode()
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"engine state is not serialisable: {exc}") from exc
    head = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)) + header
    head += b"\0" * (-len(head) % 8)
    return b"".join([head, *blobs])


def load(data: bytes) -> tuple[dict[str, Any], list[Part]]:
    """The config and parts of a checkpoint; CheckpointError for anything else."""
    view = memoryview(data)
    if len(view) < _PREFIX.size:
        raise CheckpointError(f"checkpoint is {len(view)} bytes: too short to be one")
    magic, version, length = _PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise CheckpointError(
            "not a clusterer checkpoint (checkpoints written before format 1 were pickles "
            "and are not read: replay the partition instead)"
        )
    if version not in READS:
        raise CheckpointError(
            f"checkpoint format version {version} is not supported; this version reads "
            f"formats {', '.join(map(str, READS))}"
        )
    end = _PREFIX.size + length
    if end > len(view):
        raise CheckpointError("checkpoint is truncated (header)")
    try:
        header = json.loads(bytes(view[_PREFIX.size : end]))
        base = end + (-end % 8)
        parts: list[Part] = []
        for part in header["scopes"]:
            arrays: Arrays = {}
            for name, spec in part["arrays"].items():
                dtype = np.dtype(spec["dtype"])
                shape = tuple(int(n) for n in spec["shape"])
                count = int(np.prod(shape, dtype=np.int64))
                start = base + int(spec["offset"])
                if start + count * dtype.itemsize > len(view):
                    raise CheckpointError(f"checkpoint is truncated (array {name})")
                arr = np.frombuffer(view, dtype=dtype, count=count, offset=start)
                arrays[name] = arr.reshape(shape).astype(dtype.newbyteorder("="), copy=False)
            parts.append((part["fields"], arrays))
        return header["config"], parts
    except CheckpointError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint is damaged: {exc!r}") from exc
