"""The live view's feeds (recent events, centroid map) and the page itself."""

from __future__ import annotations

import asyncio

import asyncpg
import numpy as np
from fastapi.testclient import TestClient

from api.web import ASSETS
from tests.api.conftest import Populated


def test_page_and_assets_are_served_from_the_package(client: TestClient) -> None:
    r = client.get("/", headers={"Authorization": ""})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    for name in ASSETS:
        assert f"/static/{name}" in r.text
        a = client.get(f"/static/{name}", headers={"Authorization": ""})
        assert a.status_code == 200 and len(a.content) > 500
    # nothing loaded from elsewhere
    assert "http://" not in r.text and "https://" not in r.text
    bad = client.get("/static/..%2Fsettings.py", headers={"Authorization": ""})
    assert bad.status_code == 404 and bad.json()["error"]["request_id"]


def test_recent_events_poll_returns_only_new_events(
    client: TestClient, populated: Populated
) -> None:
    first = client.get("/api/v1/events", params={"limit": 5}).json()
    assert len(first["items"]) == 5
    seqs = [(e["scope"], e["sequence"]) for e in first["items"]]
    assert len(set(seqs)) == 5
    cur = first["next_cursor"]
    assert client.get("/api/v1/events", params={"cursor": cur}).json()["items"] == []
    scope = populated.scopes[0]

    async def add() -> None:
        conn = await asyncpg.connect(populated.dsn)
        try:
            await conn.execute(
                "INSERT INTO cluster_events (event_id, cluster_id, cluster_type, kind,"
                " related_ids, event_time, sequence, payload) VALUES ('late-1', 'c', $1,"
                " 'created', '{}', 1765900000, 999999, '{\"size\": 3}'::jsonb)",
                scope,
            )
        finally:
            await conn.close()

    asyncio.run(add())
    nxt = client.get("/api/v1/events", params={"cursor": cur}).json()
    assert [e["event_id"] for e in nxt["items"]] == ["late-1"]
    assert nxt["items"][0]["scope"] == scope and nxt["items"][0]["payload"]["size"] == 3
    again = client.get("/api/v1/events", params={"cursor": nxt["next_cursor"]}).json()
    assert again["items"] == [] and again["next_cursor"] == nxt["next_cursor"]
    created = client.get("/api/v1/events", params={"kind": "created", "limit": 500}).json()
    want = sorted([e.event_id for e in populated.changes if e.kind == "created"] + ["late-1"])
    assert sorted(e["event_id"] for e in created["items"]) == want
    bad = client.get("/api/v1/events", params={"cursor": "eyJ4IjoxfQ"})
    assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["field"] == "query.cursor"


def test_centroid_map_is_the_pca_of_the_scopes_active_centroids(
    client: TestClient, populated: Populated
) -> None:
    scope = populated.scopes[0]
    mine = {c: r for c, r in populated.results.items() if r.scope == scope}
    r = client.get("/api/v1/map", params={"scope": scope})
    assert r.status_code == 200, r.text
    body = r.json()
    assert {p["cluster_id"] for p in body["points"]} == set(mine)
    x = np.asarray([mine[p["cluster_id"]].centroid_vector for p in body["points"]])
    xc = x - x.mean(axis=0)
    xy = np.asarray([[p["x"], p["y"]] for p in body["points"]])
    # same pairwise distances as the projection on the top two principal components
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    want = xc @ vt[:2].T
    d_got = np.linalg.norm(xy[:, None] - xy[None], axis=2)
    d_want = np.linalg.norm(want[:, None] - want[None], axis=2)
    assert np.allclose(d_got, d_want, atol=1e-4)
    assert 0 < sum(body["explained_variance"]) <= 1.0001
    assert client.get("/api/v1/map", params={"scope": "none/such"}).json()["points"] == []


def test_statistics_count_dead_letters(client: TestClient) -> None:
    lag = client.get("/api/v1/statistics").json()["consumer_lag"]
    assert lag["status"] == "ok" and lag["dead_letters"] == 0  # no DLQ topic for this prefix
