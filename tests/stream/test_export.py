"""`clusterer export`: bad arguments (one line, exit 2) and, against the real PostgreSQL,
rows written by the worker's commit path read back as the day's ClusterResult JSONL."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest

from processors import BatchResult, Engine
from schemas.outputs import ClusterResult
from state.db import BatchWrite, OffsetRow, Store
from state.results import cluster_row, event_row
from stream.cli import main
from stream.worker import Worker
from tests.conftest import wait_until
from tests.schemas.test_contracts import engine_on_stage3_documents
from tests.stream.conftest import Env


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--embedding-type", "paragraph", "--date", "2025-12-15"], "--embedding-type"),
        (["--embedding-type", "event", "--date", "15/12/2025"], "--date"),
        (["--embedding-type", "event"], "required"),
        (
            ["--embedding-type", "event", "--date", "2025-12-15", "--out", "/nonexistent/x.jsonl"],
            "--out",
        ),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["export", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and err.startswith("clusterer export:")


# --------------------------------------------------------------------------- real PostgreSQL
def _batch(eng: Engine, res: BatchResult) -> BatchWrite:
    """What the worker writes for this call, through the same row functions: a row per
    touched cluster (the summary of those that are active), a membership per move."""
    write = BatchWrite("g", offsets=[OffsetRow("t", 0, 1, 1, None)])
    write.events = [event_row(ev) for ev in res.changes]
    touched = [cs.cluster_id for cs in res.clusters]
    published = {r.cluster_id: r for r in eng.clusters(touched) if r.status == "active"}
    for cs in res.clusters:
        assert cs.first_event_time is not None and cs.last_event_time is not None
        write.clusters.append(Worker._cluster_row(cs, published.get(cs.cluster_id)))
    for mv in res.moves:
        assert mv.cluster_id is not None
        row = (mv.cluster_id, mv.scope, mv.embedding_type, mv.item_id, mv.document_id, 0.9,
               mv.event_time)  # fmt: skip
        write.items.append(row)
    return write


def _commit(dsn: str, *writes: BatchWrite) -> None:
    async def go() -> None:
        store = await Store.connect(dsn)
        try:
            for w in writes:
                await store.commit(w)
        finally:
            await store.close()

    asyncio.run(go())


def _export(
    monkeypatch: pytest.MonkeyPatch, dsn: str, tmp_path: Path, etype: str, day: str
) -> list[ClusterResult]:
    monkeypatch.setenv("CLUSTERER_POSTGRES_DSN", dsn)
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--embedding-type", etype, "--date", day]) == 0
    plural = {"entity": "entities"}.get(etype, f"{etype}s")
    out = tmp_path / f"clustered_{plural}_{day}.jsonl"
    return [ClusterResult.model_validate_json(line) for line in out.read_text().splitlines()]


def test_export_gives_back_what_the_engine_made(
    fresh_database: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, dsn = fresh_database
    eng, res = engine_on_stage3_documents()
    write = _batch(eng, res)
    again = BatchWrite("g", events=write.events, offsets=[OffsetRow("t", 0, 2, 2, 1)])
    _commit(dsn, write, again)  # the change events a second time: idempotent on event_id
    expected = {r.cluster_id: r for r in eng.results()}
    seen = set()
    for etype in ("document", "event", "entity", "storyline"):
        got = _export(monkeypatch, dsn, tmp_path, etype, "2025-12-10")
        assert got and {r.cluster_type for r in got} == {etype}
        for r in got:
            want = expected[r.cluster_id]
            assert sorted(r.member_ids) == sorted(want.member_ids)
            assert np.allclose(r.centroid_vector, want.centroid_vector, atol=1e-7)
            skip = {"member_ids", "centroid_vector"}
            assert r.model_dump(exclude=skip) == want.model_dump(exclude=skip)
            seen.add(r.cluster_id)
    assert seen == set(expected)  # every active cluster of the day, no candidate
    assert {r.cluster_id for r in _export(monkeypatch, dsn, tmp_path, "event", "2025-12-11")} == {
        c for c, r in expected.items() if r.cluster_type == "event"
    }
    assert _export(monkeypatch, dsn, tmp_path, "event", "2025-12-12") == []
    rows = asyncio.run(_fetch(dsn, "SELECT count(*) AS n FROM cluster_events"))
    assert rows[0]["n"] == len(res.changes) > 0


def test_a_cluster_that_ended_is_exported_with_its_last_state_and_no_members(
    fresh_database: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, dsn = fresh_database
    eng, res = engine_on_stage3_documents()
    write = _batch(eng, res)
    entity = next(r for r in eng.results() if r.cluster_type == "entity")
    ended = BatchWrite(
        "g",
        clusters=[cluster_row(entity.cluster_id, entity.scope, "entity", "retired", 0, 0.0)],
        removed=[(entity.scope, "entity", m) for m in entity.member_ids],
        offsets=[OffsetRow("t", 0, 2, 2, 1)],
    )
    _commit(dsn, write, ended)
    got = {r.cluster_id: r for r in _export(monkeypatch, dsn, tmp_path, "entity", "2025-12-11")}
    gone = got[entity.cluster_id]
    assert (gone.status, gone.cluster_size, gone.member_ids) == ("retired", 0, [])
    assert gone.canonical_entity == entity.canonical_entity
    assert gone.entity_mentions == entity.entity_mentions
    assert gone.temporal_span == entity.temporal_span
    assert np.allclose(gone.centroid_vector, entity.centroid_vector, atol=1e-7)


async def _fetch(dsn: str, query: str) -> list[Any]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


def test_the_worker_stores_what_the_compacted_topic_carries_and_export_serves_it(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stage 3 documents through the real router and worker: every change event has its
    durable row, every summarised cluster its centroid and type, and the export's lines
    carry the latest compacted record of each cluster with the members PostgreSQL holds."""
    from tests.schemas.test_contracts import _stage3_documents

    docs = _stage3_documents()
    env.produce([(json.loads(d)["document_id"].encode(), d) for d in docs])
    n = len(docs) * 7  # a document, two events, three entities, a storyline each
    env.start_worker()
    wait_until(
        lambda: env.sql("SELECT count(*) AS n FROM cluster_items")[0]["n"] >= n, 120, "memberships"
    )
    events = env.sql("SELECT event_id, payload::text AS p FROM cluster_events")
    changes = env.consume_all(env.settings.changes_topic, len(events))
    assert {r["event_id"] for r in events} == {json.loads(m.value())["event_id"] for m in changes}
    assert all(json.loads(r["p"])["event_id"] == r["event_id"] for r in events)
    latest: dict[str, ClusterResult] = {}
    summarised = env.sql("SELECT count(*) AS n FROM clusters WHERE summary IS NOT NULL")[0]["n"]
    for m in env.consume_all(env.settings.clusters_topic, summarised):
        if m.value() is not None:
            latest[m.key().decode()] = ClusterResult.model_validate_json(m.value())
    rows = env.sql(
        "SELECT id, embedding_type, centroid FROM clusters WHERE summary IS NOT NULL"
        " AND status = 'active'"
    )
    assert rows and all(len(r["centroid"]) == 32 * 4 for r in rows)
    assert all(r["embedding_type"] == latest[r["id"]].cluster_type for r in rows)
    members: dict[str, set[str]] = {}
    for r in env.sql("SELECT cluster_id, item_id FROM cluster_items"):
        members.setdefault(r["cluster_id"], set()).add(r["item_id"])
    exported = 0
    for etype in ("document", "event", "entity", "storyline"):
        for r in _export(monkeypatch, env.settings.postgres_dsn, tmp_path, etype, "2025-12-10"):
            assert set(r.member_ids) == members[r.cluster_id]
            assert r.cluster_size == len(r.member_ids)
            # the live columns (size, weight, span, centroid) may be newer than the last
            # published record; everything the record itself says comes back unchanged
            live = {"member_ids", "document_ids", "centroid_vector", "cluster_size", "weight"}
            live |= {"temporal_span"}
            pub = latest[r.cluster_id]
            assert r.model_dump(exclude=live) == pub.model_dump(exclude=live)
            exported += 1
    assert exported == len(rows)
