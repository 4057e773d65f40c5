"""The baseline a user would write in ten lines: a naive leader clusterer in numpy.

One item at a time: the nearest running-mean centroid (the normalised sum of its members)
takes the item when their cosine reaches the threshold, else the item opens a cluster. No
decay, no merges, no events: the floor the engine's per-item cost is compared with
(benchmarks/engine_speed.py).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def leader(x: npt.NDArray[np.float32], threshold: float = 0.4) -> npt.NDArray[np.int64]:
    """Cluster number of every row of `x` (unit rows), in order."""
    sums = np.zeros_like(x)
    cent = np.zeros_like(x)
    labels = np.empty(len(x), dtype=np.int64)
    n = 0
    for i, v in enumerate(x):
        sims = cent[:n] @ v
        j = int(sims.argmax()) if n else -1
        if j < 0 or sims[j] < threshold:
            j, n = n, n + 1
        sums[j] += v
        cent[j] = sums[j] / np.linalg.norm(sums[j])
        labels[i] = j
    return labels
