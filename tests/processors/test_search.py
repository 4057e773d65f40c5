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
