"""Where the read side turns a `clusters` row (+ its members) into what the API serves: the
list summary here, the full ClusterResult through state.results.assemble (the project's one
assembly, shared with `clusterer export`). The row's columns are those of migrations
001/002; `summary` is the ClusterResult less members and centroid that the worker keeps in
PostgreSQL and Redis (state.results.summary_json)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from schemas.outputs import ClusterResult, iso_utc
from state.results import assemble


def iso(t: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC in the contract's form (schemas.outputs.iso_utc); None
    for a missing or unrepresentable time."""
    if t is None or not math.isfinite(t):
        return None
    try:
        return iso_utc(t)
    except (OverflowError, OSError, ValueError):
        return None


def span(first: float | None, last: float | None) -> list[str] | None:
    a, b = iso(first), iso(last)
    return None if a is None or b is None else [a, b]


def summary_json(row: Mapping[str, Any]) -> dict[str, Any]:
    raw = row.get("summary")
    if raw is None:
        return {}
    obj = json.loads(raw) if isinstance(raw, str | bytes) else raw
    return obj if isinstance(obj, dict) else {}


def embedding_type(row: Mapping[str, Any]) -> str:
    """The column written since migration 002, else the scope name's first part."""
    et = row.get("embedding_type")
    return str(et) if et else str(row["cluster_type"]).split("/", 1)[0]


def cluster_summary(
    row: Mapping[str, Any], summary: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The list item. `summary` may come from Redis instead of the row (item lookups)."""
    sm = dict(summary) if summary is not None else summary_json(row)
    return {
        "cluster_id": row["id"],
        "cluster_type": embedding_type(row),
        "scope": row["cluster_type"],
        "status": row["status"],
        "cluster_label": row["label"]
        if row.get("label") is not None
        else sm.get("cluster_label", sm.get("label")),
        "cluster_size": int(row["size"]),
        "weight": float(row["weight"]),
        "temporal_span": span(row.get("first_event_time"), row.get("last_event_time")),
        "domain": sm.get("domain"),
        "event_type": sm.get("event_type"),
        **_granularity(sm),
        "medoid_id": row.get("medoid_item_id") or sm.get("medoid_id"),
        "representative_ids": list(sm.get("representative_ids") or []),
        "updated_at": row["updated_at"],
    }


def summary_from_cache(cluster_id: str, sm: Mapping[str, Any]) -> dict[str, Any] | None:
    """A list item from the Redis summary alone (the cached item lookup); None when the
    cached record lacks what the answer needs. Reads the worker's small summary and the
    Stage 5 summary (the ClusterResult less members and centroid) alike."""
    try:
        first, last = sm["temporal_span"]
        size = sm["cluster_size"] if "cluster_size" in sm else sm["size"]
        return {
            "cluster_id": cluster_id,
            "cluster_type": sm.get("cluster_type") or str(sm["scope"]).split("/", 1)[0],
            "scope": sm["scope"],
            "status": sm["status"],
            "cluster_label": sm.get("cluster_label", sm.get("label")),
            "cluster_size": int(size),
            "weight": float(sm["weight"]),
            "temporal_span": span(_num(first), _num(last)),
            "domain": sm.get("domain"),
            "event_type": sm.get("event_type"),
            **_granularity(sm),
            "medoid_id": sm.get("medoid_id"),
            "representative_ids": list(sm.get("representative_ids") or []),
            "updated_at": None,
        }
    except (KeyError, TypeError, ValueError):
        return None


def _granularity(sm: Mapping[str, Any]) -> dict[str, Any]:
    """The list-worthy granularity fields of the stored summary (seed 003 §3.1)."""
    return {
        "primary_entities": list(sm.get("primary_entities") or []),
        "canonical_entity": sm.get("canonical_entity"),
        "entity_type": sm.get("entity_type"),
    }


def _num(v: Any) -> float | None:
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def cluster_result(
    row: Mapping[str, Any], members: Sequence[Mapping[str, Any]]
) -> ClusterResult | None:
    """The full ClusterResult (seed 003 §3.5) of a row and its members (in listing order):
    the one assembly of the project (state.results.assemble, shared with `clusterer
    export`). None for a candidate that never became active (no result stored)."""
    return assemble(row, [(str(m["item_id"]), m.get("document_id")) for m in members])
