"""The read endpoints against the real PostgreSQL and Redis, filled by a real engine run."""

from __future__ import annotations

import asyncio

import asyncpg
import numpy as np
from fastapi.testclient import TestClient

from state.cache import Cache
from state.db import BatchWrite, OffsetRow, Store
from state.results import cluster_row
from tests.api.conftest import DOMAINS, Populated


def _all_pages(client: TestClient, **params: object) -> list[dict]:
    out: list[dict] = []
    cursor = None
    while True:
        q = dict(params)
        if cursor:
            q["cursor"] = cursor
        r = client.get("/api/v1/clusters", params=q)
        assert r.status_code == 200, r.text
        body = r.json()
        out += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return out


def test_list_pages_through_every_active_cluster_in_order(
    client: TestClient, populated: Populated
) -> None:
    items = _all_pages(client, limit=2, sort="size", order="desc")
    assert sorted(i["cluster_id"] for i in items) == sorted(populated.results)
    sizes = [i["cluster_size"] for i in items]
    assert sizes == sorted(sizes, reverse=True)
    for i in items:
        r = populated.results[i["cluster_id"]]
        assert i["cluster_size"] == r.cluster_size
        assert i["cluster_label"] == r.cluster_label
        assert i["representative_ids"] == r.representative_ids
        assert i["primary_entities"] == r.primary_entities
        assert i["canonical_entity"] == r.canonical_entity
        assert i["temporal_span"][0].endswith("Z")
    asc = _all_pages(client, limit=4, sort="last_event_time", order="asc")
    lasts = [i["temporal_span"][1] for i in asc]
    assert lasts == sorted(lasts)


def test_list_filters(client: TestClient, populated: Populated) -> None:
    docs = _all_pages(client, embedding_type="document")
    assert docs and all(i["cluster_type"] == "document" for i in docs)
    dom = _all_pages(client, domain=DOMAINS[0])
    assert dom and all(i["domain"] == DOMAINS[0] for i in dom)
    assert len(dom) < len(populated.results)
    big = _all_pages(client, min_size=10_000)
    assert big == []
    scope = populated.scopes[0]
    assert all(i["scope"] == scope for i in _all_pages(client, scope=scope))
    late = _all_pages(client, since="2030-01-01T00:00:00Z")
    assert late == []
    early = _all_pages(client, until="2000-01-01T00:00:00Z")
    assert early == []
    assert len(_all_pages(client, since="2025-01-01T00:00:00Z")) == len(populated.results)


def test_limit_is_capped(client: TestClient) -> None:
    client.app.state.settings = client.app.state.settings.__class__(  # type: ignore[attr-defined]
        **{**client.app.state.settings.__dict__, "list_limit_max": 2}  # type: ignore[attr-defined]
    )
    r = client.get("/api/v1/clusters", params={"limit": 1000})
    assert r.status_code == 200
    assert len(r.json()["items"]) == 2
    assert r.json()["next_cursor"] is not None


def test_cursor_of_another_sort_or_forged_is_422(client: TestClient) -> None:
    r = client.get("/api/v1/clusters", params={"limit": 1, "sort": "size"})
    cur = r.json()["next_cursor"]
    bad = client.get("/api/v1/clusters", params={"cursor": cur, "sort": "weight"})
    assert bad.status_code == 422
    assert bad.json()["error"]["fields"][0]["field"] == "query.cursor"
    forged = client.get("/api/v1/clusters", params={"cursor": "not-a-cursor!!"})
    assert forged.status_code == 422
    assert forged.json()["error"]["fields"][0]["field"] == "query.cursor"


def test_detail_is_the_full_cluster_result(client: TestClient, populated: Populated) -> None:
    cid, want = next(iter(populated.results.items()))
    r = client.get(f"/api/v1/clusters/{cid}")
    assert r.status_code == 200
    got = r.json()
    assert sorted(got["member_ids"]) == sorted(want.member_ids)
    assert sorted(got["document_ids"]) == sorted(want.document_ids)
    assert np.allclose(got["centroid_vector"], want.centroid_vector, atol=1e-6)
    # everything else exactly as the engine's result (the Stage 5 contract)
    lists = ("member_ids", "document_ids", "centroid_vector")
    expect = want.model_dump(mode="json")
    assert {k: v for k, v in got.items() if k not in lists} == {
        k: v for k, v in expect.items() if k not in lists
    }
    assert client.get("/api/v1/clusters/nope").status_code == 404

    # a candidate has no ClusterResult yet (the row the worker writes for one)
    async def candidate() -> None:
        store = await Store.connect(populated.dsn)
        try:
            row = cluster_row("cand-1", want.scope, "document", "candidate", 2, 2.0, (1.0, 2.0))
            w = BatchWrite("api-test", clusters=[row])
            w.offsets.append(OffsetRow("api-test.by-scope", 1, 1, 1, None))
            await store.commit(w)
        finally:
            await store.close()

    asyncio.run(candidate())
    r = client.get("/api/v1/clusters/cand-1")
    assert r.status_code == 409 and "candidate" in r.json()["error"]["message"]


def test_members_paginate_without_gaps(client: TestClient, populated: Populated) -> None:
    cid, want = next(iter(populated.results.items()))
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": 17}
        if cursor:
            params["cursor"] = cursor
        body = client.get(f"/api/v1/clusters/{cid}/members", params=params).json()
        seen += [m["item_id"] for m in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == want.cluster_size
    assert set(seen) == set(want.member_ids)
    assert client.get("/api/v1/clusters/nope/members").status_code == 404


def test_history_in_order_including_events_naming_the_cluster(
    client: TestClient, populated: Populated
) -> None:
    cid = next(iter(populated.results))
    own = [e for e in populated.changes if e.cluster_id == cid]
    # another cluster's merge that names this one (the absorbed side of a merge)
    other = next(c for c in populated.results if c != cid)

    async def add() -> None:
        conn = await asyncpg.connect(populated.dsn)
        try:
            await conn.execute(
                "INSERT INTO cluster_events (event_id, cluster_id, cluster_type, kind,"
                " related_ids, event_time, sequence, payload) VALUES ('merge-1', $1, 'x',"
                " 'merged', $2, 1765900000, 1000000, '{}'::jsonb)",
                other,
                [cid],
            )
        finally:
            await conn.close()

    asyncio.run(add())
    got: list[dict] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": 50}
        if cursor:
            params["cursor"] = cursor
        body = client.get(f"/api/v1/clusters/{cid}/history", params=params).json()
        got += body["items"]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert [g["event_id"] for g in got[:-1]] == [
        e.event_id for e in sorted(own, key=lambda e: e.sequence)
    ]
    assert got[-1]["event_id"] == "merge-1" and got[-1]["related_ids"] == [cid]
    assert got[0]["kind"] == "created"


def test_item_lookup_from_cache_then_database(client: TestClient, populated: Populated) -> None:
    r = client.get("/api/v1/items/doc_0000")
    assert r.status_code == 200
    body = r.json()
    assert body["source"] == "cache"
    want = {sc: c for (sc, it), c in populated.membership.items() if it == "doc_0000"}
    assert {m["scope"]: m["cluster_id"] for m in body["memberships"]} == want
    assert all(m["cluster"]["cluster_id"] == m["cluster_id"] for m in body["memberships"])
    Cache(populated.redis_url, populated.prefix).clear()
    client.app.state.cache._scopes_at = -1e9  # type: ignore[attr-defined]
    r = client.get("/api/v1/items/doc_0000")
    assert r.status_code == 200
    assert r.json()["source"] == "database"
    assert {m["scope"]: m["cluster_id"] for m in r.json()["memberships"]} == want
    assert client.get("/api/v1/items/no-such-item").status_code == 404


def test_search_by_vector_text_and_filters(client: TestClient, populated: Populated) -> None:
    cid, want = next(iter(populated.results.items()))
    body = {
        "filters": {"scope": want.scope},
        "vector": want.centroid_vector,
        "top_k": 2,
        "min_similarity": 0.5,
    }
    r = client.post("/api/v1/clusters/search", json=body)
    assert r.status_code == 200, r.text
    hits = r.json()["items"]
    assert hits[0]["cluster_id"] == cid and hits[0]["similarity"] > 0.99
    assert all(h["similarity"] >= 0.5 for h in hits) and len(hits) <= 2
    assert all(h["scope"] == want.scope for h in hits)
    word = want.cluster_label.split()[0]
    r = client.post("/api/v1/clusters/search", json={"text": word.upper()})
    got = {h["cluster_id"] for h in r.json()["items"]}
    expect = {c for c, res in populated.results.items() if word in res.cluster_label.lower()}
    assert cid in got and got == expect
    r = client.post(
        "/api/v1/clusters/search", json={"filters": {"domain": DOMAINS[1]}, "top_k": 100}
    )
    assert {h["domain"] for h in r.json()["items"]} == {DOMAINS[1]}
    # a vector of the wrong size, or without a scope to compare in: 422 naming the field
    r = client.post(
        "/api/v1/clusters/search", json={"filters": {"scope": want.scope}, "vector": [1.0, 0.0]}
    )
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "body.vector"
    r = client.post("/api/v1/clusters/search", json={"vector": [1.0, 0.0]})
    assert r.json()["error"]["fields"][0]["field"] == "body.filters.scope"


def test_statistics_per_scope(client: TestClient, populated: Populated) -> None:
    r = client.get("/api/v1/statistics")
    assert r.status_code == 200
    body = r.json()
    by = {s["scope"]: s for s in body["scopes"]}
    assert sorted(by) == populated.scopes
    for scope, st in populated.engine.stats().items():
        s = by[scope]
        assert s["items"] == st["members_in_memory"]
        assert s["clusters"].get("active", 0) == st["active"]
        assert s["reconsolidation_runs"] >= 1
        assert s["last_event_time"] is not None
    assert body["consumer_lag"]["status"] in ("ok", "unknown")
    # retention's view of the stored tables (issue 14): real row counts from PostgreSQL
    storage = body["storage"]
    assert storage["cluster_items"]["rows"] == sum(s["items"] for s in body["scopes"])
    assert storage["clusters"]["rows"] == sum(sum(s["clusters"].values()) for s in body["scopes"])
    assert all(t["bytes"] > 0 for t in storage.values())
    root = client.get("/statistics")
    assert root.status_code == 200 and root.json()["scopes"] == body["scopes"]
    assert client.get("/statistics", headers={"Authorization": ""}).status_code == 401


def test_statistics_when_kafka_is_unreachable(client: TestClient) -> None:
    from api.read import LagProbe

    svc = client.app.state.settings.service  # type: ignore[attr-defined]
    dead = svc.__class__(**{**svc.__dict__, "kafka_bootstrap": "127.0.0.1:1"})
    client.app.state.lag = LagProbe(dead, 0.5)  # type: ignore[attr-defined]
    client.app.state.cache.answer_seconds = 0  # type: ignore[attr-defined]
    r = client.get("/api/v1/statistics")
    assert r.status_code == 200
    assert r.json()["consumer_lag"]["status"] == "unknown"


def test_health(client: TestClient) -> None:
    for path in ("/health", "/api/v1/health"):
        r = client.get(path, headers={"Authorization": ""})
        assert r.status_code == 200 and r.json()["postgres"] == "ok"
