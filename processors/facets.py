"""What the engine keeps of an item's metadata: label terms, entities, domain, event type, and
the per-granularity tags Stage 5 reads (seed 003 §3.1): an entity's mention and type, a
document's categories, a storyline's id and event ids.

Only these small facets are kept per member (not the raw metadata), so a cluster's label and
dominant fields can be recomputed exactly when a member is deleted.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# label terms: maximal runs of word characters, apostrophes and hyphens that start with a
# letter, longer than two characters. The length is in the pattern, so short words are never
# built as strings (4.5 -> 4.0 us for a 12-word title); inside a maximal run every later
# start is shorter, so this finds exactly the long maximal runs (tested against the plain rule)
_TERM = re.compile(r"[^\W\d_][\w'-]{2,}", re.UNICODE)
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


# granularity tags: (kind, value) pairs in one counter per cluster (one dict, not five:
# there is a FacetCounts per cluster slot, and most clusters use one or two kinds)
MENTION = "mention"
ENTITY_TYPE = "entity_type"
CATEGORY = "category"
STORYLINE = "storyline"
EVENT = "event"


Facets = tuple[
    tuple[str, ...], tuple[str, ...], str | None, str | None, tuple[tuple[str, str], ...]
]
"""A member's facets: (terms, entities, domain, event type, tags).

A plain tuple rather than a class: the engine holds one per member, and the cyclic collector
stops tracking an exact tuple of strings in one of its first passes, where a class instance
stays in every full pass (see `processors.scope.Member`)."""


def facets(
    terms: tuple[str, ...] = (),
    entities: tuple[str, ...] = (),
    domain: str | None = None,
    event_type: str | None = None,
    tags: tuple[tuple[str, str], ...] = (),
) -> Facets:
    """Facets by name.

    >>> facets(("biden",), domain="political")
    (('biden',), (), 'political', None, ())
    """
    return (terms, entities, domain, event_type, tags)


def tag(f: Facets, kind: str) -> str | None:
    """The first tag of one kind (MENTION, ...), None when the member has none.

    >>> tag(facets(tags=(("category", "politics"), ("mention", "Biden"))), "mention")
    'Biden'
    """
    return next((v for k, v in f[4] if k == kind), None)


EMPTY: Facets = facets()


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return None


def _names(value: Any) -> list[str]:
    """Entity names from a list of strings or of objects naming an entity ({"text": ...})."""
    out: list[str] = []
    if not isinstance(value, list):
        return out
    for v in value:
        if isinstance(v, dict):
            v = next((v[k] for k in ("text", "entity_text", "name") if _text(v.get(k))), None)
        name = _text(v)
        if name:
            out.append(name)
    return out


def extract(meta: dict[str, Any] | None) -> Facets:
    if not meta:
        return EMPTY
    text = " ".join(str(meta[k]) for k in _TEXT_FIELDS if isinstance(meta.get(k), str))
    terms = tuple(dict.fromkeys([t for t in _TERM.findall(text.lower()) if t not in _STOP]))
    ents = _names(meta.get("primary_entities")) + _names(meta.get("entities"))
    mention = _text(meta.get("entity_text"))
    if mention:
        ents.append(mention)
    tags: list[tuple[str, str]] = []
    if mention:
        tags.append((MENTION, mention))
    etype = _text(meta.get("entity_type"))
    if etype:
        tags.append((ENTITY_TYPE, etype))
    cats = meta.get("categories")
    if isinstance(cats, list):
        tags.extend((CATEGORY, c) for c in dict.fromkeys(x for x in map(_text, cats) if x))
    story = _text(meta.get("storyline_id"))
    if story:
        tags.append((STORYLINE, story))
    # an event's own id, or the events a storyline spans
    evs = meta.get("event_ids")
    ev_ids = [x for x in map(_text, evs) if x] if isinstance(evs, list) else []
    own = _text(meta.get("event_id"))
    if own:
        ev_ids.insert(0, own)
    tags.extend((EVENT, e) for e in dict.fromkeys(ev_ids))
    dom = _text(meta.get("domain"))
    evt = _text(meta.get("event_type"))
    if not (terms or ents or tags or dom or evt):
        return EMPTY
    return (terms, tuple(dict.fromkeys(ents)), dom, evt, tuple(tags))


def _bump(c: Counter[Any], key: Any, sign: int) -> None:
    n = c[key] + sign
    if n > 0:
        c[key] = n
    else:
        del c[key]


@dataclass(slots=True)
class FacetCounts:
    """Per-cluster tallies of member facets; supports removal for exact deletes."""

    terms: Counter[str] = field(default_factory=Counter)
    entities: Counter[str] = field(default_factory=Counter)
    domains: Counter[str] = field(default_factory=Counter)
    event_types: Counter[str] = field(default_factory=Counter)
    tags: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, f: Facets, sign: int = 1) -> None:
        if f is EMPTY:
            return
        terms, entities, domain, event_type, tags = f
        for t in terms:
            _bump(self.terms, t, sign)
        for e in entities:
            _bump(self.entities, e, sign)
        if domain:
            _bump(self.domains, domain, sign)
        if event_type:
            _bump(self.event_types, event_type, sign)
        for g in tags:
            _bump(self.tags, g, sign)

    def empty(self) -> bool:
        return not (self.terms or self.entities or self.domains or self.event_types or self.tags)

    def absorb(self, other: FacetCounts) -> None:
        self.terms.update(other.terms)
        self.entities.update(other.entities)
        self.domains.update(other.domains)
        self.event_types.update(other.event_types)
        self.tags.update(other.tags)

    def of(self, kind: str) -> Counter[str]:
        """The tally of one granularity tag kind (MENTION, CATEGORY, ...)."""
        return Counter({v: n for (k, v), n in self.tags.items() if k == kind})


def top(counter: Counter[str], n: int) -> list[str]:
    """Most common first; equal counts in alphabetical order so output is deterministic."""
    return [k for k, _ in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]
