"""One SHA-256 digest of everything the engine outputs on a stream, to show that a speed
change changed no result: assignments (ids, similarities, new/status, sequence), change
events, membership moves, touched cluster states (centroids included), size warnings,
reconsolidation records, a checkpoint every 8,192 items and at the end, and the final
`ClusterResult`s.

    .venv/bin/python -m benchmarks.output_digest [minilm mpnet minilm-meta synth]

Prints one line per stream: its name, the first 16 hex digits, seconds. Compare the lines
before and after a change in the same environment: the numpy and BLAS builds decide the
last bits of products, so another set of wheels prints other digests for the same code
(docs/benchmarks.md, Engine speed, has the ones of each environment, run 18 the latest).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from processors import Batch, BatchResult, Engine, EngineConfig, ScopeKey
from stream.synthetic import drifting_stream

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "news-t"


def _feed(h: hashlib._Hash, res: BatchResult) -> None:
    h.update(repr(res.cluster_ids).encode())
    for arr in (res.similarity, res.new_cluster, res.status, res.sequence):
        h.update(arr.tobytes())
    for ev in res.changes:
        h.update(json.dumps(ev.model_dump(mode="json"), sort_keys=True).encode())
    for m in res.moves:
        h.update(repr(m).encode())
    for c in res.clusters:
        state = (c.cluster_id, c.status, c.size, c.weight, c.first_event_time, c.last_event_time)
        h.update(repr(state).encode())
        if c.centroid is not None:
            h.update(c.centroid.tobytes())
    h.update(repr(res.size_warnings).encode())
    for r in res.reconsolidations:
        h.update(json.dumps(r.model_dump(mode="json"), sort_keys=True).encode())


def digest(batches: Iterable[Batch]) -> str:
    eng = Engine(EngineConfig())
    h = hashlib.sha256()
    n = 0
    for b in batches:
        _feed(h, eng.learn(b))
        n += len(b)
        if n % 8192 == 0 or n == 4096:
            h.update(eng.snapshot())
    _feed(h, eng.flush())
    h.update(eng.snapshot())
    for c in eng.results(include_candidates=True):
        h.update(c.model_dump_json().encode())
    return h.hexdigest()[:16]


def news_t(data: Path, name: str, with_metadata: bool) -> Iterator[Batch]:
    x = np.load(data / f"{name}.npy").astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    items = [json.loads(s) for s in (data / "items.jsonl").read_text().splitlines()]
    ids = [str(i) for i in range(len(x))]
    t = np.arange(len(x), dtype=np.float64)
    for s in range(0, len(x), 1024):
        meta = items[s : s + 1024] if with_metadata else None
        yield Batch(x[s : s + 1024], ids[s : s + 1024], t[s : s + 1024], metadata=meta)


def synthetic(items: int = 30_000) -> Iterator[Batch]:
    key = ScopeKey("document", "s768")
    for x, t, ids in drifting_stream(items, 768, 1000):
        yield Batch(x, ids, t, scopes=[key] * len(ids))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("streams", nargs="*", default=["minilm", "mpnet", "minilm-meta", "synth"])
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    for name in args.streams:
        t0 = time.perf_counter()
        if name == "synth":
            value = digest(synthetic())
        else:
            value = digest(news_t(args.data, name.split("-")[0], name.endswith("-meta")))
        print(name, value, f"{time.perf_counter() - t0:.2f}s", flush=True)


if __name__ == "__main__":
    main()
