"""The project's one synthetic generator, for the demo, the tests and the benchmarks.

Three shapes of one idea (unit vectors around topic directions):

- `stories`: a Stage 3 stream of documents, stories (topics with their own words) born and
  fading; `embedded_document` / `vector_event` publish them, and `Granularities` derives each
  document's events, entities and storylines (seed 003, section 3.1) so the stream carries all
  four levels;
- `drifting_stream`: an endless chunked stream of topics born and dying, for the scale runs;
- `blobs`: a static mixture of topics in random order, for the engine's unit tests.

`Granularities` is also what `stream/stage3_fixture.py` uses to write Stage 3 index
directories, so the live demo and the backfill see the same kind of data.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

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


# --------------------------------------------------------------------------- vocabularies
DOMAINS: tuple[str, ...] = (
    "diplomatic_relations",
    "military_operations",
    "economic_activity",
    "political_events",
    "legal_judicial",
    "health_medical",
    "environmental",
    "technology_science",
    "cultural_social",
    "sports_entertainment",
    "infrastructure_development",
    "general_news",
)
"""The 12 domains of seed 003, section 3.4."""

EVENT_TYPES: dict[str, tuple[str, ...]] = {
    "diplomatic_relations": ("contact_meet", "contact_phone_write", "diplomatic_agreement"),
    "military_operations": ("conflict_attack", "movement_transport", "military_deployment"),
    "economic_activity": ("transaction_transfer", "economic_indicator", "business_merge_org"),
    "political_events": ("personnel_elect", "policy_change", "personnel_start_position"),
    "legal_judicial": ("justice_arrest_jail", "justice_trial_hearing", "justice_sentence"),
    "health_medical": ("health_outbreak", "life_injure", "policy_change"),
    "environmental": ("natural_disaster", "environmental_regulation", "life_die"),
    "technology_science": ("product_launch", "research_publication", "business_merge_org"),
    "cultural_social": ("conflict_demonstrate", "cultural_event", "contact_meet"),
    "sports_entertainment": ("competition_result", "cultural_event", "personnel_start_position"),
    "infrastructure_development": ("construction_project", "transaction_transfer", "policy_change"),
    "general_news": ("life_die", "movement_transport", "natural_disaster"),
}
"""Event types per domain: ACE 2005 types and the seed's custom ones (more than 20 in all)."""


@dataclass(frozen=True)
class EntitySpec:
    canonical: str
    entity_type: str
    domain: str
    variants: tuple[str, ...]


ENTITIES: tuple[EntitySpec, ...] = (
    EntitySpec(
        "Joe Biden", "PER", "diplomatic_relations", ("Biden", "President Biden", "Joe Biden")
    ),
    EntitySpec(
        "United Nations", "ORG", "diplomatic_relations", ("UN", "United Nations", "the U.N.")
    ),
    EntitySpec("G7", "ORG", "diplomatic_relations", ("G7", "Group of Seven", "G-7")),
    EntitySpec(
        "NATO",
        "ORG",
        "military_operations",
        ("NATO", "the alliance", "North Atlantic Treaty Organization"),
    ),
    EntitySpec(
        "Pentagon",
        "ORG",
        "military_operations",
        ("Pentagon", "Defense Department", "U.S. Department of Defense"),
    ),
    EntitySpec(
        "Ukraine", "GPE", "military_operations", ("Ukraine", "Kyiv", "the Ukrainian government")
    ),
    EntitySpec(
        "Federal Reserve",
        "ORG",
        "economic_activity",
        ("Fed", "Federal Reserve", "the U.S. central bank"),
    ),
    EntitySpec(
        "Jerome Powell", "PER", "economic_activity", ("Powell", "Jerome Powell", "Fed Chair Powell")
    ),
    EntitySpec(
        "Wall Street", "LOC", "economic_activity", ("Wall Street", "Wall St.", "U.S. markets")
    ),
    EntitySpec(
        "Congress", "ORG", "political_events", ("Congress", "Capitol Hill", "U.S. Congress")
    ),
    EntitySpec(
        "Kamala Harris",
        "PER",
        "political_events",
        ("Harris", "Kamala Harris", "Vice President Harris"),
    ),
    EntitySpec(
        "European Parliament",
        "ORG",
        "political_events",
        ("European Parliament", "EU lawmakers", "the parliament in Strasbourg"),
    ),
    EntitySpec(
        "Supreme Court", "ORG", "legal_judicial", ("Supreme Court", "SCOTUS", "the high court")
    ),
    EntitySpec(
        "Department of Justice",
        "ORG",
        "legal_judicial",
        ("DOJ", "Justice Department", "Department of Justice"),
    ),
    EntitySpec(
        "Merrick Garland",
        "PER",
        "legal_judicial",
        ("Garland", "Merrick Garland", "Attorney General Garland"),
    ),
    EntitySpec(
        "World Health Organization",
        "ORG",
        "health_medical",
        ("WHO", "World Health Organization", "the U.N. health agency"),
    ),
    EntitySpec(
        "CDC",
        "ORG",
        "health_medical",
        ("CDC", "Centers for Disease Control", "U.S. health officials"),
    ),
    EntitySpec("Pfizer", "ORG", "health_medical", ("Pfizer", "Pfizer Inc.", "Pfizer-BioNTech")),
    EntitySpec("COP28", "EVENT", "environmental", ("COP28", "UN climate summit", "COP 28")),
    EntitySpec(
        "Greenpeace",
        "ORG",
        "environmental",
        ("Greenpeace", "Greenpeace International", "the campaign group"),
    ),
    EntitySpec(
        "Amazon rainforest",
        "LOC",
        "environmental",
        ("Amazon", "Amazon rainforest", "the Amazon basin"),
    ),
    EntitySpec(
        "OpenAI", "ORG", "technology_science", ("OpenAI", "Open AI", "ChatGPT maker OpenAI")
    ),
    EntitySpec(
        "NASA",
        "ORG",
        "technology_science",
        ("NASA", "the U.S. space agency", "National Aeronautics and Space Administration"),
    ),
    EntitySpec(
        "Elon Musk", "PER", "technology_science", ("Musk", "Elon Musk", "Tesla CEO Elon Musk")
    ),
    EntitySpec(
        "UNESCO",
        "ORG",
        "cultural_social",
        ("UNESCO", "the U.N. cultural agency", "UNESCO's heritage committee"),
    ),
    EntitySpec(
        "Taylor Swift", "PER", "cultural_social", ("Swift", "Taylor Swift", "pop star Taylor Swift")
    ),
    EntitySpec(
        "Pope Francis", "PER", "cultural_social", ("Pope Francis", "the pontiff", "Francis")
    ),
    EntitySpec(
        "FIFA",
        "ORG",
        "sports_entertainment",
        ("FIFA", "world football's governing body", "FIFA officials"),
    ),
    EntitySpec(
        "Lionel Messi", "PER", "sports_entertainment", ("Messi", "Lionel Messi", "Leo Messi")
    ),
    EntitySpec(
        "Olympic Games", "EVENT", "sports_entertainment", ("Olympics", "Olympic Games", "the Games")
    ),
    EntitySpec(
        "World Bank",
        "ORG",
        "infrastructure_development",
        ("World Bank", "the bank", "World Bank Group"),
    ),
    EntitySpec(
        "Belt and Road Initiative",
        "MISC",
        "infrastructure_development",
        ("Belt and Road", "BRI", "Belt and Road Initiative"),
    ),
    EntitySpec(
        "Panama Canal",
        "LOC",
        "infrastructure_development",
        ("Panama Canal", "the canal", "the Panama waterway"),
    ),
    EntitySpec(
        "Reuters", "ORG", "general_news", ("Reuters", "Reuters news agency", "Thomson Reuters")
    ),
    EntitySpec("New York City", "GPE", "general_news", ("New York", "NYC", "New York City")),
    EntitySpec("Associated Press", "ORG", "general_news", ("AP", "Associated Press", "the AP")),
)
"""Named entities with variant mentions (coreference targets), three per domain."""

SENTIMENTS = ("positive", "neutral", "negative")
DAY = 86_400.0


def unit(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(a / np.linalg.norm(a, axis=-1, keepdims=True))


def iso(t: float) -> str:
    """Epoch seconds as ISO 8601 UTC with a `Z`, the way Stage 3 writes dates."""
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def b64(vector: npt.NDArray[np.float32]) -> str:
    return base64.b64encode(vector.astype("<f4").tobytes()).decode()


# --------------------------------------------------------------------------- shapes of streams
def blobs(n: int, d: int, k: int, seed: int, spread: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around k random topic directions, in random order."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(d, k), d))
    if k <= d:
        centres = np.linalg.qr(centres[:d])[0][:k]  # orthogonal: distinct topics
    centres = centres[:k]
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    y = rng.integers(0, k, n)
    x = centres[y] + spread * rng.standard_normal((n, d)) / np.sqrt(d) * 4
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), y


Chunk = tuple[npt.NDArray[np.float32], npt.NDArray[np.float64], list[str]]


def drifting_stream(
    n: int,
    dim: int,
    chunk: int,
    alive: int = 200,
    mean_life: int = 20_000,
    spread: float = 1.0,
    noise: float = 0.05,
    seconds_per_item: float = 10.0,
    seed: int = 0,
) -> Iterator[Chunk]:
    """Topics live a geometric number of items (mean `mean_life`); a dead topic is replaced
    by a new random one at once (a birth). Items are centre + `spread` x random direction.
    Generated in chunks from a seeded generator, so the stream costs no memory as it grows."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((alive, dim)))
    p_death = 1.0 / mean_life * alive  # per item, one topic dies with this probability
    for start in range(0, n, chunk):
        b = min(chunk, n - start)
        # deaths (and the births replacing them) take effect at chunk boundaries
        deaths = int((rng.random(b) < p_death).sum())
        topic = rng.integers(0, alive, b)
        x = np.empty((b, dim))
        for _ in range(deaths):
            centres[rng.integers(0, alive)] = unit(rng.standard_normal(dim))
        x[:] = centres[topic]
        g = unit(rng.standard_normal((b, dim)))
        x += spread * g
        is_noise = rng.random(b) < noise
        x[is_noise] = rng.standard_normal((int(is_noise.sum()), dim))
        ids = [f"s{start + i}" for i in range(b)]
        times = (start + np.arange(b)) * seconds_per_item
        yield unit(x).astype(np.float32), times.astype(np.float64), ids


@dataclass(frozen=True)
class SyntheticItem:
    item_id: str
    document_id: str
    story: int
    event_time: float
    title: str
    vector: npt.NDArray[np.float32]


def story_centres(n_stories: int, dim: int, seed: int) -> npt.NDArray[np.float64]:
    """The topic directions `stories` draws around (its first use of the seeded generator)."""
    centres = np.random.default_rng(seed).standard_normal((n_stories, dim))
    return unit(centres)


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


# --------------------------------------------------------------------------- four granularities
@dataclass(frozen=True)
class Derived:
    """One event, entity or storyline embedding of a document, with Stage 3's metadata fields
    for its kind (seed 003, section 2.3)."""

    embedding_type: str
    source_id: str
    vector_id: str
    vector: npt.NDArray[np.float32]
    metadata: dict[str, Any]


@dataclass(frozen=True)
class DocumentFamily:
    """A document's domain and the lower-level embeddings Stage 3 extracted from it."""

    domain: str
    categories: list[str]
    events: list[Derived] = field(default_factory=list)
    entities: list[Derived] = field(default_factory=list)
    storylines: list[Derived] = field(default_factory=list)

    def all(self) -> list[Derived]:
        return [*self.events, *self.entities, *self.storylines]


class Granularities:
    """Derives events, entities and storylines from a document's vector, deterministically
    per (seed, document id) whatever the order documents come in.

    - domain: the nearest of 12 seeded directions to the document vector (similar documents
      share a domain, no labels needed); event types follow the domain.
    - event: document + an event-type direction + noise (events of one type and topic are
      close); temporal reference 0-2 days before the document.
    - entity: the entity's own direction + a per-variant offset + a little document context,
      so "Biden", "President Biden" and "Joe Biden" land close and other entities do not.
    - storyline: the mean of the document and its events + noise, spanning its events' dates.

    Anchors of entities are drawn from `anchor_pool` (real document vectors, or the stream's
    story centres) mixed with a seeded direction, so they look like the embedding space they
    live in."""

    def __init__(
        self,
        dim: int,
        seed: int = 0,
        anchor_pool: npt.NDArray[Any] | None = None,
        events: tuple[int, int] = (2, 4),
        entities: tuple[int, int] = (3, 5),
        storylines: tuple[int, int] = (1, 2),
        noise: float = 0.35,
    ) -> None:
        for name, (lo, hi) in (
            ("events", events),
            ("entities", entities),
            ("storylines", storylines),
        ):
            if lo < 0 or hi < lo:
                raise ValueError(f"{name} per document must be a range lo <= hi, got {lo}-{hi}")
        self.dim = dim
        self.seed = seed
        self.counts = {"event": events, "entity": entities, "storyline": storylines}
        self.noise = noise
        rng = np.random.default_rng([seed, 7919])
        self.domain_dirs = unit(rng.standard_normal((len(DOMAINS), dim)))
        types = sorted({t for ts in EVENT_TYPES.values() for t in ts})
        self.type_dirs = {t: unit(rng.standard_normal(dim)) for t in types}
        pool = (
            None
            if anchor_pool is None or len(anchor_pool) == 0
            else unit(np.asarray(anchor_pool, np.float64))
        )
        self.entity_dirs: dict[str, npt.NDArray[np.float64]] = {}
        self.variant_dirs: dict[tuple[str, str], npt.NDArray[np.float64]] = {}
        for spec in ENTITIES:
            own = unit(rng.standard_normal(dim))
            if pool is not None:
                own = unit(pool[int(rng.integers(0, len(pool)))] + 0.8 * own)
            self.entity_dirs[spec.canonical] = own
            for v in spec.variants:
                self.variant_dirs[(spec.canonical, v)] = unit(rng.standard_normal(dim))
        self.by_domain = {d: [e for e in ENTITIES if e.domain == d] for d in DOMAINS}

    def domain(self, vector: npt.NDArray[Any]) -> str:
        return DOMAINS[int(np.argmax(self.domain_dirs @ np.asarray(vector, np.float64)))]

    def _noisy(
        self, base: npt.NDArray[np.float64], rng: np.random.Generator, scale: float
    ) -> npt.NDArray[np.float32]:
        return unit(base + scale * unit(rng.standard_normal(self.dim))).astype(np.float32)

    def derive(
        self, document_id: str, vector: npt.NDArray[Any], event_time: float, title: str
    ) -> DocumentFamily:
        rng = np.random.default_rng([self.seed, zlib.crc32(document_id.encode())])
        doc = unit(np.asarray(vector, np.float64))
        dom = self.domain(doc)
        second = DOMAINS[int(rng.integers(0, len(DOMAINS)))]
        categories = [dom] if second == dom or rng.random() < 0.6 else [dom, second]
        date = iso(event_time)

        def count(kind: str) -> int:
            lo, hi = self.counts[kind]
            return int(rng.integers(lo, hi + 1))

        n_ev, n_en, n_st = count("event"), count("entity"), count("storyline")
        storyline_ids = [f"storyline_{document_id}_{j}" for j in range(n_st)]
        base_meta = {"document_id": document_id, "title": title, "publication_date": date}

        # entities first: events and storylines name them
        pool = self.by_domain[dom] + [ENTITIES[int(rng.integers(0, len(ENTITIES)))]]
        entities: list[Derived] = []
        for j in range(n_en):
            spec = pool[int(rng.integers(0, len(pool)))]
            mention = spec.variants[int(rng.integers(0, len(spec.variants)))]
            v = (
                self.entity_dirs[spec.canonical]
                + 0.3 * self.variant_dirs[(spec.canonical, mention)]
                + 0.3 * doc
            )
            eid = f"{document_id}_entity_{j}"
            entities.append(
                Derived(
                    "entity",
                    eid,
                    f"entity_emb_{eid}",
                    self._noisy(v, rng, 0.2),
                    {
                        **base_meta,
                        "entity_type": spec.entity_type,
                        "entity_text": mention,
                        "context": f"... {mention} ... {title} ...",
                    },
                )
            )
        names = list(dict.fromkeys(e.metadata["entity_text"] for e in entities))

        events: list[Derived] = []
        for j in range(n_ev):
            etype = EVENT_TYPES[dom][int(rng.integers(0, len(EVENT_TYPES[dom])))]
            when = event_time - float(rng.integers(0, 3)) * DAY
            evid = f"{document_id}_event_{j}"
            events.append(
                Derived(
                    "event",
                    evid,
                    f"event_emb_{evid}",
                    self._noisy(doc + 0.35 * self.type_dirs[etype], rng, self.noise),
                    {
                        **base_meta,
                        "event_type": etype,
                        "domain": dom,
                        "sentiment": SENTIMENTS[int(rng.integers(0, 3))],
                        "confidence": round(float(rng.uniform(0.6, 0.99)), 2),
                        "temporal_reference": iso(when - when % DAY),
                        "argument_count": int(rng.integers(1, 6)),
                        "storyline_id": storyline_ids[j % n_st] if n_st else None,
                        "event_description": f"{etype.replace('_', ' ')}: {title}",
                    },
                )
            )

        storylines: list[Derived] = []
        for sid in storyline_ids:
            mine = [e for e in events if e.metadata["storyline_id"] == sid]
            refs = sorted(str(e.metadata["temporal_reference"]) for e in mine) or [date]
            span = [refs[0], max(refs[-1], date)]
            days = (datetime.fromisoformat(span[1]) - datetime.fromisoformat(span[0])).days
            base = doc + sum((e.vector.astype(np.float64) for e in mine), np.zeros(self.dim))
            storylines.append(
                Derived(
                    "storyline",
                    sid,
                    f"storyline_emb_{sid}",
                    self._noisy(unit(base), rng, self.noise),
                    {
                        **base_meta,
                        "storyline_id": sid,
                        "event_count": len(mine),
                        "event_ids": [e.source_id for e in mine],
                        "primary_entities": names[:3],
                        "domain": dom,
                        "temporal_span": span,
                        "temporal_span_days": days,
                        "storyline_summary": f"{dom.replace('_', ' ')}: {title}",
                    },
                )
            )
        return DocumentFamily(dom, categories, events, entities, storylines)


def stage3_stream(
    n: int, dim: int, seed: int = 0, **story_options: Any
) -> Iterator[tuple[SyntheticItem, DocumentFamily]]:
    """`stories` with every document's events, entities and storylines."""
    n_stories = int(story_options.get("n_stories", 20))
    g = Granularities(dim, seed, anchor_pool=story_centres(n_stories, dim, seed))
    for item in stories(n, dim, seed=seed, **story_options):
        yield item, g.derive(item.document_id, item.vector, item.event_time, item.title)


# --------------------------------------------------------------------------- messages
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


def embedded_document(
    item: SyntheticItem, model: str = "synthetic-mpnet", family: DocumentFamily | None = None
) -> bytes:
    """Stage 3's message shape (seed 003, 2.4): the document vector, and with `family` its
    event, entity and storyline embeddings too."""
    doc_meta: dict[str, Any] = {"title": item.title}
    msg: dict[str, Any] = {
        "document_id": item.document_id,
        "job_id": "synthetic",
        "embedded_at": "2026-11-23T00:00:00Z",
        "source_processed_document": {"title": item.title},
        "document_embedding": {
            "document_id": item.document_id,
            "vector_id": item.item_id,
            "vector": b64(item.vector),
            "text_source": item.title,
            "normalized_date": iso(item.event_time),
            "metadata": doc_meta,
        },
        "embedding_metadata": {"model_name": model},
    }
    if family is not None:
        doc_meta.update(
            categories=family.categories,
            event_count=len(family.events),
            entity_count=len(family.entities),
        )
        msg["event_embeddings"] = [
            {
                "event_id": e.source_id,
                "document_id": item.document_id,
                "vector_id": e.vector_id,
                "vector": b64(e.vector),
                "event_type": e.metadata["event_type"],
                "domain": e.metadata["domain"],
                "storyline_id": e.metadata["storyline_id"],
                "event_description": e.metadata["event_description"],
                "metadata": _rest(
                    e.metadata, "event_type", "domain", "storyline_id", "event_description"
                ),
            }
            for e in family.events
        ]
        msg["entity_embeddings"] = [
            {
                "entity_id": e.source_id,
                "document_id": item.document_id,
                "vector_id": e.vector_id,
                "vector": b64(e.vector),
                "entity_text": e.metadata["entity_text"],
                "entity_type": e.metadata["entity_type"],
                "context": e.metadata["context"],
                "metadata": _rest(e.metadata, "entity_text", "entity_type", "context"),
            }
            for e in family.entities
        ]
        msg["storyline_embeddings"] = [
            {
                "storyline_id": e.source_id,
                "vector_id": e.vector_id,
                "vector": b64(e.vector),
                "event_ids": e.metadata["event_ids"],
                "primary_entities": e.metadata["primary_entities"],
                "domain": e.metadata["domain"],
                "temporal_span": e.metadata["temporal_span"],
                "storyline_summary": e.metadata["storyline_summary"],
                "metadata": _rest(
                    e.metadata,
                    "storyline_id",
                    "event_ids",
                    "primary_entities",
                    "domain",
                    "temporal_span",
                    "storyline_summary",
                ),
            }
            for e in family.storylines
        ]
    return json.dumps(msg, separators=(",", ":")).encode()


def _rest(meta: dict[str, Any], *taken: str) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k not in taken}
