"""Engine throughput against river's DBSTREAM (learn) and DenStream (predict), side by side
on the same 384-d News-T rows, in one run.

    .venv/bin/python -m benchmarks.vs_river [--rows 2000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from river import cluster

from benchmarks.engine_speed import engine_seconds
from processors import EngineConfig

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "news-t"


def engine_rate(x: np.ndarray, batch: int = 1024) -> float:
    return len(x) / engine_seconds(x.astype(np.float32), EngineConfig(), batch)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    out: dict[str, object] = {}
    engine_rate(np.load(DATA / "minilm.npy")[:300])  # numba's compiled kernel loaded once
    for name in ("minilm", "mpnet"):
        x_all = np.load(DATA / f"{name}.npy")
        out[f"engine_{name}_full_vps"] = statistics.median(
            engine_rate(x_all) for _ in range(args.repeats)
        )
    x = np.load(DATA / "minilm.npy")[: args.rows]
    dicts = [dict(enumerate(r.tolist())) for r in x]
    ours = statistics.median(engine_rate(x) for _ in range(args.repeats))
    db = cluster.DBSTREAM(clustering_threshold=0.9)
    t0 = time.perf_counter()
    for d in dicts:
        db.learn_one(d)
    db_rate = len(dicts) / (time.perf_counter() - t0)
    den = cluster.DenStream(decaying_factor=0.01, beta=0.5, mu=2.5, epsilon=0.5, n_samples_init=100)
    for d in dicts:
        den.learn_one(d)
    t0 = time.perf_counter()
    n_pred = min(500, len(dicts))
    for d in dicts[:n_pred]:
        den.predict_one(d)
    den_rate = n_pred / (time.perf_counter() - t0)
    out.update(
        {
            "rows": len(x),
            "engine_vps": ours,
            "dbstream_learn_vps": db_rate,
            "denstream_predict_vps": den_rate,
            "ratio_vs_dbstream": ours / db_rate,
            "ratio_vs_denstream_predict": ours / den_rate,
        }
    )
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
