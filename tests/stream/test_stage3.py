"""Stage 3 index directories: the generator, the reader, the offline backfill and every
kind of bad directory (one line on stderr, exit code 2, from the real command line)."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from schemas.inputs import to_epoch_seconds
from stream import synthetic
from stream.stage3 import Stage3Error, open_directory
from stream.stage3_fixture import FixtureOptions, write_directory
from tests.conftest import ROOT

SMALL = FixtureOptions(events=(1, 3), entities=(2, 3), storylines=(1, 2), seconds_per_item=600)


def make_dir(path: Path, n: int = 40, dim: int = 32, **options: Any) -> dict[str, int]:
    items = list(synthetic.stories(n, dim, n_stories=5, alive=3, seed=4))
    x = np.vstack([it.vector for it in items])
    opts = FixtureOptions(**{**SMALL.__dict__, **options})
    return write_directory(path, x, [it.title for it in items], options=opts)


@pytest.fixture(scope="module")
def stage3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("stage3") / "vector_indices"
    make_dir(d)
    return d


def meta(d: Path, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads((d / f"{name}_metadata.json").read_text())
    return out


def test_the_generator_writes_the_seed_format(stage3_dir: Path) -> None:
    for name, kind in (
        ("documents", "document"),
        ("events", "event"),
        ("entities", "entity"),
        ("storylines", "storyline"),
    ):
        m = meta(stage3_dir, name)
        assert set(m) == {"metadata_store", "id_map", "reverse_id_map"}
        ix = faiss.read_index(str(stage3_dir / f"{name}.index"))
        assert isinstance(ix, faiss.IndexFlatIP) and ix.ntotal == len(m["id_map"])
        assert m["reverse_id_map"] == {str(p): v for v, p in m["id_map"].items()}
        x = ix.reconstruct_n(0, ix.ntotal)
        assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
        for entry in m["metadata_store"].values():
            assert entry["embedding_type"] == kind and entry["source_id"]
    docs = meta(stage3_dir, "documents")["metadata_store"]
    d0 = docs["doc_emb_doc_000000"]["metadata"]
    assert {"title", "publication_date", "categories", "word_count", "tags"} <= set(d0)
    ev = next(iter(meta(stage3_dir, "events")["metadata_store"].values()))["metadata"]
    assert ev["domain"] in synthetic.DOMAINS and ev["event_type"] and ev["temporal_reference"]
    en = next(iter(meta(stage3_dir, "entities")["metadata_store"].values()))["metadata"]
    assert en["entity_type"] and en["entity_text"]
    st = next(iter(meta(stage3_dir, "storylines")["metadata_store"].values()))["metadata"]
    assert st["storyline_id"] and len(st["temporal_span"]) == 2 and "primary_entities" in st
    # deterministic for a seed
    again = stage3_dir.parent / "again"
    make_dir(again)
    for f in stage3_dir.iterdir():
        assert f.read_bytes() == (again / f.name).read_bytes(), f.name


def test_reader_gives_every_vector_with_ids_times_and_metadata(stage3_dir: Path) -> None:
    d = open_directory(stage3_dir, model="m")
    counts = d.counts()
    assert counts == {k: len(meta(stage3_dir, n)["id_map"]) for k, n in
                      (("document", "documents"), ("event", "events"),
                       ("entity", "entities"), ("storyline", "storylines"))}  # fmt: skip
    items = list(d.items())
    assert len(items) == len(d)
    assert len({(i.embedding_type, i.item_id) for i in items}) == len(items)
    # event-time order across the four indices; documents first at equal times
    times = [i.event_time for i in items]
    assert times == sorted(times)
    rank = {"document": 0, "event": 1, "entity": 2, "storyline": 3}
    for a, b in itertools.pairwise(items):
        if a.event_time == b.event_time:
            assert rank[a.embedding_type] <= rank[b.embedding_type]
    docs = {i.source_id: i for i in items if i.embedding_type == "document"}
    stores = {
        n: meta(stage3_dir, n)["metadata_store"] for n in ("events", "entities", "storylines")
    }
    for it in items:
        assert it.metadata["source_id"] == it.source_id
        assert it.embedding_model == "m"
        if it.embedding_type == "document":
            assert it.item_id == f"doc_emb_{it.source_id}" and it.document_id == it.source_id
            assert it.event_time == to_epoch_seconds(it.metadata["publication_date"])
        elif it.embedding_type == "event":
            entry = stores["events"][it.item_id]
            assert entry["source_id"] == it.source_id and it.document_id in docs
            assert it.event_time == to_epoch_seconds(entry["metadata"]["temporal_reference"])
        elif it.embedding_type == "entity":
            assert it.event_time == docs[str(it.document_id)].event_time
        else:
            span = stores["storylines"][it.item_id]["metadata"]["temporal_span"]
            assert it.event_time == to_epoch_seconds(span[1])
    # the vectors are the index's, by position
    ix = faiss.read_index(str(stage3_dir / "events.index"))
    some = next(i for i in items if i.embedding_type == "event")
    pos = meta(stage3_dir, "events")["id_map"][some.item_id]
    assert np.array_equal(some.vector, ix.reconstruct(pos))


def test_entities_without_a_date_take_their_documents(tmp_path: Path) -> None:
    make_dir(tmp_path, n=10)
    m = meta(tmp_path, "entities")
    for e in m["metadata_store"].values():
        del e["metadata"]["publication_date"]
    (tmp_path / "entities_metadata.json").write_text(json.dumps(m))
    d = open_directory(tmp_path, model="m")
    docs = {i.source_id: i.event_time for i in d.items() if i.embedding_type == "document"}
    ents = [i for i in d.items() if i.embedding_type == "entity"]
    assert ents and all(e.event_time == docs[str(e.document_id)] for e in ents)
    assert d.untimed == 0


def test_any_subset_of_the_four_indices_is_read(tmp_path: Path) -> None:
    counts = make_dir(tmp_path, n=12, types=("entities", "storylines"), model="mini")
    d = open_directory(tmp_path)  # the model comes from the metadata
    assert d.counts() == {"entity": counts["entities"], "storyline": counts["storylines"]}
    assert {k for k, _, _ in d.scopes()} == {("entity", "mini"), ("storyline", "mini")}
    assert not (tmp_path / "documents.index").exists()


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_offline_backfill_writes_clusters_of_source_ids(stage3_dir: Path, tmp_path: Path) -> None:
    clusters, assigned = tmp_path / "c.jsonl", tmp_path / "a.jsonl"
    r = run_cli("backfill", "--indices", str(stage3_dir), "--offline", "--model", "m",
                "--clusters-out", str(clusters), "--assignments-out", str(assigned))  # fmt: skip
    assert r.returncode == 0, r.stderr
    sources: dict[str, set[str]] = {}
    vector_ids: set[str] = set()
    for name, kind in (("documents", "document"), ("events", "event"),
                       ("entities", "entity"), ("storylines", "storyline")):  # fmt: skip
        store = meta(stage3_dir, name)["metadata_store"]
        sources[kind] = {e["source_id"] for e in store.values()}
        vector_ids |= set(store)
    lines = [json.loads(s) for s in clusters.read_text().splitlines()]
    assert {c["cluster_type"] for c in lines} == set(sources)
    for c in lines:
        assert c["scope"] == f"{c['cluster_type']}/m"
        assert c["member_ids"] and set(c["member_ids"]) <= sources[c["cluster_type"]]
        assert not set(c["member_ids"]) & vector_ids
        assert c["document_ids"] and set(c["document_ids"]) <= sources["document"]
    rows = [json.loads(s) for s in assigned.read_text().splitlines()]
    assert len(rows) == sum(len(v) for v in sources.values())
    assert all(a["item_id"] in vector_ids and a["source_id"] in sources[a["scope"].split("/")[0]]
               for a in rows)  # fmt: skip
    summary = json.loads(r.stderr.strip().splitlines()[-1])
    assert summary["vectors"]["event"] == len(sources["event"])


def test_offline_equals_replay_of_the_same_vectors_and_times(stage3_dir: Path) -> None:
    from processors import EngineConfig
    from processors.scope import ScopeKey
    from stream.backfill import offline
    from stream.replay import ReplayInputs, run

    d = open_directory(stage3_dir, model="m")
    outcomes = {o.scope.embedding_type: o for o in offline(d, EngineConfig(), None)}
    docs = [i for i in d.items() if i.embedding_type == "document"]
    inputs = ReplayInputs(
        np.vstack([i.vector for i in docs]),
        np.array([i.event_time for i in docs]),
        [i.item_id for i in docs],
        [i.metadata for i in docs],
    )
    ref = run(inputs, EngineConfig(), ScopeKey("document", "m"))
    assert outcomes["document"].item_ids == inputs.ids
    assert outcomes["document"].final_cluster_ids == ref.cluster_ids


# --------------------------------------------------------------------------- bad directories
def _rewrite(name: str, change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def go(d: Path) -> None:
        m = meta(d, name)
        change(m)
        (d / f"{name}_metadata.json").write_text(json.dumps(m))

    return go


def _first(m: dict[str, Any]) -> str:
    return next(iter(m["id_map"]))


def _swap_positions(m: dict[str, Any]) -> None:
    a, b = list(m["id_map"])[:2]
    m["id_map"][a], m["id_map"][b] = m["id_map"][b], m["id_map"][a]


def _write_index(name: str, index: Any) -> Callable[[Path], None]:
    def go(d: Path) -> None:
        faiss.write_index(index, str(d / f"{name}.index"))

    return go


def _scaled_documents(d: Path) -> None:
    ix = faiss.read_index(str(d / "documents.index"))
    x = ix.reconstruct_n(0, ix.ntotal)
    x[3] *= 1.5
    out = faiss.IndexFlatIP(ix.d)
    out.add(x)
    faiss.write_index(out, str(d / "documents.index"))


def _events_of_dim(dim: int) -> Callable[[Path], None]:
    def go(d: Path) -> None:
        n = faiss.read_index(str(d / "events.index")).ntotal
        x = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        ix = faiss.IndexFlatIP(dim)
        ix.add(x)
        faiss.write_index(ix, str(d / "events.index"))

    return go


def _ivf(d: Path) -> None:
    n = faiss.read_index(str(d / "documents.index")).ntotal
    x = np.random.default_rng(0).standard_normal((n, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    quantizer = faiss.IndexFlatIP(32)
    ix = faiss.IndexIVFFlat(quantizer, 32, 2, faiss.METRIC_INNER_PRODUCT)
    ix.train(x)
    ix.add(x)
    faiss.write_index(ix, str(d / "documents.index"))


def _empty(d: Path) -> None:
    for f in d.iterdir():
        f.unlink()


BAD: dict[str, tuple[Callable[[Path], object], str]] = {
    "metadata missing": (lambda d: (d / "events_metadata.json").unlink(), "no events_metadata"),
    "index missing": (lambda d: (d / "entities.index").unlink(), "no entities.index"),
    "no index at all": (_empty, "holds no Stage 3 index"),
    "metadata not JSON": (
        lambda d: (d / "storylines_metadata.json").write_text("{not json"),
        "not valid JSON",
    ),
    "no reverse_id_map": (
        _rewrite("documents", lambda m: m.pop("reverse_id_map")),
        "no 'reverse_id_map'",
    ),
    "id_map shorter than the index": (
        _rewrite("events", lambda m: m["id_map"].pop(_first(m))),
        "id_map has",
    ),
    "id_map position outside the index": (
        _rewrite("events", lambda m: m["id_map"].update({_first(m): 10_000})),
        "outside 0..",
    ),
    "id_map position given twice": (
        _rewrite("events", lambda m: m["id_map"].update({_first(m): 1})),
        "gives position 1 to both",
    ),
    "reverse_id_map disagrees": (_rewrite("entities", _swap_positions), "reverse_id_map["),
    "metadata_store lacks a vector": (
        _rewrite("documents", lambda m: m["metadata_store"].pop(_first(m))),
        "metadata_store has no entry",
    ),
    "wrong embedding type": (
        _rewrite(
            "events", lambda m: m["metadata_store"][_first(m)].update(embedding_type="entity")
        ),
        "embedding_type 'entity'",
    ),
    "bad date": (
        _rewrite(
            "documents",
            lambda m: m["metadata_store"][_first(m)]["metadata"].update(publication_date="soon"),
        ),
        "not ISO 8601",
    ),
    "mixed dimensions": (_events_of_dim(16), "mixed dimensions"),
    "unnormalised vector": (_scaled_documents, "has norm 1.5"),
    "unreadable index": (
        lambda d: (d / "storylines.index").write_bytes(b"not a faiss index at all"),
        "cannot read storylines.index",
    ),
    "index type without vectors": (_ivf, "IndexIVFFlat, which cannot give its vectors back"),
    "no model name": (lambda d: None, "no --model"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_directory_is_one_line_and_exit_2(
    case: str, stage3_dir: Path, tmp_path: Path
) -> None:
    damage, expected = BAD[case]
    d = tmp_path / "vector_indices"
    shutil.copytree(stage3_dir, d)
    damage(d)
    model = [] if case == "no model name" else ["--model", "m"]
    r = run_cli("backfill", "--indices", str(d), "--offline", "--clusters-out",
                str(tmp_path / "c.jsonl"), *model)  # fmt: skip
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clusterer backfill: "), r.stderr
    assert expected in lines[0]
    assert not (tmp_path / "c.jsonl").exists() or not (tmp_path / "c.jsonl").read_text()


def test_the_reader_refuses_what_the_cli_refuses(stage3_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "x"
    shutil.copytree(stage3_dir, d)
    _scaled_documents(d)
    with pytest.raises(Stage3Error, match="position 3"):
        open_directory(d, model="m")


def test_the_fixture_command_writes_a_directory_the_backfill_reads(tmp_path: Path) -> None:
    items = list(synthetic.stories(15, 24, seed=2))
    np.save(tmp_path / "x.npy", np.vstack([i.vector for i in items]))
    (tmp_path / "items.jsonl").write_text(
        "".join(json.dumps({"headline": i.title, "id": k}) + "\n" for k, i in enumerate(items))
    )
    out = tmp_path / "dir"
    r = run_cli("stage3-fixture", "--vectors", str(tmp_path / "x.npy"), "--items",
                str(tmp_path / "items.jsonl"), "--title-field", "headline", "--id-field", "id",
                "--count", "40", "--out", str(out), "--types", "documents,entities",
                "--model", "mm")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["vectors"]["documents"] == 40  # rows repeat with fresh ids
    d = open_directory(out)
    docs = [i for i in d.items() if i.embedding_type == "document"]
    assert len({i.source_id for i in docs}) == 40
    assert (
        np.array_equal(docs[0].vector, docs[15].vector) and docs[15].event_time > docs[0].event_time
    )
    bad = run_cli("stage3-fixture", "--vectors", str(tmp_path / "x.npy"), "--items",
                  str(tmp_path / "items.jsonl"), "--out", str(tmp_path / "o2"))  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "'title'" in bad.stderr
