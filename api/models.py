"""Request and response bodies of the API (pydantic: validated in, documented in OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.inputs import EmbeddingType

Status = Literal["candidate", "active", "retired", "merged"]
SortKey = Literal["last_event_time", "first_event_time", "size", "weight"]
Order = Literal["desc", "asc"]
MAX_DIMENSION = 8192
NO_NUL = r"^[^\x00]*$"
"""free-text inputs: anything but NUL, which PostgreSQL text cannot hold"""


class ClusterSummary(BaseModel):
    """One cluster in a list: what a client needs to choose which to open."""

    cluster_id: str
    cluster_type: str = Field(description="embedding type: document, event, entity, storyline")
    scope: str = Field(description="the clustering space: embedding type / model / fields")
    status: Status
    cluster_label: str | None
    cluster_size: int
    weight: float
    temporal_span: list[str] | None = Field(
        description="[first, last] member event time, ISO 8601 UTC; null once retired"
    )
    domain: str | None = None
    event_type: str | None = None
    primary_entities: list[str] = Field(default_factory=list)
    canonical_entity: str | None = Field(default=None, description="entity clusters")
    entity_type: str | None = Field(default=None, description="entity clusters")
    medoid_id: str | None = None
    representative_ids: list[str] = Field(default_factory=list)
    updated_at: datetime | None = Field(
        description="when the row last changed; null when served from the cache"
    )


class ClusterPage(BaseModel):
    items: list[ClusterSummary]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: end")


class Member(BaseModel):
    item_id: str
    item_type: str
    document_id: str | None
    similarity: float | None = Field(description="temporally weighted cosine when it joined")
    event_time: str | None


class MemberPage(BaseModel):
    items: list[Member]
    next_cursor: str | None


class HistoryEvent(BaseModel):
    event_id: str
    kind: Literal["created", "updated", "merged", "split", "retired"]
    cluster_id: str = Field(description="the cluster the event is about")
    related_ids: list[str]
    event_time: str | None
    sequence: int
    payload: dict[str, Any] = Field(description="the ChangeEvent as published")


class HistoryPage(BaseModel):
    items: list[HistoryEvent]
    next_cursor: str | None


class Membership(BaseModel):
    scope: str
    cluster_id: str
    cluster: ClusterSummary | None = Field(
        description="the cluster's summary; null when the cluster row is gone"
    )


class ItemClusters(BaseModel):
    item_id: str
    memberships: list[Membership]
    source: Literal["cache", "database"]


def _default_status() -> list[Status]:
    return ["active"]


class Filters(BaseModel):
    """Metadata filters shared by the list and the search."""

    model_config = ConfigDict(extra="forbid")

    embedding_type: EmbeddingType | None = None
    scope: str | None = Field(default=None, min_length=1, max_length=1024, pattern=NO_NUL)
    status: list[Status] = Field(default_factory=_default_status)
    domain: str | None = Field(default=None, min_length=1, max_length=256, pattern=NO_NUL)
    event_type: str | None = Field(default=None, min_length=1, max_length=256, pattern=NO_NUL)
    since: datetime | None = Field(
        default=None, description="clusters whose span ends at or after this time"
    )
    until: datetime | None = Field(
        default=None, description="clusters whose span starts at or before this time"
    )
    min_size: int = Field(default=0, ge=0, le=1_000_000_000)

    @field_validator("status")
    @classmethod
    def _some(cls, v: list[Status]) -> list[Status]:
        if not v:
            raise ValueError("name at least one status")
        return sorted(set(v))


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filters: Filters = Field(default_factory=Filters)
    vector: list[float] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_DIMENSION,
        description="query embedding: nearest clusters of `filters.scope` by centroid cosine",
    )
    top_k: int = Field(default=10, ge=1, le=1000)
    min_similarity: float = Field(default=-1.0, ge=-1.0, le=1.0)
    text: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        pattern=NO_NUL,
        description="words that must all appear in the label (case-insensitive)",
    )


class SearchHit(ClusterSummary):
    similarity: float | None = Field(description="cosine of the query vector to the centroid")


class SearchResult(BaseModel):
    items: list[SearchHit]


class PartitionLag(BaseModel):
    group: str
    topic: str
    partition: int
    committed: int | None
    high_watermark: int
    lag: int


class ConsumerLag(BaseModel):
    """Kafka's view: lag of the router and worker groups, and the dead-letter topic."""

    status: Literal["ok", "unknown"]
    total: int | None = None
    dead_letters: int | None = Field(
        default=None, description="messages on the dead-letter topic (within retention)"
    )
    partitions: list[PartitionLag] = Field(default_factory=list)
    detail: str | None = None


class ScopeStatistics(BaseModel):
    scope: str
    embedding_type: str
    clusters: dict[str, int] = Field(description="clusters by status")
    items: int
    last_event_time: str | None
    reconsolidation_runs: int
    reconsolidations_skipped: int


class TableStorage(BaseModel):
    """One table that retention bounds (README: Retention)."""

    rows: int
    bytes: int = Field(description="table, indexes and TOAST")
    oldest_age_seconds: float | None = Field(
        description="age of the oldest row retention may remove (outbox: since sent; others:"
        " in their scope's event time); null when none is held"
    )


class Statistics(BaseModel):
    scopes: list[ScopeStatistics]
    consumer_lag: ConsumerLag
    storage: dict[str, TableStorage] = Field(
        description="per table bounded by retention; rows removed are counted by the"
        " workers' metric clusterer_retention_rows_removed_total"
    )

    batch_jobs: dict[str, int] = Field(description="batch jobs by status")


class Health(BaseModel):
    status: Literal["ok"]
    postgres: Literal["ok"]
    redis: Literal["ok", "unreachable"]


JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class DirectoryJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        min_length=1,
        max_length=1024,
        pattern=NO_NUL,
        description="directory relative to CLUSTERER_API_DATA_ROOT: a Stage 3 index directory"
        " (documents.index, events.index, ... with their _metadata.json) or *.jsonl vector"
        " events",
    )
    name: str | None = Field(default=None, max_length=200, pattern=NO_NUL)
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        pattern=NO_NUL,
        description="Stage 3 directories: the embedding model of vectors whose metadata names"
        " none (as `clusterer backfill --model`)",
    )


class Job(BaseModel):
    job_id: str
    status: JobState
    source_kind: Literal["upload", "directory"]
    source_path: str | None
    name: str | None
    items_total: int
    items_done: int
    items_rejected: int = Field(description="vectors the engine refused (zero, wrong size...)")
    resumed_from: int = Field(
        description="items the latest run took over from a checkpoint (0: ran from the start)"
    )
    progress: float = Field(ge=0.0, le=1.0)
    clusters: int | None
    error: str | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class RecentEvent(HistoryEvent):
    scope: str


class EventPage(BaseModel):
    items: list[RecentEvent]
    next_cursor: str | None = Field(description="pass as `cursor` to get only newer events")


class MapPoint(BaseModel):
    cluster_id: str
    cluster_label: str | None
    cluster_size: int
    x: float
    y: float
    last_event_time: str | None


class ScopeMap(BaseModel):
    """A scope's active centroids projected on their first two principal components."""

    scope: str
    explained_variance: list[float]
    points: list[MapPoint]
