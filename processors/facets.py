"""What the engine keeps of an item's metadata: label terms, entities, domain, event type.

Only these small facets are kept per member (not the raw metadata), so a cluster's label and
dominant fields can be recomputed exactly when a member is deleted.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_TOKEN = re.compile(r"[^\W\d_][\w'-]*", re.UNICODE)
_TEXT_FIELDS = ("title", "textCleaned", "text", "description", "event_description", "summary")
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "he",
        "her",
        "his",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "their",
        "they",
        "this",
        "to",
        "was",
        "were",
        "will",
        "with",
        "after",
        "over",
        "new",
        "says",
        "said",
        "say",
        "about",
        "into",
        "than",
        "but",
        "not",
        "who",
        "what",
        "when",
        "where",
        "why",
        "how",
        "all",
        "also",
        "been",
        "more",
        "most",
        "other",
        "some",
        "such",
        "there",
        "these",
        "those",
    ]
)


@dataclass(frozen=True, slots=True)
class Facets:
    terms: tuple[str, ...] = ()
    entities: tuple[str, ...] = ()
    domain: str | None = None
    event_type: str | None = None


EMPTY = Facets()


def extract(meta: dict[str, Any] | None) -> Facets:
    if not meta:
        return EMPTY
    text = " ".join(str(meta[k]) for k in _TEXT_FIELDS if isinstance(meta.get(k), str))
    terms = tuple(
        dict.fromkeys(t for t in _TOKEN.findall(text.lower()) if len(t) > 2 and t not in _STOP)
    )
    ents: list[str] = []
    pe = meta.get("primary_entities")
    if isinstance(pe, list):
        ents.extend(str(e) for e in pe)
    et = meta.get("entity_text")
    if isinstance(et, str) and et:
        ents.append(et)
    dom = meta.get("domain")
    evt = meta.get("event_type")
    return Facets(
        terms=terms,
        entities=tuple(dict.fromkeys(ents)),
        domain=dom if isinstance(dom, str) and dom else None,
        event_type=evt if isinstance(evt, str) and evt else None,
    )


@dataclass(slots=True)
class FacetCounts:
    """Per-cluster tallies of member facets; supports removal for exact deletes."""

    terms: Counter[str] = field(default_factory=Counter)
    entities: Counter[str] = field(default_factory=Counter)
    domains: Counter[str] = field(default_factory=Counter)
    event_types: Counter[str] = field(default_factory=Counter)

    def add(self, f: Facets, sign: int = 1) -> None:
        if f is EMPTY:
            return
        for t in f.terms:
            self.terms[t] += sign
        for e in f.entities:
            self.entities[e] += sign
        if f.domain:
            self.domains[f.domain] += sign
        if f.event_type:
            self.event_types[f.event_type] += sign
        if sign < 0:
            for c in (self.terms, self.entities, self.domains, self.event_types):
                for k in [k for k, v in c.items() if v <= 0]:
                    del c[k]

    def absorb(self, other: FacetCounts) -> None:
        self.terms.update(other.terms)
        self.entities.update(other.entities)
        self.domains.update(other.domains)
        self.event_types.update(other.event_types)


def top(counter: Counter[str], n: int) -> list[str]:
    """Most common first; equal counts in alphabetical order so output is deterministic."""
    return [k for k, _ in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]
