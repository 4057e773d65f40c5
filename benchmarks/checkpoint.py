"""Checkpoint size and snapshot/restore time on the drifting 768-d stream of
benchmarks/scale.py (the same generator), measured every `--every` items.

.venv/bin/python -m benchmarks.checkpoint --items 200000 --every 50000

Each measurement prints one JSON line: items so far, live clusters, members held, the
checkpoint's size and the time of `Engine.snapshot()` and `Engine.restore()` (median of
`--repeats`), and for comparison the size and time of pickling the same scopes (what the
worker wrote before checkpoint format 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import statistics
import time
from collections.abc import Callable
from typing import Any

from benchmarks.scale import drifting_stream
from processors import Batch, Engine, EngineConfig, ScopeKey


def timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    out, times = None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def measure(eng: Engine, items: int, repeats: int) -> dict[str, Any]:
    data, snap_s = timed(eng.snapshot, repeats)
    restored, restore_s = timed(lambda: Engine.restore(data), repeats)
    assert restored.snapshot() == data
    old, pickle_s = timed(lambda: pickle.dumps((eng.cfg, eng.scopes), 5), repeats)
    stats = next(iter(eng.stats().values()))
    return {
        "items": items,
        "live_clusters": stats["active"] + stats["candidates"],
        "active_clusters": stats["active"],
        "members_in_memory": stats["members_in_memory"],
        "slot_capacity": stats["slot_capacity"],
        "checkpoint_mb": round(len(data) / 1e6, 1),
        "snapshot_s": round(snap_s, 3),
        "restore_s": round(restore_s, 3),
        "pickle_mb": round(len(old) / 1e6, 1),
        "pickle_s": round(pickle_s, 3),
    }


def main() -> None:
    logging.disable(logging.WARNING)
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--every", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    eng = Engine(EngineConfig())
    key = ScopeKey("document", f"synthetic-{args.dim}")
    done = 0
    for x, t, ids in drifting_stream(args.items, args.dim, args.batch):
        eng.learn(Batch(x, ids, t, scopes=[key] * len(ids)))
        done += len(ids)
        if done % args.every == 0:
            print(json.dumps(measure(eng, done, args.repeats)), flush=True)


if __name__ == "__main__":
    main()
