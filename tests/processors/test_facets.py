"""Member facets: what is kept of the metadata and exact removal."""

from __future__ import annotations

from collections import Counter

from processors.facets import (
    CATEGORY,
    EMPTY,
    EVENT,
    MENTION,
    STORYLINE,
    FacetCounts,
    extract,
    tag,
)


def test_extract_keeps_the_granularity_tags() -> None:
    f = extract(
        {
            "entity_text": " Joe Biden ",
            "entity_type": "PER",
            "categories": ["politics", "politics", ""],
            "storyline_id": "s1",
            "event_ids": ["e1", "e2", "e1"],
            "event_id": "e0",
        }
    )
    _, entities, _, _, tags = f
    assert tag(f, MENTION) == "Joe Biden"
    assert [v for k, v in tags if k == CATEGORY] == ["politics"]
    assert [v for k, v in tags if k == EVENT] == ["e0", "e1", "e2"]
    assert tag(f, STORYLINE) == "s1"
    assert "Joe Biden" in entities
    assert extract({"unrelated": 1}) is EMPTY


def test_removal_is_exact_and_leaves_no_zero_counts() -> None:
    a = extract({"entity_text": "Biden", "categories": ["politics"], "title": "Biden speaks"})
    b = extract({"entity_text": "Joe Biden", "categories": ["politics"], "domain": "political"})
    c = FacetCounts()
    c.add(a)
    c.add(b)
    c.add(a, -1)
    only_b = FacetCounts()
    only_b.add(b)
    assert c == only_b
    for name in FacetCounts.__slots__:  # Counter equality ignores zeros; the keys must go
        assert dict(getattr(c, name)) == dict(getattr(only_b, name)), name
    assert c.of(MENTION) == Counter({"Joe Biden": 1})
