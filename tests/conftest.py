from __future__ import annotations

import numpy as np
import pytest


def blobs(n: int, d: int, k: int, seed: int, spread: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around k random topic directions, in random order."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(d, k), d))
    if k <= d:
        centres = np.linalg.qr(centres[:d])[0][:k]  # orthogonal: distinct topics
    centres = centres[:k]
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    y = rng.integers(0, k, n)
    x = centres[y] + spread * rng.standard_normal((n, d)) / np.sqrt(d) * 4
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), y


@pytest.fixture
def small_stream() -> tuple[np.ndarray, np.ndarray]:
    return blobs(600, 32, 6, seed=7)
