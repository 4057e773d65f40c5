"""What goes into one engine call and what comes out of it.

`Batch` is the only input shape. `BatchResult` carries everything an adapter needs to
persist and publish the call's effects (assignments, change events, membership moves, the
current state of every cluster the call touched, reconsolidation records), so that no
adapter ever reads the engine's cluster tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from processors.scope import STATUS_NAMES, ScopeKey
from schemas.outputs import Assignment, ChangeEvent, ReconsolidationRecord
from schemas.validation import InputError

DEFAULT_SCOPE = ScopeKey("document", "default")
"""The scope of a batch that names none (offline runs and tests over one space)."""

ClusterStatusName = Literal["candidate", "active", "retired", "merged"]


@dataclass(frozen=True)
class Batch:
    """Items to cluster, in order: unit vectors (one row per item) with their ids and event
    times (epoch seconds); optionally document ids, metadata (label terms, entities, domain,
    event type are read from it) and one scope key per item (`Engine.scope_key`); without
    scope keys every item belongs to DEFAULT_SCOPE. Lengths are checked here."""

    vectors: npt.NDArray[np.float32]
    item_ids: Sequence[str]
    event_times: npt.NDArray[np.float64]
    document_ids: Sequence[str | None] | None = None
    metadata: Sequence[dict[str, Any] | None] | None = None
    scopes: Sequence[ScopeKey] | None = None

    def __post_init__(self) -> None:
        x = np.ascontiguousarray(self.vectors, dtype=np.float32)
        if x.ndim != 2:
            raise InputError("bad_batch", f"vectors must be a 2-d array, got shape {x.shape}")
        n = x.shape[0]
        t = np.asarray(self.event_times, dtype=np.float64)
        if t.shape != (n,):
            raise InputError("bad_batch", f"{n} vectors but event_times of shape {t.shape}")
        for name in ("item_ids", "document_ids", "metadata", "scopes"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise InputError("bad_batch", f"{n} vectors but {len(value)} {name}")
        object.__setattr__(self, "vectors", x)
        object.__setattr__(self, "event_times", t)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


@dataclass(frozen=True, slots=True)
class Move:
    """An item's membership changed: it joined `cluster_id`, or left every cluster (None:
    its cluster retired, or it was forgotten). Only the latest move of an item in a call is
    reported. `similarity` is set when the item was assigned in this call."""

    item_id: str
    scope: str
    embedding_type: str
    cluster_id: str | None
    document_id: str | None = None
    event_time: float | None = None
    similarity: float | None = None


@dataclass(frozen=True, slots=True)
class ClusterState:
    """A touched cluster as it is at the end of the call. A cluster that is gone reads
    status `retired` or `merged` (absorbed by another), size 0 and no times or centroid."""

    cluster_id: str
    scope: str
    embedding_type: str
    status: ClusterStatusName
    size: int
    weight: float
    first_event_time: float | None
    last_event_time: float | None
    centroid: npt.NDArray[np.float32] | None


@dataclass
class BatchResult:
    """Per-input results in input order (compact arrays; `assignments()` builds models),
    then what the call changed."""

    item_ids: list[str] = field(default_factory=list)
    document_ids: list[str | None] = field(default_factory=list)
    scopes: list[str] = field(default_factory=list)
    cluster_ids: list[str] = field(default_factory=list)
    similarity: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    new_cluster: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, bool))
    status: npt.NDArray[np.int8] = field(default_factory=lambda: np.zeros(0, np.int8))
    event_time: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    sequence: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    changes: list[ChangeEvent] = field(default_factory=list)
    """cluster change events, in the order they happened."""
    moves: list[Move] = field(default_factory=list)
    clusters: list[ClusterState] = field(default_factory=list)
    """every cluster an event names or a move enters or leaves, by scope then id."""
    reconsolidations: list[ReconsolidationRecord] = field(default_factory=list)
    size_warnings: list[str] = field(default_factory=list)
    """clusters that passed `size_warning` members in this call."""

    def assignments(self) -> list[Assignment]:
        return [
            Assignment.model_construct(
                item_id=self.item_ids[i],
                document_id=self.document_ids[i],
                scope=self.scopes[i],
                cluster_id=self.cluster_ids[i],
                status=STATUS_NAMES[int(self.status[i])],
                similarity=float(self.similarity[i]),
                new_cluster=bool(self.new_cluster[i]),
                event_time=float(self.event_time[i]),
                sequence=int(self.sequence[i]),
            )
            for i in range(len(self.item_ids))
        ]
