"""API test fixtures: a database filled through the real batch commit (state.db.Store.commit)
with the outputs of a real engine run, the Redis hashes the worker keeps, and the app."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import ApiSettings
from processors import Batch, BatchResult, ClusterState, Engine, EngineConfig, Move, ScopeKey
from schemas.outputs import ChangeEvent, ClusterResult
from state.cache import Cache
from state.db import BatchWrite, ItemRow, OffsetRow, Store
from state.results import event_row, summary_json
from stream.settings import Settings
from stream.worker import Worker
from tests.conftest import Services, blobs, wait_until
from tests.stream.conftest import (
    env,  # noqa: F401  (the real-worker fixture, for test_end_to_end)
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


@dataclass
class EngineRun:
    """A real engine run and everything it reported, call by call."""

    engine: Engine
    results: list[BatchResult]

    @property
    def changes(self) -> list[ChangeEvent]:
        return [ev for r in self.results for ev in r.changes]

    def memberships(self) -> dict[tuple[str, str], tuple[str, Move]]:
        """(scope, item) -> (cluster id, the latest move) of items in a cluster now."""
        latest: dict[tuple[str, str], Move] = {}
        for r in self.results:
            latest.update({(mv.scope, mv.item_id): mv for mv in r.moves})
        return {k: (mv.cluster_id, mv) for k, mv in latest.items() if mv.cluster_id is not None}


def write_from_run(run: EngineRun) -> BatchWrite:
    """The rows the worker writes for these outputs (stream.worker._rows and _cluster_row
    through state.results): memberships, clusters with summary and centroid, change-event
    log, reconsolidation runs."""
    w = BatchWrite("api-test")
    clusters: dict[str, ClusterState] = {}
    for r in run.results:
        w.runs.extend(r.reconsolidations)
        w.events.extend(event_row(ev) for ev in r.changes)
        clusters.update({cs.cluster_id: cs for cs in r.clusters})
    for (scope, item), (cid, mv) in run.memberships().items():
        row: ItemRow = (cid, scope, mv.embedding_type, item, mv.document_id, 0.9, mv.event_time)
        w.items.append(row)
    active = {c.cluster_id: c for c in run.engine.clusters(sorted(clusters))}
    for cs in clusters.values():
        result = active.get(cs.cluster_id)
        published = result if result is not None and result.status == "active" else None
        w.clusters.append(Worker._cluster_row(cs, published))  # rows exactly as the worker
    n = sum(len(r.item_ids) for r in run.results)
    w.offsets.append(OffsetRow("api-test.by-scope", 0, n, n, None))
    return w


async def fill_database(dsn: str, run: EngineRun) -> None:
    """Through the real batch commit (state.db.Store.commit), as the worker writes."""
    store = await Store.connect(dsn)
    try:
        await store.commit(write_from_run(run))
    finally:
        await store.close()


def run_engine(n: int = 900, dim: int = 24, seed: int = 3, topics: int = 3) -> EngineRun:
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
    out: list[BatchResult] = []
    for a in range(0, n, 128):
        b = slice(a, a + 128)
        out.append(engine.learn(Batch(x[b], ids[b], times[b], docs[b], meta[b], keys[b])))
    out.append(engine.flush())
    out.append(engine.reconsolidate())
    return EngineRun(engine, out)


def fill_cache(
    run: EngineRun, redis_url: str, prefix: str
) -> tuple[dict[tuple[str, str], str], dict[str, ClusterResult]]:
    """The Redis hashes the worker keeps (state.cache.Cache.apply) for the run's end state;
    returns the memberships and the active clusters' results."""
    membership = {k: cid for k, (cid, _) in run.memberships().items()}
    results = {r.cluster_id: r for r in run.engine.results()}
    cache = Cache(redis_url, prefix)
    summaries: list[tuple[str, str | None]] = [(c, summary_json(r)) for c, r in results.items()]
    assert cache.apply([(sc, it, c) for (sc, it), c in membership.items()], [], summaries)
    return membership, results


@pytest.fixture
def populated(services: Services, fresh_database: tuple[str, str]) -> Iterator[Populated]:
    name, dsn = fresh_database
    run = run_engine()
    asyncio.run(fill_database(dsn, run))
    membership, results = fill_cache(run, services.redis, name)
    yield Populated(
        dsn,
        name,
        services.redis,
        run.engine,
        results,
        run.changes,
        membership,
        sorted(run.engine.stats()),
    )
    Cache(services.redis, name).clear()


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
    """The app on a real uvicorn in a thread (lifespan on); yields its base URL. The socket
    is bound here and handed over, so no other process can take the port in between."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="on"))
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
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
        sock.close()
