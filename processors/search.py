"""Nearest-centroid search through FAISS, on a GPU when faiss reports one.

The centroid matrix of a scope changes after every micro-batch (centroids move, clusters
open and retire), so it is searched with FAISS's brute-force kernels over the live matrix
instead of an index object that would need rebuilding. That is exact inner-product search,
the same as IndexFlatIP, with no update cost.
"""

from __future__ import annotations

import contextlib
import functools
from contextlib import AbstractContextManager
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
from threadpoolctl import ThreadpoolController


@functools.cache
def gpu_resources() -> Any | None:
    """GPU resources when this faiss build sees a GPU; None on CPU-only machines."""
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    if get_num_gpus is None or get_num_gpus() <= 0:
        return None
    return faiss.StandardGpuResources()  # pragma: no cover - no GPU on CI machines


def backend_name(backend: str = "faiss") -> str:
    if gpu_resources() is not None:
        return "faiss-gpu"
    return "faiss-cpu" if backend == "faiss" else "numpy-blas"


@functools.cache
def _set_threads(threads: int) -> None:
    if threads > 0:
        faiss.omp_set_num_threads(threads)


@functools.cache
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()  # the BLAS libraries loaded by now (numpy's, faiss's)


def blas_threads(threads: int) -> AbstractContextManager[Any]:
    """Limit the BLAS libraries (numpy's and the one bundled with faiss-cpu) to `threads`
    threads for the length of an engine call; 0 leaves them as they are. The engine's
    products are small (a segment of at most 256 rows against the candidates or the live
    centroids), and with the libraries' default of one thread per core they ran 2.7x
    slower on the 2-core benchmark machine under load (docs/benchmarks.md, Engine speed):
    the threads wait for each other more than they compute. Results are the same either
    way (OpenBLAS splits products over output blocks, not over the sums; checked on
    News-T). The limit is process-wide while it holds."""
    if threads <= 0:
        return contextlib.nullcontext()
    return _blas_controller().limit(limits=threads, user_api="blas")


def knn_inner_product(
    queries: npt.NDArray[np.float32],
    base: npt.NDArray[np.float32],
    k: int,
    threads: int = 1,
    backend: str = "faiss",
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Top-k inner products of each query row against the base rows (k clipped to base),
    best first. `backend="numpy"` (CPU only) computes the same exact search with numpy's
    BLAS and a partial sort; a GPU always goes through FAISS."""
    _set_threads(threads)
    k = min(k, base.shape[0])
    if k == 0:
        empty = np.zeros((queries.shape[0], 0))
        return empty.astype(np.float32), empty.astype(np.int64)
    res = gpu_resources()
    if res is not None:  # pragma: no cover - exercised only where a GPU exists
        dist, idx = faiss.knn_gpu(res, queries, base, k, metric=faiss.METRIC_INNER_PRODUCT)
        return dist, idx
    if backend == "numpy":
        return _knn_numpy(queries, base, k)
    # FAISS computes a search of fewer than this many query x dimension values (128,000 in
    # faiss 1.15: every segment of <= 256 rows at 384-d, of <= 166 at 768-d) one inner
    # product at a time instead of as one BLAS product, which ran 2.2-2.8x slower per query
    # here against 1,500-3,200 centroids (docs/benchmarks.md, run 9). Both are exact; the
    # engine's outputs did not change (`benchmarks.output_digest`). A process-wide setting,
    # set on every call so that no other FAISS user in the process can undo it.
    faiss.cvar.distance_compute_blas_threshold = 0
    dist, idx = faiss.knn(queries, base, k, metric=faiss.METRIC_INNER_PRODUCT)
    return dist, idx


def _knn_numpy(
    queries: npt.NDArray[np.float32], base: npt.NDArray[np.float32], k: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    sims = queries @ base.T
    if k < base.shape[0]:
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(base.shape[0]), sims.shape).copy()
    top = np.take_along_axis(sims, part, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64)
    return np.take_along_axis(top, order, axis=1), idx
