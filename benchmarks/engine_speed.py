"""The engine against the naive numpy leader (benchmarks/leader.py), interleaved in one run
on the News-T streams, so that the ratio survives the machine's noise.

    .venv/bin/python -m benchmarks.engine_speed [--rounds 5] [--backend faiss|numpy] [--steps]

Each round runs, per embedding set, the engine (default config, batches of 1,024 as
benchmarks/vs_river.py feeds it, then `flush`) and the leader on the same rows, one after
the other. Prints one JSON line per set: the rates of every round, their medians, the
engine/leader ratio of every round and its median, and the NMI of both (scored as
benchmarks/quality_news_t.py scores it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from benchmarks.leader import leader
from benchmarks.metrics import quality
from benchmarks.steps import StepTimer
from processors import Batch, Engine, EngineConfig, ScopeKey
from stream.replay import ReplayInputs, run

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "news-t"
BATCH = 1024


def load(name: str, data: Path = DATA) -> npt.NDArray[np.float32]:
    x = np.load(data / f"{name}.npy").astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def engine_seconds(x: npt.NDArray[np.float32], cfg: EngineConfig) -> float:
    eng = Engine(cfg)
    ids = [str(i) for i in range(len(x))]
    t = np.arange(len(x), dtype=np.float64)
    t0 = time.perf_counter()
    for s in range(0, len(x), BATCH):
        eng.learn(Batch(x[s : s + BATCH], ids[s : s + BATCH], t[s : s + BATCH]))
    eng.flush()
    return time.perf_counter() - t0


def leader_seconds(x: npt.NDArray[np.float32]) -> float:
    t0 = time.perf_counter()
    leader(x)
    return time.perf_counter() - t0


def engine_nmi(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], name: str, cfg: EngineConfig
) -> float:
    inputs = ReplayInputs(
        x, np.arange(len(x), dtype=np.float64), [str(i) for i in range(len(x))], None
    )
    return quality(y, run(inputs, cfg, ScopeKey("document", name)).labels)["nmi"]


def main() -> None:
    logging.disable(logging.WARNING)  # size warnings are expected on this set
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--backend", choices=("faiss", "numpy"), default=None)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument(
        "--steps", action="store_true", help="and one more engine run per set, timed per step"
    )
    args = ap.parse_args()
    cfg = EngineConfig()
    if args.backend is not None:
        cfg = dataclasses.replace(cfg, search_backend=args.backend)
    sets = {name: load(name, args.data) for name in ("minilm", "mpnet")}
    engine_seconds(sets["minilm"][:300], cfg)  # numba's compiled kernel loaded once
    rates: dict[str, dict[str, list[float]]] = {n: {"engine": [], "leader": []} for n in sets}
    for _ in range(args.rounds):
        for name, x in sets.items():
            rates[name]["engine"].append(len(x) / engine_seconds(x, cfg))
            rates[name]["leader"].append(len(x) / leader_seconds(x))
    y = np.load(args.data / "labels.npy")
    for name, x in sets.items():
        eng, lead = rates[name]["engine"], rates[name]["leader"]
        ratios = [e / f for e, f in zip(eng, lead, strict=True)]
        out = {
            "set": name,
            "dim": x.shape[1],
            "items": len(x),
            "backend": cfg.search_backend,
            "engine_vps": [round(v) for v in eng],
            "leader_vps": [round(v) for v in lead],
            "ratio": [round(r, 3) for r in ratios],
            "engine_vps_median": round(statistics.median(eng)),
            "leader_vps_median": round(statistics.median(lead)),
            "ratio_median": round(statistics.median(ratios), 3),
            "engine_nmi": round(engine_nmi(x, y, name, cfg), 4),
            "leader_nmi": round(quality(y, leader(x))["nmi"], 4),
        }
        if args.steps:
            with StepTimer() as timer:
                seconds = engine_seconds(x, cfg)
            out["steps_us_per_item"] = {
                "total": round(1e6 * seconds / len(x), 1),
                **timer.per_item_us(len(x)),
            }
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
