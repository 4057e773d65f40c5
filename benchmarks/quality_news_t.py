"""Quality and speed of one streaming pass over News-T, default config.

.venv/bin/python -m benchmarks.quality_news_t [--hdbscan]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks.metrics import quality
from processors import EngineConfig, ScopeKey
from stream.replay import ReplayInputs, run

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "news-t"


def main() -> None:
    logging.disable(logging.WARNING)  # size warnings are expected on this set
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--hdbscan", action="store_true", help="also batch HDBSCAN (slow)")
    args = ap.parse_args()
    y = np.load(args.data / "labels.npy")
    items = [json.loads(s) for s in (args.data / "items.jsonl").read_text().splitlines()]
    for name in ("minilm", "mpnet"):
        x = np.load(args.data / f"{name}.npy")
        inputs = ReplayInputs(
            x, np.arange(len(x), dtype=np.float64), [str(i) for i in range(len(x))], None
        )
        t0 = time.perf_counter()
        out = run(inputs, EngineConfig(), ScopeKey("document", name))
        dt = time.perf_counter() - t0
        q = quality(y, out.labels)
        q["vectors_per_s"] = len(x) / dt
        print(
            json.dumps({"set": name, "engine": "stage4", **{k: round(v, 4) for k, v in q.items()}})
        )
        inputs_m = ReplayInputs(x, inputs.times, inputs.ids, items)  # with label texts
        t0 = time.perf_counter()
        run(inputs_m, EngineConfig(), ScopeKey("document", name))
        print(
            json.dumps(
                {
                    "set": name,
                    "engine": "stage4+metadata",
                    "vectors_per_s": round(len(x) / (time.perf_counter() - t0)),
                }
            )
        )
        if args.hdbscan:
            from sklearn.cluster import HDBSCAN

            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lab = (
                    HDBSCAN(min_cluster_size=5, algorithm="brute", copy=True)
                    .fit(x.astype(np.float64))
                    .labels_
                )
            dt = time.perf_counter() - t0
            q = quality(y, lab)
            q["vectors_per_s"] = len(x) / dt
            print(
                json.dumps(
                    {
                        "set": name,
                        "engine": "batch-hdbscan-mcs5",
                        **{k: round(v, 4) for k, v in q.items()},
                    }
                )
            )


if __name__ == "__main__":
    main()
