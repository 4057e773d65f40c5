"""`clusterer export`: bad arguments (one line, exit 2) and, against the real PostgreSQL,
rows written by the worker's commit path read back as the day's ClusterResult JSONL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest

from processors.scope import ACTIVE
from schemas.outputs import ClusterResult
from state.db import BatchWrite, Store
from state.results import cluster_row, event_row
from stream.cli import main


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
def _engine_on_stage3_documents() -> Any:
    from processors import Engine, EngineConfig
    from schemas.messages import decode_message
    from tests.schemas.test_contracts import _stage3_documents

    events = [e for raw in _stage3_documents() for e in decode_message(raw)]
    eng = Engine(EngineConfig())
    res = eng.process(
        np.vstack([e.vector for e in events]),
        [e.item_id for e in events],
        np.asarray([e.event_time for e in events]),
        [e.document_id for e in events],
        [e.metadata for e in events],
        [eng.scope_key(e.embedding_type, e.embedding_model, e.metadata) for e in events],
    )
    return eng, res.changes


def _batch(eng: Any, changes: list[Any]) -> BatchWrite:
    """What the worker writes for these clusters, through the same row functions."""
    write = BatchWrite("g", offsets=[("t", 0, 1, 1, None)])
    write.events = [event_row(ev) for ev in changes]
    for st in eng.scopes.values():
        etype = st.key.embedding_type
        for slot in (int(s) for s in st.live_slots()):
            active = st.status[slot] == ACTIVE
            write.clusters.append(
                cluster_row(
                    st.cluster_id(slot),
                    st.name,
                    etype,
                    "active" if active else "candidate",
                    len(st.members[slot]),
                    float(st.w[slot]),
                    (float(st.t_first[slot]), float(st.t_last[slot])),
                    st.cent[slot],
                    eng.cluster_result(st, slot) if active else None,
                )
            )
            for item, m in st.members[slot].items():
                row = (st.cluster_id(slot), st.name, etype, item, m.document_id, 0.9, m.event_time)
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
    eng, changes = _engine_on_stage3_documents()
    write = _batch(eng, changes)
    again = BatchWrite("g", events=write.events, offsets=[("t", 0, 2, 2, 1)])
    _commit(dsn, write, again)  # the change events a second time: idempotent on event_id
    expected = {r.cluster_id: r for r in eng.snapshot()}
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
    assert rows[0]["n"] == len(changes) > 0


def test_a_cluster_that_ended_is_exported_with_its_last_state_and_no_members(
    fresh_database: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, dsn = fresh_database
    eng, changes = _engine_on_stage3_documents()
    write = _batch(eng, changes)
    entity = next(r for r in eng.snapshot() if r.cluster_type == "entity")
    ended = BatchWrite(
        "g",
        clusters=[cluster_row(entity.cluster_id, entity.scope, "entity", "retired", 0, 0.0)],
        removed=[(entity.scope, "entity", m) for m in entity.member_ids],
        offsets=[("t", 0, 2, 2, 1)],
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
