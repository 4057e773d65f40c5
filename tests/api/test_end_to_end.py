"""The API over what a real worker wrote: Kafka in, the worker's PostgreSQL rows and Redis
hashes, the API's answers out."""

from __future__ import annotations

from urllib.parse import quote

from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import ApiSettings
from stream import synthetic
from tests.api.conftest import ADMIN_TOKEN, READ_TOKEN, auth
from tests.conftest import wait_until
from tests.stream.conftest import Env


def test_api_serves_what_the_worker_wrote(env: Env) -> None:
    model = f"{env.settings.prefix}-m"
    items = list(synthetic.stories(240, 32, n_stories=6, alive=3, seed=2))
    env.produce([(it.document_id.encode(), synthetic.vector_event(it, model)) for it in items])
    w = env.start_worker()
    try:
        wait_until(lambda: len(env.memberships()) == len(items), 120, "every item stored")
        s = ApiSettings(
            service=env.settings,
            read_tokens=frozenset({READ_TOKEN}),
            admin_tokens=frozenset({ADMIN_TOKEN}),
            job_runners=0,
        )
        with TestClient(create_app(s), raise_server_exceptions=False) as c:
            c.headers.update(auth())
            stored = env.memberships()
            # the worker's Redis hashes answer the lookup, and agree with PostgreSQL
            for it in items[:: len(items) // 12]:
                r = c.get(f"/api/v1/items/{quote(it.item_id, safe='')}")  # ids hold '#'
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["source"] == "cache"
                assert [m["cluster_id"] for m in body["memberships"]] == [stored[it.item_id]]
            live = {
                row["id"]: row["size"]
                for row in env.sql("SELECT id, size FROM clusters WHERE status = 'active'")
            }
            page = c.get("/api/v1/clusters", params={"limit": 500}).json()
            assert {i["cluster_id"]: i["cluster_size"] for i in page["items"]} == live
            one = page["items"][0]
            assert one["cluster_label"] and one["temporal_span"] and one["representative_ids"]
            detail = c.get(f"/api/v1/clusters/{one['cluster_id']}").json()
            assert sorted(detail["member_ids"]) == sorted(
                i for i, cid in stored.items() if cid == one["cluster_id"]
            )
            stats = c.get("/api/v1/statistics").json()
            assert sum(sc["items"] for sc in stats["scopes"]) == len(items)
            assert stats["consumer_lag"]["status"] == "ok"
    finally:
        w.terminate()
