"""Offline backfill of a Stage 3 directory against `clusterer replay` of the same vectors,
times and metadata: quality (the same?) and wall time of the two commands (median of runs).

The directory holds `--count` real document vectors: News-T's mpnet vectors (768-d, Stage 3's
model) written by `clusterer stage3-fixture`; beyond its 11,109 rows the rows repeat with
fresh ids (`doc_NNNNNN`) and later dates (one document a minute throughout), so a repeated
story is a new story: its truth label is offset per repetition.

.venv/bin/python -m benchmarks.backfill [--count 30000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.metrics import quality
from processors import EngineConfig, ScopeKey
from stream.backfill import offline
from stream.replay import ReplayInputs, run
from stream.stage3 import open_directory

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent.parent / "shared" / "datasets" / "news-t"


def cli(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "stream.cli", "--log-level", "ERROR", *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - t0


def main() -> None:
    logging.disable(logging.WARNING)
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--vectors", default="mpnet", help="mpnet or minilm")
    ap.add_argument("--count", type=int, default=30_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="backfill-bench-"))
    try:
        measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, work: Path) -> None:
    d = work / "vector_indices"
    cli("stage3-fixture", "--vectors", str(args.data / f"{args.vectors}.npy"),
        "--items", str(args.data / "items.jsonl"), "--title-field", "textCleaned",
        "--id-field", "Id", "--types", "documents", "--count", str(args.count),
        "--out", str(d))  # fmt: skip

    # replay's inputs: the same vectors, times, ids and metadata, in the same order
    directory = open_directory(d, model=args.vectors)
    items = list(directory.items())
    np.save(work / "x.npy", np.vstack([i.vector for i in items]))
    np.save(work / "t.npy", np.array([i.event_time for i in items]))
    (work / "ids.txt").write_text("".join(i.source_id + "\n" for i in items))
    (work / "meta.jsonl").write_text("".join(json.dumps(i.metadata) + "\n" for i in items))

    y0 = np.load(args.data / "labels.npy")
    rows = len(y0)
    j = np.array([int(i.source_id.removeprefix("doc_")) for i in items])
    truth = y0[j % rows] + (j // rows) * (int(y0.max()) + 1)

    # quality, in process: the same engine run by both paths
    inputs = ReplayInputs(
        np.load(work / "x.npy"),
        np.load(work / "t.npy"),
        [i.source_id for i in items],
        [i.metadata for i in items],
    )
    ref = run(inputs, EngineConfig(), ScopeKey("document", args.vectors))
    (out,) = offline(directory, EngineConfig(), None)
    mine = {s: c for s, c in zip(out.source_ids, out.final_cluster_ids, strict=True)}
    numbering: dict[str, int] = {}
    labels = np.array(
        [numbering.setdefault(c, len(numbering)) if c else -1 for c in map(mine.get, inputs.ids)]
    )
    same = float(np.mean([a == mine[s] for a, s in zip(ref.cluster_ids, inputs.ids, strict=True)]))
    q_replay = {k: round(v, 4) for k, v in quality(truth, ref.labels).items()}
    q_backfill = {k: round(v, 4) for k, v in quality(truth, labels).items()}

    # wall time of the two commands, alternating, median of runs
    replay_s, backfill_s = [], []
    for _ in range(args.runs):
        replay_s.append(cli("replay", "--vectors", str(work / "x.npy"), "--timestamps",
                            str(work / "t.npy"), "--ids", str(work / "ids.txt"), "--metadata",
                            str(work / "meta.jsonl"), "--model", args.vectors, "--quiet",
                            "--clusters-out", str(work / "replay.jsonl")))  # fmt: skip
        backfill_s.append(cli("backfill", "--indices", str(d), "--offline", "--model",
                              args.vectors, "--quiet", "--clusters-out",
                              str(work / "backfill.jsonl")))  # fmt: skip
    a = [json.loads(s) for s in (work / "replay.jsonl").read_text().splitlines()]
    b = [json.loads(s) for s in (work / "backfill.jsonl").read_text().splitlines()]
    identical = [(c["cluster_id"], c["member_ids"]) for c in a] == [
        (c["cluster_id"], c["member_ids"]) for c in b
    ]
    print(
        json.dumps(
            {
                "vectors": len(items),
                "dim": int(items[0].vector.shape[0]),
                "replay": {
                    **q_replay,
                    "median_s": round(statistics.median(replay_s), 2),
                    "runs_s": [round(s, 2) for s in replay_s],
                },
                "backfill": {
                    **q_backfill,
                    "median_s": round(statistics.median(backfill_s), 2),
                    "runs_s": [round(s, 2) for s in backfill_s],
                },
                "same_final_cluster_ids": round(same, 4),
                "clusters_jsonl_identical": identical,
            }
        )
    )


if __name__ == "__main__":
    main()
