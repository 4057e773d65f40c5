"""The GPU check: which faiss build `import faiss` loads, whether it sees a GPU, and the
engine's nearest-centroid search (processors.search.knn_inner_product, which goes through
faiss.knn_gpu when a GPU is visible) timed and compared with numpy's exact search.

    python -m benchmarks.gpu_search                  # report, exit 0
    python -m benchmarks.gpu_search --require-gpu    # exit 1 unless the GPU path runs

One JSON line on stdout: distributions, GPUs, backend, median milliseconds per batch for
the engine's search and for numpy, and whether both found the same nearest centroid.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

from stream.buildinfo import faiss_distributions


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _median_ms(fn: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--centroids", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=2_000)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--require-gpu", action="store_true")
    args = p.parse_args(argv)

    dists = faiss_distributions()
    if len(dists) != 1:
        print(
            f"gpu_search: faiss distributions installed: {dists or 'none'}; install exactly"
            " one of the extras [cpu] or [gpu] (README: GPU)",
            file=sys.stderr,
        )
        return 1
    import faiss

    from processors.search import backend_name, knn_inner_product

    gpus = int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0
    rng = np.random.default_rng(0)
    base = _unit(rng, args.centroids, args.dim)
    queries = _unit(rng, args.batch, args.dim)
    knn_inner_product(queries[:10], base, args.k)  # warm-up (GPU context, kernels)
    engine_ms = _median_ms(lambda: knn_inner_product(queries, base, args.k), args.repeats)
    # the reference: numpy's exact product and a partial sort, on the CPU
    numpy_ms = _median_ms(
        lambda: np.argpartition(-(queries @ base.T), args.k - 1, axis=1), args.repeats
    )
    _, idx = knn_inner_product(queries, base, args.k)
    same_top1 = bool((idx[:, 0] == np.argmax(queries @ base.T, axis=1)).all())
    report = {
        "faiss_distributions": dists,
        "faiss_version": getattr(faiss, "__version__", "?"),
        "gpus": gpus,
        "backend": backend_name(),
        "dim": args.dim,
        "centroids": args.centroids,
        "batch": args.batch,
        "k": args.k,
        "search_ms": engine_ms,
        "numpy_ms": numpy_ms,
        "same_top1_as_numpy": same_top1,
    }
    print(json.dumps(report))
    if not same_top1:
        print("gpu_search: the engine's search disagrees with numpy", file=sys.stderr)
        return 1
    if args.require_gpu and report["backend"] != "faiss-gpu":
        print(
            f"gpu_search: no GPU path: faiss build {dists}, get_num_gpus() = {gpus}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
