"""Bounded memory and steady throughput on an endless drifting stream.

A synthetic stream of unit vectors around topics that are born and die (a fixed number alive
at once, each living a random span of items), plus background noise. It is generated in
chunks from a seeded generator, so the stream itself costs no memory as it grows.

.venv/bin/python -m benchmarks.scale --items 100000
.venv/bin/python -m benchmarks.scale --items 1000000
.venv/bin/python -m benchmarks.scale --recon-clusters 5000

Each run prints one JSON line: peak RSS, throughput, the engine's time against its
brute-force centroid search alone timed in the same run, live clusters and members at the
end (`--steps`: also the engine's time per step, benchmarks/steps.py).
Run the sizes in separate processes so each peak RSS is its own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import resource
import time
from typing import Any

import numpy as np

from benchmarks.steps import StepTimer
from processors import Batch, Engine, EngineConfig, ScopeKey
from processors.engine import SEGMENT_ITEMS
from processors.search import backend_name, blas_threads, knn_inner_product
from stream.synthetic import drifting_stream, unit


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_stream(n: int, dim: int, batch: int, steps: bool = False) -> dict[str, Any]:
    """The engine over the stream, and in the same run, after each batch, its brute-force
    centroid search alone: the batch's vectors against as many random unit centroids as
    the scope then holds live clusters, in segments of the engine's size, through the same
    call (`knn_inner_product` with the engine's backend, k and threads)."""
    cfg = EngineConfig()
    eng = Engine(cfg)
    key = ScopeKey("document", f"synthetic-{dim}")
    rng = np.random.default_rng(7)
    centroids = unit(rng.standard_normal((cfg.max_clusters_per_scope // 2, dim))).astype(np.float32)
    rss0 = peak_rss_mb()
    engine_s = search_s = 0.0
    window_s = 0.0
    window_rate = 0.0
    done = 0
    timer = StepTimer()
    with timer if steps else contextlib.nullcontext():
        for x, t, ids in drifting_stream(n, dim, batch):
            x32 = x.astype(np.float32)
            t0 = time.perf_counter()
            eng.learn(Batch(x32, ids, t, scopes=[key] * len(ids)))
            dt = time.perf_counter() - t0
            engine_s += dt
            window_s += dt
            done += len(ids)
            if done % 100_000 == 0:
                window_rate = 100_000 / window_s
                window_s = 0.0
            live = len(eng.scopes[key].slot_of)
            base = centroids[:live]
            t0 = time.perf_counter()
            with blas_threads(cfg.search_threads):  # as the engine calls it
                for s in range(0, len(x32), SEGMENT_ITEMS):
                    knn_inner_product(
                        x32[s : s + SEGMENT_ITEMS],
                        base,
                        cfg.search_k,
                        cfg.search_threads,
                        cfg.search_backend,
                    )
            search_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        eng.flush()
        engine_s += time.perf_counter() - t0
    stats = eng.stats()[key.name]
    out: dict[str, Any] = {
        "items": n,
        "dim": dim,
        "backend": backend_name(cfg.search_backend),
        "vectors_per_s": round(n / engine_s),
        "last_100k_vectors_per_s": round(window_rate),
        "engine_s": round(engine_s, 2),
        "search_alone_s": round(search_s, 2),
        "engine_over_search": round(engine_s / search_s, 2),
        "engine_us_per_item": round(1e6 * engine_s / n, 1),
        "search_us_per_item": round(1e6 * search_s / n, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_before_stream_mb": round(rss0, 1),
        "live_clusters": stats["active"] + stats["candidates"],
        "active_clusters": stats["active"],
        "members_in_memory": stats["members_in_memory"],
        "slot_capacity": stats["slot_capacity"],
    }
    if steps:
        out["steps_us_per_item"] = timer.per_item_us(n)
    return out


def run_recon(clusters: int, dim: int, repeats: int) -> dict[str, float]:
    """A scope holding `clusters` active clusters (each seeded with reservoir members), then
    timed reconsolidations of it."""
    cfg = EngineConfig()
    eng = Engine(cfg)
    key = ScopeKey("document", f"recon-{dim}")
    rng = np.random.default_rng(1)
    centres = unit(rng.standard_normal((clusters, dim)))
    per = int(cfg.min_weight) + 1
    x = np.repeat(centres, per, axis=0) + 0.3 * unit(rng.standard_normal((clusters * per, dim)))
    x32 = unit(x).astype(np.float32)[rng.permutation(len(x))]
    eng.learn(
        Batch(x32, [f"r{i}" for i in range(len(x32))], np.zeros(len(x32)), scopes=[key] * len(x32))
    )
    eng.flush()
    active = eng.stats()[key.name]["active"]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        rec = eng.reconsolidate().reconsolidations[0]
        times.append(time.perf_counter() - t0)
    return {
        "active_clusters_before": active,
        "points_clustered": rec.input_points,
        "median_seconds": round(float(np.median(times)), 3),
        "runs": repeats,
    }


def main() -> None:
    logging.disable(logging.WARNING)
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--recon-clusters", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", action="store_true", help="also time the engine's steps")
    args = ap.parse_args()
    if args.recon_clusters:
        print(json.dumps(run_recon(args.recon_clusters, args.dim, args.repeats)))
    else:
        print(json.dumps(run_stream(args.items, args.dim, args.batch, args.steps)))


if __name__ == "__main__":
    main()
