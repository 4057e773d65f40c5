"""Pydantic contracts of every message that crosses a boundary of the clusterer."""

from schemas.inputs import (
    EMBEDDING_TYPES,
    DocumentEmbedding,
    EmbeddedDocument,
    EntityEmbedding,
    EventEmbedding,
    StorylineEmbedding,
    VectorEvent,
)
from schemas.outputs import (
    Assignment,
    ChangeEvent,
    ChangeKind,
    ClusterResult,
    ReconsolidationGroup,
    ReconsolidationRecord,
)
from schemas.validation import InputError, ValidationLimits, decode_vector

__all__ = [
    "EMBEDDING_TYPES",
    "Assignment",
    "ChangeEvent",
    "ChangeKind",
    "ClusterResult",
    "DocumentEmbedding",
    "EmbeddedDocument",
    "EntityEmbedding",
    "EventEmbedding",
    "InputError",
    "ReconsolidationGroup",
    "ReconsolidationRecord",
    "StorylineEmbedding",
    "ValidationLimits",
    "VectorEvent",
    "decode_vector",
]
