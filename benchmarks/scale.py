"""Bounded memory and steady throughput on an endless drifting stream.

A synthetic stream of unit vectors around topics that are born and die (a fixed number alive
at once, each living a random span of items), plus background noise. It is generated in
chunks from a seeded generator, so the stream itself costs no memory as it grows.

.venv/bin/python -m benchmarks.scale --items 100000
.venv/bin/python -m benchmarks.scale --items 1000000
.venv/bin/python -m benchmarks.scale --recon-clusters 5000

Each run prints one JSON line: peak RSS, throughput, live clusters and members at the end.
Run the sizes in separate processes so each peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time

import numpy as np

from processors import Batch, Engine, EngineConfig, ScopeKey
from stream.synthetic import drifting_stream, unit


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_stream(n: int, dim: int, batch: int) -> dict[str, float]:
    eng = Engine(EngineConfig())
    key = ScopeKey("document", f"synthetic-{dim}")
    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    last_window = t0
    window_rate = 0.0
    done = 0
    for x, t, ids in drifting_stream(n, dim, batch):
        eng.learn(Batch(x, ids, t, scopes=[key] * len(ids)))
        done += len(ids)
        if done % 100_000 == 0:
            now = time.perf_counter()
            window_rate = 100_000 / (now - last_window)
            last_window = now
    eng.flush()
    dt = time.perf_counter() - t0
    stats = eng.stats()[key.name]
    return {
        "items": n,
        "dim": dim,
        "vectors_per_s": round(n / dt),
        "last_100k_vectors_per_s": round(window_rate),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_before_stream_mb": round(rss0, 1),
        "live_clusters": stats["active"] + stats["candidates"],
        "active_clusters": stats["active"],
        "members_in_memory": stats["members_in_memory"],
        "slot_capacity": stats["slot_capacity"],
    }


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
    args = ap.parse_args()
    if args.recon_clusters:
        print(json.dumps(run_recon(args.recon_clusters, args.dim, args.repeats)))
    else:
        print(json.dumps(run_stream(args.items, args.dim, args.batch)))


if __name__ == "__main__":
    main()
