from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import processors.scope as scope_mod
from processors import Batch, Engine, EngineConfig


def _blas_threads() -> list[int]:
    return [int(i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"]


@pytest.mark.parametrize("threads", [1, 2])
def test_engine_products_run_with_the_configured_blas_threads(
    monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    before = _blas_threads()
    seen: list[list[int]] = []
    kernel = scope_mod.assign_segment

    def spy(*args: Any) -> Any:
        seen.append(_blas_threads())
        return kernel(*args)

    monkeypatch.setattr(scope_mod, "assign_segment", spy)
    x = np.eye(3, 8, dtype=np.float32)
    Engine(EngineConfig(search_threads=threads)).learn(Batch(x, ["a", "b", "c"], np.zeros(3)))
    assert seen and all(t == [threads] * len(before) for t in seen)
    assert _blas_threads() == before  # the limit ends with the call


def test_small_segments_are_searched_as_one_blas_product() -> None:
    """FAISS searches fewer than 128,000 query x dimension values one inner product at a
    time, 2.2-2.8x slower per query than its BLAS product on this machine
    (docs/benchmarks.md, run 9): every 384-d segment of the engine is that small. The
    engine's search lowers that threshold so that every segment is one BLAS product."""
    import faiss

    from processors.search import knn_inner_product

    faiss.cvar.distance_compute_blas_threshold = 128_000  # FAISS's own default
    x = np.eye(4, 384, dtype=np.float32)
    dist, idx = knn_inner_product(x[:2], x, 2)
    assert idx[:, 0].tolist() == [0, 1] and dist[:, 0].tolist() == [1.0, 1.0]
    assert faiss.cvar.distance_compute_blas_threshold == 0
