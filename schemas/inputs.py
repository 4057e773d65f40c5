"""Input contracts: the per-vector event and Stage 3's EmbeddedDocument (seed 003, 2.4)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator

from schemas.validation import check_event_time

EmbeddingType = Literal["document", "event", "entity", "storyline"]
EMBEDDING_TYPES: tuple[str, ...] = ("document", "event", "entity", "storyline")
Vector = list[Annotated[float, Strict()]] | str
"""A JSON array of numbers (booleans, strings and nulls are not numbers) or base64 of
little-endian float32. The service decodes it with `schemas.validation.decode_vector`."""


def to_epoch_seconds(value: Any) -> float:
    """Event times travel as ISO 8601 or epoch seconds; the engine only sees epoch seconds."""
    if isinstance(value, bool):
        raise ValueError("event time must be ISO 8601 text or epoch seconds")
    if isinstance(value, int | float):
        return check_event_time(float(value))
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"event time {value!r} is not ISO 8601") from exc
    else:
        raise ValueError("event time must be ISO 8601 text or epoch seconds")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return check_event_time(dt.timestamp())


def granularity_time(
    embedding_type: str, metadata: dict[str, Any], document_time: Any = None
) -> Any:
    """The date that is an item's event time, per granularity; the live stream (`fan_out`)
    and the Stage 3 backfill both use it, so history and the live stream cluster alike.

    documents: `publication_date`; events: `temporal_reference`, else the document's date;
    storylines: the END of `temporal_span` (a storyline is complete, and the live stream
    emits it, at its latest event), else its start, else the document's date; entities: their
    document's date. The document's date is `publication_date` in the item's own metadata,
    else `document_time`. Returns None when none is known."""
    own: Any = None
    if embedding_type == "event":
        own = metadata.get("temporal_reference")
    elif embedding_type == "storyline":
        span = metadata.get("temporal_span")
        if isinstance(span, list | tuple):
            own = next((s for s in reversed(span) if s not in (None, "")), None)
    if own in (None, ""):
        own = metadata.get("publication_date")
    return document_time if own in (None, "") else own


class VectorEvent(BaseModel):
    """One embedding to cluster. `vector` is a JSON float array or base64 little-endian f32."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    item_id: str = Field(min_length=1, max_length=512)
    document_id: str | None = Field(default=None, max_length=512)
    embedding_type: EmbeddingType
    embedding_model: str = Field(min_length=1, max_length=256)
    event_time: float
    metadata: dict[str, Any] = Field(default_factory=dict)
    vector: Vector

    # the schema file says what senders may write (ISO 8601 text or epoch seconds), not the
    # epoch float the model holds after validation
    @field_validator("event_time", mode="before", json_schema_input_type=float | str)
    @classmethod
    def _epoch(cls, value: Any) -> float:
        return to_epoch_seconds(value)


class DocumentEmbedding(BaseModel):
    model_config = ConfigDict(extra="ignore")
    document_id: str
    vector_id: str
    vector: Vector
    text_source: str = ""
    normalized_date: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class EventEmbedding(BaseModel):
    model_config = ConfigDict(extra="ignore")
    event_id: str
    document_id: str
    vector_id: str
    vector: Vector
    event_type: str = ""
    domain: str = ""
    storyline_id: str | None = None
    event_description: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


class EntityEmbedding(BaseModel):
    model_config = ConfigDict(extra="ignore")
    entity_id: str
    document_id: str
    vector_id: str
    vector: Vector
    entity_text: str = ""
    entity_type: str = ""
    context: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


class StorylineEmbedding(BaseModel):
    model_config = ConfigDict(extra="ignore")
    storyline_id: str
    vector_id: str
    vector: Vector
    event_ids: list[str] = Field(default_factory=list)
    primary_entities: list[str] = Field(default_factory=list)
    domain: str = ""
    temporal_span: list[str] | None = None
    storyline_summary: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


class EmbeddedDocument(BaseModel):
    """Stage 3's full output for one document; `fan_out` turns it into per-vector events."""

    model_config = ConfigDict(extra="ignore")

    document_id: str = Field(min_length=1)
    job_id: str = ""
    embedded_at: str
    source_processed_document: dict[str, Any] = Field(default_factory=dict)
    document_embedding: DocumentEmbedding | None = None
    event_embeddings: list[EventEmbedding] = Field(default_factory=list)
    entity_embeddings: list[EntityEmbedding] = Field(default_factory=list)
    storyline_embeddings: list[StorylineEmbedding] = Field(default_factory=list)
    embedding_metadata: dict[str, Any] = Field(default_factory=dict)

    def fan_out(self) -> list[VectorEvent]:
        """Per-vector events. The document's time is its normalised date, else embedded_at;
        events and storylines carry their own (`granularity_time`)."""
        model = str(self.embedding_metadata.get("model_name") or "unknown-model")
        doc = self.document_embedding
        when: Any = (doc.normalized_date if doc and doc.normalized_date else None) or (
            self.source_processed_document.get("normalized_date") or self.embedded_at
        )
        t = to_epoch_seconds(when)
        title = (doc.metadata.get("title") if doc else None) or self.source_processed_document.get(
            "title"
        )
        out: list[VectorEvent] = []

        def add(kind: str, item_id: str, vector: Vector, meta: dict[str, Any]) -> None:
            merged = {"title": title, **meta} if title else dict(meta)
            own = granularity_time(kind, {k: v for k, v in meta.items() if k != "publication_date"})
            out.append(
                VectorEvent(
                    item_id=item_id,
                    document_id=self.document_id,
                    embedding_type=kind,  # type: ignore[arg-type]
                    embedding_model=model,
                    event_time=t if own is None else to_epoch_seconds(own),
                    metadata=merged,
                    vector=vector,
                )
            )

        if doc is not None:
            add("document", doc.vector_id, doc.vector, {"text": doc.text_source, **doc.metadata})
        for ev in self.event_embeddings:
            meta = {
                "event_id": ev.event_id,
                "event_type": ev.event_type,
                "domain": ev.domain,
                "storyline_id": ev.storyline_id,
                "text": ev.event_description,
                **ev.metadata,
            }
            add("event", ev.vector_id, ev.vector, meta)
        for en in self.entity_embeddings:
            meta = {"entity_type": en.entity_type, "entity_text": en.entity_text, **en.metadata}
            meta["text"] = en.entity_text
            add("entity", en.vector_id, en.vector, meta)
        for st in self.storyline_embeddings:
            meta = {
                "storyline_id": st.storyline_id,
                "event_ids": st.event_ids,
                "domain": st.domain,
                "primary_entities": st.primary_entities,
                "temporal_span": st.temporal_span,
                "text": st.storyline_summary,
                **st.metadata,
            }
            add("storyline", st.vector_id, st.vector, meta)
        return out
