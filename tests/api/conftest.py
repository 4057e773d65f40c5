"""API test fixtures: a database filled through the real batch commit (state.db.Store.commit)
with the outputs of a real engine run, the Redis hashes the worker keeps, and the app."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import numpy as np
import pytest
import redis
import uvicorn
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import ApiSettings
from processors import Engine, EngineConfig
from processors.representatives import document_frequency
from processors.scope import ACTIVE, ScopeKey
from schemas.outputs import ChangeEvent, ClusterResult
from state.cache import Cache
from state.db import BatchWrite, ClusterRow, ItemRow, Store
from stream.settings import Settings
from stream.worker import _summary
from tests.conftest import Services, blobs, wait_until
from tests.stream.conftest import (
    env,  # noqa: F401  (the real-worker fixture, for test_end_to_end)
    free_port,
)

READ_TOKEN = "read-" + "r" * 24
ADMIN_TOKEN = "admin-" + "a" * 24
DOMAINS = ("diplomatic_relations", "military_operations", "economic_activity")
TOPICS = ("summit talks leaders", "border troops attack", "markets inflation rates")
EVENT_TYPES = ("contact_meet", "conflict_attack", "economic_indicator")


@dataclass
class Populated:
    dsn: str
    prefix: str
    redis_url: str
    engine: Engine
    results: dict[str, ClusterResult]  # active clusters at the end
    changes: list[ChangeEvent]
    membership: dict[tuple[str, str], str]  # (scope, item) -> cluster id
    scopes: list[str] = field(default_factory=list)


def _write_from_engine(engine: Engine, changes: list[ChangeEvent], runs: list[Any]) -> BatchWrite:
    """The rows the worker writes for these outputs (stream.worker._rows/_cluster_row)."""
    w = BatchWrite("api-test", runs=runs)
    seen: set[str] = set()
    for st in engine.scopes.values():
        df = document_frequency(st)
        live = sorted(int(s) for s in st.live_slots())
        for s in live:
            cid = st.cluster_id(s)
            seen.add(cid)
            summary = None
            if st.status[s] == ACTIVE:
                summary = _summary(engine.cluster_result(st, s, df, len(live)).model_dump())
            obj = json.loads(summary) if summary else {}
            row: ClusterRow = (
                cid,
                st.name,
                "active" if st.status[s] == ACTIVE else "candidate",
                len(st.members[s]),
                float(st.w[s]),
                obj.get("label"),
                obj.get("medoid_id"),
                summary,
                float(st.t_first[s]),
                float(st.t_last[s]),
            )
            w.clusters.append(row)
            for item, m in st.members[s].items():
                it: ItemRow = (
                    cid,
                    st.name,
                    st.key.embedding_type,
                    item,
                    m.document_id,
                    0.9,
                    m.event_time,
                )
                w.items.append(it)
    merged = {r for ev in changes if ev.kind == "merged" for r in ev.related_ids}
    for ev in changes:
        for cid in (ev.cluster_id, *ev.related_ids):
            if cid not in seen:
                seen.add(cid)
                status = "merged" if cid in merged else "retired"
                w.clusters.append((cid, ev.scope, status, 0, 0.0, None, None, None, None, None))
    n = sum(st.seq for st in engine.scopes.values())
    w.offsets.append(("api-test.by-scope", 0, n, n, None))
    return w


async def fill_database(
    dsn: str, engine: Engine, changes: list[ChangeEvent], runs: list[Any]
) -> None:
    store = await Store.connect(dsn)
    try:
        await store.commit(_write_from_engine(engine, changes, runs))
    finally:
        await store.close()
    conn = await asyncpg.connect(dsn)
    try:
        # centroid, embedding type and the change-event log (migration 002) are not written
        # by Store.commit yet: written here as the read side expects them
        for st in engine.scopes.values():
            for s in (int(x) for x in st.live_slots()):
                await conn.execute(
                    "UPDATE clusters SET centroid = $2, embedding_type = $3 WHERE id = $1",
                    st.cluster_id(s),
                    np.asarray(st.cent[s], dtype="<f4").tobytes(),
                    st.key.embedding_type,
                )
        await conn.executemany(
            "INSERT INTO cluster_events (event_id, cluster_id, cluster_type, kind, related_ids,"
            " event_time, sequence, payload) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)"
            " ON CONFLICT DO NOTHING",
            [
                (
                    ev.event_id,
                    ev.cluster_id,
                    ev.scope,
                    ev.kind,
                    ev.related_ids,
                    ev.event_time,
                    ev.sequence,
                    ev.model_dump_json(),
                )
                for ev in changes
            ],
        )
    finally:
        await conn.close()


def run_engine(
    n: int = 900, dim: int = 24, seed: int = 3, topics: int = 3
) -> tuple[Engine, list[ChangeEvent], list[Any]]:
    """Documents and events over `topics` topics (the first three named), an item every five
    minutes; then a manual reconsolidation so runs and groups exist."""
    x, y = blobs(n, dim, topics, seed=seed)
    engine = Engine(EngineConfig(tick_items=128, min_reconsolidation_clusters=2))
    t0 = 1_765_000_000.0
    times = t0 + np.arange(n, dtype=np.float64) * 300.0
    ids = [f"doc_{i:04d}" if i % 2 == 0 else f"doc_{i - 1:04d}_event_0" for i in range(n)]
    docs: list[str | None] = [f"doc_{i - i % 2:04d}" for i in range(n)]
    meta: list[dict[str, Any] | None] = [
        {
            "title": (TOPICS[int(k)] if k < 3 else f"topic{int(k)} story") + f" report {i % 7}",
            "domain": DOMAINS[int(k) % 3],
            "event_type": EVENT_TYPES[int(k) % 3],
        }
        for i, k in enumerate(y)
    ]
    keys = [ScopeKey("document" if i % 2 == 0 else "event", "test-model") for i in range(n)]
    changes: list[ChangeEvent] = []
    runs: list[Any] = []
    for a in range(0, n, 128):
        res = engine.process(
            x[a : a + 128],
            ids[a : a + 128],
            times[a : a + 128],
            docs[a : a + 128],
            meta[a : a + 128],
            keys[a : a + 128],
        )
        changes += res.changes
        runs += res.reconsolidations
    fl = engine.flush()
    changes += fl.changes
    rc = engine.reconsolidate_all()
    changes += rc.changes
    runs += rc.reconsolidations
    return engine, changes, runs


def fill_cache(
    engine: Engine, redis_url: str, prefix: str
) -> tuple[dict[tuple[str, str], str], dict[str, ClusterResult]]:
    """The Redis hashes the worker keeps (state.cache.Cache.apply), for the engine's state;
    returns the memberships and the active clusters' results."""
    membership: dict[tuple[str, str], str] = {}
    summaries: list[tuple[str, str | None]] = []
    results: dict[str, ClusterResult] = {}
    for st in engine.scopes.values():
        live = [int(s) for s in st.live_slots()]
        df = document_frequency(st)
        for s in live:
            for item in st.members[s]:
                membership[(st.name, item)] = st.cluster_id(s)
            if st.status[s] == ACTIVE:
                r = engine.cluster_result(st, s, df, len(live))
                results[r.cluster_id] = r
                summaries.append((r.cluster_id, _summary(r.model_dump())))
    cache = Cache(redis_url, prefix)
    assert cache.apply([(sc, it, c) for (sc, it), c in membership.items()], [], summaries)
    return membership, results


def drop_cache(redis_url: str, prefix: str) -> None:
    rc = redis.Redis.from_url(redis_url)
    for key in rc.scan_iter(match=f"{prefix}:*"):
        rc.delete(key)


@pytest.fixture
def populated(services: Services, fresh_database: tuple[str, str]) -> Iterator[Populated]:
    name, dsn = fresh_database
    engine, changes, runs = run_engine()
    asyncio.run(fill_database(dsn, engine, changes, runs))
    membership, results = fill_cache(engine, services.redis, name)
    yield Populated(
        dsn,
        name,
        services.redis,
        engine,
        results,
        changes,
        membership,
        sorted(st.name for st in engine.scopes.values()),
    )
    drop_cache(services.redis, name)


def api_settings(
    p: Populated | None,
    services: Services,
    dsn: str | None = None,
    prefix: str | None = None,
    **kw: Any,
) -> ApiSettings:
    svc = Settings(
        kafka_bootstrap=services.kafka,
        prefix=prefix or (p.prefix if p else "t" + secrets.token_hex(5)),
        group_id=prefix or (p.prefix if p else "api-test"),
        postgres_dsn=dsn or (p.dsn if p else services.postgres),
        redis_url=services.redis,
    )
    base: dict[str, Any] = {
        "service": svc,
        "read_tokens": frozenset({READ_TOKEN}),
        "admin_tokens": frozenset({ADMIN_TOKEN}),
        "rate_per_minute": 100_000,
        "rate_burst": 10_000,
        "job_lease_seconds": 2.0,
    }
    base.update(kw)
    s = ApiSettings(**base)
    s.validate()
    return s


def auth(token: str = READ_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(populated: Populated, services: Services) -> Iterator[TestClient]:
    app = create_app(api_settings(populated, services))
    with TestClient(app, raise_server_exceptions=False) as c:
        c.headers.update(auth())
        yield c


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """The app on a real uvicorn in a thread (lifespan on); yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="on")
    )
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(base + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, 60, "uvicorn to serve the API")
        yield base
    finally:
        server.should_exit = True
        t.join(30)
