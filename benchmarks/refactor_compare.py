"""Speed and quality of two source trees of this project on the same data, in one run (issue 10:
"behaviour, quality and speed stay as they are, the benchmarks say so before and after").

    git worktree add /tmp/before 5318638
    .venv/bin/python -m benchmarks.refactor_compare --before /tmp/before --rounds 5 [--e2e 20000]

Each measurement is a subprocess with its working directory at one tree, so that tree's code
is imported (checked: the snippet reports where `processors` came from), with the same
interpreter and packages. The trees alternate within each round and the order flips every
round, so drift in the shared machine's load falls on both.

- speed: the whole News-T minilm (384-d) and mpnet (768-d) streams through a fresh engine in
  batches of `--batch`, timed by each tree's own `benchmarks.vs_river.engine_rate` (the same
  loop, written against each tree's engine API: `process` before, `learn(Batch)` after),
  after a warm-up that loads the compiled kernel. Medians per tree and the median of the
  within-round ratios after / before.
- quality: `benchmarks/quality_news_t.py` of each tree, and a digest of the final cluster
  labels of a `stream.replay.run` of each set (labels are numbered by first appearance, so
  equal digests mean the same partition of the items).
- e2e (with `--e2e N`): `benchmarks/e2e_service.py throughput --dim 384 --count N` of each
  tree, alternating likewise (real Kafka, PostgreSQL and Redis; dev/services.sh up).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

SPEED = """
import json, sys
import numpy as np
from pathlib import Path
import processors
from benchmarks.vs_river import engine_rate
DATA, batch = Path(sys.argv[1]), int(sys.argv[2])
engine_rate(np.load(DATA / "minilm.npy")[:300], batch)  # numba's compiled kernel loaded once
out = {"processors": processors.__file__}
for name in ("minilm", "mpnet"):
    out[name] = engine_rate(np.load(DATA / f"{name}.npy"), batch)
print(json.dumps(out))
"""

LABELS = """
import hashlib, json, logging, sys
from pathlib import Path
import numpy as np
from benchmarks.metrics import quality
from processors import EngineConfig
try:
    from processors import ScopeKey
except ImportError:  # before the engine API refactor
    from processors.scope import ScopeKey
from stream.replay import ReplayInputs, run
logging.disable(logging.WARNING)
DATA = Path(sys.argv[1])
y = np.load(DATA / "labels.npy")
for name in ("minilm", "mpnet"):
    x = np.load(DATA / f"{name}.npy")
    ids = [str(i) for i in range(len(x))]
    inputs = ReplayInputs(x, np.arange(len(x), dtype=np.float64), ids, None)
    labels = run(inputs, EngineConfig(), ScopeKey("document", name)).labels
    q = {k: round(v, 6) for k, v in quality(y, labels).items()}
    digest = hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest()
    print(json.dumps({"set": name, "labels_sha256": digest[:16], **q}))
"""


def run_in(tree: Path, args: list[str]) -> list[dict[str, Any]]:
    """One subprocess with its working directory at `tree`; its JSON lines."""
    out = subprocess.run(
        [sys.executable, *args], cwd=tree, check=True, capture_output=True, text=True
    )
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def speed(trees: dict[str, Path], data: Path, rounds: int, batch: int) -> dict[str, Any]:
    rates: dict[str, dict[str, list[float]]] = {t: {"minilm": [], "mpnet": []} for t in trees}
    ratios: dict[str, list[float]] = {"minilm": [], "mpnet": []}
    names = list(trees)
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        got: dict[str, dict[str, Any]] = {}
        for t in order:
            (got[t],) = run_in(trees[t], ["-c", SPEED, str(data), str(batch)])
            if not got[t]["processors"].startswith(str(trees[t])):
                raise RuntimeError(f"{t}: imported {got[t]['processors']}, not the tree's code")
            for s in ("minilm", "mpnet"):
                rates[t][s].append(got[t][s])
        for s in ("minilm", "mpnet"):
            ratios[s].append(got[names[1]][s] / got[names[0]][s])
        print(json.dumps({"round": r + 1, "order": order, **{
            t: {s: round(got[t][s]) for s in ("minilm", "mpnet")} for t in names
        }}), flush=True)  # fmt: skip
    return {
        "what": f"engine vectors/s, whole News-T streams, batch {batch}, median of {rounds}",
        **{t: {s: round(statistics.median(v)) for s, v in rates[t].items()} for t in names},
        "ratio_after_over_before": {s: round(statistics.median(v), 3) for s, v in ratios.items()},
        "runs": {t: {s: [round(x) for x in v] for s, v in rates[t].items()} for t in names},
    }


def quality(trees: dict[str, Path], data: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for t, tree in trees.items():
        out[t] = {
            "quality_news_t": run_in(
                tree, ["-m", "benchmarks.quality_news_t", "--data", str(data)]
            ),
            "labels": run_in(tree, ["-c", LABELS, str(data)]),
        }
    return out


def e2e(trees: dict[str, Path], rounds: int, count: int) -> dict[str, Any]:
    names = list(trees)
    rates: dict[str, list[float]] = {t: [] for t in names}
    ratios: list[float] = []
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        got: dict[str, float] = {}
        for t in order:
            args = ["-m", "benchmarks.e2e_service", "throughput", "--dim", "384"]
            (row,) = run_in(trees[t], [*args, "--count", str(count)])
            got[t] = float(row["events_per_s"])
            rates[t].append(got[t])
        ratios.append(got[names[1]] / got[names[0]])
        print(json.dumps({"e2e_round": r + 1, "order": order, **got}), flush=True)
    return {
        "what": f"service events/s end to end, 384-d, {count} events, median of {rounds}",
        **{t: round(statistics.median(v)) for t, v in rates.items()},
        "ratio_after_over_before": round(statistics.median(ratios), 3),
        "runs": rates,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", type=Path, required=True, help="the tree before the change")
    ap.add_argument("--after", type=Path, default=ROOT, help="the tree after (default: this)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "news-t")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--e2e", type=int, default=0, help="events per service run (0: skip)")
    ap.add_argument("--e2e-rounds", type=int, default=3)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    args = ap.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    if not args.skip_speed:
        print(json.dumps({"speed": speed(trees, args.data, args.rounds, args.batch)}), flush=True)
    if not args.skip_quality:
        print(json.dumps({"quality": quality(trees, args.data)}), flush=True)
    if args.e2e:
        print(json.dumps({"e2e": e2e(trees, args.e2e_rounds, args.e2e)}), flush=True)


if __name__ == "__main__":
    main()
