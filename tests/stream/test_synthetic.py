"""The synthetic Stage 3 stream carries all four granularities (seed 003, section 3.1)."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict

import numpy as np

from schemas.messages import decode_message
from stream import synthetic
from tests.conftest import ROOT, wait_until
from tests.stream.conftest import Env


def test_documents_carry_events_entities_and_storylines() -> None:
    kinds: dict[str, int] = defaultdict(int)
    domains: set[str] = set()
    event_types: set[str] = set()
    for item, family in synthetic.stage3_stream(40, 48, seed=3):
        events = decode_message(synthetic.embedded_document(item, "m", family))
        for ev in events:
            kinds[ev.embedding_type] += 1
            assert ev.document_id == item.document_id and ev.embedding_model == "m"
        doc = next(e for e in events if e.embedding_type == "document")
        assert doc.item_id == item.item_id and doc.event_time == item.event_time
        for ev in events:
            if ev.embedding_type == "event":
                domains.add(ev.metadata["domain"])
                event_types.add(ev.metadata["event_type"])
                assert ev.metadata["domain"] == family.domain
                # the event's own date (its temporal reference), at most 2 days earlier
                assert item.event_time - 3 * 86_400 < ev.event_time <= item.event_time
            elif ev.embedding_type == "entity":
                assert ev.metadata["entity_text"] and ev.metadata["entity_type"]
                assert ev.event_time == item.event_time
            elif ev.embedding_type == "storyline":
                assert (
                    ev.metadata["primary_entities"] and ev.metadata["domain"] in synthetic.DOMAINS
                )
                assert len(ev.metadata["temporal_span"]) == 2
    assert set(kinds) == {"document", "event", "entity", "storyline"}
    assert kinds["event"] > kinds["document"] and kinds["entity"] > kinds["document"]
    assert domains <= set(synthetic.DOMAINS) and len(event_types) > 3


def test_variant_mentions_of_one_entity_are_close_and_other_entities_far() -> None:
    g = synthetic.Granularities(64, seed=1)
    by_entity: dict[str, list[tuple[str, np.ndarray]]] = defaultdict(list)
    canonical = {v: e.canonical for e in synthetic.ENTITIES for v in e.variants}
    for item in synthetic.stories(300, 64, seed=1):
        fam = g.derive(item.document_id, item.vector, item.event_time, item.title)
        for en in fam.entities:
            by_entity[canonical[en.metadata["entity_text"]]].append(
                (en.metadata["entity_text"], en.vector)
            )
    biden = by_entity["Joe Biden"]
    assert {m for m, _ in biden} == {"Biden", "President Biden", "Joe Biden"}
    x = np.vstack([v for _, v in biden])
    other = np.vstack([v for e, vs in by_entity.items() if e != "Joe Biden" for _, v in vs])
    assert float((x @ x.T).mean()) > 0.6
    assert float((x @ other.T).mean()) < 0.35


def test_the_stream_is_deterministic_and_documents_only_keeps_one_vector() -> None:
    a = [synthetic.embedded_document(i, "m", f) for i, f in synthetic.stage3_stream(5, 16, seed=9)]
    b = [synthetic.embedded_document(i, "m", f) for i, f in synthetic.stage3_stream(5, 16, seed=9)]
    assert a == b
    only = synthetic.embedded_document(next(synthetic.stories(1, 16, seed=9)), "m")
    assert [e.embedding_type for e in decode_message(only)] == ["document"]


def test_produce_feeds_all_four_granularities_to_the_worker(env: Env) -> None:
    """`clusterer produce` (what dev/run.sh runs) against the real broker and worker."""
    model = f"{env.settings.prefix}-m"
    r = subprocess.run(
        [sys.executable, "-m", "stream.cli", "produce", "--count", "12", "--dim", "32",
         "--model", model, "--seed", "5"],
        cwd=ROOT, env=env.env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    expected = sum(len(f.all()) + 1 for _, f in synthetic.stage3_stream(12, 32, seed=5))
    env.start_worker()

    def by_type() -> dict[str, int] | None:
        rows = env.sql(
            "SELECT item_type, count(*) AS c FROM cluster_items WHERE cluster_type LIKE $1"
            " GROUP BY item_type",
            f"%{model}%",
        )
        got = {row["item_type"]: int(row["c"]) for row in rows}
        return got if sum(got.values()) >= expected else None

    got = wait_until(by_type, 120, f"{expected} memberships")
    assert set(got) == {"document", "event", "entity", "storyline"} and got["document"] == 12
