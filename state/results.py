"""A cluster's Stage 5 record as stored, and the ONE way back to a full `ClusterResult`.

The worker stores, for every touched cluster, `clusters.summary` = the engine's
`ClusterResult` without `member_ids`, `document_ids` and `centroid_vector`
(`schemas.outputs.SUMMARY_EXCLUDE`), `clusters.centroid` = the centroid as float32
little-endian bytes, and the memberships in `cluster_items`. `assemble` joins them back; the
export (`clusterer export`) and the API read through it, so both serve the shape the
compacted topic carries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.outputs import SUMMARY_EXCLUDE, ChangeEvent, ClusterResult, iso_utc
from state.db import ClusterRow, EventRow

CENTROID_DTYPE = "<f4"


def summary_json(result: ClusterResult) -> str:
    """What `clusters.summary` holds (and the Redis summary): the result without the member
    lists and the centroid."""
    return result.model_dump_json(exclude=set(SUMMARY_EXCLUDE))


def centroid_bytes(vector: Sequence[float] | npt.NDArray[np.floating[Any]]) -> bytes:
    return np.asarray(vector, dtype=CENTROID_DTYPE).tobytes()


def centroid_list(raw: bytes | None) -> list[float]:
    if not raw:
        return []
    return np.frombuffer(bytes(raw), dtype=CENTROID_DTYPE).astype(np.float64).tolist()


def cluster_row(
    cluster_id: str,
    scope: str,
    embedding_type: str,
    status: str,
    size: int,
    weight: float,
    span: tuple[float, float] | None = None,
    centroid: Sequence[float] | npt.NDArray[np.floating[Any]] | None = None,
    result: ClusterResult | None = None,
) -> ClusterRow:
    """The `clusters` row the worker writes for a touched cluster: the live columns from
    the engine's state now, the summary (with label and medoid) from the cluster's latest
    result when the batch made one. None fields keep what the row held (a cluster that
    ended keeps its last summary, span and centroid)."""
    return (
        cluster_id,
        scope,
        status,
        size,
        weight,
        result.cluster_label if result is not None else None,
        result.medoid_id if result is not None else None,
        summary_json(result) if result is not None else None,
        span[0] if span is not None else None,
        span[1] if span is not None else None,
        embedding_type,
        centroid_bytes(centroid) if centroid is not None else None,
    )


def event_row(event: ChangeEvent, payload: str | None = None) -> EventRow:
    """The durable `cluster_events` row of a change event (the outbox is pruned once sent);
    `payload`: the event's JSON when the caller has it already."""
    return (
        event.event_id,
        event.cluster_id,
        event.scope,
        event.kind,
        list(event.related_ids),
        event.event_time,
        event.sequence,
        payload if payload is not None else event.model_dump_json(),
    )


def assemble(
    row: Mapping[str, Any], members: Sequence[tuple[str, str | None]]
) -> ClusterResult | None:
    """The full ClusterResult of a `clusters` row (columns of migrations 001/002) and its
    members `(item_id, document_id)` in the order they are to be listed. None when the row
    has no summary (a candidate that never became active: the worker summarises active
    clusters only).

    The row's own columns win over the summary where both say something: `status` (a
    retired or merged cluster keeps the summary of its last active state), `size`,
    `weight`, the label, the medoid and the event-time span. A retired or merged cluster
    has no members left (merged ones are listed under the cluster that absorbed them)."""
    raw = row.get("summary")
    if raw is None:
        return None
    summary: dict[str, Any] = json.loads(raw) if isinstance(raw, str | bytes) else dict(raw)
    first, last = row.get("first_event_time"), row.get("last_event_time")
    if first is not None and last is not None:
        summary["temporal_span"] = [iso_utc(float(first)), iso_utc(float(last))]
    summary.update(
        cluster_id=row["id"],
        scope=row["cluster_type"],
        status=row["status"],
        cluster_size=int(row["size"]),
        weight=float(row["weight"]),
        member_ids=[m[0] for m in members],
        document_ids=list(dict.fromkeys(m[1] for m in members if m[1])),
        centroid_vector=centroid_list(row.get("centroid")),
    )
    if row.get("label") is not None:
        summary["cluster_label"] = row["label"]
    if row.get("medoid_item_id") is not None:
        summary["medoid_id"] = row["medoid_item_id"]
    if row.get("embedding_type"):
        summary["cluster_type"] = row["embedding_type"]
    return ClusterResult.model_validate(summary)
