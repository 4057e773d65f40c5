"""Member facets: what is kept of the metadata, exact removal, and checkpoints from before the
granularity tags existed."""

from __future__ import annotations

import pickle
from collections import Counter

from processors.facets import (
    CATEGORY,
    EMPTY,
    EVENT,
    MENTION,
    STORYLINE,
    FacetCounts,
    Facets,
    extract,
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
    assert f.tag(MENTION) == "Joe Biden"
    assert [v for k, v in f.tags if k == CATEGORY] == ["politics"]
    assert [v for k, v in f.tags if k == EVENT] == ["e0", "e1", "e2"]
    assert f.tag(STORYLINE) == "s1"
    assert "Joe Biden" in f.entities
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


def test_checkpoints_from_before_the_tags_load() -> None:
    """The state an older engine pickled (four fields) restores with empty tags."""
    old = FacetCounts.__new__(FacetCounts)
    old.__setstate__(
        (
            None,
            {
                "terms": Counter({"biden": 1}),
                "entities": Counter(),
                "domains": Counter({"political": 1}),
                "event_types": Counter(),
            },
        )
    )
    assert old.tags == Counter()
    old.add(extract({"title": "Biden", "domain": "political"}), -1)
    assert old == FacetCounts()
    f = Facets.__new__(Facets)
    f.__setstate__([("biden",), (), "political", None])
    assert f.tags == () and f.domain == "political"
    assert pickle.loads(pickle.dumps(f)) == f
    counts = FacetCounts()
    counts.add(extract({"entity_text": "Biden"}))
    assert pickle.loads(pickle.dumps(counts, 5)) == counts
