"""Output contracts: assignments, cluster-change events, cluster snapshots, run records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ChangeKind = Literal["created", "updated", "merged", "split", "retired"]
ClusterStatus = Literal["candidate", "active", "retired"]
ResultStatus = Literal["candidate", "active", "retired", "merged"]
"""A stored cluster's status: `merged` is a cluster absorbed by another (its members moved)."""


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


def iso_utc(t: float) -> str:
    """Epoch seconds as ISO 8601 UTC with a `Z` (seed 003 §3.5: "2025-12-10T00:00:00Z");
    milliseconds are written only when the time has them."""
    dt = datetime.fromtimestamp(t, tz=UTC)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


class ClusterMetadata(BaseModel):
    """How the cluster was made (seed 003 §3.5 `metadata`): the algorithm and its parameters,
    and `timestamp`, the event time the cluster is current as of (the scope's watermark: the
    latest event time the engine has seen in the scope, never the wall clock)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    algorithm: str = Field(description="the clustering method, named for Stage 5")
    timestamp: str = Field(description="ISO 8601 UTC event time the result is current as of")
    embedding_model: str
    search_backend: str
    assign_threshold: float = Field(description="weighted cosine needed to join a cluster")
    merge_threshold: float = Field(description="average-link cosine at which clusters merge")
    tau_seconds: float = Field(description="temporal closeness scale exp(-|dt|/tau)")
    half_life_seconds: float = Field(description="half-life of cluster weights, event time")
    min_cluster_size: int = Field(description="HDBSCAN min_cluster_size of reconsolidation")
    min_samples: int = Field(description="HDBSCAN min_samples of reconsolidation")
    reconsolidations: int = Field(description="HDBSCAN runs of the scope so far")
    dominant_categories: list[str] | None = Field(
        default=None,
        description="the members' most frequent Stage 3 `categories` (document clusters, seed "
        "003 §3.1 DocumentCluster.metadata); null when no member carries categories",
    )


class ClusterResult(BaseModel):
    """The latest state of one cluster, in the shape Stage 5 reads (seed 003 §3.5), with the
    granularity fields of §3.1 (EventCluster, EntityCluster, StorylineCluster,
    DocumentCluster). Every key is always present; a granularity field whose members carry
    no such metadata is null or empty."""

    model_config = ConfigDict(frozen=True)

    cluster_id: str
    cluster_type: str = Field(description="document, event, entity or storyline")
    cluster_label: str = Field(description="distinctive member terms (c-TF-IDF); may be empty")
    cluster_size: int = Field(description="members now (member_ids may be capped)")
    member_ids: list[str] = Field(description="item ids (Stage 3 vector ids) of the members")
    document_ids: list[str] = Field(description="distinct source documents of the members")
    centroid_vector: list[float] = Field(description="unit centroid of the decayed members")
    temporal_span: list[str] = Field(
        min_length=2,
        max_length=2,
        description="[earliest, latest] member event time, ISO 8601 UTC",
    )
    primary_entities: list[str] = Field(description="most frequent member entities, up to 5")
    domain: str | None = Field(default=None, description="dominant member domain")
    event_type: str | None = Field(default=None, description="dominant member event type")
    intra_cluster_similarity: float = Field(
        description="average cosine between two distinct members, each weighted by its "
        "decayed weight; from the decayed sums: (|S|^2/W^2 - 1/n_eff) / (1 - 1/n_eff) with "
        "S the weighted sum of member vectors, W the weight, n_eff = (sum w)^2 / sum w^2; "
        "1 for a single member"
    )
    metadata: ClusterMetadata
    canonical_entity: str | None = Field(
        default=None,
        description="entity clusters: the mention most members use (ties: the medoid's "
        "mention, then the longest, then alphabetical)",
    )
    entity_type: str | None = Field(default=None, description="dominant member entity type")
    entity_mentions: list[str] = Field(
        default_factory=list,
        description="every distinct member mention, most frequent first",
    )
    storyline_ids: list[str] = Field(
        default_factory=list, description="distinct storylines of the members"
    )
    event_ids: list[str] = Field(
        default_factory=list,
        description="distinct event ids of the members: storyline clusters, the events of "
        "all their storylines; event clusters, their events",
    )
    scope: str = Field(description="clustering space: embedding type / model / scope fields")
    status: ResultStatus = Field(
        description="active on the live topic; retired or merged when read back from storage "
        "after the cluster ended"
    )
    weight: float = Field(description="decayed member weight as of the last activity")
    medoid_id: str | None = Field(default=None, description="member closest to the centroid")
    representative_ids: list[str] = Field(
        default_factory=list, description="medoid first, then diverse members"
    )


SUMMARY_EXCLUDE = frozenset({"member_ids", "document_ids", "centroid_vector"})
"""What a stored cluster summary leaves out: the member lists and the centroid are stored
apart (cluster_items, clusters.centroid) and joined back when a full result is read."""


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
