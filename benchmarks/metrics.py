"""Clustering quality measures used by the benchmarks (items in no cluster = singletons)."""

from __future__ import annotations

from collections import Counter

import numpy as np
from sklearn.metrics import normalized_mutual_info_score


def with_singletons(pred: np.ndarray) -> np.ndarray:
    p = pred.astype(np.int64).copy()
    out = p < 0
    p[out] = p.max(initial=0) + 1 + np.arange(out.sum())
    return p


def quality(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    p = with_singletons(pred)
    pc = Counter(p.tolist())
    yc = Counter(truth.tolist())
    both = Counter(zip(p.tolist(), truth.tolist(), strict=True))
    prec = float(np.mean([both[(a, b)] / pc[a] for a, b in zip(p, truth, strict=True)]))
    rec = float(np.mean([both[(a, b)] / yc[b] for a, b in zip(p, truth, strict=True)]))
    return {
        "nmi": float(normalized_mutual_info_score(truth, p, average_method="geometric")),
        "coverage": float((pred >= 0).mean()),
        "bcubed_precision": prec,
        "bcubed_recall": rec,
        "clusters": len(set(pred[pred >= 0].tolist())),
    }
