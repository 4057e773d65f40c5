"""Latency of the API under concurrent load: item lookup and cluster list, cached and not.

    dev/services.sh up
    .venv/bin/python -m benchmarks.api_latency --items 20000 --clients 16 --requests 3000

A fresh database is filled through the real batch commit (state.db.Store.commit) with the
outputs of a real engine run (documents and events over many topics), and Redis with the
hashes the worker keeps. `clusterer api` then runs as its own process (one uvicorn worker)
and `--clients` concurrent httpx clients in this process send `--requests` requests per
phase, each client one request at a time:

- item lookup, cached: GET /api/v1/items/{id} for random ids, answered from Redis;
- item lookup, uncached: the same after the Redis keys are deleted (answered by PostgreSQL);
- cluster list, cached: GET /api/v1/clusters over 8 query variants (filters, sorts) with
  CLUSTERER_API_CACHE_SECONDS=5, so repeated queries are served from Redis;
- cluster list, uncached: the same with CLUSTERER_API_CACHE_SECONDS=0 (every list from
  PostgreSQL).

Prints one JSON line per phase: p50/p95/p99/max in ms, requests/s, errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.scratch import own_state
from state.cache import Cache
from stream.settings import Settings
from tests.api.conftest import ADMIN_TOKEN, fill_cache, fill_database, run_engine
from tests.stream.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
LISTS: list[dict[str, Any]] = [
    {"limit": 50},
    {"limit": 50, "embedding_type": "document"},
    {"limit": 50, "embedding_type": "event", "sort": "size"},
    {"limit": 20, "domain": "diplomatic_relations"},
    {"limit": 100, "sort": "weight", "order": "asc"},
    {"limit": 50, "min_size": 20},
    {"limit": 50, "since": "2025-12-07T00:00:00Z"},
    {"limit": 10, "status": ["active", "candidate"]},
]


async def _phase(
    base: str, clients: int, requests: int, make: Any, token: str, rate: float
) -> dict[str, Any]:
    """rate 0: closed loop (each client sends its next request when the last answered).
    rate > 0: open loop, `rate` requests/s over all clients on a fixed schedule; latency
    counts from the scheduled time, so a late send counts against the API (no coordinated
    omission)."""
    lat: list[float] = []
    errors = 0
    counter = iter(range(requests))
    interval = clients / rate if rate > 0 else 0.0

    async def one(c: httpx.AsyncClient, k: int) -> None:
        nonlocal errors
        due = start + k * interval / clients
        for _ in counter:
            path, params = make()
            if rate > 0:
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                t0 = due
                due += interval
            else:
                t0 = time.perf_counter()
            r = await c.get(path, params=params)
            lat.append(time.perf_counter() - t0)
            if r.status_code != 200:
                errors += 1

    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as c:
        for _ in range(50):  # warm-up: connections, caches, PostgreSQL plans
            path, params = make()
            await c.get(path, params=params)
        t0 = time.perf_counter()
        start = time.perf_counter() + 0.05
        await asyncio.gather(*(one(c, k) for k in range(clients)))
        wall = time.perf_counter() - t0
    ms = np.asarray(lat) * 1000
    return {
        "requests": len(lat),
        "clients": clients,
        "load": f"open loop, {rate:g} req/s" if rate > 0 else "closed loop",
        "errors": errors,
        "rps": round(len(lat) / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
    }


def _start_api(s: Settings, cache_seconds: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "CLUSTERER_POSTGRES_DSN": s.postgres_dsn,
        "CLUSTERER_REDIS_URL": s.redis_url,
        "CLUSTERER_PREFIX": s.prefix,
        "CLUSTERER_API_PORT": str(port),
        "CLUSTERER_API_HOST": "127.0.0.1",
        "CLUSTERER_API_ADMIN_TOKENS": ADMIN_TOKEN,
        "CLUSTERER_API_RATE_PER_MINUTE": "10000000",
        "CLUSTERER_API_RATE_BURST": "1000000",
        "CLUSTERER_API_CACHE_SECONDS": str(cache_seconds),
        "CLUSTERER_API_JOB_RUNNERS": "0",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "api"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the API did not start")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--topics", type=int, default=300)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument(
        "--rates",
        default="0,100",
        help="comma-separated loads per phase: 0 = closed loop, N = open loop at N req/s",
    )
    args = ap.parse_args()
    base_settings = Settings.from_env()
    name = f"benchapi{uuid.uuid4().hex[:8]}"
    with own_state(base_settings.postgres_dsn, base_settings.redis_url, name) as dsn:
        s = Settings.from_env(postgres_dsn=dsn, prefix=name)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            t0 = time.perf_counter()
            run = run_engine(args.items, args.dim, seed=11, topics=args.topics)
            asyncio.run(fill_database(dsn, run))
            membership, results = fill_cache(run, s.redis_url, name)
            items = sorted({it for _, it in membership})
            print(
                json.dumps(
                    {
                        "setup": {
                            "items": args.items,
                            "memberships": len(membership),
                            "active_clusters": len(results),
                            "seconds": round(time.perf_counter() - t0, 1),
                        }
                    }
                ),
                flush=True,
            )
            rnd = random.Random(5)

            def item() -> tuple[str, dict[str, Any]]:
                return f"/api/v1/items/{rnd.choice(items)}", {}

            def listing() -> tuple[str, dict[str, Any]]:
                return "/api/v1/clusters", rnd.choice(LISTS)

            for cache_seconds, phases in ((5.0, ("cached",)), (0.0, ("uncached",))):
                proc, base = _start_api(s, cache_seconds)
                procs.append(proc)
                for label in phases:
                    if label == "uncached":
                        Cache(s.redis_url, name).clear()
                    for what, make in (("item_lookup", item), ("cluster_list", listing)):
                        for rate in (float(r) for r in args.rates.split(",")):
                            out = asyncio.run(
                                _phase(base, args.clients, args.requests, make, ADMIN_TOKEN, rate)
                            )
                            print(json.dumps({"phase": f"{what}_{label}", **out}), flush=True)
                proc.terminate()
                proc.wait(30)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()


if __name__ == "__main__":
    main()
