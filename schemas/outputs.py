"""Output contracts: assignments, cluster-change events, cluster snapshots, run records."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ChangeKind = Literal["created", "updated", "merged", "split", "retired"]
ClusterStatus = Literal["candidate", "active", "retired"]


class Assignment(BaseModel):
    """Where one input item went, at the moment it was processed."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    document_id: str | None = None
    scope: str
    cluster_id: str
    status: ClusterStatus
    similarity: float = Field(
        description="temporally weighted cosine to the joined cluster; 1 when new"
    )
    new_cluster: bool
    event_time: float
    sequence: int = Field(description="position of the item in its scope's input order")


class ChangeEvent(BaseModel):
    """A change of one cluster (keyed by `cluster_id`); `related_ids` name the others involved."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    kind: ChangeKind
    scope: str
    cluster_id: str
    related_ids: list[str] = Field(default_factory=list)
    event_time: float
    sequence: int
    size: int
    weight: float
    moved_item_ids: list[str] = Field(
        default_factory=list, description="items that left cluster_id for a related cluster"
    )
    reason: str = ""


class ClusterResult(BaseModel):
    """The latest state of one cluster, in the shape Stage 5 reads (seed 003, section 3.5)."""

    model_config = ConfigDict(frozen=True)

    cluster_id: str
    cluster_type: str
    scope: str
    status: ClusterStatus
    cluster_label: str
    cluster_size: int
    weight: float
    member_ids: list[str]
    document_ids: list[str]
    centroid_vector: list[float]
    temporal_span: list[float] = Field(description="[first, last] member event time, epoch s")
    primary_entities: list[str]
    domain: str | None = None
    event_type: str | None = None
    intra_cluster_similarity: float
    medoid_id: str | None = None
    representative_ids: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class ReconsolidationGroup(BaseModel):
    label: int = Field(description="HDBSCAN group label; -1 is the outliers, which have no medoid")
    size: int
    medoid_id: str | None
    mean_intra_similarity: float | None
    cluster_ids: list[str]


class ReconsolidationRecord(BaseModel):
    """One HDBSCAN run over a scope: what went in, what came out, and why it was triggered."""

    scope: str
    sequence: int
    trigger: Literal["items", "event_time", "drift", "manual"]
    event_time: float
    parameters: dict[str, Any]
    input_clusters: int
    input_points: int
    clusters_found: int
    outliers: int
    skipped: str | None = None
    groups: list[ReconsolidationGroup] = Field(default_factory=list)
    transitions: dict[str, int] = Field(default_factory=dict)
