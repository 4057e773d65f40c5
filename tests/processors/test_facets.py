"""Member facets: what is kept of the metadata and exact removal."""

from __future__ import annotations

import re
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.facets import _STOP as STOP
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

TOKEN = re.compile(r"[^\W\d_][\w'-]*")


def plain_terms(title: str) -> tuple[str, ...]:
    """The rule: maximal tokens (a letter, then word characters, apostrophes, hyphens) of
    the lowercased text, longer than two characters, not stop words, first occurrence."""
    tokens = TOKEN.findall(title.lower())
    return tuple(dict.fromkeys(t for t in tokens if len(t) > 2 and t not in STOP))


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("abcAB xyz-'_9é\u0301\u00df.,\t")) | st.characters(),
        max_size=60,
    )
)
def test_label_terms_follow_the_plain_rule(title: str) -> None:
    assert extract({"title": title})[0] == plain_terms(title)


def test_label_terms_of_short_and_joined_words() -> None:
    title = "An ox, a x-y deal: 9ab ab9cd it's Hi-Fi O'Neil ßa é\u0301t the Fed's"
    assert extract({"title": title})[0] == plain_terms(title)
    assert extract({"title": title})[0] == (
        "x-y", "deal", "ab9cd", "it's", "hi-fi", "o'neil", "fed's"
    )  # fmt: skip


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
