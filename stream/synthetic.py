"""A built-in synthetic Stage 3 stream for the demo, the tests and the benchmarks: stories
(topics on the unit sphere, each with its own words) that are born and fade, published as
Stage 3 `EmbeddedDocument` messages or per-vector events."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

WORDS = tuple(
    [
        "election",
        "flood",
        "merger",
        "strike",
        "vaccine",
        "summit",
        "wildfire",
        "verdict",
        "launch",
        "tariff",
        "drought",
        "protest",
        "ceasefire",
        "earthquake",
        "outage",
        "scandal",
        "rally",
        "recall",
        "heatwave",
        "budget",
        "treaty",
        "acquisition",
        "lawsuit",
        "storm",
        "pandemic",
        "eclipse",
        "marathon",
        "festival",
        "shortage",
        "reform",
    ]
)


@dataclass(frozen=True)
class SyntheticItem:
    item_id: str
    document_id: str
    story: int
    event_time: float
    title: str
    vector: npt.NDArray[np.float32]


def stories(
    n: int,
    dim: int,
    n_stories: int = 20,
    alive: int = 8,
    spread: float = 0.6,
    start_time: float = 1.7e9,
    seconds_per_item: float = 30.0,
    seed: int = 0,
) -> Iterator[SyntheticItem]:
    """`alive` stories at a time out of `n_stories`; each item belongs to one live story."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_stories, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    per_story = max(n // max(n_stories - alive + 1, 1), 1)
    for i in range(n):
        first = min(i // per_story, n_stories - alive)
        story = first + int(rng.integers(0, alive))
        v = centres[story] + spread * rng.standard_normal(dim) / np.sqrt(dim)
        v /= np.linalg.norm(v)
        words = [WORDS[(story * 3 + k) % len(WORDS)] for k in range(3)]
        yield SyntheticItem(
            item_id=f"doc-{seed}-{i}#document",
            document_id=f"doc-{seed}-{i}",
            story=story,
            event_time=start_time + i * seconds_per_item,
            title=f"{words[0]} {words[1]} {words[2]} update {i % 7}",
            vector=v.astype(np.float32),
        )


def b64(vector: npt.NDArray[np.float32]) -> str:
    return base64.b64encode(vector.astype("<f4").tobytes()).decode()


def vector_event(item: SyntheticItem, model: str = "synthetic-mpnet") -> bytes:
    return json.dumps(
        {
            "item_id": item.item_id,
            "document_id": item.document_id,
            "embedding_type": "document",
            "embedding_model": model,
            "event_time": item.event_time,
            "metadata": {"title": item.title},
            "vector": b64(item.vector),
        },
        separators=(",", ":"),
    ).encode()


def embedded_document(item: SyntheticItem, model: str = "synthetic-mpnet") -> bytes:
    """Stage 3's message shape (seed 003, 2.4) with the document vector only."""
    return json.dumps(
        {
            "document_id": item.document_id,
            "job_id": "synthetic",
            "embedded_at": "2026-11-23T00:00:00Z",
            "source_processed_document": {"title": item.title},
            "document_embedding": {
                "document_id": item.document_id,
                "vector_id": item.item_id,
                "vector": b64(item.vector),
                "text_source": item.title,
                "normalized_date": _iso(item.event_time),
                "metadata": {"title": item.title},
            },
            "embedding_metadata": {"model_name": model},
        },
        separators=(",", ":"),
    ).encode()


def _iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, tz=UTC).isoformat()
